// Included by kernels_v4.c, kernels_v3.c and kernels_base.c: compiled once per instruction set.
//
// Depthwise convolution, NHWC, one k×k filter per channel (weights [ky][kx][c]). Each output
// pixel sums its taps in the order ky, kx from the bias (or 0), as the reference loop does.
// Inside the image, four neighbouring output pixels and 16 channels at a time are held in
// registers (four vectors of 16 lanes), so that a tap costs one weight load and four input
// loads for four multiply-adds; pixels whose taps leave the image take the plain loop.

#define DW_LANES 16
#define DW_PIXELS 4

// The taps of output row oy (or column ox) that land inside an input of `in` rows: [first, last).
static inline void FN(dw_taps)(size_t o, size_t stride, size_t pad, size_t in, size_t k, size_t *first, size_t *last) {
    const ptrdiff_t start = (ptrdiff_t)(o * stride) - (ptrdiff_t)pad;
    *first = start < 0 ? (size_t)(-start) : 0;
    const ptrdiff_t end = (ptrdiff_t)in - start;  // taps t with start + t < in
    *last = end <= 0 ? 0 : ((size_t)end < k ? (size_t)end : k);
    if (*last < *first) *last = *first;
}

// The output columns [lo, hi) that the blocked path takes: those whose k taps all land inside
// a row of `in` columns, and none when the channels do not come in whole blocks of 16.
static inline void FN(dw_interior)(size_t out, size_t stride, size_t pad, size_t in, size_t k, size_t c, size_t *lo, size_t *hi) {
    *lo = (pad + stride - 1) / stride;
    *hi = in + pad >= k && c % DW_LANES == 0 ? (in + pad - k) / stride + 1 : 0;
    if (*hi > out) *hi = out;
    if (*lo > *hi) *lo = *hi;
}

void FN(catdog_depthwise_forward)(const float *restrict x, const float *restrict w, const float *restrict bias,
                                  float *restrict y, size_t batch, size_t ih, size_t iw, size_t c, size_t k,
                                  size_t stride, size_t pad_top, size_t pad_left, size_t oh, size_t ow) {
    size_t lo, hi;
    FN(dw_interior)(ow, stride, pad_left, iw, k, c, &lo, &hi);
    for (size_t n = 0; n < batch; n++) {
        const float *image = x + n * ih * iw * c;
        for (size_t oy = 0; oy < oh; oy++) {
            size_t ky0, ky1;
            FN(dw_taps)(oy, stride, pad_top, ih, k, &ky0, &ky1);
            const size_t iy0 = oy * stride + ky0 - pad_top;  // the input row of tap ky0
            float *row = y + (n * oh + oy) * ow * c;
            size_t ox = 0;
            while (ox < ow) {
                if (ox >= lo && ox + DW_PIXELS <= hi) {
                    const size_t ix0 = ox * stride - pad_left;
                    for (size_t c0 = 0; c0 < c; c0 += DW_LANES) {
                        float a0[DW_LANES], a1[DW_LANES], a2[DW_LANES], a3[DW_LANES];
                        for (size_t j = 0; j < DW_LANES; j++) a0[j] = a1[j] = a2[j] = a3[j] = bias ? bias[c0 + j] : 0.0f;
                        for (size_t ky = ky0; ky < ky1; ky++) {
                            const float *in = image + ((iy0 + ky - ky0) * iw + ix0) * c + c0;
                            const float *wk = w + ky * k * c + c0;
                            for (size_t kx = 0; kx < k; kx++, in += c, wk += c) {
                                const float *p0 = in, *p1 = in + stride * c, *p2 = in + 2 * stride * c, *p3 = in + 3 * stride * c;
                                for (size_t j = 0; j < DW_LANES; j++) {
                                    const float v = wk[j];
                                    a0[j] += p0[j] * v;
                                    a1[j] += p1[j] * v;
                                    a2[j] += p2[j] * v;
                                    a3[j] += p3[j] * v;
                                }
                            }
                        }
                        float *o = row + ox * c + c0;
                        for (size_t j = 0; j < DW_LANES; j++) {
                            o[j] = a0[j];
                            o[c + j] = a1[j];
                            o[2 * c + j] = a2[j];
                            o[3 * c + j] = a3[j];
                        }
                    }
                    ox += DW_PIXELS;
                    continue;
                }
                // One pixel, any taps and any channel count.
                size_t kx0, kx1;
                FN(dw_taps)(ox, stride, pad_left, iw, k, &kx0, &kx1);
                float *o = row + ox * c;
                if (bias) for (size_t ch = 0; ch < c; ch++) o[ch] = bias[ch];
                else for (size_t ch = 0; ch < c; ch++) o[ch] = 0.0f;
                for (size_t ky = ky0; ky < ky1; ky++) {
                    const size_t iy = oy * stride + ky - pad_top;
                    for (size_t kx = kx0; kx < kx1; kx++) {
                        const size_t ix = ox * stride + kx - pad_left;
                        const float *in = image + (iy * iw + ix) * c;
                        const float *wk = w + (ky * k + kx) * c;
                        for (size_t ch = 0; ch < c; ch++) o[ch] += in[ch] * wk[ch];
                    }
                }
                ox++;
            }
        }
    }
}

// dw[ky][kx][ch] += Σ x·dy, dbias[ch] += Σ dy (when given), dx += w·dy (when given), over the
// batch, each sum in the order of the output pixels. Inside the image, four output pixels and
// 16 channels at a time: their dy in registers, each tap's dw loaded and stored once for the
// four.
void FN(catdog_depthwise_backward)(const float *restrict x, const float *restrict w, const float *restrict dy,
                                   float *restrict dw, float *restrict dbias, float *restrict dx, size_t batch,
                                   size_t ih, size_t iw, size_t c, size_t k, size_t stride, size_t pad_top,
                                   size_t pad_left, size_t oh, size_t ow) {
    size_t lo, hi;
    FN(dw_interior)(ow, stride, pad_left, iw, k, c, &lo, &hi);
    for (size_t n = 0; n < batch; n++) {
        const float *image = x + n * ih * iw * c;
        float *dimage = dx ? dx + n * ih * iw * c : NULL;
        for (size_t oy = 0; oy < oh; oy++) {
            size_t ky0, ky1;
            FN(dw_taps)(oy, stride, pad_top, ih, k, &ky0, &ky1);
            const float *row = dy + (n * oh + oy) * ow * c;
            size_t ox = 0;
            while (ox < ow) {
                if (ox >= lo && ox + DW_PIXELS <= hi) {
                    const size_t ix0 = ox * stride - pad_left, step = stride * c;
                    for (size_t c0 = 0; c0 < c; c0 += DW_LANES) {
                        const float *g = row + ox * c + c0;
                        float g0[DW_LANES], g1[DW_LANES], g2[DW_LANES], g3[DW_LANES];
                        for (size_t j = 0; j < DW_LANES; j++) {
                            g0[j] = g[j];
                            g1[j] = g[c + j];
                            g2[j] = g[2 * c + j];
                            g3[j] = g[3 * c + j];
                        }
                        if (dbias)
                            for (size_t j = 0; j < DW_LANES; j++) dbias[c0 + j] = (((dbias[c0 + j] + g0[j]) + g1[j]) + g2[j]) + g3[j];
                        for (size_t ky = ky0; ky < ky1; ky++) {
                            const size_t at = ((oy * stride + ky - pad_top) * iw + ix0) * c + c0;
                            for (size_t kx = 0; kx < k; kx++) {
                                const float *p = image + at + kx * c;
                                float *d = dw + (ky * k + kx) * c + c0;
                                for (size_t j = 0; j < DW_LANES; j++)
                                    d[j] = (((d[j] + p[j] * g0[j]) + p[step + j] * g1[j]) + p[2 * step + j] * g2[j]) + p[3 * step + j] * g3[j];
                                if (dimage) {
                                    const float *wk = w + (ky * k + kx) * c + c0;
                                    float *q = dimage + at + kx * c;
                                    for (size_t j = 0; j < DW_LANES; j++) q[j] += wk[j] * g0[j];
                                    for (size_t j = 0; j < DW_LANES; j++) q[step + j] += wk[j] * g1[j];
                                    for (size_t j = 0; j < DW_LANES; j++) q[2 * step + j] += wk[j] * g2[j];
                                    for (size_t j = 0; j < DW_LANES; j++) q[3 * step + j] += wk[j] * g3[j];
                                }
                            }
                        }
                    }
                    ox += DW_PIXELS;
                    continue;
                }
                // One pixel, any taps and any channel count.
                const float *g = row + ox * c;
                if (dbias) for (size_t ch = 0; ch < c; ch++) dbias[ch] += g[ch];
                size_t kx0, kx1;
                FN(dw_taps)(ox, stride, pad_left, iw, k, &kx0, &kx1);
                for (size_t ky = ky0; ky < ky1; ky++) {
                    const size_t iy = oy * stride + ky - pad_top;
                    for (size_t kx = kx0; kx < kx1; kx++) {
                        const size_t at = (iy * iw + ox * stride + kx - pad_left) * c;
                        const float *p = image + at;
                        float *d = dw + (ky * k + kx) * c;
                        for (size_t ch = 0; ch < c; ch++) d[ch] += p[ch] * g[ch];
                        if (dimage) {
                            const float *wk = w + (ky * k + kx) * c;
                            float *q = dimage + at;
                            for (size_t ch = 0; ch < c; ch++) q[ch] += wk[ch] * g[ch];
                        }
                    }
                }
                ox++;
            }
        }
    }
}

#undef DW_LANES
#undef DW_PIXELS
