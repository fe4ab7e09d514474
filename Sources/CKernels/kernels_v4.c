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

#include "transpose16.h"

__attribute__((target("arch=x86-64-v4"))) void catdog_transpose_v4(const float *restrict src, size_t rows,
                                                                   size_t cols, float *restrict dst) {
    const size_t fullRows = rows / 16 * 16, fullCols = cols / 16 * 16;
    for (size_t r0 = 0; r0 < fullRows; r0 += 16)
        for (size_t c0 = 0; c0 < fullCols; c0 += 16) transpose16(src + r0 * cols + c0, cols, dst + c0 * rows + r0, rows);
    transpose_edges(src, rows, cols, dst, fullRows, fullCols);
}
#else
void catdog_transpose_v4(const float *restrict src, size_t rows, size_t cols, float *restrict dst) {
    transpose_scalar(src, rows, cols, dst);
}
#endif
