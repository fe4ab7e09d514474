#include "catdog_kernels.h"

#include <string.h>
#include <time.h>

// bf16 products with fp32 accumulation (AVX512_BF16's vdpbf16ps: each fp32 lane adds two bf16
// products), and register-only probes of one core's peak rate in fp32 FMAs and in vdpbf16ps.
//
// Operands are packed in pairs along k, the layout vdpbf16ps reads:
//   A (m x k): row i holds k2 = ceil(k/2) 32-bit words, word p = (a(i, 2p), a(i, 2p+1));
//   B (k x n): pair-row p holds n words, word j = (b(2p, j), b(2p+1, j)).
// An odd k is padded with a zero. fp32 becomes bf16 by round-to-nearest-even (NaN stays NaN).

static double now_seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

uint16_t catdog_bf16_from_float(float x) {
    uint32_t bits;
    memcpy(&bits, &x, 4);
    if ((bits & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((bits >> 16) | 0x40);  // a quiet NaN
    bits += 0x7fffu + ((bits >> 16) & 1);
    return (uint16_t)(bits >> 16);
}

float catdog_float_from_bf16(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float x;
    memcpy(&x, &bits, 4);
    return x;
}

void catdog_bf16_pack_a(const float *a, size_t m, size_t k, size_t lda, uint16_t *packed) {
    const size_t k2 = (k + 1) / 2;
    for (size_t i = 0; i < m; i++)
        for (size_t p = 0; p < k2; p++) {
            packed[(i * k2 + p) * 2] = catdog_bf16_from_float(a[i * lda + 2 * p]);
            packed[(i * k2 + p) * 2 + 1] = 2 * p + 1 < k ? catdog_bf16_from_float(a[i * lda + 2 * p + 1]) : 0;
        }
}

void catdog_bf16_pack_b(const float *b, size_t k, size_t n, size_t ldb, uint16_t *packed) {
    const size_t k2 = (k + 1) / 2;
    for (size_t p = 0; p < k2; p++)
        for (size_t j = 0; j < n; j++) {
            packed[(p * n + j) * 2] = catdog_bf16_from_float(b[2 * p * ldb + j]);
            packed[(p * n + j) * 2 + 1] = 2 * p + 1 < k ? catdog_bf16_from_float(b[(2 * p + 1) * ldb + j]) : 0;
        }
}

#if defined(__x86_64__) && defined(__clang__)
#include <immintrin.h>

#define AVX512 __attribute__((target("avx512f")))
#define BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))

int catdog_cpu_has_bf16(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bf16");
}

// Twelve independent chains of `STEP(c)` for about `seconds`: enough to keep two FMA pipes of
// latency 4 to 6 busy. Sets `rounds` (each 12 STEPs) and `elapsed`; the sums go to a volatile
// sink so that the loop is not optimised away.
#define TIMED_CHAINS(STEP)                                                           \
    __m512 c[12];                                                                    \
    for (int r = 0; r < 12; r++) c[r] = _mm512_set1_ps((float)r * 1e-3f);            \
    size_t rounds = 0;                                                               \
    const double start = now_seconds();                                              \
    double elapsed = 0;                                                              \
    do {                                                                             \
        for (int i = 0; i < 4096; i++)                                               \
            for (int r = 0; r < 12; r++) c[r] = STEP(c[r]);                          \
        rounds += 4096;                                                              \
        elapsed = now_seconds() - start;                                             \
    } while (elapsed < seconds);                                                     \
    __m512 sum = c[0];                                                               \
    for (int r = 1; r < 12; r++) sum = _mm512_add_ps(sum, c[r]);                     \
    volatile float sink = _mm512_reduce_add_ps(sum);                                 \
    (void)sink;

AVX512 static double fp32_peak(double seconds) {
    const __m512 x = _mm512_set1_ps(0.999999f), y = _mm512_set1_ps(1e-7f);
#define FMA_STEP(v) _mm512_fmadd_ps(v, x, y)
    TIMED_CHAINS(FMA_STEP)
    return (double)rounds * 12 * 16 * 2 / elapsed * 1e-9;
}

BF16 static double bf16_peak(double seconds) {
    const __m512bh x = (__m512bh)_mm512_set1_epi16((short)0x3f80), y = (__m512bh)_mm512_set1_epi16((short)0x3380);
#define DPBF16_STEP(v) _mm512_dpbf16_ps(v, x, y)
    TIMED_CHAINS(DPBF16_STEP)
    // Each vdpbf16ps: 16 lanes x 2 products, each a multiply and an add.
    return (double)rounds * 12 * 32 * 2 / elapsed * 1e-9;
}

double catdog_peak_fp32_gflops(double seconds) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") ? fp32_peak(seconds) : 0;
}

double catdog_peak_bf16_gflops(double seconds) { return catdog_cpu_has_bf16() ? bf16_peak(seconds) : 0; }

// 8 rows x 32 columns of C in 16 registers; a row's pair broadcast, B's pairs read in place.
BF16 __attribute__((always_inline)) static inline void bf16_block(size_t rows, size_t k2, const uint32_t *a, const uint32_t *b, size_t n, float *c,
                                   size_t ldc, int accumulate, __mmask16 m0, __mmask16 m1) {
    __m512 acc[8][2];
    for (int r = 0; r < 8; r++) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
    for (size_t p = 0; p < k2; p++) {
        const __m512bh b0 = (__m512bh)_mm512_maskz_loadu_epi32(m0, b + p * n);
        const __m512bh b1 = (__m512bh)_mm512_maskz_loadu_epi32(m1, b + p * n + 16);
        for (size_t r = 0; r < rows; r++) {
            const __m512bh x = (__m512bh)_mm512_set1_epi32((int)a[r * k2 + p]);
            acc[r][0] = _mm512_dpbf16_ps(acc[r][0], x, b0);
            acc[r][1] = _mm512_dpbf16_ps(acc[r][1], x, b1);
        }
    }
    for (size_t r = 0; r < rows; r++) {
        float *out = c + r * ldc;
        __m512 v0 = acc[r][0], v1 = acc[r][1];
        if (accumulate) {
            v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(m0, out));
            v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(m1, out + 16));
        }
        _mm512_mask_storeu_ps(out, m0, v0);
        _mm512_mask_storeu_ps(out + 16, m1, v1);
    }
}

BF16 static void sbgemm_avx512(size_t m, size_t n, size_t k, const uint16_t *a, const uint16_t *b, float *c, size_t ldc,
                               int accumulate) {
    const size_t k2 = (k + 1) / 2;
    const uint32_t *a32 = (const uint32_t *)(const void *)a, *b32 = (const uint32_t *)(const void *)b;
    for (size_t j = 0; j < n; j += 32) {
        const size_t w = n - j < 32 ? n - j : 32;
        const __mmask16 m0 = w >= 16 ? 0xffff : (__mmask16)((1u << w) - 1);
        const __mmask16 m1 = w >= 32 ? 0xffff : w > 16 ? (__mmask16)((1u << (w - 16)) - 1) : 0;
        for (size_t i = 0; i < m; i += 8) {
            const size_t rows = m - i < 8 ? m - i : 8;
            // A constant 8 lets the compiler keep the 16 accumulators in registers.
            if (rows == 8) bf16_block(8, k2, a32 + i * k2, b32 + j, n, c + i * ldc + j, ldc, accumulate, m0, m1);
            else bf16_block(rows, k2, a32 + i * k2, b32 + j, n, c + i * ldc + j, ldc, accumulate, m0, m1);
        }
    }
}

int catdog_sbgemm(size_t m, size_t n, size_t k, const uint16_t *a_packed, const uint16_t *b_packed, float *c, size_t ldc,
                  int accumulate) {
    if (!catdog_cpu_has_bf16()) return 0;
    if (m == 0 || n == 0) return 1;
    sbgemm_avx512(m, n, k, a_packed, b_packed, c, ldc, accumulate);
    return 1;
}
#else
int catdog_cpu_has_bf16(void) { return 0; }
double catdog_peak_fp32_gflops(double seconds) { (void)seconds; return 0; }
double catdog_peak_bf16_gflops(double seconds) { (void)seconds; return 0; }
int catdog_sbgemm(size_t m, size_t n, size_t k, const uint16_t *a_packed, const uint16_t *b_packed, float *c, size_t ldc,
                  int accumulate) {
    (void)m; (void)n; (void)k; (void)a_packed; (void)b_packed; (void)c; (void)ldc; (void)accumulate;
    return 0;
}
#endif
