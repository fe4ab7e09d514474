// The kernels for x86-64-v3: AVX2, FMA, F16C, BMI.
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include "variants.h"

#define FN(name) name##_v3
#define CATDOG_TRANSPOSE8_IN_REGISTERS 1  // catdog_transpose_v3 below, 8 x 8 blocks in AVX2 registers
#if defined(__x86_64__) && defined(__clang__)
#pragma clang attribute push (__attribute__((target("arch=x86-64-v3"))), apply_to = function)
#define CATDOG_PUSHED 1
#endif
#define CATDOG_VECTOR_FLOATS 8
#include "winograd4_body.h"
#include "winograd2_body.h"
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

// An 8 × 8 block of floats transposed in registers: pairs interleaved, 2 × 2 blocks within each
// 128-bit lane, then the lanes exchanged (24 shuffles where the scalar loop moves 64 floats one
// by one; the weights' transposes for dX took 3% of a batch-32 resnet-pool step on a Zen 3 so).
__attribute__((target("arch=x86-64-v3"), always_inline)) static inline void transpose8(const float *src, size_t ld,
                                                                                      float *dst, size_t ldd) {
    __m256 r[8], t[8];
    for (int i = 0; i < 8; i++) r[i] = _mm256_loadu_ps(src + i * ld);
    for (int i = 0; i < 4; i++) {
        t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 2; i++) {
        r[4 * i] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], _MM_SHUFFLE(1, 0, 1, 0));
        r[4 * i + 1] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], _MM_SHUFFLE(3, 2, 3, 2));
        r[4 * i + 2] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(1, 0, 1, 0));
        r[4 * i + 3] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(3, 2, 3, 2));
    }
    // r[4i + j], lane L: column 4L + j of rows 4i..4i+3.
    for (int j = 0; j < 4; j++) {
        _mm256_storeu_ps(dst + j * ldd, _mm256_permute2f128_ps(r[j], r[4 + j], 0x20));
        _mm256_storeu_ps(dst + (4 + j) * ldd, _mm256_permute2f128_ps(r[j], r[4 + j], 0x31));
    }
}

__attribute__((target("arch=x86-64-v3"))) void catdog_transpose_v3(const float *restrict src, size_t rows,
                                                                   size_t cols, float *restrict dst) {
    const size_t fullRows = rows / 8 * 8, fullCols = cols / 8 * 8;
    // 16 x 16 blocks as four 8 x 8 ones, so that each line of the destination is written whole.
    size_t r0 = 0;
    for (; r0 + 16 <= fullRows; r0 += 16) {
        size_t c0 = 0;
        for (; c0 + 16 <= fullCols; c0 += 16) {
            const float *s0 = src + r0 * cols + c0;
            float *d0 = dst + c0 * rows + r0;
            transpose8(s0, cols, d0, rows);
            transpose8(s0 + 8, cols, d0 + 8 * rows, rows);
            transpose8(s0 + 8 * cols, cols, d0 + 8, rows);
            transpose8(s0 + 8 * cols + 8, cols, d0 + 8 * rows + 8, rows);
        }
        for (; c0 < fullCols; c0 += 8) {
            transpose8(src + r0 * cols + c0, cols, dst + c0 * rows + r0, rows);
            transpose8(src + (r0 + 8) * cols + c0, cols, dst + c0 * rows + r0 + 8, rows);
        }
    }
    for (; r0 < fullRows; r0 += 8)
        for (size_t c0 = 0; c0 < fullCols; c0 += 8) transpose8(src + r0 * cols + c0, cols, dst + c0 * rows + r0, rows);
    transpose_edges(src, rows, cols, dst, fullRows, fullCols);
}
#else
void catdog_transpose_v3(const float *restrict src, size_t rows, size_t cols, float *restrict dst) {
    transpose_scalar(src, rows, cols, dst);
}
#endif
