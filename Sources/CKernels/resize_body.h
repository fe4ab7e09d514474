// Included by kernels_v4.c, kernels_v3.c and kernels_base.c: compiled once per instruction set.
// The two passes of Resize.square (CatdogData). Each output value is its taps summed in tap
// order, without FMA contraction, so every instruction set gives the same bytes (and the same
// as the Swift loops these replaced, which ran at a third of the speed of the JPEG decode).

// Rows first_row...last_row of an RGB image src_width pixels wide, resampled along x: output x
// is the sum over k < taps of weights[x·taps + k] times pixel starts[x] + k. Taps past the row
// have weight 0 (and read 0). Writes (last_row - first_row + 1, size, 3) floats to out.
// line: (src_width + taps)·3 floats of scratch, a row converted to floats once.
static inline void FN(resize_row)(const float *restrict line, const ptrdiff_t *restrict starts,
                                  const float *restrict weights, size_t taps, size_t size, float *restrict dst) {
#pragma clang fp contract(off)
    // Scalar: vectorised along x it takes gathers, slower here (AMD Zen 4) than plain loads.
#pragma clang loop vectorize(disable)
    for (size_t x = 0; x < size; x++) {
        float r = 0, g = 0, b = 0;
        const float *p = line + starts[x] * 3;
        const float *w = weights + x * taps;
        for (size_t k = 0; k < taps; k++) {
            r += w[k] * p[3 * k];
            g += w[k] * p[3 * k + 1];
            b += w[k] * p[3 * k + 2];
        }
        dst[x * 3] = r;
        dst[x * 3 + 1] = g;
        dst[x * 3 + 2] = b;
    }
}

void FN(catdog_resize_horizontal)(const uint8_t *restrict src, size_t src_width, size_t first_row, size_t last_row,
                                  const ptrdiff_t *restrict starts, const float *restrict weights, size_t taps,
                                  size_t size, float *restrict line, float *restrict out) {
#pragma clang fp contract(off)
    for (size_t i = src_width * 3; i < (src_width + taps) * 3; i++) line[i] = 0;
    for (size_t y = first_row; y <= last_row; y++) {
        const uint8_t *row = src + y * src_width * 3;
        for (size_t i = 0; i < src_width * 3; i++) line[i] = (float)row[i];
        float *dst = out + (y - first_row) * size * 3;
        // Constant tap counts let the compiler unroll the inner loop.
        switch (taps) {
        case 2: FN(resize_row)(line, starts, weights, 2, size, dst); break;
        case 3: FN(resize_row)(line, starts, weights, 3, size, dst); break;
        case 4: FN(resize_row)(line, starts, weights, 4, size, dst); break;
        default: FN(resize_row)(line, starts, weights, taps, size, dst); break;
        }
    }
}

// The vertical pass over what catdog_resize_horizontal wrote (rows first_row...last_row): output
// row y sums rows starts[y] + k (clamped to last_row) with weights[y·taps + k], then rounds half
// away from zero, clamped to 0...255, into size·size·3 bytes at out. sum: size·3 floats of scratch.
void FN(catdog_resize_vertical)(const float *restrict horizontal, size_t first_row, size_t last_row,
                                const ptrdiff_t *restrict starts, const float *restrict weights, size_t taps,
                                size_t size, float *restrict sum, uint8_t *restrict out) {
#pragma clang fp contract(off)
    const size_t row = size * 3;
    for (size_t y = 0; y < size; y++) {
        for (size_t x = 0; x < row; x++) sum[x] = 0;
        for (size_t k = 0; k < taps; k++) {
            size_t index = (size_t)starts[y] + k;
            if (index > last_row) index = last_row;
            const float w = weights[y * taps + k];
            const float *line = horizontal + (index - first_row) * row;
            for (size_t x = 0; x < row; x++) sum[x] += w * line[x];
        }
        uint8_t *dst = out + y * row;
        for (size_t x = 0; x < row; x++) {
            float v = sum[x] < 0 ? 0 : sum[x];
            v = v > 255 ? 255 : v;
            const int whole = (int)v;
            dst[x] = (uint8_t)(whole + (v - (float)whole >= 0.5f ? 1 : 0));
        }
    }
}
