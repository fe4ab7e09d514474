// Winograd F(4×4)'s loops over a range of tiles: where each tile lies in the NHWC batch, its
// 36 input pixels (or 16 outputs, or 16 output gradients) as pointers, then one transform a tile
// through the kernels of catdog_kernels.h. Computed here rather than in the caller's loop, where
// locating a tile and gathering its pointers cost as much as the transform of a 32-channel tile's
// first block. The same calls, in the same order, with the same pointers: the same bits.
#include "catdog_kernels.h"

// The tile after `t`: tiles run along a row of tiles, then down the image, then to the next image.
typedef struct {
    size_t h, w, tiles_wide, tiles_high;
    size_t image, row, col;  // the tile's image and its outputs' first row and column
} tile_walk;

static tile_walk walk_from(size_t h, size_t w, size_t tile) {
    tile_walk t = {h, w, (w + 3) / 4, (h + 3) / 4, 0, 0, 0};
    const size_t per_image = t.tiles_wide * t.tiles_high, within = tile % per_image;
    t.image = tile / per_image;
    t.row = 4 * (within / t.tiles_wide);
    t.col = 4 * (within % t.tiles_wide);
    return t;
}

static void walk_next(tile_walk *t) {
    t->col += 4;
    if (t->col < t->w) return;
    t->col = 0;
    t->row += 4;
    if (t->row < t->h) return;
    t->row = 0;
    t->image++;
}

// The 6×6 pixels from (row − 1, col − 1) of the tile's image (depth floats a pixel), `zero`
// outside the image.
static void gather_input(const float *x, const tile_walk *t, size_t depth, const float *zero, const float *d[36]) {
    const float *image = x + t->image * t->h * t->w * depth;
    for (size_t r = 0; r < 6; r++) {
        const size_t ih = t->row + r - 1;  // wraps below 0: then ≥ h
        for (size_t s = 0; s < 6; s++) {
            const size_t iw = t->col + s - 1;
            d[r * 6 + s] = ih < t->h && iw < t->w ? image + (ih * t->w + iw) * depth : zero;
        }
    }
}

// Where the tile's 4×4 values lie in its image (floats from the image's start), or -1 for those
// past the image's edge.
static void block_offsets(const tile_walk *t, size_t depth, ptrdiff_t at[16]) {
    for (size_t r = 0; r < 4; r++)
        for (size_t s = 0; s < 4; s++) {
            const size_t oh = t->row + r, ow = t->col + s;
            at[r * 4 + s] = oh < t->h && ow < t->w ? (ptrdiff_t)((oh * t->w + ow) * depth) : -1;
        }
}

// The tile's 4×4 values of y to write (NULL past the image's edge).
static void gather_block(float *y, const tile_walk *t, size_t depth, float *p[16]) {
    ptrdiff_t at[16];
    block_offsets(t, depth, at);
    float *image = y + t->image * t->h * t->w * depth;
    for (size_t i = 0; i < 16; i++) p[i] = at[i] < 0 ? NULL : image + at[i];
}

// The tile's 4×4 values of y to read (`outside`, a zero vector, past the image's edge).
static void gather_block_read(const float *y, const tile_walk *t, size_t depth, const float *outside, const float *p[16]) {
    ptrdiff_t at[16];
    block_offsets(t, depth, at);
    const float *image = y + t->image * t->h * t->w * depth;
    for (size_t i = 0; i < 16; i++) p[i] = at[i] < 0 ? outside : image + at[i];
}

int catdog_wino4_input_tiles_bf16(const float *x, size_t h, size_t w, size_t c, size_t first, size_t count,
                                  const float *zero, void *out, size_t stride) {
    if (c % 16 != 0 || !catdog_bf16_products_available()) return 0;
    const size_t k2 = c / 2;
    tile_walk t = walk_from(h, w, first);
    const float *d[36];
    for (size_t i = 0; i < count; i++, walk_next(&t)) {
        gather_input(x, &t, c, zero, d);
        if (!catdog_wino4_input_bf16(d, (uint32_t *)out + i * k2, stride, c)) return 0;
    }
    return 1;
}

void catdog_wino4_input_tiles(const float *x, size_t h, size_t w, size_t c, size_t first, size_t count,
                              const float *zero, float *v, size_t vstride, float *work) {
    tile_walk t = walk_from(h, w, first);
    const float *d[36];
    for (size_t i = 0; i < count; i++, walk_next(&t)) {
        gather_input(x, &t, c, zero, d);
        catdog_wino4_input(d, v + i * c, vstride, c, work);
    }
}

void catdog_wino4_output_tiles(const float *m, size_t mstride, float *y, size_t h, size_t w, size_t f, size_t first,
                               size_t count, int accumulate, int epilogue, const float *bias, int activation,
                               float *work) {
    tile_walk t = walk_from(h, w, first);
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
    tile_walk t = walk_from(h, w, first);
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
    tile_walk t = walk_from(h, w, first);
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
    tile_walk t = walk_from(h, w, first);
    const float *d[36], *g[16];
    for (size_t i = 0; i < count; i++, walk_next(&t)) {
        gather_input(x, &t, c, zero, d);
        catdog_wino4_input(d, v + i * c, vstride, c, work);
        gather_block_read(dy, &t, f, zero, g);
        catdog_wino4_output_gradient(g, m + i * f, mstride, f, work);
    }
}
