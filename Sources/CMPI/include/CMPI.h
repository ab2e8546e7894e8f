// CMPI: the few MPI calls DualFuse's data-parallel training needs, with Open MPI loaded at run
// time (dlopen of libmpi.so.40), so the executables start where Open MPI is not installed and
// never initialise MPI outside mpirun. MPI's handles (MPI_COMM_WORLD, MPI_FLOAT, MPI_SUM, ...) are
// macros Swift cannot import; here they are Open MPI's predefined objects, found by name.
#ifndef DUALFUSE_CMPI_H
#define DUALFUSE_CMPI_H
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// Loads libmpi, calls MPI_Init_thread (funneled) and makes errors return instead of aborting.
/// 0 on success; else -1 with a message in `err`.
int dm_init(char *err, size_t errlen);
int dm_rank(void);
int dm_size(void);
/// In-place sum of `n` floats over all ranks (chunked beyond INT_MAX). MPI's result code.
int dm_allreduce_sum_f32(float *values, int64_t n);
/// In-place sum / max / min of `n` doubles over all ranks.
int dm_allreduce_sum_f64(double *values, int64_t n);
int dm_allreduce_max_f64(double *values, int64_t n);
int dm_allreduce_min_f64(double *values, int64_t n);
/// `bytes` bytes of `data` from `root` to every rank.
int dm_broadcast(void *data, int64_t bytes, int root);
int dm_barrier(void);
/// Ends every rank of the job with `code`.
void dm_abort(int code);
int dm_finalize(void);
/// MPI's text for a result code (after a failure).
void dm_error_string(int code, char *out, size_t len);

#ifdef __cplusplus
}
#endif
#endif
