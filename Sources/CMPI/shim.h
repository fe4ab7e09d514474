#ifndef CATDOG_CMPI_SHIM_H
#define CATDOG_CMPI_SHIM_H

// Open MPI defines its handles and sentinels as macros over the addresses of
// global structs; Swift cannot import those, so each one is wrapped here.
#include <mpi.h>

static inline MPI_Comm catdog_mpi_comm_world(void) { return MPI_COMM_WORLD; }
static inline MPI_Datatype catdog_mpi_float(void) { return MPI_FLOAT; }
static inline MPI_Datatype catdog_mpi_double(void) { return MPI_DOUBLE; }
static inline MPI_Datatype catdog_mpi_uint64(void) { return MPI_UINT64_T; }
static inline MPI_Datatype catdog_mpi_int64(void) { return MPI_INT64_T; }
static inline MPI_Datatype catdog_mpi_int32(void) { return MPI_INT32_T; }
static inline MPI_Datatype catdog_mpi_byte(void) { return MPI_BYTE; }
static inline MPI_Op catdog_mpi_sum(void) { return MPI_SUM; }
static inline MPI_Op catdog_mpi_max(void) { return MPI_MAX; }
static inline MPI_Op catdog_mpi_op_null(void) { return MPI_OP_NULL; }
static inline MPI_Op catdog_mpi_min(void) { return MPI_MIN; }
static inline void *catdog_mpi_in_place(void) { return MPI_IN_PLACE; }
static inline MPI_Request catdog_mpi_request_null(void) { return MPI_REQUEST_NULL; }
static inline MPI_Status *catdog_mpi_status_ignore(void) { return MPI_STATUS_IGNORE; }
static inline MPI_Errhandler catdog_mpi_errors_return(void) { return MPI_ERRORS_RETURN; }
static inline int catdog_mpi_success(void) { return MPI_SUCCESS; }
static inline int catdog_mpi_max_error_string(void) { return MPI_MAX_ERROR_STRING; }
static inline int catdog_mpi_max_processor_name(void) { return MPI_MAX_PROCESSOR_NAME; }

static inline MPI_Datatype catdog_mpi_uint16(void) { return MPI_UINT16_T; }
static inline MPI_Info catdog_mpi_info_null(void) { return MPI_INFO_NULL; }
static inline int catdog_mpi_comm_type_shared(void) { return MPI_COMM_TYPE_SHARED; }
static inline MPI_Win catdog_mpi_win_null(void) { return MPI_WIN_NULL; }
static inline MPI_Comm catdog_mpi_comm_null(void) { return MPI_COMM_NULL; }
static inline int catdog_mpi_undefined(void) { return MPI_UNDEFINED; }

// Sum of IEEE half-precision values (MPI has no fp16 type): the reduction behind the
// fp16-compressed all-reduce, accumulating each pair in float.
// With F16C (x86), 8 values per instruction; else one at a time.
static void catdog_fp16_sum_scalar(const _Float16 *a, _Float16 *b, int n) {
    for (int i = 0; i < n; i++) b[i] = (_Float16)((float)a[i] + (float)b[i]);
}

#if defined(__x86_64__)
#include <immintrin.h>
__attribute__((target("avx,f16c")))
static void catdog_fp16_sum_f16c(const _Float16 *a, _Float16 *b, int n) {
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 x = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(a + i)));
        __m256 y = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(b + i)));
        _mm_storeu_si128((__m128i *)(b + i), _mm256_cvtps_ph(_mm256_add_ps(x, y), _MM_FROUND_TO_NEAREST_INT));
    }
    catdog_fp16_sum_scalar(a + i, b + i, n - i);
}
#endif

static void catdog_fp16_sum(void *in, void *inout, int *len, MPI_Datatype *type) {
    (void)type;
#if defined(__x86_64__)
    if (__builtin_cpu_supports("f16c") && __builtin_cpu_supports("avx")) {
        catdog_fp16_sum_f16c((const _Float16 *)in, (_Float16 *)inout, *len);
        return;
    }
#endif
    catdog_fp16_sum_scalar((const _Float16 *)in, (_Float16 *)inout, *len);
}

static inline MPI_Op catdog_mpi_fp16_sum(void) {
    static MPI_Op op = MPI_OP_NULL;
    if (op == MPI_OP_NULL) MPI_Op_create(catdog_fp16_sum, 1, &op);
    return op;
}

#endif
