#include "catdog_half.h"

#include <string.h>

uint16_t catdog_bf16_from_float(float f) {
    uint32_t bits;
    memcpy(&bits, &f, sizeof bits);
    if ((bits & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((bits >> 16) | 0x0040u);  // NaN, quiet
    return (uint16_t)((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
}

float catdog_float_from_bf16(uint16_t h) {
    const uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

void catdog_float_to_bf16(const float *src, uint16_t *dst, size_t count) {
    for (size_t i = 0; i < count; i++) dst[i] = catdog_bf16_from_float(src[i]);
}

void catdog_bf16_to_float(const uint16_t *src, float *dst, size_t count) {
    for (size_t i = 0; i < count; i++) dst[i] = catdog_float_from_bf16(src[i]);
}

void catdog_bf16_add(const uint16_t *in, uint16_t *inout, size_t count) {
    for (size_t i = 0; i < count; i++)
        inout[i] = catdog_bf16_from_float(catdog_float_from_bf16(in[i]) + catdog_float_from_bf16(inout[i]));
}

static void float_to_half_scalar(const float *src, uint16_t *dst, size_t count) {
    _Float16 *out = (_Float16 *)dst;
    for (size_t i = 0; i < count; i++) out[i] = (_Float16)src[i];
}

static void half_to_float_scalar(const uint16_t *src, float *dst, size_t count) {
    const _Float16 *in = (const _Float16 *)src;
    for (size_t i = 0; i < count; i++) dst[i] = (float)in[i];
}

#if defined(__x86_64__)
#include <immintrin.h>

__attribute__((target("avx,f16c")))
static void float_to_half_f16c(const float *src, uint16_t *dst, size_t count) {
    size_t i = 0;
    for (; i + 8 <= count; i += 8) {
        __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT);
        _mm_storeu_si128((__m128i *)(dst + i), h);
    }
    float_to_half_scalar(src + i, dst + i, count - i);
}

__attribute__((target("avx,f16c")))
static void half_to_float_f16c(const uint16_t *src, float *dst, size_t count) {
    size_t i = 0;
    for (; i + 8 <= count; i += 8) {
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
    }
    half_to_float_scalar(src + i, dst + i, count - i);
}

int catdog_half_uses_f16c(void) {
    static int cached = -1;
    if (cached < 0) cached = __builtin_cpu_supports("f16c") && __builtin_cpu_supports("avx");
    return cached;
}

void catdog_float_to_half(const float *src, uint16_t *dst, size_t count) {
    if (catdog_half_uses_f16c()) float_to_half_f16c(src, dst, count);
    else float_to_half_scalar(src, dst, count);
}

void catdog_half_to_float(const uint16_t *src, float *dst, size_t count) {
    if (catdog_half_uses_f16c()) half_to_float_f16c(src, dst, count);
    else half_to_float_scalar(src, dst, count);
}
#else
int catdog_half_uses_f16c(void) { return 0; }
void catdog_float_to_half(const float *src, uint16_t *dst, size_t count) { float_to_half_scalar(src, dst, count); }
void catdog_half_to_float(const uint16_t *src, float *dst, size_t count) { half_to_float_scalar(src, dst, count); }
#endif
