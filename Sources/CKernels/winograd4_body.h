// Included by kernels_v4.c, kernels_v3.c and kernels_base.c: compiled once per instruction set.



// 1-D transforms along six (or four, or three) vectors of n floats.

// Bᵀ x for a 6-vector x: the rows of Bᵀ are
//   [4 0 -5 0 1 0] [0 -4 -4 1 1 0] [0 4 -4 -1 1 0] [0 -2 -1 2 1 0] [0 2 -1 -2 1 0] [0 4 0 -5 0 1]
static inline void bt6(const float *restrict x0, const float *restrict x1, const float *restrict x2,
                       const float *restrict x3, const float *restrict x4, const float *restrict x5,
                       float *restrict o0, float *restrict o1, float *restrict o2, float *restrict o3,
                       float *restrict o4, float *restrict o5, size_t n) {
    for (size_t k = 0; k < n; k++) {
        float a0 = x0[k], a1 = x1[k], a2 = x2[k], a3 = x3[k], a4 = x4[k], a5 = x5[k];
        float p = a4 - 4.0f * a2, q = a3 - 4.0f * a1;   // rows 1, 2
        float r = a4 - a2, s = 2.0f * (a3 - a1);        // rows 3, 4
        o0[k] = 4.0f * a0 - 5.0f * a2 + a4;
        o1[k] = p + q;
        o2[k] = p - q;
        o3[k] = r + s;
        o4[k] = r - s;
        o5[k] = 4.0f * a1 - 5.0f * a3 + a5;
    }
}

// Aᵀ x for a 6-vector x: rows [1 1 1 1 1 0] [0 1 -1 2 -2 0] [0 1 1 4 4 0] [0 1 -1 8 -8 1]
static inline void at6(const float *restrict x0, const float *restrict x1, const float *restrict x2,
                       const float *restrict x3, const float *restrict x4, const float *restrict x5,
                       float *restrict o0, float *restrict o1, float *restrict o2, float *restrict o3, size_t n) {
    for (size_t k = 0; k < n; k++) {
        float a0 = x0[k], a1 = x1[k], a2 = x2[k], a3 = x3[k], a4 = x4[k], a5 = x5[k];
        float sp = a1 + a2, sm = a1 - a2, tp = a3 + a4, tm = a3 - a4;
        o0[k] = a0 + sp + tp;
        o1[k] = sm + 2.0f * tm;
        o2[k] = sp + 4.0f * tp;
        o3[k] = sm + 8.0f * tm + a5;
    }
}

// A x for a 4-vector x (the transpose of at6): six outputs.
static inline void a4(const float *restrict x0, const float *restrict x1, const float *restrict x2,
                      const float *restrict x3, float *restrict o0, float *restrict o1, float *restrict o2,
                      float *restrict o3, float *restrict o4, float *restrict o5, size_t n) {
    for (size_t k = 0; k < n; k++) {
        float a0 = x0[k], a1 = x1[k], a2 = x2[k], a3 = x3[k];
        float e = a0 + a2, o = a1 + a3;
        o0[k] = a0;
        o1[k] = e + o;
        o2[k] = e - o;
        o3[k] = a0 + 2.0f * a1 + 4.0f * a2 + 8.0f * a3;
        o4[k] = a0 - 2.0f * a1 + 4.0f * a2 - 8.0f * a3;
        o5[k] = a3;
    }
}

static void input_lanes(const float *const d[36], float *v, size_t vstride, size_t n, float *work) {
    // t = Bᵀ d: along each column s of the tile; then V = t B: along each row of t.
    for (int s = 0; s < 6; s++) {
        float *t = work + (size_t)s * n;
        bt6(d[s], d[6 + s], d[12 + s], d[18 + s], d[24 + s], d[30 + s],
            t, t + 6 * n, t + 12 * n, t + 18 * n, t + 24 * n, t + 30 * n, n);
    }
    for (int r = 0; r < 6; r++) {
        const float *t = work + (size_t)(6 * r) * n;
        float *o = v + (size_t)(6 * r) * vstride;
        bt6(t, t + n, t + 2 * n, t + 3 * n, t + 4 * n, t + 5 * n,
            o, o + vstride, o + 2 * vstride, o + 3 * vstride, o + 4 * vstride, o + 5 * vstride, n);
    }
}

static void output_lanes(const float *m, size_t mstride, float *const y[16], size_t n, int accumulate, float *work) {
    // t (4x6) = Aᵀ M along columns; then Y = t A along rows, into work + 0..3 (per output row).
    float *t = work;                 // 24 * n
    for (int s = 0; s < 6; s++) {
        at6(m + (size_t)s * mstride, m + (size_t)(6 + s) * mstride, m + (size_t)(12 + s) * mstride,
            m + (size_t)(18 + s) * mstride, m + (size_t)(24 + s) * mstride, m + (size_t)(30 + s) * mstride,
            t + (size_t)s * n, t + (size_t)(6 + s) * n, t + (size_t)(12 + s) * n, t + (size_t)(18 + s) * n, n);
    }
    for (int r = 0; r < 4; r++) {
        const float *row = t + (size_t)(6 * r) * n;
        float *const *out = y + 4 * r;
        if (!out[0] && !out[1] && !out[2] && !out[3]) continue;
        const float *x0 = row, *x1 = row + n, *x2 = row + 2 * n, *x3 = row + 3 * n, *x4 = row + 4 * n, *x5 = row + 5 * n;
        if (out[0] && out[1] && out[2] && out[3]) {
            float *restrict o0 = out[0], *restrict o1 = out[1], *restrict o2 = out[2], *restrict o3 = out[3];
            if (accumulate) {
                for (size_t k = 0; k < n; k++) {
                    float sp = x1[k] + x2[k], sm = x1[k] - x2[k], tp = x3[k] + x4[k], tm = x3[k] - x4[k];
                    o0[k] += x0[k] + sp + tp;
                    o1[k] += sm + 2.0f * tm;
                    o2[k] += sp + 4.0f * tp;
                    o3[k] += sm + 8.0f * tm + x5[k];
                }
            } else {
                for (size_t k = 0; k < n; k++) {
                    float sp = x1[k] + x2[k], sm = x1[k] - x2[k], tp = x3[k] + x4[k], tm = x3[k] - x4[k];
                    o0[k] = x0[k] + sp + tp;
                    o1[k] = sm + 2.0f * tm;
                    o2[k] = sp + 4.0f * tp;
                    o3[k] = sm + 8.0f * tm + x5[k];
                }
            }
        } else {
            // A tile clipped by the image's right edge: the columns that exist, one by one.
            static const float coef[4][6] = {{1, 1, 1, 1, 1, 0}, {0, 1, -1, 2, -2, 0}, {0, 1, 1, 4, 4, 0}, {0, 1, -1, 8, -8, 1}};
            for (int c = 0; c < 4; c++) {
                float *restrict o = out[c];
                if (!o) continue;
                const float *cf = coef[c];
                for (size_t k = 0; k < n; k++) {
                    float value = cf[0] * x0[k] + cf[1] * x1[k] + cf[2] * x2[k] + cf[3] * x3[k] + cf[4] * x4[k] + cf[5] * x5[k];
                    o[k] = accumulate ? o[k] + value : value;
                }
            }
        }
    }
}

static void output_gradient_lanes(const float *const dy[16], float *dm, size_t stride, size_t n, float *work) {
    // t (6x4) = A dY along columns; then dM = t Aᵀ along rows.
    float *t = work;                 // 24 * n: t[r][s] at (r*4+s)*n
    for (int s = 0; s < 4; s++) {
        a4(dy[s], dy[4 + s], dy[8 + s], dy[12 + s],
           t + (size_t)s * n, t + (size_t)(4 + s) * n, t + (size_t)(8 + s) * n, t + (size_t)(12 + s) * n,
           t + (size_t)(16 + s) * n, t + (size_t)(20 + s) * n, n);
    }
    for (int r = 0; r < 6; r++) {
        const float *row = t + (size_t)(4 * r) * n;
        float *o = dm + (size_t)(6 * r) * stride;
        a4(row, row + n, row + 2 * n, row + 3 * n,
           o, o + stride, o + 2 * stride, o + 3 * stride, o + 4 * stride, o + 5 * stride, n);
    }
}


// The same transforms on CATDOG_VECTOR_FLOATS channels at a time with the whole tile in
// registers (spilled to the stack where 36 vectors do not fit), instead of six-vector passes
// through `work`: each output the same expression of the same inputs as the loops above, so the
// same bits (clang contracts a * b + c the same way for floats and vectors of them).
typedef float wvec __attribute__((vector_size(4 * CATDOG_VECTOR_FLOATS)));
#define WL CATDOG_VECTOR_FLOATS

static inline wvec wload(const float *p) {
    wvec v;
    __builtin_memcpy(&v, p, sizeof v);
    return v;
}
static inline void wstore(float *p, wvec v) { __builtin_memcpy(p, &v, sizeof v); }

#include "winograd4_shared.h"

void FN(catdog_wino4_input)(const float *const d[36], float *v, size_t vstride, size_t n, float *work) {
    FETCH_NEXT_TILES(d + 5, 6, 6, 8, n, 0);  // the pixels the tiles two and three on read
    size_t k = 0;
    for (; k + WL <= n; k += WL) {
        wvec o[36];
        BT6_TILE(d, k, wload, o);
        for (int xi = 0; xi < 36; xi++) wstore(v + (size_t)xi * vstride + k, o[xi]);
    }
    if (k == n) return;
    const float *rest[36];
    for (int i = 0; i < 36; i++) rest[i] = d[i] + k;
    input_lanes(rest, v + k, vstride, n - k, work);
}

// The bias (NULL: none) and activation (0 linear, 1 ReLU, 2 ReLU6) of a tile's present outputs
// (n floats each, a pixel `pixel` floats after the one to its left), as catdog_bias_activation
// applies them: for what the vector loop below does not take. A row's present pixels go in one
// call where they are whole pixels.
static void tile_bias_activation(float *const y[16], size_t n, size_t pixel, const float *bias, int activation) {
    if (!bias && activation == 0) return;
    for (int r = 0; r < 4; r++) {
        float *const *row = y + 4 * r;
        for (int s = 0; s < 4;) {
            if (!row[s]) {
                s++;
                continue;
            }
            int e = s + 1;
            while (n == pixel && e < 4 && row[e] == row[e - 1] + n) e++;
            FN(catdog_bias_activation)(row[s], bias, (size_t)(e - s), n, activation);
            s = e;
        }
    }
}

typedef int wmask __attribute__((vector_size(4 * CATDOG_VECTOR_FLOATS)));

// y + b, then ReLU or ReLU6 by masks: the bits of catdog_bias_activation's `y += bias[k]` and
// `y < 0 ? 0 : y` (NaN and -0 stay as they are).
static inline wvec bias_act(wvec y, const float *bias, size_t k, int activation) {
    if (bias) y = y + wload(bias + k);
    if (activation == 1) {
        const wmask below = y < 0.0f;
        return (wvec)((wmask)y & ~below);
    }
    if (activation == 2) {
        const wmask below = y < 0.0f, above = y > 6.0f;
        const wvec six = (wvec){0} + 6.0f;
        return (wvec)(((wmask)y & ~(below | above)) | ((wmask)six & above));
    }
    return y;
}

static inline void output_tile(const float *m, size_t mstride, float *const y[16], size_t n, int accumulate,
                               const float *bias, int activation, float *work) {
    // Rows of outputs wholly inside the image or wholly outside it; a tile clipped by the right
    // edge takes the loops above.
    for (int r = 0; r < 4; r++) {
        const int present = (y[4 * r] != 0) + (y[4 * r + 1] != 0) + (y[4 * r + 2] != 0) + (y[4 * r + 3] != 0);
        if (present != 0 && present != 4) {
            output_lanes(m, mstride, y, n, accumulate, work);
            if (!accumulate) tile_bias_activation(y, n, n, bias, activation);
            return;
        }
    }
    const int epilogue = !accumulate && (bias || activation);
    // The next tiles' outputs, fetched for writing (40% less time a tile of 32 channels alone on a core).
    FETCH_NEXT_TILES(y + 3, 4, 4, 5, n, 1);
    size_t k = 0;
    for (; k + WL <= n; k += WL) {
        wvec t[24];
        for (int s = 0; s < 6; s++) {
            const float *x = m + (size_t)s * mstride + k;
            wvec a0 = wload(x), a1 = wload(x + 6 * mstride), a2 = wload(x + 12 * mstride), a3 = wload(x + 18 * mstride),
                 a4 = wload(x + 24 * mstride), a5 = wload(x + 30 * mstride);
            wvec sp = a1 + a2, sm = a1 - a2, tp = a3 + a4, tm = a3 - a4;
            t[s] = a0 + sp + tp;
            t[6 + s] = sm + 2.0f * tm;
            t[12 + s] = sp + 4.0f * tp;
            t[18 + s] = sm + 8.0f * tm + a5;
        }
        for (int r = 0; r < 4; r++) {
            float *const *out = y + 4 * r;
            if (!out[0]) continue;
            const wvec *x = t + 6 * r;
            wvec sp = x[1] + x[2], sm = x[1] - x[2], tp = x[3] + x[4], tm = x[3] - x[4];
            wvec o0 = x[0] + sp + tp;
            wvec o1 = sm + 2.0f * tm;
            wvec o2 = sp + 4.0f * tp;
            wvec o3 = sm + 8.0f * tm + x[5];
            if (accumulate) {
                wstore(out[0] + k, wload(out[0] + k) + o0);
                wstore(out[1] + k, wload(out[1] + k) + o1);
                wstore(out[2] + k, wload(out[2] + k) + o2);
                wstore(out[3] + k, wload(out[3] + k) + o3);
            } else if (epilogue) {
                wstore(out[0] + k, bias_act(o0, bias, k, activation));
                wstore(out[1] + k, bias_act(o1, bias, k, activation));
                wstore(out[2] + k, bias_act(o2, bias, k, activation));
                wstore(out[3] + k, bias_act(o3, bias, k, activation));
            } else {
                wstore(out[0] + k, o0);
                wstore(out[1] + k, o1);
                wstore(out[2] + k, o2);
                wstore(out[3] + k, o3);
            }
        }
    }
    if (k == n) return;
    float *rest[16];
    for (int i = 0; i < 16; i++) rest[i] = y[i] ? y[i] + k : 0;
    output_lanes(m + k, mstride, rest, n - k, accumulate, work);
    if (!accumulate) tile_bias_activation(rest, n - k, n, bias ? bias + k : 0, activation);
}

void FN(catdog_wino4_output)(const float *m, size_t mstride, float *const y[16], size_t n, int accumulate, float *work) {
    output_tile(m, mstride, y, n, accumulate, 0, 0, work);
}

void FN(catdog_wino4_output_act)(const float *m, size_t mstride, float *const y[16], size_t n, const float *bias,
                                 int activation, float *work) {
    output_tile(m, mstride, y, n, 0, bias, activation, work);
}

void FN(catdog_wino4_output_pool)(const float *m, size_t mstride, float *const y[16], size_t n, const float *bias,
                                  int activation, const float *base, float *const pooled[4], int32_t *const arg[4],
                                  float *tile, float *work) {
    // The tile's outputs into `tile` (L1), where present; then each whole window's winner.
    float *t[16];
    for (int i = 0; i < 16; i++) t[i] = y[i] ? tile + (size_t)i * n : 0;
    output_tile(m, mstride, t, n, 0, bias, activation, work);
    for (int q = 0; q < 4; q++) {
        if (!pooled[q]) continue;
        const int i0 = 8 * (q / 2) + 2 * (q % 2);  // the window's top left: row 2R, column 2S
        const float *restrict p0 = t[i0], *restrict p1 = t[i0 + 1], *restrict p2 = t[i0 + 4], *restrict p3 = t[i0 + 5];
        const int32_t a0 = (int32_t)(y[i0] - base), a1 = (int32_t)(y[i0 + 1] - base), a2 = (int32_t)(y[i0 + 4] - base),
                      a3 = (int32_t)(y[i0 + 5] - base);
        float *restrict out = pooled[q];
        int32_t *restrict at = arg[q];
#pragma clang loop interleave_count(1)
        for (size_t k = 0; k < n; k++) {
            float best = p0[k];
            int32_t a = a0 + (int32_t)k;
            a = p1[k] > best ? a1 + (int32_t)k : a;
            best = p1[k] > best ? p1[k] : best;
            a = p2[k] > best ? a2 + (int32_t)k : a;
            best = p2[k] > best ? p2[k] : best;
            a = p3[k] > best ? a3 + (int32_t)k : a;
            best = p3[k] > best ? p3[k] : best;
            out[k] = best;
            at[k] = a;
        }
    }
}

void FN(catdog_wino4_output_gradient)(const float *const dy[16], float *dm, size_t stride, size_t n, float *work) {
    FETCH_NEXT_TILES(dy + 3, 4, 4, 5, n, 0);
    size_t k = 0;
    for (; k + WL <= n; k += WL) {
        wvec o[36];
        A4_TILE(dy, k, wload, o);
        for (int xi = 0; xi < 36; xi++) wstore(dm + (size_t)xi * stride + k, o[xi]);
    }
    if (k == n) return;
    const float *rest[16];
    for (int i = 0; i < 16; i++) rest[i] = dy[i] + k;
    output_gradient_lanes(rest, dm + k, stride, n - k, work);
}
#undef WL

// Both filter transforms are separable: U = (G g) Gᵀ and dg = Gᵀ (dU G), 162 vector
// multiply-adds per input channel where the 2-D sums took 324.

void FN(catdog_wino4_filter)(const float *w, float *u, size_t c, size_t f) {
    const size_t cf = c * f;
    float *t = malloc(18 * f * sizeof(float));  // t = G g, 6 x 3 vectors of f floats
    if (!t) abort();
    for (size_t ch = 0; ch < c; ch++) {
        const float *g = w + ch * f;  // g[i][j] at g + (i*3+j) * cf
        for (int r = 0; r < 6; r++)
            for (int j = 0; j < 3; j++) {
                float *restrict o = t + (size_t)(r * 3 + j) * f;
                const float *restrict g0 = g + (size_t)j * cf, *restrict g1 = g + (size_t)(3 + j) * cf,
                                      *restrict g2 = g + (size_t)(6 + j) * cf;
                for (size_t k = 0; k < f; k++) o[k] = WINO4_G_ROW(r, g0[k], g1[k], g2[k]);
            }
        for (int r = 0; r < 6; r++)
            for (int sx = 0; sx < 6; sx++) {
                float *restrict o = u + (size_t)(r * 6 + sx) * cf + ch * f;
                const float *restrict t0 = t + (size_t)(r * 3) * f, *restrict t1 = t0 + f, *restrict t2 = t1 + f;
                for (size_t k = 0; k < f; k++) o[k] = WINO4_G_ROW(sx, t0[k], t1[k], t2[k]);
            }
    }
    free(t);
}

void FN(catdog_wino4_filter_gradient)(const float *du, float *dw, size_t c, size_t f) {
    // t[r][j] = Σ_s dU[r][s] G[s][j]; dg[i][j] = Σ_r G[r][i] t[r][j] (G = WINO4_G).
    const size_t cf = c * f;
    float *t = malloc(18 * f * sizeof(float));
    if (!t) abort();
    for (size_t ch = 0; ch < c; ch++) {
        for (int r = 0; r < 6; r++)
            for (int j = 0; j < 3; j++) {
                float *restrict o = t + (size_t)(r * 3 + j) * f;
                const float *x[6];
                for (int sx = 0; sx < 6; sx++) x[sx] = du + (size_t)(r * 6 + sx) * cf + ch * f;
                const float b0 = WINO4_G[0][j], b1 = WINO4_G[1][j], b2 = WINO4_G[2][j], b3 = WINO4_G[3][j],
                            b4 = WINO4_G[4][j], b5 = WINO4_G[5][j];
                const float *restrict x0 = x[0], *restrict x1 = x[1], *restrict x2 = x[2], *restrict x3 = x[3],
                                      *restrict x4 = x[4], *restrict x5 = x[5];
                for (size_t k = 0; k < f; k++)
                    o[k] = b0 * x0[k] + b1 * x1[k] + b2 * x2[k] + b3 * x3[k] + b4 * x4[k] + b5 * x5[k];
            }
        for (int i = 0; i < 3; i++)
            for (int j = 0; j < 3; j++) {
                float *restrict o = dw + (size_t)(i * 3 + j) * cf + ch * f;
                const float *restrict t0 = t + (size_t)j * f, *restrict t1 = t0 + 3 * f, *restrict t2 = t1 + 3 * f,
                                      *restrict t3 = t2 + 3 * f, *restrict t4 = t3 + 3 * f, *restrict t5 = t4 + 3 * f;
                const float a0 = WINO4_G[0][i], a1 = WINO4_G[1][i], a2 = WINO4_G[2][i], a3 = WINO4_G[3][i],
                            a4 = WINO4_G[4][i], a5 = WINO4_G[5][i];
                for (size_t k = 0; k < f; k++)
                    o[k] += a0 * t0[k] + a1 * t1[k] + a2 * t2[k] + a3 * t3[k] + a4 * t4[k] + a5 * t5[k];
            }
    }
    free(t);
}

