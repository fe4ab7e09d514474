#ifndef CATDOG_KERNELS_H
#define CATDOG_KERNELS_H

#include <stddef.h>

// Winograd F(4x4, 3x3) transforms (Lavin & Gray, 2016; interpolation points 0, ±1, ±2, ∞) over
// NHWC channel vectors: every "pixel" below is a pointer to `n` contiguous floats (channels or
// filters), so each transform is a handful of vector adds along the contiguous axis. Every
// kernel here is compiled for AVX-512 (x86-64-v4), AVX2 (x86-64-v3) and baseline x86-64
// (kernels_v4.c, kernels_v3.c, kernels_base.c over the *_body.h files) and called through
// one table: the best the CPU runs, unless catdog_kernels_select chose another. So one binary
// serves every machine of a lab, and one machine can measure the narrower paths.
//
//   U = G g Gᵀ (6x6 from 3x3), V = Bᵀ d B (6x6 from a 6x6 input tile), Y = Aᵀ M A (4x4 from 6x6)
//   and for the kernel gradient: dM = A dY Aᵀ (6x6 from 4x4), dg = Gᵀ dU G (3x3 from 6x6).

// V[xi * vstride + k] for xi = r*6+s over the 6x6 tile d[36] (row-major; a zero vector where the
// tile leaves the image). `work` holds 36 * n floats.
void catdog_wino4_input(const float *const d[36], float *v, size_t vstride, size_t n, float *work);

// The 4x4 outputs Y = Aᵀ M A from M[xi * mstride + k]; y[16] row-major, NULL where the output
// lies outside the image. Adds into y when `accumulate`, else stores. `work` holds 24 * n floats.
void catdog_wino4_output(const float *m, size_t mstride, float *const y[16], size_t n, int accumulate, float *work);

// The same outputs stored, then bias (NULL: none) added and the activation applied (0 linear,
// 1 ReLU, 2 ReLU6) while the tile is in L1: the bits of catdog_wino4_output followed by
// catdog_bias_activation over y, without that second pass over memory.
void catdog_wino4_output_act(const float *m, size_t mstride, float *const y[16], size_t n, const float *bias,
                             int activation, float *work);

// The same outputs with bias and activation, then 2x2 max pooling with stride 2 over the tile,
// without storing the outputs: y[16] (NULL outside the image) only say where each output lies,
// base + index, and each window q = 2R + S (rows 2R, 2R+1, columns 2S, 2S+1 of the tile) with
// pooled[q] (NULL: the window is not whole in the image) gets the largest of its four and, in
// arg[q], that output's index + channel (the first of equal values, in catdog_maxpool's order):
// the bits catdog_wino4_output_act and catdog_maxpool give. `tile` holds 16 * n floats.
#include <stdint.h>
void catdog_wino4_output_pool(const float *m, size_t mstride, float *const y[16], size_t n, const float *bias,
                              int activation, const float *base, float *const pooled[4], int32_t *const arg[4],
                              float *tile, float *work);

// dM = A dY Aᵀ into dm[xi * stride + k] from the 4x4 output gradients dy[16] (a zero vector
// outside the image). `work` holds 24 * n floats.
void catdog_wino4_output_gradient(const float *const dy[16], float *dm, size_t stride, size_t n, float *work);

// U (36, C, F) = G g Gᵀ for every (c, f) of a kernel w (3, 3, C, F), Keras's layout.
void catdog_wino4_filter(const float *w, float *u, size_t c, size_t f);

// dw (3, 3, C, F) += Gᵀ dU G for dU (36, C, F).
void catdog_wino4_filter_gradient(const float *du, float *dw, size_t c, size_t f);

// Winograd F(2×2, 3×3), along n contiguous floats: V = Bᵀ d B of one tile's 4×4 input pixels
// d[16] into its 16 rows v[xi * vstride + k]; its 2×2 outputs y[4] (NULL past the image's edge)
// from M's 16 rows, written or added; dM = A dY Aᵀ from its 2×2 output gradients g[4] (a zero
// vector past the edge); U (16, C, F) = G g Gᵀ of a kernel (3, 3, C, F); dw (3, 3, C, F) +=
// Gᵀ dU G.
void catdog_wino2_input(const float *const d[16], float *v, size_t vstride, size_t n);
void catdog_wino2_output(const float *m, size_t mstride, float *const y[4], size_t n, int accumulate);
void catdog_wino2_output_gradient(const float *const g[4], float *dm, size_t stride, size_t n);
void catdog_wino2_filter(const float *w, float *u, size_t c, size_t f);
void catdog_wino2_filter_gradient(const float *du, float *dw, size_t c, size_t f);
// F(2×2)'s loops over the tiles first ..< first + count of n images h × w (2×2 output blocks,
// along a row, down the image, then the next image), as catdog_wino4_*_tiles: V of tile i at
// v + i · c; Y from M (tile i at m + i · f); the kernel gradient's V and dM.
void catdog_wino2_input_tiles(const float *x, size_t h, size_t w, size_t c, size_t first, size_t count,
                              const float *zero, float *v, size_t vstride);
void catdog_wino2_output_tiles(const float *m, size_t mstride, float *y, size_t h, size_t w, size_t f, size_t first,
                               size_t count, int accumulate);
void catdog_wino2_kernel_gradient_tiles(const float *x, const float *dy, size_t h, size_t w, size_t c, size_t f,
                                        size_t first, size_t count, const float *zero, float *v, size_t vstride,
                                        float *m, size_t mstride);

// Max pooling ("valid" windows) over `images` NHWC images of h x w x c: y (oh, ow, c) per image
// and, for backward, argmax[i] = the index into x of output i's winner (the first of equal
// values in window order). Indices fit int32 (the caller checks the batch's size).
#include <stdint.h>
void catdog_maxpool(const float *x, float *y, int32_t *argmax, size_t images, size_t h, size_t w, size_t c,
                    size_t pool, size_t stride, size_t oh, size_t ow);

// Max pooling's backward: dx[argmax[i]] += dy[i] over the images' outputs. With `overwrite`
// and windows that do not overlap (pool <= stride), dx is written instead, 0 where no output
// took its value (the pixels no window covers too), in one pass over dx with no zeroing first.
// `activation` (1 ReLU, 2 ReLU6; 0 none) is that of the layer whose output x the pool read:
// dy[i] goes only where it passed its input, judged by the winner y[i] = x[argmax[i]], as
// catdog_mask_bias_gradient would judge it over x afterwards.
void catdog_maxpool_backward(const float *y, const float *dy, const int32_t *argmax, float *dx, size_t images, size_t h,
                             size_t w, size_t c, size_t pool, size_t stride, size_t oh, size_t ow, int overwrite,
                             int activation);

// dx[i] += dy[i] where lo < y[i] < hi (ReLU: 0, +inf; ReLU6: 0, 6), else nothing; and the same
// into dx2 in the same pass unless it is NULL (an addition's two inputs: y and dy read once).
// overwrite bit 0 (dx), bit 1 (dx2): write (0 where masked) instead of adding. dx and dx2 must
// not overlap.
void catdog_masked_add(const float *y, const float *dy, float *dx, float *dx2, size_t count, float lo, float hi,
                       int overwrite);
// The adjoint of im2col (Conv2D's dX): adds the patch rows of output pixels row0 .. row0 + rows
// - 1 (dcol, kh * kw * c floats each, taps in (kh, kw, c) order) into the NHWC batch dx, the
// geometry as catdog_conv_direct_forward's; taps in the padding are dropped.
void catdog_col2im(const float *dcol, float *dx, size_t ih, size_t iw, size_t c, size_t kh, size_t kw, size_t sh,
                   size_t sw, size_t pad_top, size_t pad_left, size_t oh, size_t ow, size_t row0, size_t rows);

// Resize.square's two passes (see resize_body.h): along x over rows first_row...last_row into
// (rows, size, 3) floats, then along y into size·size·3 rounded bytes. Bit-identical on every
// instruction set.
void catdog_resize_horizontal(const uint8_t *src, size_t src_width, size_t first_row, size_t last_row,
                              const ptrdiff_t *starts, const float *weights, size_t taps, size_t size, float *line, float *out);
void catdog_resize_vertical(const float *horizontal, size_t first_row, size_t last_row, const ptrdiff_t *starts,
                            const float *weights, size_t taps, size_t size, float *sum, uint8_t *out);

// Per-channel work over `rows` NHWC pixels of c channels (BatchNorm, biases), vectorised
// along the channels; sums accumulate in double, as the Swift loops they replace did.
// activation: 0 linear, 1 ReLU, 2 ReLU6.

// mean[ch] and the biased variance[ch] of x in one pass (sums of x less its first row's values).
void catdog_channel_moments(const float *x, size_t rows, size_t c, double *mean, double *variance);
// y = act(gamma * xhat + beta), xhat = (x - mean) * inv_std (not stored: the backward kernels
// recompute it from x, bit for bit).
void catdog_batchnorm_forward(const float *x, const float *mean, const float *inv_std, const float *gamma,
                              const float *beta, float *y, size_t rows, size_t c, int activation);
// y = act((gamma * xhat + beta) + addend): a linear BatchNorm's output added to another tensor
// (a residual block's skip) in one pass, without storing the BatchNorm's output: the bits of
// catdog_batchnorm_forward (activation 0) followed by catdog_add_activation.
void catdog_batchnorm_add(const float *x, const float *mean, const float *inv_std, const float *gamma, const float *beta,
                          const float *addend, float *y, size_t rows, size_t c, int activation);
// y = act(x * scale + shift).
void catdog_scale_shift(const float *x, const float *scale, const float *shift, float *y, size_t rows, size_t c,
                        int activation);
// Adam: m += (g - m)·b1; v += (g·g - v)·b2; w -= alpha·m / (√v + eps); the same bits on every
// instruction set (no fused multiply-adds).
void catdog_adam_step(float *w, const float *g, float *m, float *v, size_t n, float b1, float b2, float alpha, float eps);
// AdamW's update in one pass: w·keep (decoupled decay, keep = 1 for none), Adam's step, then, when
// avg is not NULL, the weights' moving average avg = d·avg + (1 − d)·w (as catdog_moving_average);
// the same bits as those three passes.
void catdog_adam_average_step(float *w, const float *g, float *m, float *v, float *avg, size_t n, float b1, float b2, float alpha,
                              float eps, float keep, float d);
// avg = d·avg + (1 − d)·w, without fused multiply-adds (the same bits on every instruction set).
void catdog_moving_average(float *avg, const float *w, size_t n, float d);
// PowerSGD's passes over a gradient matrix M (rows × cols, row-major) and its rank-r factors
// P (r × rows) and Q (r × cols), each stored factor by factor. Sums in a fixed order without
// fused multiply-adds: the same bits on every instruction set.
// M += E, then p[k·rows + i] = M_i · q_k.
void catdog_powersgd_project(float *g, const float *e, const float *q, float *p, size_t rows, size_t cols, size_t r);
// q[k·cols + j] = Σ_i p[k·rows + i]·M[i][j] (Q = Mᵀ P).
void catdog_powersgd_back_project(const float *g, const float *p, float *q, size_t rows, size_t cols, size_t r);
// a = Σ_k p[k·rows + i]·q[k·cols + j] (k ascending), e = M − a·share, M = a.
void catdog_powersgd_finish(float *g, float *e, const float *p, const float *q, size_t rows, size_t cols, size_t r, float share);
// Gram–Schmidt on `vectors` contiguous vectors of `length` floats, in place, carried out in
// double (`work`: length · vectors doubles): each vector loses its projections on the ones
// before it, then is scaled to unit length (1 / (‖a‖ + 1e-30)). Dot products in 16 lanes of
// fixed order, no fused multiply-adds: the same bits on every instruction set.
void catdog_powersgd_orthonormalize(float *v, size_t length, size_t vectors, double *work);
// LAMB over one tensor: the moments as above and norms[0] = ‖w‖², norms[1] = ‖u‖² of the step
// u = m·c1 / (√(v·c2) + eps), in double over 8 lanes of fixed order (the same bits on every
// instruction set); then w -= rate·u.
void catdog_lamb_moments(const float *w, const float *g, float *m, float *v, size_t n, float b1, float b2, float c1, float c2,
                         float eps, double *norms);
void catdog_lamb_apply(float *w, const float *m, const float *v, size_t n, float rate, float c1, float c2, float eps);
// Depthwise convolution, NHWC, weights [ky][kx][c] (one k×k filter per channel), bias optional
// (NULL): y = bias + Σ taps x·w, the taps of each output in the order ky, kx.
void catdog_depthwise_forward(const float *x, const float *w, const float *bias, float *y, size_t batch, size_t ih, size_t iw,
                              size_t c, size_t k, size_t stride, size_t pad_top, size_t pad_left, size_t oh, size_t ow);
// Its gradients, accumulated over the batch: dw += Σ x·dy; dbias += Σ dy and dx += w·dy when given (else NULL).
void catdog_depthwise_backward(const float *x, const float *w, const float *dy, float *dw, float *dbias, float *dx, size_t batch,
                               size_t ih, size_t iw, size_t c, size_t k, size_t stride, size_t pad_top, size_t pad_left,
                               size_t oh, size_t ow);
// y = act(a + b), element by element.
void catdog_add_activation(const float *a, const float *b, float *y, size_t count, int activation);
// dy = 0 where the activation did not pass its input v = gamma * xhat + beta (recomputed as
// catdog_batchnorm_forward computes it), written back; then sum[ch] = Σ dy, dot[ch] = Σ dy·xhat
// with xhat = (x - mean) * inv_std as forward computed it; in one pass.
void catdog_batchnorm_gradient_sums(const float *gamma, const float *beta, float *dy, const float *x, const float *mean,
                                    const float *inv_std, size_t rows, size_t c, int activation, double *sum, double *dot);
// dx += k * (dy - mean_dy - xhat * mean_dot), per channel, xhat as above (dx = that, with overwrite).
void catdog_batchnorm_dx(const float *dy, const float *x, const float *mean, const float *inv_std, const float *k,
                         const float *mean_dy, const float *mean_dot, float *dx, size_t rows, size_t c, int overwrite);
// y = act(y + bias) (bias may be NULL).
void catdog_bias_activation(float *y, const float *bias, size_t rows, size_t c, int activation);
// dy = 0 where the activation did not pass its input (from its output y); dbias += Σ dy (dbias
// may be NULL).
void catdog_mask_bias_gradient(const float *y, float *dy, float *dbias, size_t rows, size_t c, int activation);

// C (m x n) = A B, or C += A B when `accumulate`, with A(i, p) at a[i * rsa + p * csa] and B, C
// row-major (row strides ldb, ldc). Returns 0 without touching C when this CPU or shape has no
// kernel here (neither AVX-512 nor AVX2 selected, or n not a multiple of 16): the caller then
// uses BLAS.
int catdog_sgemm(size_t m, size_t n, size_t k, const float *a, size_t rsa, size_t csa, const float *b, size_t ldb,
                 float *c, size_t ldc, int accumulate);
// 1 when catdog_sgemm has a kernel here (AVX-512 or AVX2 kernels selected): it then takes every
// width that is a multiple of 16.
int catdog_sgemm_available(void);

// Direct convolution of NHWC images with few channels (1-4, an image's 3) on AVX-512, for the
// first layer: y = x ⊛ w (no bias), w (KH, KW, C, F); and its kernel gradient dw += Σ x ⊛ dy.
// F of 16 or 32 and KW·C of 3, 6, 9 or 12 (both; `run` in direct_conv.c). Return 0,
// touching nothing, where the CPU (AVX-512 kernels not selected) or the shape has no kernel.
int catdog_conv_direct_forward(const float *x, const float *w, float *y, size_t images, size_t ih, size_t iw, size_t c,
                               size_t f, size_t kh, size_t kw, size_t sh, size_t sw, size_t pad_top, size_t pad_left,
                               size_t oh, size_t ow);
int catdog_conv_direct_kernel_gradient(const float *x, const float *dy, float *dw, size_t images, size_t ih, size_t iw,
                                       size_t c, size_t f, size_t kh, size_t kw, size_t sh, size_t sw, size_t pad_top,
                                       size_t pad_left, size_t oh, size_t ow);
// The forward with the bias (NULL: none) added and the activation (0 linear, 1 ReLU, 2 ReLU6)
// applied as each output leaves its registers: the bits of the forward and catdog_bias_activation.
int catdog_conv_direct_forward_bias(const float *x, const float *w, const float *bias, int activation, float *y, size_t images,
                                    size_t ih, size_t iw, size_t c, size_t f, size_t kh, size_t kw, size_t sh, size_t sw,
                                    size_t pad_top, size_t pad_left, size_t oh, size_t ow);

// bf16 products with fp32 accumulation (AVX512_BF16's vdpbf16ps), operands packed in pairs
// along k: A's row i as ceil(k/2) pairs (a(i, 2p), a(i, 2p+1)), B's pair-row p as n pairs
// (b(2p, j), b(2p+1, j)); an odd k is padded with zero. fp32 -> bf16 rounds to nearest even
// (catdog_bf16_from_float, CHalf's).
void catdog_bf16_pack_a(const float *a, size_t m, size_t k, size_t lda, uint16_t *packed);
void catdog_bf16_pack_b(const float *b, size_t k, size_t n, size_t ldb, uint16_t *packed);
// C (m x n, row stride ldc) = or += A B from packed operands; 0 without touching C on a CPU
// without AVX512_BF16.
int catdog_sbgemm(size_t m, size_t n, size_t k, const uint16_t *a_packed, const uint16_t *b_packed, float *c, size_t ldc,
                  int accumulate);
// C (m x n) = or += A B as catdog_sgemm takes them (fp32, A strided with rsa or csa 1), the
// operands rounded to bf16 on the way in (packed in per-thread scratch), products summed in
// fp32; any n. 0 without touching C where the CPU has no AVX512_BF16 or scratch ran out.
int catdog_sbgemm_f32(size_t m, size_t n, size_t k, const float *a, size_t rsa, size_t csa, const float *b, size_t ldb,
                      float *c, size_t ldc, int accumulate);
// B (k x n, row stride ld) rounded to bf16 and packed as ceil(k/2) x n pairs along k (4 bytes
// each) into `packed`, for catdog_sbgemm_f32_packed_b: an operand used by many products (a
// Winograd layer's transformed kernel) is packed once. 0 where catdog_sbgemm_f32 would decline.
int catdog_bf16_pack_pair_rows(const float *x, size_t k, size_t n, size_t ld, void *packed);
// Wᵀ for w (rows x cols, row-major) packed as catdog_bf16_pack_pair_rows packs an fp32 Wᵀ
// (k = cols, n = rows): ceil(cols/2) x rows words, the same bits, without the fp32 transpose.
// 0 where the bf16 products do not run.
int catdog_bf16_pack_transposed(const float *w, size_t rows, size_t cols, void *out);
int catdog_sbgemm_f32_packed_b(size_t m, size_t n, size_t k, const float *a, size_t rsa, size_t csa, const void *b_packed,
                               float *c, size_t ldc, int accumulate);
// The same from operands packed beforehand, A's pair (i, p) the word at a + i * ars + p * acs
// (rows packed: ars = ceil(k/2), acs = 1; pairs along k stored as B is: ars = 1, acs = m).
int catdog_sbgemm_packed(size_t m, size_t n, size_t k, const void *a, size_t ars, size_t acs, const void *b, float *c,
                         size_t ldc, int accumulate);
// catdog_sbgemm_packed with B in fp32 (k x n, row stride ldb), packed here.
int catdog_sbgemm_packed_a(size_t m, size_t n, size_t k, const void *a, size_t ars, size_t acs, const float *b, size_t ldb,
                           float *c, size_t ldc, int accumulate);
// Output pixels row0 .. row0 + rows - 1 of an NHWC batch as im2col rows (taps in (kh, kw, c)
// order, zeros in the padding; the geometry as catdog_conv_direct_forward's), rounded to bf16
// and packed without the fp32 matrix: by rows (pairs = 0), kh * kw * c / 2 words each, A of the
// forward product (c even); or in pairs of rows (pairs = 1), kh * kw * c words a pair, Aᵀ of the
// kernel gradient's. The same bits as packing the fp32 rows. 0 where the bf16 products do not
// run (or c is odd, by rows).
int catdog_im2col_bf16(const float *x, size_t ih, size_t iw, size_t c, size_t kh, size_t kw, size_t sh, size_t sw,
                       size_t pad_top, size_t pad_left, size_t oh, size_t ow, size_t row0, size_t rows, int pairs, void *out);
// A transform's `rows` outputs of n floats each (`tile`, row-major), rounded to bf16 into packed
// operands whose rows lie `stride` words apart: each row as ceil(n/2) pairs along n (a row of A
// packed by rows), or, from two tiles (rows `ld` floats apart), as n pairs (first(r, j),
// second(r, j)) along the tiles (a pair-row of B, or of A stored transposed; `second` NULL pairs
// with zeros). 0 where catdog_sbgemm_f32 would decline.
int catdog_bf16_pack_tile_rows(const float *tile, size_t rows, size_t n, void *out, size_t stride);
int catdog_bf16_pack_tile_pair(const float *first, const float *second, size_t rows, size_t n, size_t ld, void *out,
                               size_t stride);
// catdog_wino4_input's 36 rows of one tile (n channels), rounded and packed as
// catdog_bf16_pack_tile_rows packs them, without the fp32 rows in between: the same bits. 0
// where the bf16 products do not run, or n is not a multiple of 16.
int catdog_wino4_input_bf16(const float *const d[36], void *out, size_t stride, size_t n);
// For F(4×4)'s kernel gradient, two tiles at once (d1 and g1 NULL: one, paired with zeros):
// their inputs' transforms (d0, d1: 36 pixels each, c channels) and their output gradients'
// (g0, g1: 16 gradients each, f channels), rounded and packed in pairs along the tiles as
// catdog_bf16_pack_tile_pair packs the two transforms' fp32 rows: V's 36 rows `vstride` words
// apart, dM's `mstride`. The same bits. 0 where the bf16 products do not run, or c or f is not a
// multiple of 16.
int catdog_wino4_kernel_gradient_pair_bf16(const float *const d0[36], const float *const d1[36], const float *const g0[16],
                                           const float *const g1[16], void *v, size_t vstride, void *m, size_t mstride,
                                           size_t c, size_t f);
// Winograd F(4×4)'s kernel transform U = G g Gᵀ rounded and packed as it is made: for the 3×3
// kernel whose tap t (row-major) is the matrix taps[t] (c rows of f floats, row stride ld), U's
// 36 blocks of ceil(c/2) × f words (pairs along c) `stride` words apart, what catdog_wino4_filter
// and catdog_bf16_pack_pair_rows give one after the other: the same bits, with neither the fp32
// U nor a copy of the kernel in between. 0 where the bf16 products do not run.
int catdog_wino4_filter_bf16(const float *const taps[9], size_t ld, size_t c, size_t f, void *out, size_t stride);
// F(2×2)'s 16 blocks the same way: what catdog_wino2_filter then packing in pairs along c give.
int catdog_wino2_filter_bf16(const float *const taps[9], size_t ld, size_t c, size_t f, void *out, size_t stride);
// The transforms above over `count` tiles of a batch of NHWC images h × w, from tile `first`
// (tiles run along a row of 4×4 output blocks, then down the image, then to the next image; a
// chunk's tile i is tile first + i): each tile located and its pointers gathered here (`zero`, a
// zero vector of max(c, f) floats, for the padding), then the one-tile kernel called with them,
// in order: the same bits as calling it tile by tile.
// V: catdog_wino4_input_bf16 of tile i at word i · c/2 of `out` (0 where it declines), or
// catdog_wino4_input at v + i · c.
int catdog_wino4_input_tiles_bf16(const float *x, size_t h, size_t w, size_t c, size_t first, size_t count,
                                  const float *zero, void *out, size_t stride);
void catdog_wino4_input_tiles(const float *x, size_t h, size_t w, size_t c, size_t first, size_t count,
                              const float *zero, float *v, size_t vstride, float *work);
// Y from M (tile i at m + i · f) into y: catdog_wino4_output_act where `epilogue`, else
// catdog_wino4_output; or catdog_wino4_output_pool into pooled and argmax (n, h/2, w/2, f).
void catdog_wino4_output_tiles(const float *m, size_t mstride, float *y, size_t h, size_t w, size_t f, size_t first,
                               size_t count, int accumulate, int epilogue, const float *bias, int activation,
                               float *work);
void catdog_wino4_output_pool_tiles(const float *m, size_t mstride, float *y, size_t h, size_t w, size_t f,
                                    size_t first, size_t count, const float *bias, int activation, float *pooled,
                                    int32_t *argmax, float *tile, float *work);
// The kernel gradient's V (from x, c channels) and dM (from dy, f): in bf16 pairs of tiles
// (catdog_wino4_kernel_gradient_pair_bf16, pair p at word p · c of v and p · f of m; 0 where it
// declines), or in fp32 (tile i at v + i · c and m + i · f).
int catdog_wino4_kernel_gradient_tiles_bf16(const float *x, const float *dy, size_t h, size_t w, size_t c, size_t f,
                                            size_t first, size_t count, const float *zero, void *v, size_t vstride,
                                            void *m, size_t mstride);
void catdog_wino4_kernel_gradient_tiles(const float *x, const float *dy, size_t h, size_t w, size_t c, size_t f,
                                        size_t first, size_t count, const float *zero, float *v, size_t vstride,
                                        float *m, size_t mstride, float *work);
int catdog_cpu_has_bf16(void);
// Whether the environment lets this process use instruction set `isa` ("avx512f", "avx2",
// "baseline"): CATDOG_KERNELS=avx2 or baseline stands in for a CPU without the wider sets.
int catdog_cpu_allows(const char *isa);
// The set CATDOG_KERNELS caps this process to, "avx2" or "baseline", or "" when it caps nothing.
const char *catdog_kernels_cap(void);
// Whether the bf16 products run here: the CPU has AVX512_BF16 and the kernels run AVX-512.
int catdog_bf16_products_available(void);
// One core's rate, GFLOP/s, from register-only loops of about `seconds`: AVX-512 fp32 FMAs, and
// vdpbf16ps (each 32 products and their sums). 0 where the CPU lacks the instructions.
double catdog_peak_fp32_gflops(double seconds);
double catdog_peak_bf16_gflops(double seconds);

// dst (cols x rows) = srcᵀ for src (rows x cols), both row-major, in cache-sized blocks.
void catdog_transpose(const float *src, size_t rows, size_t cols, float *dst);

// The instruction set the kernels run with: "avx512f", "avx2" or "baseline".
const char *catdog_kernels_isa(void);
// 1 when the AVX-512 kernels are selected (catdog_kernels_isa() is "avx512f"): the direct
// convolutions and the bf16 products run only then.
int catdog_kernels_avx512(void);
// Runs the kernels with "auto" (the best this CPU has), "avx512f", "avx2" or "baseline"; 0,
// changing nothing, when the CPU lacks it. Call before the kernels run (not while they do).
int catdog_kernels_select(const char *isa);

#endif
