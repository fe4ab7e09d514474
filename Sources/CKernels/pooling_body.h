// Included by kernels_v4.c, kernels_v3.c and kernels_base.c: compiled once per instruction set.


// Branch-free along the channels (compare and select), so it vectorises: the Swift loop with a
// data-dependent branch per channel ran at ~1 GB/s.
void FN(catdog_maxpool)(const float *x, float *y, int32_t *argmax, size_t images, size_t h, size_t w, size_t c,
                    size_t pool, size_t stride, size_t oh, size_t ow) {
    size_t o = 0;
    for (size_t n = 0; n < images; n++) {
        const size_t image = n * h * w * c;
        for (size_t r = 0; r < oh; r++) {
            for (size_t s = 0; s < ow; s++, o += c) {
                float *restrict out = y + o;
                int32_t *restrict arg = argmax + o;
                const size_t first = image + (r * stride * w + s * stride) * c;
                const float *restrict p = x + first;
                if (pool == 2) {
                    // The window's four pixels compared in registers and stored once (the loops
                    // below store each channel's running winner four times): vgg's first pool at
                    // batch 32 took 1.6-2.0 ms for 16.8 MB in. The same comparisons in the same
                    // order.
                    const size_t right = c, below = w * c;
                    for (size_t k = 0; k < c; k++) {
                        float best = p[k];
                        int32_t at = (int32_t)(first + k);
                        const float v1 = p[right + k], v2 = p[below + k], v3 = p[below + right + k];
                        at = v1 > best ? (int32_t)(first + right + k) : at;
                        best = v1 > best ? v1 : best;
                        at = v2 > best ? (int32_t)(first + below + k) : at;
                        best = v2 > best ? v2 : best;
                        at = v3 > best ? (int32_t)(first + below + right + k) : at;
                        best = v3 > best ? v3 : best;
                        out[k] = best;
                        arg[k] = at;
                    }
                    continue;
                }
                for (size_t k = 0; k < c; k++) {
                    out[k] = p[k];
                    arg[k] = (int32_t)(first + k);
                }
                for (size_t i = 0; i < pool; i++) {
                    for (size_t j = 0; j < pool; j++) {
                        if (i == 0 && j == 0) continue;
                        const size_t base = image + ((r * stride + i) * w + s * stride + j) * c;
                        const float *restrict q = x + base;
                        for (size_t k = 0; k < c; k++) {
                            const float v = q[k];
                            const int better = v > out[k];
                            out[k] = better ? v : out[k];
                            arg[k] = better ? (int32_t)(base + k) : arg[k];
                        }
                    }
                }
            }
        }
    }
}

// Whether the activation before a pool (0 none, 1 ReLU, 2 ReLU6) passed the winner v: the
// conditions of catdog_mask_bias_gradient, as 0 or 1 without a branch.
static inline int passed(float v, int activation) {
    return activation == 0 ? 1 : activation == 1 ? (v > 0.0f) : ((v > 0.0f) & (v < 6.0f));
}

void FN(catdog_maxpool_backward)(const float *y, const float *dy, const int32_t *argmax, float *dx, size_t images,
                                 size_t h, size_t w, size_t c, size_t pool, size_t stride, size_t oh, size_t ow,
                                 int overwrite, int activation) {
    if (!overwrite || pool > stride) {
        if (overwrite)
            for (size_t i = 0; i < images * h * w * c; i++) dx[i] = 0.0f;
        for (size_t i = 0; i < images * oh * ow * c; i++) dx[argmax[i]] += passed(y[i], activation) ? dy[i] : 0.0f;
        return;
    }
    // Windows that do not overlap: an input pixel lies in one window or none, so dx is written
    // in order, row by row. `+ 0.0f` gives the bits of adding into zeros (-0 becomes +0).
    for (size_t n = 0; n < images; n++)
        for (size_t r = 0; r < h; r++) {
            const size_t wr = r / stride, i = r % stride;
            for (size_t s = 0; s < w; s++) {
                const size_t at = ((n * h + r) * w + s) * c;
                float *restrict out = dx + at;
                const size_t ws = s / stride, j = s % stride;
                if (wr >= oh || i >= pool || ws >= ow || j >= pool) {
                    for (size_t k = 0; k < c; k++) out[k] = 0.0f;
                    continue;
                }
                const size_t o = ((n * oh + wr) * ow + ws) * c;
                const int32_t *restrict arg = argmax + o;
                const int32_t first = (int32_t)at;
                const float *restrict g = dy + o, *restrict v = y + o;
                // One loop per activation, the conditions of `passed` written out (through it,
                // this pass took 10-15% longer), a vector at a time with no interleaving:
                // unrolled four times over, a pixel's 32 channels were fewer than one pass of
                // the vector loop and all went one by one.
                if (activation == 0)
#pragma clang loop interleave_count(1)
                    for (size_t k = 0; k < c; k++) out[k] = (arg[k] == first + (int32_t)k ? g[k] : 0.0f) + 0.0f;
                else if (activation == 1)
#pragma clang loop interleave_count(1)
                    for (size_t k = 0; k < c; k++)
                        out[k] = (((arg[k] == first + (int32_t)k) & (v[k] > 0.0f)) ? g[k] : 0.0f) + 0.0f;
                else
#pragma clang loop interleave_count(1)
                    for (size_t k = 0; k < c; k++)
                        out[k] = (((arg[k] == first + (int32_t)k) & (v[k] > 0.0f) & (v[k] < 6.0f)) ? g[k] : 0.0f) + 0.0f;
            }
        }
}

void FN(catdog_masked_add)(const float *restrict y, const float *restrict dy, float *restrict dx, float *restrict dx2,
                           size_t count, float lo, float hi, int overwrite) {
    // One loop per case, each without a branch inside.
#define MASKED(i) ((y[i] > lo && y[i] < hi) ? dy[i] : 0.0f)
    if (!dx2) {
        if (overwrite & 1)
            for (size_t i = 0; i < count; i++) dx[i] = MASKED(i);
        else
            for (size_t i = 0; i < count; i++) dx[i] += MASKED(i);
        return;
    }
#define BOTH(FIRST, SECOND) \
    for (size_t i = 0; i < count; i++) { \
        const float g = MASKED(i); \
        FIRST; \
        SECOND; \
    }
    switch (overwrite & 3) {
    case 0: BOTH(dx[i] += g, dx2[i] += g) break;
    case 1: BOTH(dx[i] = g, dx2[i] += g) break;
    case 2: BOTH(dx[i] += g, dx2[i] = g) break;
    default: BOTH(dx[i] = g, dx2[i] = g) break;
    }
#undef BOTH
#undef MASKED
}

// The adjoint of im2col: adds the patch rows of output pixels row0 .. row0 + rows - 1 (dcol,
// kh * kw * c floats a row, taps in (kh, kw, c) order) into the NHWC batch dx; taps in the
// padding are dropped. Patches in order, each tap row as one run of kw * c floats (less the
// padding's columns), so every element of dx gets its additions in the same order as a scalar
// loop's, on every instruction set: the same bits.
void FN(catdog_col2im)(const float *restrict dcol, float *restrict dx, size_t ih, size_t iw, size_t c, size_t kh,
                       size_t kw, size_t sh, size_t sw, size_t pad_top, size_t pad_left, size_t oh, size_t ow,
                       size_t row0, size_t rows) {
    const size_t per_image = oh * ow, patch = kh * kw * c;
    for (size_t r = 0; r < rows; r++) {
        const size_t pixel = row0 + r, n = pixel / per_image, within = pixel - n * per_image;
        const long y0 = (long)((within / ow) * sh) - (long)pad_top, x0 = (long)((within % ow) * sw) - (long)pad_left;
        const long first = x0 < 0 ? -x0 : 0, last = x0 + (long)kw > (long)iw ? (long)iw - x0 : (long)kw;
        if (last <= first) continue;
        const size_t span = (size_t)(last - first) * c;
        for (size_t i = 0; i < kh; i++) {
            const long y = y0 + (long)i;
            if (y < 0 || y >= (long)ih) continue;
            const float *restrict src = dcol + r * patch + (i * kw + (size_t)first) * c;
            float *restrict dst = dx + ((n * ih + (size_t)y) * iw + (size_t)(x0 + first)) * c;
            for (size_t k = 0; k < span; k++) dst[k] += src[k];
        }
    }
}
