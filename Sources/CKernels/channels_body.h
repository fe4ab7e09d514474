// Included by kernels_v4.c, kernels_v3.c and kernels_base.c: compiled once per instruction set.


// The activation (0 linear, 1 ReLU, 2 ReLU6) of a value, NaN staying NaN as with Swift's max.
#define CATDOG_ACTIVATE(v, activation) \
    ((activation) == 1 ? ((v) < 0.0f ? 0.0f : (v)) : (activation) == 2 ? ((v) < 0.0f ? 0.0f : ((v) > 6.0f ? 6.0f : (v))) : (v))

// x̂ = (x − mean)·(1/σ), by every kernel below in these operations (a subtraction, then a product:
// nothing to fuse), so that backward recomputes forward's x̂ bit for bit from x instead of
// reading a stored copy: one activation-sized stream less each way.
#define CATDOG_NORMALIZED(x, mean, inv_std, k) (((x)[k] - (mean)[k]) * (inv_std)[k])

// One loop per activation, so that each vectorises without a branch inside.
#define CATDOG_PER_ACTIVATION(activation, LOOP) \
    do { if ((activation) == 1) { LOOP(1) } else if ((activation) == 2) { LOOP(2) } else { LOOP(0) } } while (0)

void FN(catdog_batchnorm_forward)(const float *restrict x, const float *restrict mean, const float *restrict inv_std,
                              const float *restrict gamma, const float *restrict beta, float *restrict y, size_t rows,
                              size_t c, int activation) {
#define BN_LOOP(A) \
    for (size_t r = 0; r < rows; r++, x += c, y += c) \
        for (size_t k = 0; k < c; k++) { \
            float n = CATDOG_NORMALIZED(x, mean, inv_std, k); \
            float v = gamma[k] * n + beta[k]; \
            y[k] = CATDOG_ACTIVATE(v, A); \
        }
    CATDOG_PER_ACTIVATION(activation, BN_LOOP);
#undef BN_LOOP
}

void FN(catdog_batchnorm_add)(const float *restrict x, const float *restrict mean, const float *restrict inv_std,
                              const float *restrict gamma, const float *restrict beta, const float *restrict addend,
                              float *restrict y, size_t rows, size_t c, int activation) {
#define BN_ADD_LOOP(A) \
    for (size_t r = 0; r < rows; r++, x += c, addend += c, y += c) \
        for (size_t k = 0; k < c; k++) { \
            float n = CATDOG_NORMALIZED(x, mean, inv_std, k); \
            float v = gamma[k] * n + beta[k]; \
            float sum = v + addend[k]; \
            y[k] = CATDOG_ACTIVATE(sum, A); \
        }
    CATDOG_PER_ACTIVATION(activation, BN_ADD_LOOP);
#undef BN_ADD_LOOP
}

void FN(catdog_scale_shift)(const float *restrict x, const float *restrict scale, const float *restrict shift,
                        float *restrict y, size_t rows, size_t c, int activation) {
#define SCALE_LOOP(A) \
    for (size_t r = 0; r < rows; r++, x += c, y += c) \
        for (size_t k = 0; k < c; k++) { float v = x[k] * scale[k] + shift[k]; y[k] = CATDOG_ACTIVATE(v, A); }
    CATDOG_PER_ACTIVATION(activation, SCALE_LOOP);
#undef SCALE_LOOP
}

void FN(catdog_add_activation)(const float *restrict a, const float *restrict b, float *restrict y, size_t count, int activation) {
#define ADD_LOOP(A) \
    for (size_t i = 0; i < count; i++) { float v = a[i] + b[i]; y[i] = CATDOG_ACTIVATE(v, A); }
    CATDOG_PER_ACTIVATION(activation, ADD_LOOP);
#undef ADD_LOOP
}

// The channels a block of the two kernels below sums at once, in registers: two vectors of
// doubles per sum (CATDOG_VECTOR_FLOATS floats a vector), so that the sums stay in registers
// over all the rows instead of a load and a store per row; the narrower blocks take the
// channels left over. Each channel's sum still adds its rows in order, so the block changes
// no bit of the result, on any instruction set.
#define CATDOG_CHANNEL_BLOCK (2 * CATDOG_VECTOR_FLOATS)

// Runs BODY(B) on blocks of B = CATDOG_CHANNEL_BLOCK channels, then of 8 and of 1 for the rest;
// BODY advances k0 past the channels it summed.
#define CATDOG_CHANNEL_BLOCKS(BODY) \
    do { size_t k0 = 0; BODY(CATDOG_CHANNEL_BLOCK) BODY(8) BODY(1) } while (0)

// Per channel over rows: the mean and the (biased) variance in one pass, in double, of the
// values less the first row's (so that a large mean does not cancel the variance's digits).
void FN(catdog_channel_moments)(const float *restrict x, size_t rows, size_t c, double *restrict mean,
                                double *restrict variance) {
    for (size_t k = 0; k < c; k++) { mean[k] = 0; variance[k] = 0; }
    if (rows == 0) return;
    const float *restrict first = x;
#define MOMENTS_BLOCK(B) \
    for (; k0 + (B) <= c; k0 += (B)) { \
        double s[B], q[B]; \
        for (size_t k = 0; k < (B); k++) { s[k] = 0; q[k] = 0; } \
        const float *restrict xr = x + k0, *restrict f = first + k0; \
        for (size_t r = 0; r < rows; r++, xr += c) \
            for (size_t k = 0; k < (B); k++) { \
                double d = (double)xr[k] - (double)f[k]; \
                s[k] += d; \
                q[k] += d * d; \
            } \
        for (size_t k = 0; k < (B); k++) { mean[k0 + k] = s[k]; variance[k0 + k] = q[k]; } \
    }
    CATDOG_CHANNEL_BLOCKS(MOMENTS_BLOCK);
#undef MOMENTS_BLOCK
    for (size_t k = 0; k < c; k++) {
        double m = mean[k] / (double)rows, v = variance[k] / (double)rows - m * m;
        mean[k] = m + (double)first[k];
        variance[k] = v < 0 ? 0 : v;  // rounding below 0 clamped; NaN kept
    }
}

// Per channel, sum = Σ dy and dot = Σ dy·x̂ (x̂ from x, mean and 1/σ as forward made it), after
// the activation's mask (dy = 0 where the activation did not pass its input, written back
// into dy), in one pass. The mask is judged by the activation's input v = γ·x̂ + β, recomputed
// from x as catdog_batchnorm_forward computes it (the same expression, contracted alike), not
// read from the output: the activation passes v where v > 0 (ReLU; ReLU6 also v < 6), exactly
// where its output y is > 0 (and < 6), NaN and −0 included; one activation-sized read less.
void FN(catdog_batchnorm_gradient_sums)(const float *restrict gamma, const float *restrict beta, float *restrict dy,
                                        const float *restrict x, const float *restrict mean, const float *restrict inv_std,
                                        size_t rows, size_t c, int activation, double *restrict sum, double *restrict dot) {
#define SUMS_BLOCK(B, A) \
    for (; k0 + (B) <= c; k0 += (B)) { \
        double s[B], q[B]; \
        for (size_t k = 0; k < (B); k++) { s[k] = 0; q[k] = 0; } \
        float *restrict d = dy + k0; \
        const float *restrict xr = x + k0, *restrict mu = mean + k0, *restrict is = inv_std + k0; \
        const float *restrict ga = gamma + k0, *restrict be = beta + k0; \
        for (size_t r = 0; r < rows; r++, d += c, xr += c) \
            for (size_t k = 0; k < (B); k++) { \
                float g = d[k]; \
                float n = CATDOG_NORMALIZED(xr, mu, is, k); \
                if (A != 0) { \
                    float v = ga[k] * n + be[k]; \
                    if (A == 1) g = v > 0.0f ? g : 0.0f; \
                    if (A == 2) g = (v > 0.0f && v < 6.0f) ? g : 0.0f; \
                    d[k] = g; \
                } \
                s[k] += (double)g; \
                q[k] += (double)(g * n); \
            } \
        for (size_t k = 0; k < (B); k++) { sum[k0 + k] = s[k]; dot[k0 + k] = q[k]; } \
    }
#define SUMS_LOOP(A) \
    CATDOG_CHANNEL_BLOCKS(SUMS_BLOCK_##A);
#define SUMS_BLOCK_0(B) SUMS_BLOCK(B, 0)
#define SUMS_BLOCK_1(B) SUMS_BLOCK(B, 1)
#define SUMS_BLOCK_2(B) SUMS_BLOCK(B, 2)
    CATDOG_PER_ACTIVATION(activation, SUMS_LOOP);
#undef SUMS_LOOP
#undef SUMS_BLOCK_0
#undef SUMS_BLOCK_1
#undef SUMS_BLOCK_2
#undef SUMS_BLOCK
}

void FN(catdog_batchnorm_dx)(const float *restrict dy, const float *restrict x, const float *restrict mean,
                             const float *restrict inv_std, const float *restrict kk, const float *restrict mean_dy,
                             const float *restrict mean_dot, float *restrict dx, size_t rows, size_t c, int overwrite) {
#define DX_LOOP(OP) \
    for (size_t r = 0; r < rows; r++, dy += c, x += c, dx += c) \
        for (size_t k = 0; k < c; k++) { \
            float n = CATDOG_NORMALIZED(x, mean, inv_std, k); \
            dx[k] OP kk[k] * (dy[k] - mean_dy[k] - n * mean_dot[k]); \
        }
    if (overwrite) {
        DX_LOOP(=)
    } else {
        DX_LOOP(+=)
    }
#undef DX_LOOP
}

void FN(catdog_bias_activation)(float *restrict y, const float *restrict bias, size_t rows, size_t c, int activation) {
    for (size_t r = 0; r < rows; r++, y += c) {
        if (bias)
            for (size_t k = 0; k < c; k++) y[k] += bias[k];
        if (activation == 1)
            for (size_t k = 0; k < c; k++) y[k] = y[k] < 0.0f ? 0.0f : y[k];  // NaN stays NaN, as Swift's max
        else if (activation == 2)
            for (size_t k = 0; k < c; k++) y[k] = y[k] < 0.0f ? 0.0f : (y[k] > 6.0f ? 6.0f : y[k]);
    }
}

void FN(catdog_mask_bias_gradient)(const float *restrict y, float *restrict dy, float *restrict dbias, size_t rows, size_t c,
                               int activation) {
    for (size_t r = 0; r < rows; r++, y += c, dy += c) {
        if (activation == 1)
            for (size_t k = 0; k < c; k++) dy[k] = y[k] > 0.0f ? dy[k] : 0.0f;
        else if (activation == 2)
            for (size_t k = 0; k < c; k++) dy[k] = (y[k] > 0.0f && y[k] < 6.0f) ? dy[k] : 0.0f;
        if (dbias)
            for (size_t k = 0; k < c; k++) dbias[k] += dy[k];
    }
}

// The moving average of the weights: avg = d·avg + (1 - d)·w, without fused multiply-adds.
void FN(catdog_moving_average)(float *restrict avg, const float *restrict w, size_t n, float d) {
#pragma clang fp contract(off)
    const float e = 1.0f - d;
    for (size_t i = 0; i < n; i++) avg[i] = d * avg[i] + e * w[i];
}

// AdamW's whole update in one pass over memory instead of three: w·keep (decoupled weight
// decay; keep = 1 leaves w as it is), Adam's step as catdog_adam_step, then, with avg, the
// moving average as catdog_moving_average. Each element gets the same bits as the three passes.
void FN(catdog_adam_average_step)(float *restrict w, const float *restrict g, float *restrict m, float *restrict v,
                                  float *restrict avg, size_t n, float b1, float b2, float alpha, float eps, float keep,
                                  float d) {
#pragma clang fp contract(off)
    const float e = 1.0f - d;
#define ADAM_ELEMENT(i) \
    float mi = m[i] + (g[i] - m[i]) * b1; \
    float vi = v[i] + (g[i] * g[i] - v[i]) * b2; \
    m[i] = mi; \
    v[i] = vi; \
    float wi = w[i] * keep; \
    wi = wi - alpha * mi / (__builtin_sqrtf(vi) + eps); \
    w[i] = wi
    if (avg) {
        for (size_t i = 0; i < n; i++) {
            ADAM_ELEMENT(i);
            avg[i] = d * avg[i] + e * wi;
        }
    } else {
        for (size_t i = 0; i < n; i++) { ADAM_ELEMENT(i); }
    }
#undef ADAM_ELEMENT
}

// Adam's step, in the operations and order of the Swift formula it replaced and without fused
// multiply-adds, so that every instruction set (and every rank) computes the same bits:
// m += (g - m)·b1; v += (g·g - v)·b2; w -= alpha·m / (√v + eps).
void FN(catdog_adam_step)(float *restrict w, const float *restrict g, float *restrict m, float *restrict v, size_t n,
                          float b1, float b2, float alpha, float eps) {
    FN(catdog_adam_average_step)(w, g, m, v, NULL, n, b1, b2, alpha, eps, 1.0f, 0.0f);
}

// LAMB's first pass over one tensor: Adam's moments (as catdog_adam_step), and the squared norms
// of the weights and of the step u = m·c1 / (√(v·c2) + eps) in double, summed in 8 lanes of
// fixed order (element i into lane i mod 8, the lanes added 0 to 7), so that every instruction
// set gives the same bits. norms[0] = ‖w‖², norms[1] = ‖u‖².
void FN(catdog_lamb_moments)(const float *restrict w, const float *restrict g, float *restrict m, float *restrict v, size_t n,
                             float b1, float b2, float c1, float c2, float eps, double *restrict norms) {
#pragma clang fp contract(off)
    double wn[8] = {0}, un[8] = {0};
#define LAMB_ELEMENT(j, lane) \
    do { \
        float mi = m[j] + (g[j] - m[j]) * b1; \
        float vi = v[j] + (g[j] * g[j] - v[j]) * b2; \
        m[j] = mi; \
        v[j] = vi; \
        float u = mi * c1 / (__builtin_sqrtf(vi * c2) + eps); \
        wn[lane] += (double)w[j] * (double)w[j]; \
        un[lane] += (double)u * (double)u; \
    } while (0)
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (size_t l = 0; l < 8; l++) LAMB_ELEMENT(i + l, l);
    for (size_t l = 0; i + l < n; l++) LAMB_ELEMENT(i + l, l);
#undef LAMB_ELEMENT
    norms[0] = 0;
    norms[1] = 0;
    for (size_t l = 0; l < 8; l++) {
        norms[0] += wn[l];
        norms[1] += un[l];
    }
}

// LAMB's second pass: w -= rate · m·c1 / (√(v·c2) + eps).
void FN(catdog_lamb_apply)(float *restrict w, const float *restrict m, const float *restrict v, size_t n, float rate,
                           float c1, float c2, float eps) {
#pragma clang fp contract(off)
    for (size_t i = 0; i < n; i++) w[i] = w[i] - rate * (m[i] * c1 / (__builtin_sqrtf(v[i] * c2) + eps));
}

// dst (cols x rows) = srcᵀ, in blocks of 16 x 16 that stay in cache. kernels_v4.c and
// kernels_v3.c have their own, transposing each block in registers, and `transpose_edges` for
// what their blocks leave (the scalar loop for a compiler without the intrinsics).
#if defined(CATDOG_TRANSPOSE_IN_REGISTERS) || defined(CATDOG_TRANSPOSE8_IN_REGISTERS)
// The values outside the blocks of fullRows x fullCols: the columns right of the last full
// block, then the rows below it.
static inline void transpose_edges(const float *restrict src, size_t rows, size_t cols, float *restrict dst,
                                   size_t fullRows, size_t fullCols) {
    for (size_t r = 0; r < fullRows; r++)
        for (size_t c = fullCols; c < cols; c++) dst[c * rows + r] = src[r * cols + c];
    for (size_t r = fullRows; r < rows; r++)
        for (size_t c = 0; c < cols; c++) dst[c * rows + r] = src[r * cols + c];
}
#endif
#if !defined(CATDOG_TRANSPOSE_IN_REGISTERS) && !defined(CATDOG_TRANSPOSE8_IN_REGISTERS)
void FN(catdog_transpose)(const float *restrict src, size_t rows, size_t cols, float *restrict dst) {
#else
static void transpose_scalar(const float *restrict src, size_t rows, size_t cols, float *restrict dst) {
#endif
    enum { B = 16 };
    for (size_t r0 = 0; r0 < rows; r0 += B)
        for (size_t c0 = 0; c0 < cols; c0 += B) {
            const size_t r1 = r0 + B < rows ? r0 + B : rows, c1 = c0 + B < cols ? c0 + B : cols;
            for (size_t r = r0; r < r1; r++)
                for (size_t c = c0; c < c1; c++) dst[c * rows + r] = src[r * cols + c];
        }
}
