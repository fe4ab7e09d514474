// Winograd F(4×4)'s loops over a range of tiles: where each tile lies in the NHWC batch, its
// 36 input pixels (or 16 outputs, or 16 output gradients) as pointers, then one transform a tile
// through the kernels of catdog_kernels.h. Computed here rather than in the caller's loop, where
// locating a tile and gathering its pointers cost as much as the transform of a 32-channel tile's
// first block. The same calls, in the same order, with the same pointers: the same bits.
#include "catdog_kernels.h"
#include "winograd_walk.h"

int catdog_wino4_input_tiles_bf16(const float *x, size_t h, size_t w, size_t c, size_t first, size_t count,
                                  const float *zero, void *out, size_t stride) {
    if (c % 16 != 0 || !catdog_bf16_products_available()) return 0;
    const size_t k2 = c / 2;
    tile_walk t = walk_from(h, w, 4, first);
    const float *d[36];
    for (size_t i = 0; i < count; i++, walk_next(&t)) {
        gather_input(x, &t, c, zero, d);
        if (!catdog_wino4_input_bf16(d, (uint32_t *)out + i * k2, stride, c)) return 0;
    }
    return 1;
}

void catdog_wino4_input_tiles(const float *x, size_t h, size_t w, size_t c, size_t first, size_t count,
                              const float *zero, float *v, size_t vstride, float *work) {
    tile_walk t = walk_from(h, w, 4, first);
    const float *d[36];
    for (size_t i = 0; i < count; i++, walk_next(&t)) {
        gather_input(x, &t, c, zero, d);
        catdog_wino4_input(d, v + i * c, vstride, c, work);
    }
}

void catdog_wino4_output_tiles(const float *m, size_t mstride, float *y, size_t h, size_t w, size_t f, size_t first,
                               size_t count, int accumulate, int epilogue, const float *bias, int activation,
                               float *work) {
    tile_walk t = walk_from(h, w, 4, first);
    float *p[16];
    for (size_t i = 0; i < count; i++, walk_next(&t)) {
        gather_block(y, &t, f, p);
        if (epilogue) catdog_wino4_output_act(m + i * f, mstride, p, f, bias, activation, work);
        else catdog_wino4_output(m + i * f, mstride, p, f, accumulate, work);
    }
}

void catdog_wino4_output_pool_tiles(const float *m, size_t mstride, float *y, size_t h, size_t w, size_t f,
                                    size_t first, size_t count, const float *bias, int activation, float *pooled,
                                    int32_t *argmax, float *tile, float *work) {
    const size_t ph = h / 2, pw = w / 2;
    tile_walk t = walk_from(h, w, 4, first);
    float *p[16], *pooled_at[4];
    int32_t *arg_at[4];
    for (size_t i = 0; i < count; i++, walk_next(&t)) {
        gather_block(y, &t, f, p);
        // Window (R, S) of the tile is pooled output (row/2 + R, col/2 + S), whole in the image
        // where that lies inside the pooled map.
        for (size_t q = 0; q < 4; q++) {
            const size_t pr = t.row / 2 + q / 2, pc = t.col / 2 + q % 2;
            const int inside = pr < ph && pc < pw;
            const size_t at = ((t.image * ph + pr) * pw + pc) * f;
            pooled_at[q] = inside ? pooled + at : NULL;
            arg_at[q] = inside ? argmax + at : NULL;
        }
        catdog_wino4_output_pool(m + i * f, mstride, p, f, bias, activation, y, pooled_at, arg_at, tile, work);
    }
}

int catdog_wino4_kernel_gradient_tiles_bf16(const float *x, const float *dy, size_t h, size_t w, size_t c, size_t f,
                                            size_t first, size_t count, const float *zero, void *v, size_t vstride,
                                            void *m, size_t mstride) {
    if (c % 16 != 0 || f % 16 != 0 || !catdog_bf16_products_available()) return 0;
    tile_walk t = walk_from(h, w, 4, first);
    const float *d[2][36];
    const float *g[2][16];
    for (size_t p = 0; p < (count + 1) / 2; p++) {
        const int both = 2 * p + 1 < count;
        for (int half = 0; half < (both ? 2 : 1); half++, walk_next(&t)) {
            gather_input(x, &t, c, zero, d[half]);
            gather_block_read(dy, &t, f, zero, g[half]);
        }
        if (!catdog_wino4_kernel_gradient_pair_bf16(d[0], both ? d[1] : NULL, g[0], both ? g[1] : NULL, (uint32_t *)v + p * c,
                                                    vstride, (uint32_t *)m + p * f, mstride, c, f))
            return 0;
    }
    return 1;
}

void catdog_wino4_kernel_gradient_tiles(const float *x, const float *dy, size_t h, size_t w, size_t c, size_t f,
                                        size_t first, size_t count, const float *zero, float *v, size_t vstride,
                                        float *m, size_t mstride, float *work) {
    tile_walk t = walk_from(h, w, 4, first);
    const float *d[36], *g[16];
    for (size_t i = 0; i < count; i++, walk_next(&t)) {
        gather_input(x, &t, c, zero, d);
        catdog_wino4_input(d, v + i * c, vstride, c, work);
        gather_block_read(dy, &t, f, zero, g);
        catdog_wino4_output_gradient(g, m + i * f, mstride, f, work);
    }
}
