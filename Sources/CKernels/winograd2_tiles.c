// Winograd F(2×2)'s loops over a range of tiles, as winograd_tiles.c does F(4×4)'s: where each
// tile lies in the NHWC batch, its 4×4 input pixels (or 2×2 outputs, or output gradients) as
// pointers, then one transform a tile through the kernels of catdog_kernels.h.
#include "catdog_kernels.h"
#include "winograd_walk.h"

void catdog_wino2_input_tiles(const float *x, size_t h, size_t w, size_t c, size_t first, size_t count,
                              const float *zero, float *v, size_t vstride) {
    tile_walk t = walk_from(h, w, 2, first);
    const float *d[16];
    for (size_t i = 0; i < count; i++, walk_next(&t)) {
        gather_input(x, &t, c, zero, d);
        catdog_wino2_input(d, v + i * c, vstride, c);
    }
}

void catdog_wino2_output_tiles(const float *m, size_t mstride, float *y, size_t h, size_t w, size_t f, size_t first,
                               size_t count, int accumulate) {
    tile_walk t = walk_from(h, w, 2, first);
    float *p[4];
    for (size_t i = 0; i < count; i++, walk_next(&t)) {
        gather_block(y, &t, f, p);
        catdog_wino2_output(m + i * f, mstride, p, f, accumulate);
    }
}

void catdog_wino2_kernel_gradient_tiles(const float *x, const float *dy, size_t h, size_t w, size_t c, size_t f,
                                        size_t first, size_t count, const float *zero, float *v, size_t vstride,
                                        float *m, size_t mstride) {
    tile_walk t = walk_from(h, w, 2, first);
    const float *d[16], *g[4];
    for (size_t i = 0; i < count; i++, walk_next(&t)) {
        gather_input(x, &t, c, zero, d);
        catdog_wino2_input(d, v + i * c, vstride, c);
        gather_block_read(dy, &t, f, zero, g);
        catdog_wino2_output_gradient(g, m + i * f, mstride, f);
    }
}
