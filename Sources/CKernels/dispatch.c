// The public kernels: each call goes to the variant chosen for this CPU (or by
// catdog_kernels_select), through one table.
#include <stdlib.h>
#include <string.h>
#include "variants.h"

#define CATDOG_ENTRY_V4(name, params) catdog_##name##_v4,
#define CATDOG_ENTRY_V3(name, params) catdog_##name##_v3,
#define CATDOG_ENTRY_BASE(name, params) catdog_##name##_base,
static const struct catdog_kernel_table table_v4 = {CATDOG_KERNELS(CATDOG_ENTRY_V4)};
static const struct catdog_kernel_table table_v3 = {CATDOG_KERNELS(CATDOG_ENTRY_V3)};
static const struct catdog_kernel_table table_base = {CATDOG_KERNELS(CATDOG_ENTRY_BASE)};

static const struct catdog_kernel_table *current;
static const char *current_name;

// CATDOG_KERNELS=avx2 or baseline in the environment makes this process behave as on a CPU that
// has no more than that set: `auto` resolves within it, and wider sets and AVX512_BF16 count as
// absent (catdog_cpu_allows), so a test suite or a benchmark can stand in for an older machine.
// Read once, here, as OpenBLAS reads OPENBLAS_CORETYPE: CPU dispatch is process-wide, and the
// test bundle, which has no entry point of its own, must see it too. Any other value caps
// nothing here; the command line refuses it.
static const char *cap_name(void) {
    static int read;
    static const char *cap;
    if (!read) {
        const char *value = getenv("CATDOG_KERNELS");
        cap = value && strcmp(value, "baseline") == 0 ? "baseline" : value && strcmp(value, "avx2") == 0 ? "avx2" : "";
        read = 1;
    }
    return cap;
}

const char *catdog_kernels_cap(void) { return cap_name(); }

int catdog_cpu_allows(const char *isa) {
    const char *cap = cap_name();
    if (strcmp(cap, "baseline") == 0) return strcmp(isa, "baseline") == 0;
    if (strcmp(cap, "avx2") == 0) return strcmp(isa, "avx2") == 0 || strcmp(isa, "baseline") == 0;
    return 1;
}

static int cpu_has(const char *isa) {
    if (!catdog_cpu_allows(isa)) return 0;
#if defined(__x86_64__) && defined(__clang__)
    __builtin_cpu_init();
    if (strcmp(isa, "avx512f") == 0)
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
               __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512cd");
    if (strcmp(isa, "avx2") == 0) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c") && __builtin_cpu_supports("bmi2");
#endif
    return strcmp(isa, "baseline") == 0;
}

int catdog_kernels_select(const char *isa) {
    if (strcmp(isa, "auto") == 0) isa = cpu_has("avx512f") ? "avx512f" : cpu_has("avx2") ? "avx2" : "baseline";
    if (!cpu_has(isa)) return 0;
    if (strcmp(isa, "avx512f") == 0) current = &table_v4;
    else if (strcmp(isa, "avx2") == 0) current = &table_v3;
    else current = &table_base;
    current_name = strcmp(isa, "avx512f") == 0 ? "avx512f" : strcmp(isa, "avx2") == 0 ? "avx2" : "baseline";
    return 1;
}

static inline const struct catdog_kernel_table *table(void) {
    if (!current) catdog_kernels_select("auto");
    return current;
}

const char *catdog_kernels_isa(void) {
    table();
    return current_name;
}

int catdog_kernels_avx512(void) { return table() == &table_v4; }

void catdog_batchnorm_forward(const float *x, const float *mean, const float *inv_std, const float *gamma, const float *beta, float *y, size_t rows, size_t c, int activation) { table()->batchnorm_forward(x, mean, inv_std, gamma, beta, y, rows, c, activation); }
void catdog_batchnorm_add(const float *x, const float *mean, const float *inv_std, const float *gamma, const float *beta,
                          const float *addend, float *y, size_t rows, size_t c, int activation) {
    table()->batchnorm_add(x, mean, inv_std, gamma, beta, addend, y, rows, c, activation);
}
void catdog_scale_shift(const float *x, const float *scale, const float *shift, float *y, size_t rows, size_t c, int activation) { table()->scale_shift(x, scale, shift, y, rows, c, activation); }
void catdog_depthwise_forward(const float *x, const float *w, const float *bias, float *y, size_t batch, size_t ih, size_t iw,
                              size_t c, size_t k, size_t stride, size_t pad_top, size_t pad_left, size_t oh, size_t ow) {
    table()->depthwise_forward(x, w, bias, y, batch, ih, iw, c, k, stride, pad_top, pad_left, oh, ow);
}
void catdog_depthwise_backward(const float *x, const float *w, const float *dy, float *dw, float *dbias, float *dx, size_t batch,
                               size_t ih, size_t iw, size_t c, size_t k, size_t stride, size_t pad_top, size_t pad_left,
                               size_t oh, size_t ow) {
    table()->depthwise_backward(x, w, dy, dw, dbias, dx, batch, ih, iw, c, k, stride, pad_top, pad_left, oh, ow);
}
void catdog_add_activation(const float *a, const float *b, float *y, size_t count, int activation) { table()->add_activation(a, b, y, count, activation); }
void catdog_channel_moments(const float *x, size_t rows, size_t c, double *mean, double *variance) { table()->channel_moments(x, rows, c, mean, variance); }
void catdog_batchnorm_gradient_sums(const float *gamma, const float *beta, float *dy, const float *x, const float *mean,
                                    const float *inv_std, size_t rows, size_t c, int activation, double *sum, double *dot) {
    table()->batchnorm_gradient_sums(gamma, beta, dy, x, mean, inv_std, rows, c, activation, sum, dot);
}
void catdog_batchnorm_dx(const float *dy, const float *x, const float *mean, const float *inv_std, const float *k, const float *mean_dy, const float *mean_dot, float *dx, size_t rows, size_t c, int overwrite) { table()->batchnorm_dx(dy, x, mean, inv_std, k, mean_dy, mean_dot, dx, rows, c, overwrite); }
void catdog_bias_activation(float *y, const float *bias, size_t rows, size_t c, int activation) { table()->bias_activation(y, bias, rows, c, activation); }
void catdog_mask_bias_gradient(const float *y, float *dy, float *dbias, size_t rows, size_t c, int activation) { table()->mask_bias_gradient(y, dy, dbias, rows, c, activation); }
void catdog_transpose(const float *src, size_t rows, size_t cols, float *dst) { table()->transpose(src, rows, cols, dst); }
void catdog_maxpool(const float *x, float *y, int32_t *argmax, size_t images, size_t h, size_t w, size_t c, size_t pool, size_t stride, size_t oh, size_t ow) { table()->maxpool(x, y, argmax, images, h, w, c, pool, stride, oh, ow); }
void catdog_maxpool_backward(const float *y, const float *dy, const int32_t *argmax, float *dx, size_t images, size_t h, size_t w, size_t c, size_t pool, size_t stride, size_t oh, size_t ow, int overwrite, int activation) { table()->maxpool_backward(y, dy, argmax, dx, images, h, w, c, pool, stride, oh, ow, overwrite, activation); }
void catdog_resize_horizontal(const uint8_t *src, size_t src_width, size_t first_row, size_t last_row, const ptrdiff_t *starts, const float *weights, size_t taps, size_t size, float *line, float *out) { table()->resize_horizontal(src, src_width, first_row, last_row, starts, weights, taps, size, line, out); }
void catdog_resize_vertical(const float *horizontal, size_t first_row, size_t last_row, const ptrdiff_t *starts, const float *weights, size_t taps, size_t size, float *sum, uint8_t *out) { table()->resize_vertical(horizontal, first_row, last_row, starts, weights, taps, size, sum, out); }
void catdog_adam_step(float *w, const float *g, float *m, float *v, size_t n, float b1, float b2, float alpha, float eps) { table()->adam_step(w, g, m, v, n, b1, b2, alpha, eps); }
void catdog_adam_average_step(float *w, const float *g, float *m, float *v, float *avg, size_t n, float b1, float b2, float alpha,
                              float eps, float keep, float d) {
    table()->adam_average_step(w, g, m, v, avg, n, b1, b2, alpha, eps, keep, d);
}
void catdog_moving_average(float *avg, const float *w, size_t n, float d) { table()->moving_average(avg, w, n, d); }
void catdog_powersgd_project(float *g, const float *e, const float *q, float *p, size_t rows, size_t cols, size_t r) {
    table()->powersgd_project(g, e, q, p, rows, cols, r);
}
void catdog_powersgd_back_project(const float *g, const float *p, float *q, size_t rows, size_t cols, size_t r) {
    table()->powersgd_back_project(g, p, q, rows, cols, r);
}
void catdog_powersgd_finish(float *g, float *e, const float *p, const float *q, size_t rows, size_t cols, size_t r, float share) {
    table()->powersgd_finish(g, e, p, q, rows, cols, r, share);
}
void catdog_powersgd_orthonormalize(float *v, size_t length, size_t vectors, double *work) {
    table()->powersgd_orthonormalize(v, length, vectors, work);
}
void catdog_lamb_moments(const float *w, const float *g, float *m, float *v, size_t n, float b1, float b2, float c1, float c2, float eps, double *norms) { table()->lamb_moments(w, g, m, v, n, b1, b2, c1, c2, eps, norms); }
void catdog_lamb_apply(float *w, const float *m, const float *v, size_t n, float rate, float c1, float c2, float eps) { table()->lamb_apply(w, m, v, n, rate, c1, c2, eps); }
void catdog_masked_add(const float *y, const float *dy, float *dx, float *dx2, size_t count, float lo, float hi, int overwrite) { table()->masked_add(y, dy, dx, dx2, count, lo, hi, overwrite); }
void catdog_col2im(const float *dcol, float *dx, size_t ih, size_t iw, size_t c, size_t kh, size_t kw, size_t sh, size_t sw, size_t pad_top, size_t pad_left, size_t oh, size_t ow, size_t row0, size_t rows) { table()->col2im(dcol, dx, ih, iw, c, kh, kw, sh, sw, pad_top, pad_left, oh, ow, row0, rows); }
void catdog_wino4_input(const float *const d[36], float *v, size_t vstride, size_t n, float *work) { table()->wino4_input(d, v, vstride, n, work); }
void catdog_wino4_output(const float *m, size_t mstride, float *const y[16], size_t n, int accumulate, float *work) { table()->wino4_output(m, mstride, y, n, accumulate, work); }
void catdog_wino4_output_act(const float *m, size_t mstride, float *const y[16], size_t n, const float *bias, int activation, float *work) { table()->wino4_output_act(m, mstride, y, n, bias, activation, work); }
void catdog_wino4_output_pool(const float *m, size_t mstride, float *const y[16], size_t n, const float *bias, int activation, const float *base, float *const pooled[4], int32_t *const arg[4], float *tile, float *work) { table()->wino4_output_pool(m, mstride, y, n, bias, activation, base, pooled, arg, tile, work); }
void catdog_wino4_output_gradient(const float *const dy[16], float *dm, size_t stride, size_t n, float *work) { table()->wino4_output_gradient(dy, dm, stride, n, work); }
void catdog_wino4_filter(const float *w, float *u, size_t c, size_t f) { table()->wino4_filter(w, u, c, f); }
void catdog_wino4_filter_gradient(const float *du, float *dw, size_t c, size_t f) { table()->wino4_filter_gradient(du, dw, c, f); }
void catdog_wino2_input(const float *const d[16], float *v, size_t vstride, size_t n) { table()->wino2_input(d, v, vstride, n); }
void catdog_wino2_output(const float *m, size_t mstride, float *const y[4], size_t n, int accumulate) { table()->wino2_output(m, mstride, y, n, accumulate); }
void catdog_wino2_output_gradient(const float *const g[4], float *dm, size_t stride, size_t n) { table()->wino2_output_gradient(g, dm, stride, n); }
void catdog_wino2_filter(const float *w, float *u, size_t c, size_t f) { table()->wino2_filter(w, u, c, f); }
void catdog_wino2_filter_gradient(const float *du, float *dw, size_t c, size_t f) { table()->wino2_filter_gradient(du, dw, c, f); }
