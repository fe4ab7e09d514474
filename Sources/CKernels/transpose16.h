// A 16 × 16 block of floats (or any 32-bit words) transposed in registers, for the kernels
// compiled for AVX-512 (kernels_v4.c's transpose, bf16.c's packing of a transposed kernel).
#ifndef CATDOG_TRANSPOSE16_H
#define CATDOG_TRANSPOSE16_H
#include <immintrin.h>
#include <stddef.h>

// Transposes 16 rows of 16 floats in registers: pairs interleaved, then 4 x 4 blocks within each
// 128-bit lane, then the lanes exchanged twice (64 shuffles where the scalar loop moves 256
// floats one by one; the weights' transposes took 7% of a batch-8 resnet step that way).
__attribute__((target("avx512f"), always_inline)) static inline void transpose16(const float *src, size_t ld, float *dst,
                                                                               size_t ldd) {
    __m512 r[16], t[16];
    for (int i = 0; i < 16; i++) r[i] = _mm512_loadu_ps(src + i * ld);
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 4; i++) {
        r[4 * i] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], _MM_SHUFFLE(1, 0, 1, 0));
        r[4 * i + 1] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], _MM_SHUFFLE(3, 2, 3, 2));
        r[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(1, 0, 1, 0));
        r[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(3, 2, 3, 2));
    }
    // r[4i + j], lane L: column 4L + j of rows 4i..4i+3.
    for (int j = 0; j < 4; j++) {
        t[j] = _mm512_shuffle_f32x4(r[j], r[4 + j], 0x88);
        t[4 + j] = _mm512_shuffle_f32x4(r[j], r[4 + j], 0xdd);
        t[8 + j] = _mm512_shuffle_f32x4(r[8 + j], r[12 + j], 0x88);
        t[12 + j] = _mm512_shuffle_f32x4(r[8 + j], r[12 + j], 0xdd);
    }
    for (int j = 0; j < 4; j++) {
        _mm512_storeu_ps(dst + j * ldd, _mm512_shuffle_f32x4(t[j], t[8 + j], 0x88));
        _mm512_storeu_ps(dst + (8 + j) * ldd, _mm512_shuffle_f32x4(t[j], t[8 + j], 0xdd));
        _mm512_storeu_ps(dst + (4 + j) * ldd, _mm512_shuffle_f32x4(t[4 + j], t[12 + j], 0x88));
        _mm512_storeu_ps(dst + (12 + j) * ldd, _mm512_shuffle_f32x4(t[4 + j], t[12 + j], 0xdd));
    }
}

#endif
