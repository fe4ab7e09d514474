#ifndef CATDOG_COPENBLAS_SHIM_H
#define CATDOG_COPENBLAS_SHIM_H
// OpenBLAS's own cblas.h (found through pkg-config's include path) declares
// openblas_set_num_threads beside the standard CBLAS interface.
#include <cblas.h>
#endif
