// Winograd F(2×2)'s loops over a range of tiles, as winograd_tiles.c does F(4×4)'s: where each
// tile lies in the NHWC batch, its 4×4 input pixels (or 2×2 outputs, or output gradients) as
// pointers, then one transform a tile through the kernels of catdog_kernels.h.
#include "catdog_kernels.h"

typedef struct {
    size_t h, w;
    size_t image, row, col;  // the tile's image and its outputs' first row and column
} tile_walk2;

static tile_walk2 walk2_from(size_t h, size_t w, size_t tile) {
    const size_t wide = (w + 1) / 2, per_image = wide * ((h + 1) / 2), within = tile % per_image;
    tile_walk2 t = {h, w, tile / per_image, 2 * (within / wide), 2 * (within % wide)};
    return t;
}

static void walk2_next(tile_walk2 *t) {
    t->col += 2;
    if (t->col < t->w) return;
    t->col = 0;
    t->row += 2;
    if (t->row < t->h) return;
    t->row = 0;
    t->image++;
}

// The 4×4 pixels from (row − 1, col − 1) of the tile's image, `zero` outside the image.
static void gather_input2(const float *x, const tile_walk2 *t, size_t depth, const float *zero, const float *d[16]) {
    const float *image = x + t->image * t->h * t->w * depth;
    for (size_t r = 0; r < 4; r++) {
        const size_t ih = t->row + r - 1;  // wraps below 0: then ≥ h
        for (size_t s = 0; s < 4; s++) {
            const size_t iw = t->col + s - 1;
            d[r * 4 + s] = ih < t->h && iw < t->w ? image + (ih * t->w + iw) * depth : zero;
        }
    }
}

// Where the tile's 2×2 values lie in its image (floats from its start), -1 past the edge.
static void block_offsets2(const tile_walk2 *t, size_t depth, ptrdiff_t at[4]) {
    for (size_t r = 0; r < 2; r++)
        for (size_t s = 0; s < 2; s++) {
            const size_t oh = t->row + r, ow = t->col + s;
            at[r * 2 + s] = oh < t->h && ow < t->w ? (ptrdiff_t)((oh * t->w + ow) * depth) : -1;
        }
}

void catdog_wino2_input_tiles(const float *x, size_t h, size_t w, size_t c, size_t first, size_t count,
                              const float *zero, float *v, size_t vstride) {
    tile_walk2 t = walk2_from(h, w, first);
    const float *d[16];
    for (size_t i = 0; i < count; i++, walk2_next(&t)) {
        gather_input2(x, &t, c, zero, d);
        catdog_wino2_input(d, v + i * c, vstride, c);
    }
}

void catdog_wino2_output_tiles(const float *m, size_t mstride, float *y, size_t h, size_t w, size_t f, size_t first,
                               size_t count, int accumulate) {
    tile_walk2 t = walk2_from(h, w, first);
    for (size_t i = 0; i < count; i++, walk2_next(&t)) {
        ptrdiff_t at[4];
        block_offsets2(&t, f, at);
        float *image = y + t.image * h * w * f, *p[4];
        for (int q = 0; q < 4; q++) p[q] = at[q] < 0 ? NULL : image + at[q];
        catdog_wino2_output(m + i * f, mstride, p, f, accumulate);
    }
}

void catdog_wino2_kernel_gradient_tiles(const float *x, const float *dy, size_t h, size_t w, size_t c, size_t f,
                                        size_t first, size_t count, const float *zero, float *v, size_t vstride,
                                        float *m, size_t mstride) {
    tile_walk2 t = walk2_from(h, w, first);
    const float *d[16], *g[4];
    for (size_t i = 0; i < count; i++, walk2_next(&t)) {
        gather_input2(x, &t, c, zero, d);
        catdog_wino2_input(d, v + i * c, vstride, c);
        ptrdiff_t at[4];
        block_offsets2(&t, f, at);
        const float *image = dy + t.image * h * w * f;
        for (int q = 0; q < 4; q++) g[q] = at[q] < 0 ? zero : image + at[q];
        catdog_wino2_output_gradient(g, m + i * f, mstride, f);
    }
}
