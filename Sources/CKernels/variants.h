// The kernels once per instruction set (kernels_v4.c, kernels_v3.c, kernels_base.c) and the
// table dispatch.c calls through. Private to CKernels.
#ifndef CATDOG_KERNELS_VARIANTS_H
#define CATDOG_KERNELS_VARIANTS_H

#include "catdog_kernels.h"

// Every kernel: X(name without catdog_, parameter list).
#define CATDOG_KERNELS(X) \
    X(batchnorm_forward, (const float *x, const float *mean, const float *inv_std, const float *gamma, const float *beta, float *y, size_t rows, size_t c, int activation)) \
    X(batchnorm_add, (const float *x, const float *mean, const float *inv_std, const float *gamma, const float *beta, const float *addend, float *y, size_t rows, size_t c, int activation)) \
    X(scale_shift, (const float *x, const float *scale, const float *shift, float *y, size_t rows, size_t c, int activation)) \
    X(add_activation, (const float *a, const float *b, float *y, size_t count, int activation)) \
    X(channel_moments, (const float *x, size_t rows, size_t c, double *mean, double *variance)) \
    X(batchnorm_gradient_sums, (const float *gamma, const float *beta, float *dy, const float *x, const float *mean, const float *inv_std, size_t rows, size_t c, int activation, double *sum, double *dot)) \
    X(batchnorm_dx, (const float *dy, const float *x, const float *mean, const float *inv_std, const float *k, const float *mean_dy, const float *mean_dot, float *dx, size_t rows, size_t c, int overwrite)) \
    X(bias_activation, (float *y, const float *bias, size_t rows, size_t c, int activation)) \
    X(mask_bias_gradient, (const float *y, float *dy, float *dbias, size_t rows, size_t c, int activation)) \
    X(transpose, (const float *src, size_t rows, size_t cols, float *dst)) \
    X(adam_step, (float *w, const float *g, float *m, float *v, size_t n, float b1, float b2, float alpha, float eps)) \
    X(adam_average_step, (float *w, const float *g, float *m, float *v, float *avg, size_t n, float b1, float b2, float alpha, \
                          float eps, float keep, float d)) \
    X(moving_average, (float *avg, const float *w, size_t n, float d)) \
    X(powersgd_project, (float *g, const float *e, const float *q, float *p, size_t rows, size_t cols, size_t r)) \
    X(powersgd_back_project, (const float *g, const float *p, float *q, size_t rows, size_t cols, size_t r)) \
    X(powersgd_finish, (float *g, float *e, const float *p, const float *q, size_t rows, size_t cols, size_t r, float share)) \
    X(powersgd_orthonormalize, (float *v, size_t length, size_t vectors, double *work)) \
    X(lamb_moments, (const float *w, const float *g, float *m, float *v, size_t n, float b1, float b2, float c1, float c2, float eps, double *norms)) \
    X(lamb_apply, (float *w, const float *m, const float *v, size_t n, float rate, float c1, float c2, float eps)) \
    X(maxpool, (const float *x, float *y, int32_t *argmax, size_t images, size_t h, size_t w, size_t c, size_t pool, size_t stride, size_t oh, size_t ow)) \
    X(maxpool_backward, (const float *y, const float *dy, const int32_t *argmax, float *dx, size_t images, size_t h, size_t w, size_t c, size_t pool, size_t stride, size_t oh, size_t ow, int overwrite, int activation)) \
    X(depthwise_forward, (const float *x, const float *w, const float *bias, float *y, size_t batch, size_t ih, size_t iw, size_t c, size_t k, size_t stride, size_t pad_top, size_t pad_left, size_t oh, size_t ow)) \
    X(depthwise_backward, (const float *x, const float *w, const float *dy, float *dw, float *dbias, float *dx, size_t batch, size_t ih, size_t iw, size_t c, size_t k, size_t stride, size_t pad_top, size_t pad_left, size_t oh, size_t ow)) \
    X(masked_add, (const float *y, const float *dy, float *dx, float *dx2, size_t count, float lo, float hi, int overwrite)) \
    X(col2im, (const float *dcol, float *dx, size_t ih, size_t iw, size_t c, size_t kh, size_t kw, size_t sh, size_t sw, size_t pad_top, size_t pad_left, size_t oh, size_t ow, size_t row0, size_t rows)) \
    X(wino4_input, (const float *const d[36], float *v, size_t vstride, size_t n, float *work)) \
    X(wino4_output, (const float *m, size_t mstride, float *const y[16], size_t n, int accumulate, float *work)) \
    X(wino4_output_act, (const float *m, size_t mstride, float *const y[16], size_t n, const float *bias, int activation, float *work)) \
    X(wino4_output_pool, (const float *m, size_t mstride, float *const y[16], size_t n, const float *bias, int activation, const float *base, float *const pooled[4], int32_t *const arg[4], float *tile, float *work)) \
    X(wino4_output_gradient, (const float *const dy[16], float *dm, size_t stride, size_t n, float *work)) \
    X(wino4_filter, (const float *w, float *u, size_t c, size_t f)) \
    X(wino4_filter_gradient, (const float *du, float *dw, size_t c, size_t f)) \
    X(wino2_input, (const float *const d[16], float *v, size_t vstride, size_t n)) \
    X(wino2_output, (const float *m, size_t mstride, float *const y[4], size_t n, int accumulate)) \
    X(wino2_output_gradient, (const float *const g[4], float *dm, size_t stride, size_t n)) \
    X(wino2_filter, (const float *w, float *u, size_t c, size_t f)) \
    X(wino2_filter_gradient, (const float *du, float *dw, size_t c, size_t f)) \
    X(resize_horizontal, (const uint8_t *src, size_t src_width, size_t first_row, size_t last_row, const ptrdiff_t *starts, const float *weights, size_t taps, size_t size, float *line, float *out)) \
    X(resize_vertical, (const float *horizontal, size_t first_row, size_t last_row, const ptrdiff_t *starts, const float *weights, size_t taps, size_t size, float *sum, uint8_t *out))

#define CATDOG_TABLE_ENTRY(name, params) void (*name) params;
struct catdog_kernel_table {
    CATDOG_KERNELS(CATDOG_TABLE_ENTRY)
};

#define CATDOG_DECLARE_V4(name, params) void catdog_##name##_v4 params;
#define CATDOG_DECLARE_V3(name, params) void catdog_##name##_v3 params;
#define CATDOG_DECLARE_BASE(name, params) void catdog_##name##_base params;
CATDOG_KERNELS(CATDOG_DECLARE_V4)
CATDOG_KERNELS(CATDOG_DECLARE_V3)
CATDOG_KERNELS(CATDOG_DECLARE_BASE)

#endif
