// Winograd's walk over the tiles of a chunk, for F(4×4) (winograd_tiles.c: blocks of 4×4
// outputs from 6×6 inputs) and F(2×2) (winograd2_tiles.c: 2×2 from 4×4): tiles run along a row
// of blocks, then down the image, then to the next image. Each file calls these with its
// constant block side, so the compiler makes a walk of its own for each.
#ifndef CATDOG_WINOGRAD_WALK_H
#define CATDOG_WINOGRAD_WALK_H
#include <stddef.h>

typedef struct {
    size_t h, w, block;
    size_t image, row, col;  // the tile's image and its outputs' first row and column
} tile_walk;

static inline tile_walk walk_from(size_t h, size_t w, size_t block, size_t tile) {
    const size_t wide = (w + block - 1) / block, per_image = wide * ((h + block - 1) / block), within = tile % per_image;
    tile_walk t = {h, w, block, tile / per_image, block * (within / wide), block * (within % wide)};
    return t;
}

static inline void walk_next(tile_walk *t) {
    t->col += t->block;
    if (t->col < t->w) return;
    t->col = 0;
    t->row += t->block;
    if (t->row < t->h) return;
    t->row = 0;
    t->image++;
}

// The (block + 2)² pixels from (row − 1, col − 1) of the tile's image (depth floats a pixel),
// `zero` outside the image.
static inline void gather_input(const float *x, const tile_walk *t, size_t depth, const float *zero, const float **d) {
    const float *image = x + t->image * t->h * t->w * depth;
    const size_t side = t->block + 2;
    for (size_t r = 0; r < side; r++) {
        const size_t ih = t->row + r - 1;  // wraps below 0: then ≥ h
        for (size_t s = 0; s < side; s++) {
            const size_t iw = t->col + s - 1;
            d[r * side + s] = ih < t->h && iw < t->w ? image + (ih * t->w + iw) * depth : zero;
        }
    }
}

// Where the tile's block² values lie in its image (floats from the image's start), or -1 for
// those past the image's edge.
static inline void block_offsets(const tile_walk *t, size_t depth, ptrdiff_t *at) {
    for (size_t r = 0; r < t->block; r++)
        for (size_t s = 0; s < t->block; s++) {
            const size_t oh = t->row + r, ow = t->col + s;
            at[r * t->block + s] = oh < t->h && ow < t->w ? (ptrdiff_t)((oh * t->w + ow) * depth) : -1;
        }
}

// The tile's values of y to write (NULL past the image's edge).
static inline void gather_block(float *y, const tile_walk *t, size_t depth, float **p) {
    ptrdiff_t at[16];
    block_offsets(t, depth, at);
    float *image = y + t->image * t->h * t->w * depth;
    for (size_t i = 0; i < t->block * t->block; i++) p[i] = at[i] < 0 ? NULL : image + at[i];
}

// The tile's values of y to read (`outside`, a zero vector, past the image's edge).
static inline void gather_block_read(const float *y, const tile_walk *t, size_t depth, const float *outside, const float **p) {
    ptrdiff_t at[16];
    block_offsets(t, depth, at);
    const float *image = y + t->image * t->h * t->w * depth;
    for (size_t i = 0; i < t->block * t->block; i++) p[i] = at[i] < 0 ? outside : image + at[i];
}

#endif
