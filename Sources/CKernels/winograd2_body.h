// Winograd F(2×2, 3×3) (Lavin & Gray, 2016) along n contiguous floats (channels or filters), W2L
// at a time in vectors and the rest one by one through the same expressions (the same bits).
// Included after winograd4_body.h (wvec, wload, wstore) by kernels_v4.c, kernels_v3.c and
// kernels_base.c: compiled once per instruction set.
//
//   U = G g Gᵀ, V = Bᵀ d B, Y = Aᵀ [U ⊙ V] A; dM = A dY Aᵀ, dg = Gᵀ dU G
//   Bᵀ = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1], G = [1 0 0; ½ ½ ½; ½ -½ ½; 0 0 1],
//   Aᵀ = [1 1 1 0; 0 1 -1 -1]
#include "winograd2_shared.h"

#define W2L CATDOG_VECTOR_FLOATS

// Row r of a transform's 4 × 4 output, its four values stored `stride` floats apart from
// base + 4 r · stride (the rows of V, dM and U alike).
#define W2_STORE_ROW(STORE, base, r, stride, o0, o1, o2, o3)                                          \
    do {                                                                                              \
        STORE((base) + (size_t)(4 * (r)) * (stride), o0);                                             \
        STORE((base) + (size_t)(4 * (r) + 1) * (stride), o1);                                         \
        STORE((base) + (size_t)(4 * (r) + 2) * (stride), o2);                                         \
        STORE((base) + (size_t)(4 * (r) + 3) * (stride), o3);                                         \
    } while (0)

static inline float w2load(const float *p) { return *p; }
static inline void w2store(float *p, float x) { *p = x; }

// Bᵀ applied to (a0, a1, a2, a3).
#define W2_BT(a0, a1, a2, a3, o0, o1, o2, o3) \
    do {                                      \
        o0 = (a0) - (a2);                     \
        o1 = (a1) + (a2);                     \
        o2 = (a2) - (a1);                     \
        o3 = (a1) - (a3);                     \
    } while (0)

// V's 16 rows of one tile at offset k: its 4×4 pixels d, columns then rows.
#define W2_INPUT(T, LOAD, STORE, d, k, v, vstride)                                                    \
    do {                                                                                              \
        T x_[16], t_[16];                                                                             \
        for (int i_ = 0; i_ < 16; i_++) x_[i_] = LOAD((d)[i_] + (k));                                 \
        for (int s_ = 0; s_ < 4; s_++)                                                                \
            W2_BT(x_[s_], x_[4 + s_], x_[8 + s_], x_[12 + s_], t_[s_], t_[4 + s_], t_[8 + s_], t_[12 + s_]); \
        for (int r_ = 0; r_ < 4; r_++) {                                                              \
            T o0_, o1_, o2_, o3_;                                                                     \
            W2_BT(t_[4 * r_], t_[4 * r_ + 1], t_[4 * r_ + 2], t_[4 * r_ + 3], o0_, o1_, o2_, o3_);    \
            W2_STORE_ROW(STORE, (v) + (k), r_, (vstride), o0_, o1_, o2_, o3_);                        \
        }                                                                                             \
    } while (0)

void FN(catdog_wino2_input)(const float *const d[16], float *v, size_t vstride, size_t n) {
    size_t k = 0;
    for (; k + W2L <= n; k += W2L) W2_INPUT(wvec, wload, wstore, d, k, v, vstride);
    for (; k < n; k++) W2_INPUT(float, w2load, w2store, d, k, v, vstride);
}

// Y's 2×2 outputs of one tile at offset k from M's 16 rows (mstride apart): t = Aᵀ M along the
// columns, then t A along the rows; y[i] NULL past the image's edge.
#define W2_OUTPUT(T, LOAD, STORE, m, mstride, y, k, accumulate)                                       \
    do {                                                                                              \
        T t_[8];                                                                                      \
        for (int s_ = 0; s_ < 4; s_++) {                                                              \
            const T m0_ = LOAD((m) + (size_t)s_ * (mstride) + (k)), m1_ = LOAD((m) + (size_t)(4 + s_) * (mstride) + (k)), \
                    m2_ = LOAD((m) + (size_t)(8 + s_) * (mstride) + (k)), m3_ = LOAD((m) + (size_t)(12 + s_) * (mstride) + (k)); \
            t_[s_] = m0_ + m1_ + m2_;                                                                 \
            t_[4 + s_] = m1_ - m2_ - m3_;                                                             \
        }                                                                                             \
        for (int r_ = 0; r_ < 2; r_++) {                                                              \
            const T *q_ = t_ + 4 * r_;                                                                \
            const T y0_ = q_[0] + q_[1] + q_[2], y1_ = q_[1] - q_[2] - q_[3];                         \
            float *p0_ = (y)[2 * r_], *p1_ = (y)[2 * r_ + 1];                                         \
            if (p0_) STORE(p0_ + (k), (accumulate) ? LOAD(p0_ + (k)) + y0_ : y0_);                    \
            if (p1_) STORE(p1_ + (k), (accumulate) ? LOAD(p1_ + (k)) + y1_ : y1_);                    \
        }                                                                                             \
    } while (0)

void FN(catdog_wino2_output)(const float *m, size_t mstride, float *const y[4], size_t n, int accumulate) {
    size_t k = 0;
    for (; k + W2L <= n; k += W2L) W2_OUTPUT(wvec, wload, wstore, m, mstride, y, k, accumulate);
    for (; k < n; k++) W2_OUTPUT(float, w2load, w2store, m, mstride, y, k, accumulate);
}

// dM's 16 rows of one tile at offset k from its 2×2 output gradients g (zero vectors past the
// edge): A (4×2) along the columns, then along the rows.
#define W2_OUTPUT_GRADIENT(T, LOAD, STORE, g, dm, stride, k)                                          \
    do {                                                                                              \
        T u_[8];                                                                                      \
        for (int s_ = 0; s_ < 2; s_++) {                                                              \
            const T a_ = LOAD((g)[s_] + (k)), b_ = LOAD((g)[2 + s_] + (k));                           \
            u_[s_] = a_;                                                                              \
            u_[2 + s_] = a_ + b_;                                                                     \
            u_[4 + s_] = a_ - b_;                                                                     \
            u_[6 + s_] = -b_;                                                                         \
        }                                                                                             \
        for (int r_ = 0; r_ < 4; r_++) {                                                              \
            const T a_ = u_[2 * r_], b_ = u_[2 * r_ + 1];                                             \
            W2_STORE_ROW(STORE, (dm) + (k), r_, (stride), a_, a_ + b_, a_ - b_, -b_);                 \
        }                                                                                             \
    } while (0)

void FN(catdog_wino2_output_gradient)(const float *const g[4], float *dm, size_t stride, size_t n) {
    size_t k = 0;
    for (; k + W2L <= n; k += W2L) W2_OUTPUT_GRADIENT(wvec, wload, wstore, g, dm, stride, k);
    for (; k < n; k++) W2_OUTPUT_GRADIENT(float, w2load, w2store, g, dm, stride, k);
}

// U (16, c, f) of a kernel (3, 3, c, f): t = G g along the kernel's rows, then t Gᵀ along its
// columns (W2_G, winograd2_shared.h), for input channel ch at filter offset k.

#define W2_FILTER(T, LOAD, STORE, w, u, cf, at, k)                                                    \
    do {                                                                                              \
        T g_[9], t_[12];                                                                              \
        for (int i_ = 0; i_ < 9; i_++) g_[i_] = LOAD((w) + (size_t)i_ * (cf) + (at) + (k));           \
        for (int j_ = 0; j_ < 3; j_++) W2_G(g_[j_], g_[3 + j_], g_[6 + j_], t_[j_], t_[3 + j_], t_[6 + j_], t_[9 + j_]); \
        for (int r_ = 0; r_ < 4; r_++) {                                                              \
            T o0_, o1_, o2_, o3_;                                                                     \
            W2_G(t_[3 * r_], t_[3 * r_ + 1], t_[3 * r_ + 2], o0_, o1_, o2_, o3_);                     \
            W2_STORE_ROW(STORE, (u) + (at) + (k), r_, (cf), o0_, o1_, o2_, o3_);                      \
        }                                                                                             \
    } while (0)

void FN(catdog_wino2_filter)(const float *w, float *u, size_t c, size_t f) {
    const size_t cf = c * f;
    for (size_t ch = 0; ch < c; ch++) {
        const size_t at = ch * f;
        size_t k = 0;
        for (; k + W2L <= f; k += W2L) W2_FILTER(wvec, wload, wstore, w, u, cf, at, k);
        for (; k < f; k++) W2_FILTER(float, w2load, w2store, w, u, cf, at, k);
    }
}

// dW (3, 3, c, f) += Gᵀ dU G: Gᵀ's rows (1 ½ ½ 0), (0 ½ -½ 0), (0 ½ ½ 1) along dU's columns,
// then along its rows.
#define W2_GT(a0, a1, a2, a3, o0, o1, o2) \
    do {                                  \
        o0 = (a0) + 0.5f * ((a1) + (a2)); \
        o1 = 0.5f * ((a1) - (a2));        \
        o2 = 0.5f * ((a1) + (a2)) + (a3); \
    } while (0)

#define W2_FILTER_GRADIENT(T, LOAD, STORE, du, dw, cf, at, k)                                         \
    do {                                                                                              \
        T x_[16], t_[12];                                                                             \
        for (int i_ = 0; i_ < 16; i_++) x_[i_] = LOAD((du) + (size_t)i_ * (cf) + (at) + (k));         \
        for (int r_ = 0; r_ < 4; r_++)                                                                \
            W2_GT(x_[4 * r_], x_[4 * r_ + 1], x_[4 * r_ + 2], x_[4 * r_ + 3], t_[3 * r_], t_[3 * r_ + 1], t_[3 * r_ + 2]); \
        for (int j_ = 0; j_ < 3; j_++) {                                                              \
            T o0_, o1_, o2_;                                                                          \
            W2_GT(t_[j_], t_[3 + j_], t_[6 + j_], t_[9 + j_], o0_, o1_, o2_);                         \
            float *p_ = (dw) + (at) + (k);                                                            \
            STORE(p_ + (size_t)j_ * (cf), LOAD(p_ + (size_t)j_ * (cf)) + o0_);                        \
            STORE(p_ + (size_t)(3 + j_) * (cf), LOAD(p_ + (size_t)(3 + j_) * (cf)) + o1_);            \
            STORE(p_ + (size_t)(6 + j_) * (cf), LOAD(p_ + (size_t)(6 + j_) * (cf)) + o2_);            \
        }                                                                                             \
    } while (0)

void FN(catdog_wino2_filter_gradient)(const float *du, float *dw, size_t c, size_t f) {
    const size_t cf = c * f;
    for (size_t ch = 0; ch < c; ch++) {
        const size_t at = ch * f;
        size_t k = 0;
        for (; k + W2L <= f; k += W2L) W2_FILTER_GRADIENT(wvec, wload, wstore, du, dw, cf, at, k);
        for (; k < f; k++) W2_FILTER_GRADIENT(float, w2load, w2store, du, dw, cf, at, k);
    }
}
#undef W2L
