// What F(2×2)'s fp32 filter transform (winograd2_body.h) and its bf16 packing one (bf16.c) both
// compute, in one place so that both give the same bits.
#ifndef CATDOG_WINOGRAD2_SHARED_H
#define CATDOG_WINOGRAD2_SHARED_H

// G (4×3) = [1 0 0; ½ ½ ½; ½ -½ ½; 0 0 1] applied to (a0, a1, a2).
#define W2_G(a0, a1, a2, o0, o1, o2, o3)  \
    do {                                  \
        o0 = (a0);                        \
        o1 = 0.5f * ((a0) + (a1) + (a2)); \
        o2 = 0.5f * ((a0) - (a1) + (a2)); \
        o3 = (a2);                        \
    } while (0)

#endif
