// The kernels for x86-64-v3: AVX2, FMA, F16C, BMI.
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include "variants.h"

#define FN(name) name##_v3
#if defined(__x86_64__) && defined(__clang__)
#pragma clang attribute push (__attribute__((target("arch=x86-64-v3"))), apply_to = function)
#define CATDOG_PUSHED 1
#endif
#define CATDOG_VECTOR_FLOATS 8
#include "winograd4_body.h"
#include "winograd2_body.h"
#include "pooling_body.h"
#include "depthwise_body.h"
#include "channels_body.h"
#include "powersgd_body.h"
#include "resize_body.h"
#ifdef CATDOG_PUSHED
#pragma clang attribute pop
#endif
