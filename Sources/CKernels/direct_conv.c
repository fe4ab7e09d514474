#include "catdog_kernels.h"

// Direct convolution for layers with few input channels (an image's 3), NHWC, on AVX-512: im2col
// would copy each output pixel's taps as runs of C floats (a memmove call for every 9) and hand
// our gemm products with k = KH·KW·C (27) or m = 27 rows, both short. Here F = 16 or 32 filters
// (J = F / 16 registers a pixel): forward keeps four output pixels' sums in registers while each
// kernel row's KW·C taps (3, 6, 9 or 12) are broadcast; the kernel gradient keeps one kernel
// row's taps × F filters in registers while it passes over an image's pixels. Sums of products
// in float, in a fixed order.

#if defined(__x86_64__) && defined(__clang__)
#include <immintrin.h>

#define AVX512 __attribute__((target("avx512f")))

typedef struct {
    size_t images, ih, iw, c, f, kh, kw, sh, sw, pad_top, pad_left, oh, ow;
    const float *bias;  // forward: added to each output (NULL: none), then
    int activation;     // 1 ReLU, 2 ReLU6 (0: none), as catdog_bias_activation does after a pass
} geometry;

// A stored sum's bias and activation, in the order and with the comparisons of
// catdog_bias_activation (NaN and -0 stay), as the sums leave their registers.
AVX512 static inline __m512 finish(__m512 v, const float *bias, int activation) {
    if (bias) v = _mm512_add_ps(v, _mm512_loadu_ps(bias));
    if (activation != 0) v = _mm512_mask_mov_ps(v, _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_LT_OQ), _mm512_setzero_ps());
    if (activation == 2) v = _mm512_mask_mov_ps(v, _mm512_cmp_ps_mask(v, _mm512_set1_ps(6.0f), _CMP_GT_OQ), _mm512_set1_ps(6.0f));
    return v;
}

#define ACC_ALL(M) M(0) M(1) M(2) M(3) M(4) M(5) M(6) M(7) M(8) M(9) M(10) M(11)

// The T = KW·C taps of output column ow in input row `row`: a pointer into the row when they
// all lie inside the image (they are contiguous there), else copied into `edge` with zeros (out
// of line: inlined, its vector code made -O3 keep the sums' registers on the stack).
__attribute__((noinline)) static const float *edge_taps(const geometry *g, const float *row, long iw0, float *edge) {
    const size_t c = g->c;
    for (size_t kw = 0; kw < g->kw; kw++) {
        const long iw = iw0 + (long)kw;
        for (size_t ch = 0; ch < c; ch++) edge[kw * c + ch] = iw >= 0 && iw < (long)g->iw ? row[(size_t)iw * c + ch] : 0;
    }
    return edge;
}

AVX512 static inline const float *taps(const geometry *g, const float *row, size_t ow, float *edge) {
    const long iw0 = (long)(ow * g->sw) - (long)g->pad_left;
    return iw0 >= 0 && iw0 + (long)g->kw <= (long)g->iw ? row + (size_t)iw0 * g->c : edge_taps(g, row, iw0, edge);
}

// y (images, oh, ow, F) = x ⊛ w, w (KH, KW, C, F): four output pixels of a row at a time, their
// F = 16·J sums in registers (one pixel's 27 products in a row would wait on each other's
// latency); each kernel row's T taps broadcast against the weights' rows (read from L1 once for
// the four). The row's last pixels one at a time.
#define FWD_STEP(t)                                                                                                \
    if ((t) < T_) {                                                                                                \
        const int k = (t) < T_ ? (t) : 0;                                                                          \
        const __m512 w0 = _mm512_loadu_ps(wr + k * f), w1 = J_ >= 2 ? _mm512_loadu_ps(wr + k * f + 16) : w0;      \
        __m512 v = _mm512_set1_ps(x0[k]);                                                                          \
        y00 = _mm512_fmadd_ps(v, w0, y00);                                                                         \
        if (J_ >= 2) y01 = _mm512_fmadd_ps(v, w1, y01);                                                            \
        if (P_ >= 4) {                                                                                             \
            v = _mm512_set1_ps(x1[k]);                                                                             \
            y10 = _mm512_fmadd_ps(v, w0, y10);                                                                     \
            if (J_ >= 2) y11 = _mm512_fmadd_ps(v, w1, y11);                                                        \
            v = _mm512_set1_ps(x2[k]);                                                                             \
            y20 = _mm512_fmadd_ps(v, w0, y20);                                                                     \
            if (J_ >= 2) y21 = _mm512_fmadd_ps(v, w1, y21);                                                        \
            v = _mm512_set1_ps(x3[k]);                                                                             \
            y30 = _mm512_fmadd_ps(v, w0, y30);                                                                     \
            if (J_ >= 2) y31 = _mm512_fmadd_ps(v, w1, y31);                                                        \
        }                                                                                                          \
    }
#define FWD_STORE(p)                                                                                               \
    if (P_ > (p)) {                                                                                                \
        _mm512_storeu_ps(out + (p) * f, finish(y##p##0, g->bias, g->activation));                                  \
        if (J_ >= 2) _mm512_storeu_ps(out + (p) * f + 16, finish(y##p##1, g->bias ? g->bias + 16 : 0, g->activation)); \
    }
// Pixels ow..ow+P-1 of output row oh of image n.
#define FWD_PIXELS(P)                                                                                              \
    {                                                                                                              \
        enum { P_ = P };                                                                                           \
        __m512 y00 = _mm512_setzero_ps(), y01 = y00, y10 = y00, y11 = y00, y20 = y00, y21 = y00, y30 = y00, y31 = y00; \
        for (size_t kh = 0; kh < g->kh; kh++) {                                                                    \
            const long ih = (long)(oh * g->sh) - (long)g->pad_top + (long)kh;                                      \
            if (ih < 0 || ih >= (long)g->ih) continue;                                                             \
            const float *row = x + (n * g->ih + (size_t)ih) * g->iw * c;                                           \
            const float *x0 = taps(g, row, ow, edge[0]), *x1 = x0, *x2 = x0, *x3 = x0;                             \
            if (P_ >= 4) {                                                                                         \
                x1 = taps(g, row, ow + 1, edge[1]);                                                                \
                x2 = taps(g, row, ow + 2, edge[2]);                                                                \
                x3 = taps(g, row, ow + 3, edge[3]);                                                                \
            }                                                                                                      \
            const float *wr = w + kh * T_ * f;                                                                     \
            ACC_ALL(FWD_STEP)                                                                                      \
        }                                                                                                          \
        float *out = y + ((n * g->oh + oh) * g->ow + ow) * f;                                                      \
        FWD_STORE(0) FWD_STORE(1) FWD_STORE(2) FWD_STORE(3)                                                        \
    }
#define FORWARD(T, J)                                                                                              \
    AVX512 static void forward_##T##_##J(const geometry *g, const float *x, const float *w, float *y) {           \
        enum { T_ = T, J_ = J };                                                                                   \
        const size_t c = g->c, f = g->f;                                                                           \
        float edge[4][12];                                                                                         \
        for (size_t n = 0; n < g->images; n++)                                                                     \
            for (size_t oh = 0; oh < g->oh; oh++) {                                                                \
                size_t ow = 0;                                                                                     \
                for (; ow + 4 <= g->ow; ow += 4) FWD_PIXELS(4)                                                     \
                for (; ow < g->ow; ow++) FWD_PIXELS(1)                                                             \
            }                                                                                                      \
    }

// dw (KH, KW, C, F) += Σ over pixels of x's taps · dy, one kernel row (kh) at a time: its T = KW·C
// taps (contiguous in x when the row's taps are all inside the image) times F = 16·J filters in
// named registers (an array of them was kept on the stack), added into dw once an image.
#define ACC_DECLARE(t) __m512 acc##t##_0 = _mm512_setzero_ps(), acc##t##_1 = _mm512_setzero_ps();
#define ACC_STEP(t)                                                                                                \
    if ((t) < T_) {                                                                                                 \
        const __m512 v = _mm512_set1_ps(xp[(t) < T_ ? (t) : 0]);                                                    \
        acc##t##_0 = _mm512_fmadd_ps(v, d0, acc##t##_0);                                                           \
        if (J_ == 2) acc##t##_1 = _mm512_fmadd_ps(v, d1, acc##t##_1);                                               \
    }
#define ACC_STORE(t)                                                                                               \
    if ((t) < T_) {                                                                                                 \
        float *o = out + (t) * f;                                                                                  \
        _mm512_storeu_ps(o, _mm512_add_ps(_mm512_loadu_ps(o), acc##t##_0));                                       \
        if (J_ == 2) _mm512_storeu_ps(o + 16, _mm512_add_ps(_mm512_loadu_ps(o + 16), acc##t##_1));                   \
    }

#define GRADIENT(T, J)                                                                                             \
    AVX512 static void gradient_##T##_##J(const geometry *g, const float *x, const float *dy, float *dw) {        \
        enum { T_ = T, J_ = J };                                                                                   \
        const size_t c = g->c, f = g->f;                                                                           \
        float edge[T];                                                                                             \
        for (size_t n = 0; n < g->images; n++)                                                                     \
            for (size_t kh = 0; kh < g->kh; kh++) {                                                                \
                ACC_ALL(ACC_DECLARE)                                                                               \
                for (size_t oh = 0; oh < g->oh; oh++) {                                                            \
                    const long ih = (long)(oh * g->sh) - (long)g->pad_top + (long)kh;                              \
                    if (ih < 0 || ih >= (long)g->ih) continue;                                                     \
                    const float *row = x + (n * g->ih + (size_t)ih) * g->iw * c;                                   \
                    const float *d = dy + (n * g->oh + oh) * g->ow * f;                                            \
                    for (size_t ow = 0; ow < g->ow; ow++, d += f) {                                                \
                        const float *xp = taps(g, row, ow, edge);                                                  \
                        const __m512 d0 = _mm512_loadu_ps(d), d1 = J == 2 ? _mm512_loadu_ps(d + 16) : d0;          \
                        ACC_ALL(ACC_STEP)                                                                          \
                    }                                                                                              \
                }                                                                                                  \
                float *out = dw + kh * T * f;                                                                      \
                ACC_ALL(ACC_STORE)                                                                                 \
            }                                                                                                      \
    }
GRADIENT(3, 1)
GRADIENT(3, 2)
GRADIENT(6, 1)
GRADIENT(6, 2)
GRADIENT(9, 1)
GRADIENT(9, 2)
GRADIENT(12, 1)
GRADIENT(12, 2)
FORWARD(3, 1)
FORWARD(3, 2)
FORWARD(6, 1)
FORWARD(6, 2)
FORWARD(9, 1)
FORWARD(9, 2)
FORWARD(12, 1)
FORWARD(12, 2)

// The instantiations by KW·C (3, 6, 9, 12) and F / 16 (1, 2); both kinds take (geometry, x,
// w or dy, y or dw).
typedef void (*direct_kernel)(const geometry *, const float *, const float *, float *);
static const direct_kernel forwards[4][2] = {
    {forward_3_1, forward_3_2}, {forward_6_1, forward_6_2}, {forward_9_1, forward_9_2}, {forward_12_1, forward_12_2}};
static const direct_kernel gradients[4][2] = {
    {gradient_3_1, gradient_3_2}, {gradient_6_1, gradient_6_2}, {gradient_9_1, gradient_9_2}, {gradient_12_1, gradient_12_2}};

// Runs the table's kernel for the shape; 0 where there is none (or no AVX-512 kernels selected).
static int run(const direct_kernel table[4][2], const float *a, const float *b, float *out, size_t images, size_t ih,
               size_t iw, size_t c, size_t f, size_t kh, size_t kw, size_t sh, size_t sw, size_t pad_top, size_t pad_left,
               size_t oh, size_t ow, const float *bias, int activation) {
    const size_t taps = kw * c;
    if (!catdog_kernels_avx512() || c < 1 || c > 4 || (f != 16 && f != 32) || kh == 0 || sh == 0 || sw == 0 ||
        taps % 3 != 0 || taps < 3 || taps > 12)
        return 0;
    const geometry g = {images, ih, iw, c, f, kh, kw, sh, sw, pad_top, pad_left, oh, ow, bias, activation};
    table[taps / 3 - 1][f / 16 - 1](&g, a, b, out);
    return 1;
}

int catdog_conv_direct_forward(const float *x, const float *w, float *y, size_t images, size_t ih, size_t iw, size_t c,
                               size_t f, size_t kh, size_t kw, size_t sh, size_t sw, size_t pad_top, size_t pad_left,
                               size_t oh, size_t ow) {
    return run(forwards, x, w, y, images, ih, iw, c, f, kh, kw, sh, sw, pad_top, pad_left, oh, ow, 0, 0);
}

int catdog_conv_direct_forward_bias(const float *x, const float *w, const float *bias, int activation, float *y, size_t images,
                                    size_t ih, size_t iw, size_t c, size_t f, size_t kh, size_t kw, size_t sh, size_t sw,
                                    size_t pad_top, size_t pad_left, size_t oh, size_t ow) {
    return run(forwards, x, w, y, images, ih, iw, c, f, kh, kw, sh, sw, pad_top, pad_left, oh, ow, bias, activation);
}

int catdog_conv_direct_kernel_gradient(const float *x, const float *dy, float *dw, size_t images, size_t ih, size_t iw,
                                       size_t c, size_t f, size_t kh, size_t kw, size_t sh, size_t sw, size_t pad_top,
                                       size_t pad_left, size_t oh, size_t ow) {
    return run(gradients, x, dy, dw, images, ih, iw, c, f, kh, kw, sh, sw, pad_top, pad_left, oh, ow, 0, 0);
}
#else
int catdog_conv_direct_forward(const float *x, const float *w, float *y, size_t images, size_t ih, size_t iw, size_t c,
                               size_t f, size_t kh, size_t kw, size_t sh, size_t sw, size_t pad_top, size_t pad_left,
                               size_t oh, size_t ow) {
    (void)x; (void)w; (void)y; (void)images; (void)ih; (void)iw; (void)c; (void)f; (void)kh; (void)kw; (void)sh;
    (void)sw; (void)pad_top; (void)pad_left; (void)oh; (void)ow;
    return 0;
}
int catdog_conv_direct_forward_bias(const float *x, const float *w, const float *bias, int activation, float *y, size_t images,
                                    size_t ih, size_t iw, size_t c, size_t f, size_t kh, size_t kw, size_t sh, size_t sw,
                                    size_t pad_top, size_t pad_left, size_t oh, size_t ow) {
    (void)bias; (void)activation;
    return catdog_conv_direct_forward(x, w, y, images, ih, iw, c, f, kh, kw, sh, sw, pad_top, pad_left, oh, ow);
}
int catdog_conv_direct_kernel_gradient(const float *x, const float *dy, float *dw, size_t images, size_t ih, size_t iw,
                                       size_t c, size_t f, size_t kh, size_t kw, size_t sh, size_t sw, size_t pad_top,
                                       size_t pad_left, size_t oh, size_t ow) {
    (void)x; (void)dy; (void)dw; (void)images; (void)ih; (void)iw; (void)c; (void)f; (void)kh; (void)kw; (void)sh;
    (void)sw; (void)pad_top; (void)pad_left; (void)oh; (void)ow;
    return 0;
}
#endif
