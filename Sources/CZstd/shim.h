#ifndef CATDOG_CZSTD_SHIM_H
#define CATDOG_CZSTD_SHIM_H
#include <zstd.h>
// ZSTD_CONTENTSIZE_* are macros over unsigned long long constants.
static inline unsigned long long catdog_zstd_contentsize_unknown(void) { return ZSTD_CONTENTSIZE_UNKNOWN; }
static inline unsigned long long catdog_zstd_contentsize_error(void) { return ZSTD_CONTENTSIZE_ERROR; }
#endif
