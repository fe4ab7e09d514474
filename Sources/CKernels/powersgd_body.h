// Included by kernels_v4.c, kernels_v3.c and kernels_base.c: compiled once per instruction set.
//
// PowerSGD's three passes over a gradient matrix M (rows × cols, row-major) and its rank-r
// factors P (r × rows, k-major) and Q (r × cols, k-major). Every sum runs in 16 lanes of fixed
// order (element j into lane j mod 16; the lanes added 0 to 15, then the tail), without fused
// multiply-adds, so every instruction set computes the same bits and a lab of mixed machines
// compresses alike.

#define PSGD_LANES 16

// The 16 lanes of a sum added in order.
static inline float FN(psgd_lanes_sum)(const float *lane) {
    float s = 0.0f;
    for (int l = 0; l < PSGD_LANES; l++) s = s + lane[l];
    return s;
}

// K of the factors' dot products with one row of M (K = 4, 2 or 1 after inlining): K independent
// chains of 16 lanes, so that the row is read once for all of them; out[k·stride] = M_i · q_k.
static inline __attribute__((always_inline)) void FN(psgd_dots)(const float *restrict g, const float *restrict q,
                                                                float *restrict out, size_t stride, size_t cols,
                                                                size_t K) {
#pragma clang fp contract(off)
    const size_t full = cols / PSGD_LANES * PSGD_LANES;
    float lane[4][PSGD_LANES] = {{0}};
    for (size_t j = 0; j < full; j += PSGD_LANES)
        for (size_t k = 0; k < K; k++)
            for (int l = 0; l < PSGD_LANES; l++) lane[k][l] = lane[k][l] + g[j + l] * q[k * cols + j + l];
    for (size_t k = 0; k < K; k++) {
        float s = FN(psgd_lanes_sum)(lane[k]);
        for (size_t j = full; j < cols; j++) s = s + g[j] * q[k * cols + j];
        out[k * stride] = s;
    }
}

#ifdef CATDOG_TRANSPOSE_IN_REGISTERS
#include <immintrin.h>

#include "transpose16.h"

// Sixteen rows' dots with one factor q_k (rows from g, `cols` floats apart), into out[0..<16]:
// the sixteen rows' 16 lanes in registers while q_k streams past once for all of them, then
// transposed, so that lane l of every row is one vector and the lanes are added 0 to 15 as
// vectors. The same sums in the same order as psgd_dots (which spent most of its time adding
// each row's 16 lanes one after another), so the same bits.
static inline void FN(psgd_dots16)(const float *restrict g, const float *restrict qk, float *restrict out, size_t cols) {
#pragma clang fp contract(off)
    const size_t full = cols / PSGD_LANES * PSGD_LANES;
    __m512 acc[16];
    for (int i = 0; i < 16; i++) acc[i] = _mm512_setzero_ps();
    for (size_t j = 0; j < full; j += PSGD_LANES) {
        const __m512 qv = _mm512_loadu_ps(qk + j);
        for (int i = 0; i < 16; i++) acc[i] = _mm512_add_ps(acc[i], _mm512_mul_ps(_mm512_loadu_ps(g + i * cols + j), qv));
    }
    float lanes[16 * 16], columns[16 * 16];
    for (int i = 0; i < 16; i++) _mm512_storeu_ps(lanes + 16 * i, acc[i]);
    transpose16(lanes, 16, columns, 16);
    __m512 s = _mm512_setzero_ps();
    for (int l = 0; l < PSGD_LANES; l++) s = _mm512_add_ps(s, _mm512_loadu_ps(columns + 16 * l));
    _mm512_storeu_ps(out, s);
    for (size_t j = full; j < cols; j++)
        for (int i = 0; i < 16; i++) out[i] = out[i] + g[i * cols + j] * qk[j];
}
#endif

// M ← M + E (this rank's error feedback), then p[k·rows + i] = M_i · q_k: one pass over M.
void FN(catdog_powersgd_project)(float *restrict g, const float *restrict e, const float *restrict q, float *restrict p,
                                 size_t rows, size_t cols, size_t r) {
#pragma clang fp contract(off)
    size_t i = 0;
#ifdef CATDOG_TRANSPOSE_IN_REGISTERS
    // Sixteen rows at a time (their 16 KiB or so stay in the L1 for every factor).
    for (; i + 16 <= rows; i += 16, g += 16 * cols, e += 16 * cols) {
        for (size_t j = 0; j < 16 * cols; j++) g[j] = g[j] + e[j];
        for (size_t k = 0; k < r; k++) FN(psgd_dots16)(g, q + k * cols, p + k * rows + i, cols);
    }
#endif
    for (; i < rows; i++, g += cols, e += cols) {
        for (size_t j = 0; j < cols; j++) g[j] = g[j] + e[j];
        size_t k = 0;
        for (; k + 4 <= r; k += 4) FN(psgd_dots)(g, q + k * cols, p + k * rows + i, rows, cols, 4);
        for (; k + 2 <= r; k += 2) FN(psgd_dots)(g, q + k * cols, p + k * rows + i, rows, cols, 2);
        for (; k < r; k++) FN(psgd_dots)(g, q + k * cols, p + k * rows + i, rows, cols, 1);
    }
}

// K of the factors (K = 4, 2 or 1 after inlining) for one block of 16 columns over rows i0 ..< i1:
// q[k][j] (0 when i0 = 0) + Σ_i p[k][i]·M[i][j], i ascending, the block's sums held in registers
// while M's column block streams past.
static inline __attribute__((always_inline)) void FN(psgd_back_block)(const float *restrict g, const float *restrict p,
                                                                      float *restrict q, size_t rows, size_t i0,
                                                                      size_t i1, size_t cols, size_t j, size_t K) {
#pragma clang fp contract(off)
    float acc[4][PSGD_LANES] = {{0}};
    if (i0 > 0)
        for (size_t k = 0; k < K; k++)
            for (int l = 0; l < PSGD_LANES; l++) acc[k][l] = q[k * cols + j + l];
    for (size_t i = i0; i < i1; i++) {
        const float *gi = g + i * cols + j;
        for (size_t k = 0; k < K; k++) {
            const float pk = p[k * rows + i];
            for (int l = 0; l < PSGD_LANES; l++) acc[k][l] = acc[k][l] + pk * gi[l];
        }
    }
    for (size_t k = 0; k < K; k++)
        for (int l = 0; l < PSGD_LANES; l++) q[k * cols + j + l] = acc[k][l];
}

// Floats of M in a panel of whole rows (32 KiB): a panel's rows lie together in memory, so each
// comes from memory once, in order, and every group of factors and column block reads it from
// the L1. (Walking each column block down all the rows, M came from memory at a third of the
// rate the other two passes read it.)
#define PSGD_PANEL_FLOATS 8192

// q[k·cols + j] = Σ_i p[k·rows + i]·M[i][j] (Q ← Mᵀ P), i ascending for every element.
void FN(catdog_powersgd_back_project)(const float *restrict g, const float *restrict p, float *restrict q, size_t rows,
                                      size_t cols, size_t r) {
#pragma clang fp contract(off)
    const size_t full = cols / PSGD_LANES * PSGD_LANES;
    const size_t panel = cols >= PSGD_PANEL_FLOATS ? 1 : PSGD_PANEL_FLOATS / cols;
    for (size_t i0 = 0; i0 < rows; i0 += panel) {
        const size_t i1 = rows - i0 > panel ? i0 + panel : rows;
        size_t k = 0;
        for (; k + 4 <= r; k += 4)
            for (size_t j = 0; j < full; j += PSGD_LANES)
                FN(psgd_back_block)(g, p + k * rows, q + k * cols, rows, i0, i1, cols, j, 4);
        for (; k + 2 <= r; k += 2)
            for (size_t j = 0; j < full; j += PSGD_LANES)
                FN(psgd_back_block)(g, p + k * rows, q + k * cols, rows, i0, i1, cols, j, 2);
        for (; k < r; k++)
            for (size_t j = 0; j < full; j += PSGD_LANES)
                FN(psgd_back_block)(g, p + k * rows, q + k * cols, rows, i0, i1, cols, j, 1);
    }
    for (size_t j = full; j < cols; j++)
        for (size_t k = 0; k < r; k++) {
            float s = 0.0f;
            for (size_t i = 0; i < rows; i++) s = s + p[k * rows + i] * g[i * cols + j];
            q[k * cols + j] = s;
        }
}

// The approximation P Qᵀ replaces M, and what it leaves out is this rank's error feedback:
// a = Σ_k p[k][i]·q[k][j] (k ascending, from 0), e = M − a·share, M = a; one pass over M and E.
void FN(catdog_powersgd_finish)(float *restrict g, float *restrict e, const float *restrict p, const float *restrict q,
                                size_t rows, size_t cols, size_t r, float share) {
#pragma clang fp contract(off)
    const size_t full = cols / PSGD_LANES * PSGD_LANES;
    for (size_t i = 0; i < rows; i++, g += cols, e += cols) {
        for (size_t j = 0; j < full; j += PSGD_LANES) {
            float a[PSGD_LANES] = {0};
            for (size_t k = 0; k < r; k++) {
                const float pk = p[k * rows + i];
                const float *qk = q + k * cols + j;
                for (int l = 0; l < PSGD_LANES; l++) a[l] = a[l] + pk * qk[l];
            }
            for (int l = 0; l < PSGD_LANES; l++) {
                e[j + l] = g[j + l] - a[l] * share;
                g[j + l] = a[l];
            }
        }
        for (size_t j = full; j < cols; j++) {
            float a = 0.0f;
            for (size_t k = 0; k < r; k++) a = a + p[k * rows + i] * q[k * cols + j];
            e[j] = g[j] - a * share;
            g[j] = a;
        }
    }
}

// Σ a[i]·b[i] in double: element i into lane i mod 16, the lanes added 0 to 15, then the tail.
static inline double FN(psgd_dot_double)(const double *restrict a, const double *restrict b, size_t n) {
#pragma clang fp contract(off)
    const size_t full = n / PSGD_LANES * PSGD_LANES;
    double lane[PSGD_LANES] = {0};
    for (size_t i = 0; i < full; i += PSGD_LANES)
        for (int l = 0; l < PSGD_LANES; l++) lane[l] = lane[l] + a[i + l] * b[i + l];
    double s = 0.0;
    for (int l = 0; l < PSGD_LANES; l++) s = s + lane[l];
    for (size_t i = full; i < n; i++) s = s + a[i] * b[i];
    return s;
}

// P's columns made orthonormal (Gram–Schmidt) in double, so that a vector that is nearly a
// combination of the earlier ones (a gradient of lower rank than r) still comes out orthogonal
// to them; it is normalised like any other (PyTorch's epsilon), which keeps its column of Q
// alive for later updates.
void FN(catdog_powersgd_orthonormalize)(float *restrict v, size_t length, size_t vectors, double *restrict work) {
#pragma clang fp contract(off)
    for (size_t i = 0; i < length * vectors; i++) work[i] = (double)v[i];
    for (size_t k = 0; k < vectors; k++) {
        double *restrict a = work + k * length;
        for (size_t j = 0; j < k; j++) {
            const double *restrict b = work + j * length;
            const double d = FN(psgd_dot_double)(a, b, length);
            for (size_t i = 0; i < length; i++) a[i] = a[i] - d * b[i];
        }
        const double scale = 1.0 / (__builtin_sqrt(FN(psgd_dot_double)(a, a, length)) + 1e-30);
        for (size_t i = 0; i < length; i++) a[i] = a[i] * scale;
    }
    for (size_t i = 0; i < length * vectors; i++) v[i] = (float)work[i];
}

#undef PSGD_PANEL_FLOATS
#undef PSGD_LANES
