// What Winograd F(4×4, 3×3)'s input and output-gradient transforms share between the transforms of every
// instruction set (winograd4_body.h) and the one that packs its output for the bf16 products
// (bf16.c): each value computed as the same expression, which clang contracts (a * b + c) the
// same way in both, so the same bits; and the same read-ahead.
#ifndef CATDOG_WINOGRAD4_SHARED_H
#define CATDOG_WINOGRAD4_SHARED_H
#include <stddef.h>
#include <stdint.h>

// Bᵀ x for a 6-vector x, along one axis of a tile (the input's transform), on values of the
// includer's type `wvec` (vectors of floats, `vector_size`), its temporaries of that type too.
#define BT6(a0, a1, a2, a3, a4, a5, o0, o1, o2, o3, o4, o5) do {          \
        wvec p_ = a4 - 4.0f * a2, q_ = a3 - 4.0f * a1;                    \
        wvec r_ = a4 - a2, s_ = 2.0f * (a3 - a1);                         \
        o0 = 4.0f * a0 - 5.0f * a2 + a4;                                  \
        o1 = p_ + q_;                                                     \
        o2 = p_ - q_;                                                     \
        o3 = r_ + s_;                                                     \
        o4 = r_ - s_;                                                     \
        o5 = 4.0f * a1 - 5.0f * a3 + a5;                                  \
    } while (0)
// A x for a 4-vector x (the output gradient's transform along one axis): six outputs.
#define A4(a0, a1, a2, a3, o0, o1, o2, o3, o4, o5) do {                     \
        wvec e_ = a0 + a2, d_ = a1 + a3;                                     \
        o0 = a0;                                                             \
        o1 = e_ + d_;                                                        \
        o2 = e_ - d_;                                                        \
        o3 = a0 + 2.0f * a1 + 4.0f * a2 + 8.0f * a3;                         \
        o4 = a0 - 2.0f * a1 + 4.0f * a2 - 8.0f * a3;                         \
        o5 = a3;                                                             \
    } while (0)

// The tiles of a row of tiles lie 4 pixels apart, and a transform reads its tile's pixels from
// memory a few lines at a time: fetch ahead, for each of the tile's `rows` rows (`last[i *
// step]`, the row's last pixel), the 4 pixels of n floats that start `ahead` pixels right of it,
// which the next tiles read. A prefetch does not fault, so past an image's edge, or after the
// zero vector of the padding, it only wastes a fetch; the addresses are computed as integers,
// not as pointers past an object.
static inline void fetch_next_tiles(const float *const *last, int rows, int step, size_t ahead, size_t n) {
    for (int r = 0; r < rows; r++) {
        const uintptr_t start = (uintptr_t)last[r * step] + ahead * n * sizeof(float);
        for (size_t b = 0; b < 4 * n * sizeof(float); b += 64) __builtin_prefetch((const void *)(start + b), 0, 3);
    }
}

#endif
