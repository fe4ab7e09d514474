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
// The includer also gives the loads (a function of its own instruction set: a 64-byte vector
// returned by a function compiled without AVX-512 would change the calling convention).
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
// Row r of G (the kernel's transform along one axis) applied to a 3-vector: G's rows are
// [1/4 0 0] [-1/6 -1/6 -1/6] [-1/6 1/6 -1/6] [1/24 1/12 1/6] [1/24 -1/12 1/6] [0 0 1]. The filter
// transforms (winograd4_body.h, bf16.c) compute every value by this one expression.
static const float WINO4_G[6][3] = {
    {0.25f, 0.0f, 0.0f},
    {-1.0f / 6, -1.0f / 6, -1.0f / 6},
    {-1.0f / 6, 1.0f / 6, -1.0f / 6},
    {1.0f / 24, 1.0f / 12, 1.0f / 6},
    {1.0f / 24, -1.0f / 12, 1.0f / 6},
    {0.0f, 0.0f, 1.0f},
};
#define WINO4_G_ROW(r, a0, a1, a2) (WINO4_G[r][0] * (a0) + WINO4_G[r][1] * (a1) + WINO4_G[r][2] * (a2))
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

// The 2-D transforms of one tile on the lanes from k: LOAD(p) reads a `wvec` from p.
// V = Bᵀ d B of the 36 pixels d[36] into o[36] (row-major: ξ = 6 r + s).
#define BT6_TILE(d, k, LOAD, o) do {                                                                     \
        wvec t_[36];                                                                                     \
        for (int col_ = 0; col_ < 6; col_++) {                                                                 \
            wvec x0_ = LOAD((d)[col_] + (k)), x1_ = LOAD((d)[6 + col_] + (k)), x2_ = LOAD((d)[12 + col_] + (k)), \
                 x3_ = LOAD((d)[18 + col_] + (k)), x4_ = LOAD((d)[24 + col_] + (k)), x5_ = LOAD((d)[30 + col_] + (k)); \
            BT6(x0_, x1_, x2_, x3_, x4_, x5_, t_[col_], t_[6 + col_], t_[12 + col_], t_[18 + col_], t_[24 + col_], t_[30 + col_]); \
        }                                                                                                \
        for (int row_ = 0; row_ < 6; row_++) {                                                                 \
            const wvec *x_ = t_ + 6 * row_;                                                                \
            BT6(x_[0], x_[1], x_[2], x_[3], x_[4], x_[5], (o)[6 * row_], (o)[6 * row_ + 1], (o)[6 * row_ + 2],   \
                (o)[6 * row_ + 3], (o)[6 * row_ + 4], (o)[6 * row_ + 5]);                                      \
        }                                                                                                \
    } while (0)

// dM = A dY Aᵀ of the 16 output gradients dy[16] into o[36].
#define A4_TILE(dy, k, LOAD, o) do {                                                                     \
        wvec t_[24]; /* t[r][s] at 4 r + s */                                                            \
        for (int col_ = 0; col_ < 4; col_++) {                                                                 \
            wvec x0_ = LOAD((dy)[col_] + (k)), x1_ = LOAD((dy)[4 + col_] + (k)), x2_ = LOAD((dy)[8 + col_] + (k)), \
                 x3_ = LOAD((dy)[12 + col_] + (k));                                                        \
            A4(x0_, x1_, x2_, x3_, t_[col_], t_[4 + col_], t_[8 + col_], t_[12 + col_], t_[16 + col_], t_[20 + col_]); \
        }                                                                                                \
        for (int row_ = 0; row_ < 6; row_++) {                                                                 \
            const wvec *x_ = t_ + 4 * row_;                                                                \
            A4(x_[0], x_[1], x_[2], x_[3], (o)[6 * row_], (o)[6 * row_ + 1], (o)[6 * row_ + 2], (o)[6 * row_ + 3], \
               (o)[6 * row_ + 4], (o)[6 * row_ + 5]);                                                        \
        }                                                                                                \
    } while (0)

// The tiles of a row of tiles lie 4 pixels apart, and a transform reads its tile's pixels from
// memory a few lines at a time: fetch ahead, for each of the tile's `rows` rows (`last[i *
// step]`, the row's last pixel; NULL, a row outside the image, is skipped), the 4 pixels of n
// floats that start `ahead` pixels right of it, which the next tiles read, or, `for_writing`,
// write (a store into a line not in cache first waits for the line to be read). A prefetch does
// not fault, so past an image's edge, or after the zero vector of the padding, it only wastes a
// fetch; the addresses are computed as integers, not as pointers past an object.
// A macro rather than a function: the pointers are const float * or float *, read as they are,
// and the prefetch's read/write hint must be a constant.
#define FETCH_NEXT_TILES(last, rows, step, ahead, n, for_writing) do {                              \
        for (int r_ = 0; r_ < (rows); r_++) {                                                          \
            if (!(last)[r_ * (step)]) continue;                                                        \
            const uintptr_t start_ = (uintptr_t)(last)[r_ * (step)] + (ahead) * (n) * sizeof(float);   \
            for (size_t b_ = 0; b_ < 4 * (n) * sizeof(float); b_ += 64)                                \
                __builtin_prefetch((const void *)(start_ + b_), (for_writing), 3);                     \
        }                                                                                              \
    } while (0)

#endif
