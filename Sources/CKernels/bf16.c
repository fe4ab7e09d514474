#include "catdog_half.h"
#include "catdog_kernels.h"
#include "fetch_c.h"
#include "winograd4_shared.h"
#include "winograd2_shared.h"

#include <stdint.h>
#include <stdlib.h>
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

#include "transpose16.h"

#define AVX512 __attribute__((target("avx512f")))
#define BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))

int catdog_cpu_has_bf16(void) {
    __builtin_cpu_init();
    return catdog_cpu_allows("avx512f") && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bf16");
}

// Twelve independent chains of `STEP(c)` for about `seconds`: enough to keep two FMA pipes of
// latency 4 to 6 busy. Sets `rounds` (each 12 STEPs) and `elapsed`; the sums go to a volatile
// sink so that the loop is not optimised away.
// 12 independent chains of STEP on VEC vectors (SET1 to start them, ADD and STORE to sum them
// into a sink) for `seconds`: `rounds` steps of each chain, in `elapsed` seconds.
#define TIMED_CHAINS_OF(VEC, SET1, ADD, STORE, STEP)                                 \
    VEC c[12];                                                                       \
    for (int r = 0; r < 12; r++) c[r] = SET1((float)r * 1e-3f);                      \
    size_t rounds = 0;                                                               \
    const double start = now_seconds();                                              \
    double elapsed = 0;                                                              \
    do {                                                                             \
        for (int i = 0; i < 4096; i++)                                               \
            for (int r = 0; r < 12; r++) c[r] = STEP(c[r]);                          \
        rounds += 4096;                                                              \
        elapsed = now_seconds() - start;                                             \
    } while (elapsed < seconds);                                                     \
    VEC sum = c[0];                                                                  \
    for (int r = 1; r < 12; r++) sum = ADD(sum, c[r]);                               \
    float lanes[16];                                                                 \
    STORE(lanes, sum);                                                               \
    volatile float sink = lanes[0];                                                  \
    (void)sink;
#define TIMED_CHAINS(STEP) TIMED_CHAINS_OF(__m512, _mm512_set1_ps, _mm512_add_ps, _mm512_storeu_ps, STEP)

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

// The same 12 chains of fp32 FMAs in AVX2's 8 lanes, for the AVX2 kernels' gemm.
__attribute__((target("avx2,fma"))) static double fp32_peak_avx2(double seconds) {
    const __m256 x = _mm256_set1_ps(0.999999f), y = _mm256_set1_ps(1e-7f);
#define FMA8_STEP(v) _mm256_fmadd_ps(v, x, y)
    TIMED_CHAINS_OF(__m256, _mm256_set1_ps, _mm256_add_ps, _mm256_storeu_ps, FMA8_STEP)
    return (double)rounds * 12 * 8 * 2 / elapsed * 1e-9;
}

// The peak of the instruction set the kernels run with (the one our fp32 gemm multiplies in).
double catdog_peak_fp32_gflops(double seconds) {
    if (catdog_kernels_avx512()) return fp32_peak(seconds);
    return strcmp(catdog_kernels_isa(), "avx2") == 0 ? fp32_peak_avx2(seconds) : 0;
}

double catdog_peak_bf16_gflops(double seconds) { return catdog_cpu_has_bf16() ? bf16_peak(seconds) : 0; }

// 8 rows x 32 columns of C in 16 registers; a row's pair broadcast, B's pairs read in place.
// A's pair (i, p) is the word a[i * ars + p * acs]: packed by rows (ars = k2, acs = 1) or by
// pair-columns (ars = 1, acs = m), whichever its fp32 layout converts to without a transpose.
BF16 __attribute__((always_inline)) static inline void bf16_block(size_t rows, size_t k2, const uint32_t *a, size_t ars,
                                                                   size_t acs, const uint32_t *b, size_t n, float *c,
                                                                   size_t ldc, int accumulate, int fetch_c, __mmask16 m0,
                                                                   __mmask16 m1) {
    __m512 acc[8][2];
    for (int r = 0; r < 8; r++) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
    if (accumulate && fetch_c)
        for (size_t r = 0; r < rows; r++) {
            _mm_prefetch((const char *)(c + r * ldc), _MM_HINT_T0);
            if (m1) _mm_prefetch((const char *)(c + r * ldc + 16), _MM_HINT_T0);
        }
    for (size_t p = 0; p < k2; p++) {
        const __m512bh b0 = (__m512bh)_mm512_maskz_loadu_epi32(m0, b + p * n);
        const __m512bh b1 = (__m512bh)_mm512_maskz_loadu_epi32(m1, b + p * n + 16);
        for (size_t r = 0; r < rows; r++) {
            const __m512bh x = (__m512bh)_mm512_set1_epi32((int)a[r * ars + p * acs]);
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

// Pairs along k in slices of at most 128 (a 128 x 32 panel of B's words is 16 KB, in L1 while
// every 8-row block of A passes over it); C accumulates across the slices. A large C is fetched
// ahead (fetch_c.h): cold, as in a training step, an im2col layer's dW at 8 images (2304 x 256
// += 2304 x 128 · 128 x 256) went from 219 to 467 GFLOP/s on a Zen 5 core.
enum { PAIR_SLICE = 128 };

BF16 static void sbgemm_avx512(size_t m, size_t n, size_t k, const uint32_t *a, size_t ars, size_t acs, const uint32_t *b,
                               float *c, size_t ldc, int accumulate) {
    const size_t k2 = (k + 1) / 2;
    const int fetch_c = m * n * sizeof(float) >= FETCH_C_BYTES;
    for (size_t p0 = 0; p0 < k2; p0 += PAIR_SLICE) {
        const size_t kk = k2 - p0 < PAIR_SLICE ? k2 - p0 : PAIR_SLICE;
        const int acc = accumulate || p0 > 0;
        const uint32_t *as = a + p0 * acs, *bs = b + p0 * n;
        for (size_t j = 0; j < n; j += 32) {
            const size_t w = n - j < 32 ? n - j : 32;
            const __mmask16 m0 = w >= 16 ? 0xffff : (__mmask16)((1u << w) - 1);
            const __mmask16 m1 = w >= 32 ? 0xffff : w > 16 ? (__mmask16)((1u << (w - 16)) - 1) : 0;
            for (size_t i = 0; i < m; i += 8) {
                const size_t rows = m - i < 8 ? m - i : 8;
                // A constant 8 lets the compiler keep the 16 accumulators in registers.
                if (rows == 8) bf16_block(8, kk, as + i * ars, ars, acs, bs + j, n, c + i * ldc + j, ldc, acc, fetch_c, m0, m1);
                else bf16_block(rows, kk, as + i * ars, ars, acs, bs + j, n, c + i * ldc + j, ldc, acc, fetch_c, m0, m1);
            }
        }
    }
}

int catdog_sbgemm(size_t m, size_t n, size_t k, const uint16_t *a_packed, const uint16_t *b_packed, float *c, size_t ldc,
                  int accumulate) {
    if (!catdog_cpu_has_bf16()) return 0;
    if (m == 0 || n == 0) return 1;
    const uint32_t *a32 = (const uint32_t *)(const void *)a_packed, *b32 = (const uint32_t *)(const void *)b_packed;
    sbgemm_avx512(m, n, k, a32, (k + 1) / 2, 1, b32, c, ldc, accumulate);
    return 1;
}

// 16 words (bf16(first[j]), bf16(second[j])), each rounded to nearest even: the pair layout
// every packing below writes, whichever way it reads its floats.
BF16 __attribute__((always_inline)) static inline __m512i pair_words(__m512 first, __m512 second) {
    const __m256i lo = (__m256i)_mm512_cvtneps_pbh(first), hi = (__m256i)_mm512_cvtneps_pbh(second);
    return _mm512_or_si512(_mm512_cvtepu16_epi32(lo), _mm512_slli_epi32(_mm512_cvtepu16_epi32(hi), 16));
}

// Rows r0 and r1 (NULL: zeros) of n floats as n words (r0[j], r1[j]): vcvtne2ps2bf16 rounds
// 16 + 16 floats to nearest even, one permute interleaves them.
BF16 static void pack_two_rows(const float *r0, const float *r1, size_t n, uint32_t *out) {
    static const short interleave[32] = {0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23,
                                          8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
    const __m512i order = _mm512_loadu_si512(interleave);
    for (size_t j = 0; j < n; j += 16) {
        const __mmask16 mask = n - j >= 16 ? 0xffff : (__mmask16)((1u << (n - j)) - 1);
        const __m512 x0 = _mm512_maskz_loadu_ps(mask, r0 + j);
        const __m512 x1 = r1 ? _mm512_maskz_loadu_ps(mask, r1 + j) : _mm512_setzero_ps();
        const __m512i both = (__m512i)_mm512_cvtne2ps_pbh(x1, x0);
        _mm512_mask_storeu_epi32(out + j, mask, _mm512_permutexvar_epi16(order, both));
    }
}

// Rows 2p and 2p+1 of x (k x n, row stride ld) as n words (x(2p, j), x(2p+1, j)), for every p.
BF16 static void pack_pair_rows(const float *x, size_t k, size_t n, size_t ld, uint32_t *out) {
    for (size_t p = 0; p < (k + 1) / 2; p++)
        pack_two_rows(x + 2 * p * ld, 2 * p + 1 < k ? x + (2 * p + 1) * ld : NULL, n, out + p * n);
}

// Each row i of x (m x k, row stride ld) as ceil(k/2) words (x(i, 2p), x(i, 2p+1)): consecutive
// floats already pair along k, so converting 32 at a time in order packs them.
BF16 static void pack_rows(const float *x, size_t m, size_t k, size_t ld, uint32_t *out) {
    const size_t k2 = (k + 1) / 2;
    for (size_t i = 0; i < m; i++)
        for (size_t p = 0; p < k; p += 32) {
            const size_t w = k - p < 32 ? k - p : 32;
            const __mmask16 lo = w >= 16 ? 0xffff : (__mmask16)((1u << w) - 1);
            const __mmask16 hi = w >= 32 ? 0xffff : w > 16 ? (__mmask16)((1u << (w - 16)) - 1) : 0;
            const __m512 x0 = _mm512_maskz_loadu_ps(lo, x + i * ld + p), x1 = _mm512_maskz_loadu_ps(hi, x + i * ld + p + 16);
            const size_t words = (w + 1) / 2;
            const __mmask16 store = words >= 16 ? 0xffff : (__mmask16)((1u << words) - 1);
            _mm512_mask_storeu_epi32(out + i * k2 + p / 2, store, (__m512i)_mm512_cvtne2ps_pbh(x1, x0));
        }
}

// Wᵀ of w (rows x cols, row-major) packed in pairs along Wᵀ's rows: pair-row p holds the rows
// words (w(j, 2p), w(j, 2p+1)), two neighbours of w's row j, so a row of w converts to its words
// in order; 16 rows' words for 16 pairs are made in L1, then transposed in registers into place.
BF16 static void pack_transposed(const float *w, size_t rows, size_t cols, uint32_t *out) {
    const size_t pairs = (cols + 1) / 2;
    uint32_t block[16 * 16];
    for (size_t r0 = 0; r0 < rows; r0 += 16) {
        const size_t nr = rows - r0 < 16 ? rows - r0 : 16;
        for (size_t p0 = 0; p0 < pairs; p0 += 16) {
            const size_t np = pairs - p0 < 16 ? pairs - p0 : 16, floats = cols - 2 * p0;
            const __mmask16 lo = floats >= 16 ? 0xffff : (__mmask16)((1u << floats) - 1);
            const __mmask16 hi = floats >= 32 ? 0xffff : floats > 16 ? (__mmask16)((1u << (floats - 16)) - 1) : 0;
            for (size_t r = 0; r < nr; r++) {
                const float *row = w + (r0 + r) * cols + 2 * p0;
                const __m512 x0 = _mm512_maskz_loadu_ps(lo, row), x1 = _mm512_maskz_loadu_ps(hi, row + 16);
                _mm512_storeu_si512(block + r * 16, (__m512i)_mm512_cvtne2ps_pbh(x1, x0));
            }
            if (nr == 16 && np == 16) {
                transpose16((const float *)block, 16, (float *)(out + p0 * rows + r0), rows);
                continue;
            }
            for (size_t q = 0; q < np; q++)
                for (size_t r = 0; r < nr; r++) out[(p0 + q) * rows + r0 + r] = block[r * 16 + q];
        }
    }
}

int catdog_bf16_pack_transposed(const float *w, size_t rows, size_t cols, void *out) {
    if (!catdog_bf16_products_available()) return 0;
    pack_transposed(w, rows, cols, out);
    return 1;
}

// Each thread's packed operands, grown as needed and kept: the layers' products reuse them.
static _Thread_local uint32_t *packed_a, *packed_b;
static _Thread_local size_t packed_a_words, packed_b_words;

static uint32_t *scratch(uint32_t **buffer, size_t *words, size_t needed) {
    if (needed <= *words) return *buffer;
    uint32_t *grown = realloc(*buffer, needed * sizeof(uint32_t));
    if (!grown) return NULL;
    *buffer = grown;
    *words = needed;
    return grown;
}

int catdog_bf16_products_available(void) { return catdog_cpu_has_bf16() && catdog_kernels_avx512(); }

int catdog_bf16_pack_pair_rows(const float *x, size_t k, size_t n, size_t ld, void *packed) {
    if (!catdog_bf16_products_available()) return 0;
    pack_pair_rows(x, k, n, ld, packed);
    return 1;
}

// A packed into this thread's scratch (B already packed), then the product.
static int sbgemm_packing_a(size_t m, size_t n, size_t k, const float *a, size_t rsa, size_t csa, const uint32_t *pb, float *c,
                            size_t ldc, int accumulate) {
    const size_t k2 = (k + 1) / 2;
    if (k2 != 0 && m > SIZE_MAX / k2) return 0;
    uint32_t *pa = scratch(&packed_a, &packed_a_words, m * k2);
    if (!pa) return 0;
    if (csa == 1) {
        pack_rows(a, m, k, rsa, pa);
        sbgemm_avx512(m, n, k, pa, k2, 1, pb, c, ldc, accumulate);
    } else {
        pack_pair_rows(a, k, m, csa, pa);  // Aᵀ is stored (k x m): pack it as B is packed
        sbgemm_avx512(m, n, k, pa, 1, m, pb, c, ldc, accumulate);
    }
    return 1;
}

// B (k x n, row stride ldb, k > 0) packed in pairs along k into this thread's scratch; NULL
// where it cannot be allocated.
static const uint32_t *packed_b_scratch(const float *b, size_t k, size_t n, size_t ldb) {
    const size_t k2 = (k + 1) / 2;
    if (n > SIZE_MAX / k2) return NULL;
    uint32_t *pb = scratch(&packed_b, &packed_b_words, k2 * n);
    if (pb) pack_pair_rows(b, k, n, ldb, pb);
    return pb;
}

static int zero_k(size_t m, size_t n, float *c, size_t ldc, int accumulate) {
    if (!accumulate)
        for (size_t i = 0; i < m; i++) memset(c + i * ldc, 0, n * sizeof(float));
    return 1;
}

int catdog_sbgemm_f32(size_t m, size_t n, size_t k, const float *a, size_t rsa, size_t csa, const float *b, size_t ldb,
                      float *c, size_t ldc, int accumulate) {
    // Only where the kernels run AVX-512 (`--kernels avx2` stands in for a CPU without it).
    if (!catdog_bf16_products_available() || (rsa != 1 && csa != 1)) return 0;
    if (m == 0 || n == 0) return 1;
    if (k == 0) return zero_k(m, n, c, ldc, accumulate);
    const uint32_t *pb = packed_b_scratch(b, k, n, ldb);
    return pb ? sbgemm_packing_a(m, n, k, a, rsa, csa, pb, c, ldc, accumulate) : 0;
}

int catdog_sbgemm_f32_packed_b(size_t m, size_t n, size_t k, const float *a, size_t rsa, size_t csa, const void *b_packed,
                               float *c, size_t ldc, int accumulate) {
    if (!catdog_bf16_products_available() || (rsa != 1 && csa != 1)) return 0;
    if (m == 0 || n == 0) return 1;
    if (k == 0) return zero_k(m, n, c, ldc, accumulate);
    return sbgemm_packing_a(m, n, k, a, rsa, csa, b_packed, c, ldc, accumulate);
}

// B (k x n, row stride ldb) rounded and packed into this thread's scratch, A already packed
// (see catdog_sbgemm_packed), then the product.
int catdog_sbgemm_packed_a(size_t m, size_t n, size_t k, const void *a, size_t ars, size_t acs, const float *b, size_t ldb,
                           float *c, size_t ldc, int accumulate) {
    if (!catdog_bf16_products_available()) return 0;
    if (m == 0 || n == 0) return 1;
    if (k == 0) return zero_k(m, n, c, ldc, accumulate);
    const uint32_t *pb = packed_b_scratch(b, k, n, ldb);
    if (!pb) return 0;
    sbgemm_avx512(m, n, k, a, ars, acs, pb, c, ldc, accumulate);
    return 1;
}

// An im2col matrix's rows rounded and packed straight from the input x (NHWC), without the fp32
// matrix: output pixels row0 .. row0 + rows - 1 of the batch, each patch's taps in im2col's order
// (kh, kw, c), zeros in the padding. By rows (c even, so that no pair straddles two taps), what
// pack_rows makes of the fp32 rows; or in pairs of rows, what pack_pair_rows makes of them. Each
// word is the same elementwise rounding either way, so the same bits.
typedef struct {
    size_t ih, iw, c, kh, kw, sh, sw, pad_top, pad_left, oh, ow;
} patch_geometry;

// Output pixel r's image in x and the input row and column of its patch's top-left tap.
static void patch_origin(const patch_geometry *g, const float *x, size_t r, const float **image, long *y0, long *x0) {
    const size_t per_image = g->oh * g->ow, n = r / per_image, within = r - n * per_image;
    *image = x + n * g->ih * g->iw * g->c;
    *y0 = (long)((within / g->ow) * g->sh) - (long)g->pad_top;
    *x0 = (long)((within % g->ow) * g->sw) - (long)g->pad_left;
}

// Tap (i, j) of the patch at (y0, x0): c floats of `image`, or NULL in the padding.
static inline const float *patch_tap(const patch_geometry *g, const float *image, long y0, long x0, size_t i, size_t j) {
    const long y = y0 + (long)i, x = x0 + (long)j;
    return y >= 0 && y < (long)g->ih && x >= 0 && x < (long)g->iw ? image + ((size_t)y * g->iw + (size_t)x) * g->c : NULL;
}

// c floats (NULL: zeros) as c / 2 words, 32 floats a step.
BF16 static inline void pack_run(const float *src, size_t c, uint32_t *out) {
    if (!src) {
        memset(out, 0, c / 2 * sizeof(uint32_t));
        return;
    }
    size_t k = 0;
    for (; k + 32 <= c; k += 32)
        _mm512_storeu_si512(out + k / 2, (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(src + k + 16), _mm512_loadu_ps(src + k)));
    if (k < c) pack_rows(src + k, 1, c - k, c - k, out + k / 2);
}

// Words (first(j), second(j)) for j < c (NULL: zeros), 16 a step.
BF16 static inline void pack_run_pair(const float *first, const float *second, size_t c, uint32_t *out) {
    for (size_t j = 0; j < c; j += 16) {
        const __mmask16 mask = c - j >= 16 ? 0xffff : (__mmask16)((1u << (c - j)) - 1);
        const __m512 a = first ? _mm512_maskz_loadu_ps(mask, first + j) : _mm512_setzero_ps();
        const __m512 b = second ? _mm512_maskz_loadu_ps(mask, second + j) : _mm512_setzero_ps();
        _mm512_mask_storeu_epi32(out + j, mask, pair_words(a, b));
    }
}

// Asks for the cache lines of output pixel r's patch (its taps inside the image): x was last
// read in forward, and a patch's taps (kh rows of kw runs of c floats) are a pattern the
// hardware's prefetchers do not follow, so each load of them waited on the L3 or memory.
static inline void prefetch_patch(const patch_geometry *g, const float *x, size_t r) {
    const float *image;
    long y0, x0;
    patch_origin(g, x, r, &image, &y0, &x0);
    for (size_t i = 0; i < g->kh; i++)
        for (size_t j = 0; j < g->kw; j++) {
            const float *tap = patch_tap(g, image, y0, x0, i, j);
            if (!tap) continue;
            for (size_t k = 0; k < g->c; k += 16) _mm_prefetch((const char *)(tap + k), _MM_HINT_T0);
        }
}

// Pixels ahead whose patches are asked for while one is packed.
enum { PATCH_PREFETCH_DISTANCE = 2 };

BF16 static void im2col_rows(const patch_geometry *g, const float *x, size_t row0, size_t rows, uint32_t *out) {
    const size_t c = g->c, words = g->kh * g->kw * c / 2;
    for (size_t r = 0; r < rows; r++) {
        const float *image;
        long y0, x0;
        if (r + PATCH_PREFETCH_DISTANCE < rows) prefetch_patch(g, x, row0 + r + PATCH_PREFETCH_DISTANCE);
        patch_origin(g, x, row0 + r, &image, &y0, &x0);
        for (size_t i = 0; i < g->kh; i++)
            for (size_t j = 0; j < g->kw; j++)
                pack_run(patch_tap(g, image, y0, x0, i, j), c, out + r * words + (i * g->kw + j) * c / 2);
    }
}

BF16 static void im2col_pairs(const patch_geometry *g, const float *x, size_t row0, size_t rows, uint32_t *out) {
    const size_t c = g->c, words = g->kh * g->kw * c;
    for (size_t p = 0; p < (rows + 1) / 2; p++) {
        const int both = 2 * p + 1 < rows;
        for (size_t ahead = 2 * p + PATCH_PREFETCH_DISTANCE; ahead < 2 * p + PATCH_PREFETCH_DISTANCE + 2 && ahead < rows; ahead++)
            prefetch_patch(g, x, row0 + ahead);
        const float *image0, *image1 = NULL;
        long y0, x0, y1 = 0, x1 = 0;
        patch_origin(g, x, row0 + 2 * p, &image0, &y0, &x0);
        if (both) patch_origin(g, x, row0 + 2 * p + 1, &image1, &y1, &x1);
        for (size_t i = 0; i < g->kh; i++)
            for (size_t j = 0; j < g->kw; j++)
                pack_run_pair(patch_tap(g, image0, y0, x0, i, j), both ? patch_tap(g, image1, y1, x1, i, j) : NULL, c,
                              out + p * words + (i * g->kw + j) * c);
    }
}

int catdog_im2col_bf16(const float *x, size_t ih, size_t iw, size_t c, size_t kh, size_t kw, size_t sh, size_t sw,
                       size_t pad_top, size_t pad_left, size_t oh, size_t ow, size_t row0, size_t rows, int pairs, void *out) {
    if ((!pairs && c % 2 != 0) || oh == 0 || ow == 0 || !catdog_bf16_products_available()) return 0;
    const patch_geometry g = {ih, iw, c, kh, kw, sh, sw, pad_top, pad_left, oh, ow};
    if (pairs) im2col_pairs(&g, x, row0, rows, out);
    else im2col_rows(&g, x, row0, rows, out);
    return 1;
}

// Packed operands written straight from a transform's output (a Winograd tile's 36 rows, in
// cache), so that the products read bf16 pairs rather than packing fp32 operands of their own.
int catdog_sbgemm_packed(size_t m, size_t n, size_t k, const void *a, size_t ars, size_t acs, const void *b, float *c,
                         size_t ldc, int accumulate) {
    if (!catdog_bf16_products_available()) return 0;
    if (m == 0 || n == 0) return 1;
    if (k == 0) return zero_k(m, n, c, ldc, accumulate);
    sbgemm_avx512(m, n, k, a, ars, acs, b, c, ldc, accumulate);
    return 1;
}

// One row of n floats as ceil(n/2) words, 32 floats a step; inlined into the 36 rows of a tile,
// which a layer packs hundreds of thousands of times a pass.
BF16 __attribute__((always_inline)) static inline void pack_row(const float *x, size_t n, uint32_t *out) {
    size_t p = 0;
    for (; p + 32 <= n; p += 32)
        _mm512_storeu_si512(out + p / 2, (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(x + p + 16), _mm512_loadu_ps(x + p)));
    if (p < n) pack_rows(x + p, 1, n - p, n - p, out + p / 2);
}

BF16 static void pack_tile_rows(const float *tile, size_t rows, size_t n, uint32_t *out, size_t stride) {
    for (size_t r = 0; r < rows; r++) pack_row(tile + r * n, n, out + r * stride);
}

int catdog_bf16_pack_tile_rows(const float *tile, size_t rows, size_t n, void *out, size_t stride) {
    if (!catdog_bf16_products_available()) return 0;
    pack_tile_rows(tile, rows, n, out, stride);
    return 1;
}

BF16 static void pack_tile_pair(const float *first, const float *second, size_t rows, size_t n, size_t ld, uint32_t *out,
                                size_t stride) {
    if (!second || n % 16 != 0) {
        for (size_t r = 0; r < rows; r++) pack_two_rows(first + r * ld, second ? second + r * ld : NULL, n, out + r * stride);
        return;
    }
    // (first(r, j), second(r, j)) as words: the two rows' bf16 halves unpacked against each other,
    // 16 floats of each a step.
    for (size_t r = 0; r < rows; r++) {
        const float *a = first + r * ld, *b = second + r * ld;
        uint32_t *o = out + r * stride;
        for (size_t j = 0; j < n; j += 16) {
            _mm512_storeu_si512(o + j, pair_words(_mm512_loadu_ps(a + j), _mm512_loadu_ps(b + j)));
        }
    }
}

int catdog_bf16_pack_tile_pair(const float *first, const float *second, size_t rows, size_t n, size_t ld, void *out,
                               size_t stride) {
    if (!catdog_bf16_products_available()) return 0;
    pack_tile_pair(first, second, rows, n, ld, out, stride);
    return 1;
}

// Winograd F(4×4)'s input transform of one tile with its 36 rows rounded and packed as they are
// made: what catdog_wino4_input and catdog_bf16_pack_tile_rows give one after the other, the
// same bits, without writing the fp32 rows and reading them back.
typedef float wvec __attribute__((vector_size(64)));

BF16 __attribute__((always_inline)) static inline wvec load16(const float *p) {
    wvec v;
    __builtin_memcpy(&v, p, sizeof v);
    return v;
}

// V of the 16 channels from k, its 36 rows into o.
BF16 __attribute__((always_inline)) static inline void input16(const float *const d[36], size_t k, wvec o[36]) {
    BT6_TILE(d, k, load16, o);
}

// 16 channels at a time: their 16 bf16 (8 words, in channel order) are half a vector, stored as
// each row is made, so that one tile's 36 rows are all that is live (two tiles' 72 rows, for 32
// channels a step, did not fit in the 32 registers).
BF16 static void input_packed(const float *const d[36], uint32_t *out, size_t stride, size_t n) {
    FETCH_NEXT_TILES(d + 5, 6, 6, 8, n, 0);
    for (size_t k = 0; k < n; k += 16) {
        wvec o[36];
        input16(d, k, o);
        for (int xi = 0; xi < 36; xi++)
            _mm256_storeu_si256((__m256i *)(out + xi * stride + k / 2), (__m256i)_mm512_cvtneps_pbh((__m512)o[xi]));
    }
}

int catdog_wino4_input_bf16(const float *const d[36], void *out, size_t stride, size_t n) {
    if (n % 16 != 0 || !catdog_bf16_products_available()) return 0;
    input_packed(d, out, stride, n);
    return 1;
}

// dM of the 16 gradients' channels from k (catdog_wino4_output_gradient's), its 36 rows into o.
BF16 __attribute__((always_inline)) static inline void gradient16(const float *const dy[16], size_t k, wvec o[36]) {
    A4_TILE(dy, k, load16, o);
}

// 16 words (first(j), second(j)) in bf16, as pack_tile_pair makes them.
BF16 __attribute__((always_inline)) static inline void store_pair(uint32_t *out, wvec first, wvec second) {
    _mm512_storeu_si512(out, pair_words((__m512)first, (__m512)second));
}

BF16 static void kernel_gradient_pair(const float *const d0[36], const float *const d1[36], const float *const g0[16],
                                      const float *const g1[16], uint32_t *v, size_t vstride, uint32_t *m, size_t mstride,
                                      size_t c, size_t f) {
    FETCH_NEXT_TILES((d1 ? d1 : d0) + 5, 6, 6, 8, c, 0);
    FETCH_NEXT_TILES((g1 ? g1 : g0) + 3, 4, 4, 5, f, 0);
    wvec a[36], b[36];
    for (size_t k = 0; k < c; k += 16) {
        input16(d0, k, a);
        if (d1) input16(d1, k, b);
        for (int xi = 0; xi < 36; xi++) store_pair(v + xi * vstride + k, a[xi], d1 ? b[xi] : (wvec){0});
    }
    for (size_t k = 0; k < f; k += 16) {
        gradient16(g0, k, a);
        if (g1) gradient16(g1, k, b);
        for (int xi = 0; xi < 36; xi++) store_pair(m + xi * mstride + k, a[xi], g1 ? b[xi] : (wvec){0});
    }
}

int catdog_wino4_kernel_gradient_pair_bf16(const float *const d0[36], const float *const d1[36], const float *const g0[16],
                                           const float *const g1[16], void *v, size_t vstride, void *m, size_t mstride,
                                           size_t c, size_t f) {
    if (c % 16 != 0 || f % 16 != 0 || !catdog_bf16_products_available()) return 0;
    kernel_gradient_pair(d0, d1, g0, g1, v, vstride, m, mstride, c, f);
    return 1;
}

// The same, only the lanes in `mask` stored (a last block of fewer than 16 filters).
BF16 __attribute__((always_inline)) static inline void store_pair_masked(uint32_t *out, wvec first, wvec second,
                                                                          __mmask16 mask) {
    _mm512_mask_storeu_epi32(out, mask, pair_words((__m512)first, (__m512)second));
}

// U = (G g) Gᵀ of input channels 2p and 2p + 1 (zeros past c), 16 filters a step, each value the
// expression catdog_wino4_filter computes it by (WINO4_G_ROW), so clang contracts it the same
// way; one row of G g (three vectors a channel) live at a time beside the two kernels' 18.
BF16 static void filter_packed(const float *const taps[9], size_t ld, size_t c, size_t f, uint32_t *out, size_t stride) {
    for (size_t p = 0; p < (c + 1) / 2; p++) {
        const int both = 2 * p + 1 < c;
        for (size_t j = 0; j < f; j += 16) {
            const __mmask16 mask = f - j >= 16 ? 0xffff : (__mmask16)((1u << (f - j)) - 1);
            wvec g0[9], g1[9];
            // The next pair's taps, fetched ahead: a step's weights come from memory, 18 rows
            // in 9 planes C·F floats apart, and the cache's own prefetchers did not follow them
            // (resnet-pool's kernels, alone on a Zen 5 core: 0.45 → 0.28 ms a pass).
            for (size_t row = 2 * p + 2; row < 2 * p + 4 && row < c; row++)
                for (int t = 0; t < 9; t++) _mm_prefetch((const char *)(taps[t] + row * ld + j), _MM_HINT_T0);
            for (int t = 0; t < 9; t++) {
                g0[t] = (wvec)_mm512_maskz_loadu_ps(mask, taps[t] + 2 * p * ld + j);
                g1[t] = both ? (wvec)_mm512_maskz_loadu_ps(mask, taps[t] + (2 * p + 1) * ld + j) : (wvec){0};
            }
            for (int r = 0; r < 6; r++) {
                wvec t0[3], t1[3];
                for (int i = 0; i < 3; i++) {
                    t0[i] = WINO4_G_ROW(r, g0[i], g0[3 + i], g0[6 + i]);
                    t1[i] = WINO4_G_ROW(r, g1[i], g1[3 + i], g1[6 + i]);
                }
                for (int s = 0; s < 6; s++)
                    store_pair_masked(out + (size_t)(r * 6 + s) * stride + p * f + j, WINO4_G_ROW(s, t0[0], t0[1], t0[2]),
                                      WINO4_G_ROW(s, t1[0], t1[1], t1[2]), mask);
            }
        }
    }
}

int catdog_wino4_filter_bf16(const float *const taps[9], size_t ld, size_t c, size_t f, void *out, size_t stride) {
    if (!catdog_bf16_products_available()) return 0;
    filter_packed(taps, ld, c, f, out, stride);
    return 1;
}

// F(2×2)'s U = (G g) Gᵀ (W2_G, as catdog_wino2_filter computes it) of input channels 2p and
// 2p + 1 (zeros past c), 16 filters a step, rounded and packed in pairs as made: the fp32 U is
// never written out and read back for packing.
BF16 static void filter2_packed(const float *const taps[9], size_t ld, size_t c, size_t f, uint32_t *out, size_t stride) {
    for (size_t p = 0; p < (c + 1) / 2; p++) {
        const int both = 2 * p + 1 < c;
        for (size_t j = 0; j < f; j += 16) {
            const __mmask16 mask = f - j >= 16 ? 0xffff : (__mmask16)((1u << (f - j)) - 1);
            for (size_t row = 2 * p + 2; row < 2 * p + 4 && row < c; row++)
                for (int t = 0; t < 9; t++) _mm_prefetch((const char *)(taps[t] + row * ld + j), _MM_HINT_T0);
            wvec g0[9], g1[9], t0[12], t1[12];
            for (int t = 0; t < 9; t++) {
                g0[t] = (wvec)_mm512_maskz_loadu_ps(mask, taps[t] + 2 * p * ld + j);
                g1[t] = both ? (wvec)_mm512_maskz_loadu_ps(mask, taps[t] + (2 * p + 1) * ld + j) : (wvec){0};
            }
            for (int i = 0; i < 3; i++) {
                W2_G(g0[i], g0[3 + i], g0[6 + i], t0[i], t0[3 + i], t0[6 + i], t0[9 + i]);
                W2_G(g1[i], g1[3 + i], g1[6 + i], t1[i], t1[3 + i], t1[6 + i], t1[9 + i]);
            }
            for (int r = 0; r < 4; r++) {
                wvec a[4], b[4];
                W2_G(t0[3 * r], t0[3 * r + 1], t0[3 * r + 2], a[0], a[1], a[2], a[3]);
                W2_G(t1[3 * r], t1[3 * r + 1], t1[3 * r + 2], b[0], b[1], b[2], b[3]);
                for (int s = 0; s < 4; s++) store_pair_masked(out + (size_t)(4 * r + s) * stride + p * f + j, a[s], b[s], mask);
            }
        }
    }
}

int catdog_wino2_filter_bf16(const float *const taps[9], size_t ld, size_t c, size_t f, void *out, size_t stride) {
    if (!catdog_bf16_products_available()) return 0;
    filter2_packed(taps, ld, c, f, out, stride);
    return 1;
}

#else
int catdog_cpu_has_bf16(void) { return 0; }
int catdog_bf16_products_available(void) { return 0; }
double catdog_peak_fp32_gflops(double seconds) { (void)seconds; return 0; }
double catdog_peak_bf16_gflops(double seconds) { (void)seconds; return 0; }
int catdog_sbgemm(size_t m, size_t n, size_t k, const uint16_t *a_packed, const uint16_t *b_packed, float *c, size_t ldc,
                  int accumulate) {
    (void)m; (void)n; (void)k; (void)a_packed; (void)b_packed; (void)c; (void)ldc; (void)accumulate;
    return 0;
}
int catdog_sbgemm_f32(size_t m, size_t n, size_t k, const float *a, size_t rsa, size_t csa, const float *b, size_t ldb,
                      float *c, size_t ldc, int accumulate) {
    (void)m; (void)n; (void)k; (void)a; (void)rsa; (void)csa; (void)b; (void)ldb; (void)c; (void)ldc; (void)accumulate;
    return 0;
}
int catdog_sbgemm_packed(size_t m, size_t n, size_t k, const void *a, size_t ars, size_t acs, const void *b, float *c,
                         size_t ldc, int accumulate) {
    (void)m; (void)n; (void)k; (void)a; (void)ars; (void)acs; (void)b; (void)c; (void)ldc; (void)accumulate;
    return 0;
}
int catdog_wino4_kernel_gradient_pair_bf16(const float *const d0[36], const float *const d1[36], const float *const g0[16],
                                           const float *const g1[16], void *v, size_t vstride, void *m, size_t mstride,
                                           size_t c, size_t f) {
    (void)d0; (void)d1; (void)g0; (void)g1; (void)v; (void)vstride; (void)m; (void)mstride; (void)c; (void)f;
    return 0;
}
int catdog_wino4_input_bf16(const float *const d[36], void *out, size_t stride, size_t n) {
    (void)d; (void)out; (void)stride; (void)n;
    return 0;
}
int catdog_wino4_filter_bf16(const float *const taps[9], size_t ld, size_t c, size_t f, void *out, size_t stride) {
    (void)taps; (void)ld; (void)c; (void)f; (void)out; (void)stride;
    return 0;
}
int catdog_wino2_filter_bf16(const float *const taps[9], size_t ld, size_t c, size_t f, void *out, size_t stride) {
    (void)taps; (void)ld; (void)c; (void)f; (void)out; (void)stride;
    return 0;
}
int catdog_bf16_pack_tile_rows(const float *tile, size_t rows, size_t n, void *out, size_t stride) {
    (void)tile; (void)rows; (void)n; (void)out; (void)stride;
    return 0;
}
int catdog_bf16_pack_tile_pair(const float *first, const float *second, size_t rows, size_t n, size_t ld, void *out,
                               size_t stride) {
    (void)first; (void)second; (void)rows; (void)n; (void)ld; (void)out; (void)stride;
    return 0;
}
int catdog_bf16_pack_pair_rows(const float *x, size_t k, size_t n, size_t ld, void *packed) {
    (void)x; (void)k; (void)n; (void)ld; (void)packed;
    return 0;
}
int catdog_bf16_pack_transposed(const float *w, size_t rows, size_t cols, void *out) {
    (void)w; (void)rows; (void)cols; (void)out;
    return 0;
}
int catdog_sbgemm_f32_packed_b(size_t m, size_t n, size_t k, const float *a, size_t rsa, size_t csa, const void *b_packed,
                               float *c, size_t ldc, int accumulate) {
    (void)m; (void)n; (void)k; (void)a; (void)rsa; (void)csa; (void)b_packed; (void)c; (void)ldc; (void)accumulate;
    return 0;
}
int catdog_sbgemm_packed_a(size_t m, size_t n, size_t k, const void *a, size_t ars, size_t acs, const float *b, size_t ldb,
                           float *c, size_t ldc, int accumulate) {
    (void)m; (void)n; (void)k; (void)a; (void)ars; (void)acs; (void)b; (void)ldb; (void)c; (void)ldc; (void)accumulate;
    return 0;
}
int catdog_im2col_bf16(const float *x, size_t ih, size_t iw, size_t c, size_t kh, size_t kw, size_t sh, size_t sw,
                       size_t pad_top, size_t pad_left, size_t oh, size_t ow, size_t row0, size_t rows, int pairs, void *out) {
    (void)x; (void)ih; (void)iw; (void)c; (void)kh; (void)kw; (void)sh; (void)sw; (void)pad_top; (void)pad_left; (void)oh;
    (void)ow; (void)row0; (void)rows; (void)pairs; (void)out;
    return 0;
}
#endif
