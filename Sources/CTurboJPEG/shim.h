#ifndef CATDOG_CTURBOJPEG_SHIM_H
#define CATDOG_CTURBOJPEG_SHIM_H
#include <turbojpeg.h>

// TJSCALED is a macro; Swift cannot import function-like macros.
static inline int catdog_tj_scaled(int dimension, tjscalingfactor factor) {
    return TJSCALED(dimension, factor);
}
#endif
