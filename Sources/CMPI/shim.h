#ifndef CATDOG_CMPI_SHIM_H
#define CATDOG_CMPI_SHIM_H

// Open MPI defines its handles and sentinels as macros over the addresses of
// global structs; Swift cannot import those, so each one is wrapped here.
#include <mpi.h>

static inline MPI_Comm catdog_mpi_comm_world(void) { return MPI_COMM_WORLD; }
static inline MPI_Datatype catdog_mpi_float(void) { return MPI_FLOAT; }
static inline MPI_Datatype catdog_mpi_double(void) { return MPI_DOUBLE; }
static inline MPI_Datatype catdog_mpi_uint64(void) { return MPI_UINT64_T; }
static inline MPI_Datatype catdog_mpi_byte(void) { return MPI_BYTE; }
static inline MPI_Op catdog_mpi_sum(void) { return MPI_SUM; }
static inline MPI_Op catdog_mpi_max(void) { return MPI_MAX; }
static inline MPI_Op catdog_mpi_min(void) { return MPI_MIN; }
static inline void *catdog_mpi_in_place(void) { return MPI_IN_PLACE; }
static inline MPI_Request catdog_mpi_request_null(void) { return MPI_REQUEST_NULL; }
static inline MPI_Status *catdog_mpi_status_ignore(void) { return MPI_STATUS_IGNORE; }
static inline MPI_Errhandler catdog_mpi_errors_return(void) { return MPI_ERRORS_RETURN; }
static inline int catdog_mpi_success(void) { return MPI_SUCCESS; }
static inline int catdog_mpi_max_error_string(void) { return MPI_MAX_ERROR_STRING; }
static inline int catdog_mpi_max_processor_name(void) { return MPI_MAX_PROCESSOR_NAME; }

static inline MPI_Datatype catdog_mpi_uint16(void) { return MPI_UINT16_T; }

// Sum of IEEE half-precision values (MPI has no fp16 type): the reduction behind the
// fp16-compressed all-reduce, accumulating each pair in float.
static void catdog_fp16_sum(void *in, void *inout, int *len, MPI_Datatype *type) {
    (void)type;
    const _Float16 *a = (const _Float16 *)in;
    _Float16 *b = (_Float16 *)inout;
    for (int i = 0; i < *len; i++) b[i] = (_Float16)((float)a[i] + (float)b[i]);
}

static inline MPI_Op catdog_mpi_fp16_sum(void) {
    static MPI_Op op = MPI_OP_NULL;
    if (op == MPI_OP_NULL) MPI_Op_create(catdog_fp16_sum, 1, &op);
    return op;
}

#endif
