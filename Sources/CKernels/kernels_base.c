// The kernels for baseline x86-64 (SSE2), or whatever the target is.
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include "variants.h"

#define FN(name) name##_base
#define CATDOG_VECTOR_FLOATS 4
#include "winograd4_body.h"
#include "winograd2_body.h"
#include "pooling_body.h"
#include "depthwise_body.h"
#include "channels_body.h"
#include "powersgd_body.h"
#include "resize_body.h"
