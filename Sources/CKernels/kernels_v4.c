// The kernels for x86-64-v4: AVX-512 F/BW/CD/DQ/VL.
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include "variants.h"

#define FN(name) name##_v4
#define CATDOG_TRANSPOSE_IN_REGISTERS 1
#if defined(__x86_64__) && defined(__clang__)
#pragma clang attribute push (__attribute__((target("arch=x86-64-v4"))), apply_to = function)
#define CATDOG_PUSHED 1
#endif
#define CATDOG_VECTOR_FLOATS 16
#include "winograd4_body.h"
#include "pooling_body.h"
#include "depthwise_body.h"
#include "channels_body.h"
#include "powersgd_body.h"
#include "resize_body.h"
#ifdef CATDOG_PUSHED
#pragma clang attribute pop
#endif

#if defined(__x86_64__) && defined(__clang__)
#include <immintrin.h>

// Transposes 16 rows of 16 floats in registers: pairs interleaved, then 4 x 4 blocks within each
// 128-bit lane, then the lanes exchanged twice (64 shuffles where the scalar loop moves 256
// floats one by one; the weights' transposes took 7% of a batch-8 resnet step that way).
__attribute__((target("arch=x86-64-v4"))) static inline void transpose16(const float *src, size_t ld, float *dst,
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

__attribute__((target("arch=x86-64-v4"))) void catdog_transpose_v4(const float *restrict src, size_t rows,
                                                                   size_t cols, float *restrict dst) {
    const size_t fullRows = rows / 16 * 16, fullCols = cols / 16 * 16;
    for (size_t r0 = 0; r0 < fullRows; r0 += 16)
        for (size_t c0 = 0; c0 < fullCols; c0 += 16) transpose16(src + r0 * cols + c0, cols, dst + c0 * rows + r0, rows);
    // The edges: the columns right of the last full block, then the rows below it.
    for (size_t r = 0; r < fullRows; r++)
        for (size_t c = fullCols; c < cols; c++) dst[c * rows + r] = src[r * cols + c];
    for (size_t r = fullRows; r < rows; r++)
        for (size_t c = 0; c < cols; c++) dst[c * rows + r] = src[r * cols + c];
}
#else
void catdog_transpose_v4(const float *restrict src, size_t rows, size_t cols, float *restrict dst) {
    transpose_scalar(src, rows, cols, dst);
}
#endif
