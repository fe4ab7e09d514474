#ifndef CATDOG_HALF_H
#define CATDOG_HALF_H

#include <stddef.h>
#include <stdint.h>

// float <-> IEEE half conversion of whole buffers, with the x86 F16C instructions (8 values per
// instruction) when the CPU has them, else one value at a time. Swift's Float16(Float) compiles
// to a software routine for baseline x86-64, which made the fp16 all-reduce slower than fp32 on
// shared memory.
void catdog_float_to_half(const float *src, uint16_t *dst, size_t count);
void catdog_half_to_float(const uint16_t *src, float *dst, size_t count);
// 1 when the F16C path is in use.
int catdog_half_uses_f16c(void);

// float <-> bf16 (the float's upper 16 bits), rounded to nearest even in integer arithmetic, so
// that every CPU, with AVX512_BF16 or without, makes the same bits (denormals kept, not
// flushed; a NaN stays a quiet NaN). For values that cross the network between ranks that
// must agree bit for bit, and for bf16 products' operands packed by scalar code.
uint16_t catdog_bf16_from_float(float x);
float catdog_float_from_bf16(uint16_t h);
void catdog_float_to_bf16(const float *src, uint16_t *dst, size_t count);
void catdog_bf16_to_float(const uint16_t *src, float *dst, size_t count);
// inout[i] = bf16(float(in[i]) + float(inout[i])): the bf16 sum of an all-reduce.
void catdog_bf16_add(const uint16_t *in, uint16_t *inout, size_t count);

#endif
