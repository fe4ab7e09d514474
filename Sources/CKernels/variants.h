// The kernels once per instruction set (kernels_v4.c, kernels_v3.c, kernels_base.c) and the
// table dispatch.c calls through. Private to CKernels.
#ifndef CATDOG_KERNELS_VARIANTS_H
#define CATDOG_KERNELS_VARIANTS_H

#include "catdog_kernels.h"

struct catdog_kernel_table {
    void (*channel_sums)(const float *x, size_t rows, size_t c, double *sum);
    void (*channel_centered_squares)(const float *x, const double *mean, size_t rows, size_t c, double *squares);
    void (*batchnorm_forward)(const float *x, const float *mean, const float *inv_std, const float *gamma, const float *beta, float *xhat, float *y, size_t rows, size_t c);
    void (*scale_shift)(const float *x, const float *scale, const float *shift, float *y, size_t rows, size_t c);
    void (*batchnorm_gradient_sums)(const float *dy, const float *xhat, size_t rows, size_t c, double *sum, double *dot);
    void (*batchnorm_dx)(const float *dy, const float *xhat, const float *k, const float *mean_dy, const float *mean_dot, float *dx, size_t rows, size_t c);
    void (*bias_activation)(float *y, const float *bias, size_t rows, size_t c, int activation);
    void (*mask_bias_gradient)(const float *y, float *dy, float *dbias, size_t rows, size_t c, int activation);
    void (*transpose)(const float *src, size_t rows, size_t cols, float *dst);
    void (*maxpool)(const float *x, float *y, int32_t *argmax, size_t images, size_t h, size_t w, size_t c, size_t pool, size_t stride, size_t oh, size_t ow);
    void (*masked_add)(const float *y, const float *dy, float *dx, size_t count, float lo, float hi);
    void (*wino4_input)(const float *const d[36], float *v, size_t vstride, size_t n, float *work);
    void (*wino4_output)(const float *m, size_t mstride, float *const y[16], size_t n, int accumulate, float *work);
    void (*wino4_output_gradient)(const float *const dy[16], float *dm, size_t stride, size_t n, float *work);
    void (*wino4_filter)(const float *w, float *u, size_t c, size_t f);
    void (*wino4_filter_gradient)(const float *du, float *dw, size_t c, size_t f);
};

void catdog_channel_sums_v4(const float *x, size_t rows, size_t c, double *sum);
void catdog_channel_centered_squares_v4(const float *x, const double *mean, size_t rows, size_t c, double *squares);
void catdog_batchnorm_forward_v4(const float *x, const float *mean, const float *inv_std, const float *gamma, const float *beta, float *xhat, float *y, size_t rows, size_t c);
void catdog_scale_shift_v4(const float *x, const float *scale, const float *shift, float *y, size_t rows, size_t c);
void catdog_batchnorm_gradient_sums_v4(const float *dy, const float *xhat, size_t rows, size_t c, double *sum, double *dot);
void catdog_batchnorm_dx_v4(const float *dy, const float *xhat, const float *k, const float *mean_dy, const float *mean_dot, float *dx, size_t rows, size_t c);
void catdog_bias_activation_v4(float *y, const float *bias, size_t rows, size_t c, int activation);
void catdog_mask_bias_gradient_v4(const float *y, float *dy, float *dbias, size_t rows, size_t c, int activation);
void catdog_transpose_v4(const float *src, size_t rows, size_t cols, float *dst);
void catdog_maxpool_v4(const float *x, float *y, int32_t *argmax, size_t images, size_t h, size_t w, size_t c, size_t pool, size_t stride, size_t oh, size_t ow);
void catdog_masked_add_v4(const float *y, const float *dy, float *dx, size_t count, float lo, float hi);
void catdog_wino4_input_v4(const float *const d[36], float *v, size_t vstride, size_t n, float *work);
void catdog_wino4_output_v4(const float *m, size_t mstride, float *const y[16], size_t n, int accumulate, float *work);
void catdog_wino4_output_gradient_v4(const float *const dy[16], float *dm, size_t stride, size_t n, float *work);
void catdog_wino4_filter_v4(const float *w, float *u, size_t c, size_t f);
void catdog_wino4_filter_gradient_v4(const float *du, float *dw, size_t c, size_t f);

void catdog_channel_sums_v3(const float *x, size_t rows, size_t c, double *sum);
void catdog_channel_centered_squares_v3(const float *x, const double *mean, size_t rows, size_t c, double *squares);
void catdog_batchnorm_forward_v3(const float *x, const float *mean, const float *inv_std, const float *gamma, const float *beta, float *xhat, float *y, size_t rows, size_t c);
void catdog_scale_shift_v3(const float *x, const float *scale, const float *shift, float *y, size_t rows, size_t c);
void catdog_batchnorm_gradient_sums_v3(const float *dy, const float *xhat, size_t rows, size_t c, double *sum, double *dot);
void catdog_batchnorm_dx_v3(const float *dy, const float *xhat, const float *k, const float *mean_dy, const float *mean_dot, float *dx, size_t rows, size_t c);
void catdog_bias_activation_v3(float *y, const float *bias, size_t rows, size_t c, int activation);
void catdog_mask_bias_gradient_v3(const float *y, float *dy, float *dbias, size_t rows, size_t c, int activation);
void catdog_transpose_v3(const float *src, size_t rows, size_t cols, float *dst);
void catdog_maxpool_v3(const float *x, float *y, int32_t *argmax, size_t images, size_t h, size_t w, size_t c, size_t pool, size_t stride, size_t oh, size_t ow);
void catdog_masked_add_v3(const float *y, const float *dy, float *dx, size_t count, float lo, float hi);
void catdog_wino4_input_v3(const float *const d[36], float *v, size_t vstride, size_t n, float *work);
void catdog_wino4_output_v3(const float *m, size_t mstride, float *const y[16], size_t n, int accumulate, float *work);
void catdog_wino4_output_gradient_v3(const float *const dy[16], float *dm, size_t stride, size_t n, float *work);
void catdog_wino4_filter_v3(const float *w, float *u, size_t c, size_t f);
void catdog_wino4_filter_gradient_v3(const float *du, float *dw, size_t c, size_t f);

void catdog_channel_sums_base(const float *x, size_t rows, size_t c, double *sum);
void catdog_channel_centered_squares_base(const float *x, const double *mean, size_t rows, size_t c, double *squares);
void catdog_batchnorm_forward_base(const float *x, const float *mean, const float *inv_std, const float *gamma, const float *beta, float *xhat, float *y, size_t rows, size_t c);
void catdog_scale_shift_base(const float *x, const float *scale, const float *shift, float *y, size_t rows, size_t c);
void catdog_batchnorm_gradient_sums_base(const float *dy, const float *xhat, size_t rows, size_t c, double *sum, double *dot);
void catdog_batchnorm_dx_base(const float *dy, const float *xhat, const float *k, const float *mean_dy, const float *mean_dot, float *dx, size_t rows, size_t c);
void catdog_bias_activation_base(float *y, const float *bias, size_t rows, size_t c, int activation);
void catdog_mask_bias_gradient_base(const float *y, float *dy, float *dbias, size_t rows, size_t c, int activation);
void catdog_transpose_base(const float *src, size_t rows, size_t cols, float *dst);
void catdog_maxpool_base(const float *x, float *y, int32_t *argmax, size_t images, size_t h, size_t w, size_t c, size_t pool, size_t stride, size_t oh, size_t ow);
void catdog_masked_add_base(const float *y, const float *dy, float *dx, size_t count, float lo, float hi);
void catdog_wino4_input_base(const float *const d[36], float *v, size_t vstride, size_t n, float *work);
void catdog_wino4_output_base(const float *m, size_t mstride, float *const y[16], size_t n, int accumulate, float *work);
void catdog_wino4_output_gradient_base(const float *const dy[16], float *dm, size_t stride, size_t n, float *work);
void catdog_wino4_filter_base(const float *w, float *u, size_t c, size_t f);
void catdog_wino4_filter_gradient_base(const float *du, float *dw, size_t c, size_t f);

#endif
