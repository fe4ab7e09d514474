#ifndef CATDOG_FETCH_C_H
#define CATDOG_FETCH_C_H

// Our gemms (sgemm.c in fp32, bf16.c in bf16) fetch a large C ahead where they add into it:
// each 8 x 32 block's rows, when the block starts, so that the lines arrive while its k
// products run. A C of this many bytes or more is a layer's weight gradient, evicted from the
// caches since the last step; smaller ones (Winograd's products) fit in L2 and fetching them
// made steps slower (3%, fp32).
enum { FETCH_C_BYTES = 1 << 20 };

#endif
