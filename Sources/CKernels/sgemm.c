#include "catdog_kernels.h"

#include <string.h>

#include "fetch_c.h"

// A small single-precision gemm for the shapes Winograd produces (36 products of a few hundred
// tiles by C x F, C and F 16..256), with AVX-512 micro-kernels: 8 rows x 32 columns of C in 16
// registers, A broadcast, B read in place (rows of B are contiguous). OpenBLAS's kernels for
// these thin, short products lose much of their time packing; and where OpenBLAS runs its AVX2
// kernels on an AVX-512 CPU (OPENBLAS_CORETYPE=Haswell, set on machines whose CPU its build
// does not know), these run twice as wide. On CPUs with AVX2 and FMA only, the same loops with
// 6 rows x 16 columns of C in 12 of the 16 AVX registers.
//
// C (m x n, row stride ldc) = or += A (m x k) * B (k x n, row stride ldb), A(i, p) at
// a[i * rsa + p * csa] (rsa = lda, csa = 1 for A; rsa = 1, csa = lda for Aᵀ).

#if defined(__x86_64__) && defined(__clang__)
#include <immintrin.h>

#define AVX512 __attribute__((target("avx512f")))

// A large C is fetched ahead (fetch_c.h). Cold, as in a training step, dW (2304 x 256 += 2304 x
// 64 · 64 x 256) went from 122 to 203 GFLOP/s on a Zen 5 core. Fetching B's rows ahead inside
// the product loop made steps slower (3%), so it is not done.

AVX512 static inline void block8(size_t k, const float *a, size_t rsa, size_t csa, const float *b, size_t ldb,
                                 float *c, size_t ldc, int fetch_c, int accumulate, int wide) {
    __m512 c00 = _mm512_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00;
    __m512 c40 = c00, c41 = c00, c50 = c00, c51 = c00, c60 = c00, c61 = c00, c70 = c00, c71 = c00;
    const float *a0 = a, *a1 = a + rsa, *a2 = a + 2 * rsa, *a3 = a + 3 * rsa;
    const float *a4 = a + 4 * rsa, *a5 = a + 5 * rsa, *a6 = a + 6 * rsa, *a7 = a + 7 * rsa;
    if (fetch_c && accumulate)
        for (int r = 0; r < 8; r++) {
            _mm_prefetch((const char *)(c + r * ldc), _MM_HINT_T0);
            if (wide) _mm_prefetch((const char *)(c + r * ldc + 16), _MM_HINT_T0);
        }
    if (wide) {
        for (size_t p = 0; p < k; p++) {
            const __m512 b0 = _mm512_loadu_ps(b + p * ldb), b1 = _mm512_loadu_ps(b + p * ldb + 16);
            const size_t o = p * csa;
            __m512 x;
            x = _mm512_set1_ps(a0[o]); c00 = _mm512_fmadd_ps(x, b0, c00); c01 = _mm512_fmadd_ps(x, b1, c01);
            x = _mm512_set1_ps(a1[o]); c10 = _mm512_fmadd_ps(x, b0, c10); c11 = _mm512_fmadd_ps(x, b1, c11);
            x = _mm512_set1_ps(a2[o]); c20 = _mm512_fmadd_ps(x, b0, c20); c21 = _mm512_fmadd_ps(x, b1, c21);
            x = _mm512_set1_ps(a3[o]); c30 = _mm512_fmadd_ps(x, b0, c30); c31 = _mm512_fmadd_ps(x, b1, c31);
            x = _mm512_set1_ps(a4[o]); c40 = _mm512_fmadd_ps(x, b0, c40); c41 = _mm512_fmadd_ps(x, b1, c41);
            x = _mm512_set1_ps(a5[o]); c50 = _mm512_fmadd_ps(x, b0, c50); c51 = _mm512_fmadd_ps(x, b1, c51);
            x = _mm512_set1_ps(a6[o]); c60 = _mm512_fmadd_ps(x, b0, c60); c61 = _mm512_fmadd_ps(x, b1, c61);
            x = _mm512_set1_ps(a7[o]); c70 = _mm512_fmadd_ps(x, b0, c70); c71 = _mm512_fmadd_ps(x, b1, c71);
        }
    } else {
        for (size_t p = 0; p < k; p++) {
            const __m512 b0 = _mm512_loadu_ps(b + p * ldb);
            const size_t o = p * csa;
            c00 = _mm512_fmadd_ps(_mm512_set1_ps(a0[o]), b0, c00);
            c10 = _mm512_fmadd_ps(_mm512_set1_ps(a1[o]), b0, c10);
            c20 = _mm512_fmadd_ps(_mm512_set1_ps(a2[o]), b0, c20);
            c30 = _mm512_fmadd_ps(_mm512_set1_ps(a3[o]), b0, c30);
            c40 = _mm512_fmadd_ps(_mm512_set1_ps(a4[o]), b0, c40);
            c50 = _mm512_fmadd_ps(_mm512_set1_ps(a5[o]), b0, c50);
            c60 = _mm512_fmadd_ps(_mm512_set1_ps(a6[o]), b0, c60);
            c70 = _mm512_fmadd_ps(_mm512_set1_ps(a7[o]), b0, c70);
        }
    }
    __m512 rows[8][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51}, {c60, c61}, {c70, c71}};
    for (int r = 0; r < 8; r++) {
        float *out = c + r * ldc;
        for (int h = 0; h < (wide ? 2 : 1); h++) {
            __m512 v = rows[r][h];
            if (accumulate) v = _mm512_add_ps(v, _mm512_loadu_ps(out + 16 * h));
            _mm512_storeu_ps(out + 16 * h, v);
        }
    }
}

AVX512 static inline void block1(size_t k, const float *a, size_t csa, const float *b, size_t ldb, float *c,
                                 int accumulate, int wide) {
    __m512 c0 = _mm512_setzero_ps(), c1 = c0;
    for (size_t p = 0; p < k; p++) {
        const __m512 x = _mm512_set1_ps(a[p * csa]);
        c0 = _mm512_fmadd_ps(x, _mm512_loadu_ps(b + p * ldb), c0);
        if (wide) c1 = _mm512_fmadd_ps(x, _mm512_loadu_ps(b + p * ldb + 16), c1);
    }
    if (accumulate) c0 = _mm512_add_ps(c0, _mm512_loadu_ps(c));
    _mm512_storeu_ps(c, c0);
    if (wide) {
        if (accumulate) c1 = _mm512_add_ps(c1, _mm512_loadu_ps(c + 16));
        _mm512_storeu_ps(c + 16, c1);
    }
}

// k in slices of at most 128, so that a 128 x 32 panel of B (16 KB) stays in L1 while every
// 8-row block of A passes over it; C accumulates across the slices.
enum { K_SLICE = 128 };

AVX512 static void sgemm_avx512(size_t m, size_t n, size_t k, const float *a, size_t rsa, size_t csa, const float *b,
                                size_t ldb, float *c, size_t ldc, int accumulate) {
    const int fetch_c = m * n * sizeof(float) >= FETCH_C_BYTES;
    for (size_t p0 = 0; p0 < k; p0 += K_SLICE) {
        const size_t kk = k - p0 < K_SLICE ? k - p0 : K_SLICE;
        const int acc = accumulate || p0 > 0;
        const float *as = a + p0 * csa, *bs = b + p0 * ldb;
        for (size_t j = 0; j < n; j += 32) {
            const int wide = n - j >= 32;
            size_t i = 0;
            for (; i + 8 <= m; i += 8)
                block8(kk, as + i * rsa, rsa, csa, bs + j, ldb, c + i * ldc + j, ldc, fetch_c, acc, wide);
            for (; i < m; i++) block1(kk, as + i * rsa, csa, bs + j, ldb, c + i * ldc + j, acc, wide);
            if (!wide) j -= 16;  // the last panel was 16 wide
        }
    }
}

// AVX2 and FMA: 6 rows x 16 columns of C in 12 registers, B's two halves in 2, A's value
// broadcast in the last; fewer rows (1-5) at the end of A by the same code with `rows`
// constant where it is inlined. A large C is fetched a block ahead (the next 6 rows).
#define AVX2FMA __attribute__((target("avx2,fma")))

AVX2FMA static inline __attribute__((always_inline)) void block6_avx2(const int rows, size_t k, const float *a, size_t rsa,
                                                                     size_t csa, const float *b, size_t ldb, float *c,
                                                                     size_t ldc, int fetch_c, int accumulate) {
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
    __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
    const float *a0 = a, *a1 = a + rsa, *a2 = a + 2 * rsa, *a3 = a + 3 * rsa, *a4 = a + 4 * rsa, *a5 = a + 5 * rsa;
    if (fetch_c && accumulate)  // the next block's 6 rows (below these), a block's products ahead
        for (int r = 6; r < 12; r++) {
            _mm_prefetch((const char *)(c + r * ldc), _MM_HINT_T0);
            _mm_prefetch((const char *)(c + r * ldc + 15), _MM_HINT_T0);
        }
    for (size_t p = 0; p < k; p++) {
        const __m256 b0 = _mm256_loadu_ps(b + p * ldb), b1 = _mm256_loadu_ps(b + p * ldb + 8);
        const size_t o = p * csa;
        __m256 x;
        x = _mm256_broadcast_ss(a0 + o); c00 = _mm256_fmadd_ps(x, b0, c00); c01 = _mm256_fmadd_ps(x, b1, c01);
        if (rows > 1) { x = _mm256_broadcast_ss(a1 + o); c10 = _mm256_fmadd_ps(x, b0, c10); c11 = _mm256_fmadd_ps(x, b1, c11); }
        if (rows > 2) { x = _mm256_broadcast_ss(a2 + o); c20 = _mm256_fmadd_ps(x, b0, c20); c21 = _mm256_fmadd_ps(x, b1, c21); }
        if (rows > 3) { x = _mm256_broadcast_ss(a3 + o); c30 = _mm256_fmadd_ps(x, b0, c30); c31 = _mm256_fmadd_ps(x, b1, c31); }
        if (rows > 4) { x = _mm256_broadcast_ss(a4 + o); c40 = _mm256_fmadd_ps(x, b0, c40); c41 = _mm256_fmadd_ps(x, b1, c41); }
        if (rows > 5) { x = _mm256_broadcast_ss(a5 + o); c50 = _mm256_fmadd_ps(x, b0, c50); c51 = _mm256_fmadd_ps(x, b1, c51); }
    }
    const __m256 out[6][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51}};
    for (int r = 0; r < rows; r++)
        for (int h = 0; h < 2; h++) {
            float *to = c + r * ldc + 8 * h;
            __m256 v = out[r][h];
            if (accumulate) v = _mm256_add_ps(v, _mm256_loadu_ps(to));
            _mm256_storeu_ps(to, v);
        }
}

// k in slices of at most K_SLICE_AVX2, so that a slice's 16-column panel of B (16 KB) stays in
// L1 while every 6-row block of A passes over it.
enum { K_SLICE_AVX2 = 256 };

// The last `rows` (0-5) rows of C, by the block with that many rows.
AVX2FMA static void rows_avx2(size_t rows, size_t kk, const float *a, size_t rsa, size_t csa, const float *b, size_t ldb,
                             float *c, size_t ldc, int fetch_c, int acc) {
    switch (rows) {
    case 5: block6_avx2(5, kk, a, rsa, csa, b, ldb, c, ldc, fetch_c, acc); break;
    case 4: block6_avx2(4, kk, a, rsa, csa, b, ldb, c, ldc, fetch_c, acc); break;
    case 3: block6_avx2(3, kk, a, rsa, csa, b, ldb, c, ldc, fetch_c, acc); break;
    case 2: block6_avx2(2, kk, a, rsa, csa, b, ldb, c, ldc, fetch_c, acc); break;
    case 1: block6_avx2(1, kk, a, rsa, csa, b, ldb, c, ldc, fetch_c, acc); break;
    default: break;
    }
}

AVX2FMA static void sgemm_avx2(size_t m, size_t n, size_t k, const float *a, size_t rsa, size_t csa, const float *b,
                              size_t ldb, float *c, size_t ldc, int accumulate) {
    const int fetch_c = m * n * sizeof(float) >= FETCH_C_BYTES;
    // Blocks of 6 rows, and at the end 1-5, or 7 or 8 as two of 4 and 3 or 4 (blocks of 1 or 2
    // rows load as much of B for a third of the products: the last of m = 32 was 2 rows).
    size_t tail = m % 6, body = m - tail;
    if ((tail == 1 || tail == 2) && body >= 6) body -= 6, tail += 6;
    const size_t first = tail > 6 ? 4 : tail;
    for (size_t p0 = 0; p0 < k; p0 += K_SLICE_AVX2) {
        const size_t kk = k - p0 < K_SLICE_AVX2 ? k - p0 : K_SLICE_AVX2;
        const int acc = accumulate || p0 > 0;
        const float *as = a + p0 * csa, *bs = b + p0 * ldb;
        for (size_t j = 0; j < n; j += 16) {
            // A block fetches the next 6 rows of C: only where 6 more rows follow it.
            for (size_t i = 0; i < body; i += 6)
                block6_avx2(6, kk, as + i * rsa, rsa, csa, bs + j, ldb, c + i * ldc + j, ldc, fetch_c && i + 12 <= m, acc);
            rows_avx2(first, kk, as + body * rsa, rsa, csa, bs + j, ldb, c + body * ldc + j, ldc, 0, acc);
            rows_avx2(tail - first, kk, as + (body + first) * rsa, rsa, csa, bs + j, ldb, c + (body + first) * ldc + j, ldc, 0,
                      acc);
        }
    }
}

int catdog_sgemm_available(void) { return catdog_kernels_avx512() || strcmp(catdog_kernels_isa(), "avx2") == 0; }

int catdog_sgemm(size_t m, size_t n, size_t k, const float *a, size_t rsa, size_t csa, const float *b, size_t ldb,
                 float *c, size_t ldc, int accumulate) {
    // Only where the kernels run AVX-512 or AVX2 (the CPU has it and catdog_kernels_select left
    // it on).
    if (!catdog_sgemm_available() || n % 16 != 0 || m == 0 || n == 0) return 0;
    if (k == 0) {
        if (!accumulate)
            for (size_t i = 0; i < m; i++)
                for (size_t j = 0; j < n; j++) c[i * ldc + j] = 0;
        return 1;
    }
    if (catdog_kernels_avx512()) sgemm_avx512(m, n, k, a, rsa, csa, b, ldb, c, ldc, accumulate);
    else sgemm_avx2(m, n, k, a, rsa, csa, b, ldb, c, ldc, accumulate);
    return 1;
}
#else
int catdog_sgemm_available(void) { return 0; }

int catdog_sgemm(size_t m, size_t n, size_t k, const float *a, size_t rsa, size_t csa, const float *b, size_t ldb,
                 float *c, size_t ldc, int accumulate) {
    (void)m; (void)n; (void)k; (void)a; (void)rsa; (void)csa; (void)b; (void)ldb; (void)c; (void)ldc; (void)accumulate;
    return 0;
}
#endif
