// Open MPI through dlopen: function pointers and predefined handles resolved by name.
#include "CMPI.h"
#include <dlfcn.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

typedef void *handle;
static void *lib;
static handle comm_world, type_float, type_double, type_byte, op_sum, op_max, op_min, errors_return;
static int (*p_init_thread)(int *, char ***, int, int *);
static int (*p_initialized)(int *);
static int (*p_comm_rank)(handle, int *);
static int (*p_comm_size)(handle, int *);
static int (*p_allreduce)(const void *, void *, int, handle, handle, handle);
static int (*p_bcast)(void *, int, handle, int, handle);
static int (*p_barrier)(handle);
static int (*p_abort)(handle, int);
static int (*p_finalize)(void);
static int (*p_set_errhandler)(handle, handle);
static int (*p_error_string)(int, char *, int *);
static int rank_ = 0, size_ = 1;

#define MPI_IN_PLACE_VALUE ((void *)1)   // Open MPI's MPI_IN_PLACE
#define MPI_THREAD_FUNNELED_VALUE 1

static int resolve(char *err, size_t errlen) {
    const char *names[] = {"libmpi.so.40", "libmpi.so", NULL};
    for (int i = 0; names[i] && !lib; i++) lib = dlopen(names[i], RTLD_NOW | RTLD_GLOBAL);
    if (!lib) { snprintf(err, errlen, "Open MPI's libmpi.so.40 cannot be loaded (%s): install openmpi-bin", dlerror()); return -1; }
#define SYM(var, name) do { *(void **)(&var) = dlsym(lib, name); if (!var) { snprintf(err, errlen, "libmpi lacks %s", name); return -1; } } while (0)
    SYM(p_init_thread, "MPI_Init_thread"); SYM(p_initialized, "MPI_Initialized");
    SYM(p_comm_rank, "MPI_Comm_rank"); SYM(p_comm_size, "MPI_Comm_size"); SYM(p_allreduce, "MPI_Allreduce");
    SYM(p_bcast, "MPI_Bcast"); SYM(p_barrier, "MPI_Barrier"); SYM(p_abort, "MPI_Abort"); SYM(p_finalize, "MPI_Finalize");
    SYM(p_set_errhandler, "MPI_Comm_set_errhandler"); SYM(p_error_string, "MPI_Error_string");
    SYM(comm_world, "ompi_mpi_comm_world"); SYM(type_float, "ompi_mpi_float"); SYM(type_double, "ompi_mpi_double");
    SYM(type_byte, "ompi_mpi_byte"); SYM(op_sum, "ompi_mpi_op_sum"); SYM(op_max, "ompi_mpi_op_max"); SYM(op_min, "ompi_mpi_op_min");
    SYM(errors_return, "ompi_mpi_errors_return");
#undef SYM
    return 0;
}

int dm_init(char *err, size_t errlen) {
    if (resolve(err, errlen) != 0) return -1;
    int provided = 0, done = 0;
    p_initialized(&done);
    if (!done) {
        int rc = p_init_thread(NULL, NULL, MPI_THREAD_FUNNELED_VALUE, &provided);
        if (rc != 0) { snprintf(err, errlen, "MPI_Init_thread failed (%d)", rc); return -1; }
    }
    p_set_errhandler(comm_world, errors_return);
    p_comm_rank(comm_world, &rank_);
    p_comm_size(comm_world, &size_);
    return 0;
}

int dm_rank(void) { return rank_; }
int dm_size(void) { return size_; }

static int allreduce(void *values, int64_t n, size_t elem, handle type, handle op) {
    char *p = values;
    while (n > 0) {
        int chunk = n > INT_MAX / 2 ? INT_MAX / 2 : (int)n;
        int rc = p_allreduce(MPI_IN_PLACE_VALUE, p, chunk, type, op, comm_world);
        if (rc != 0) return rc;
        p += (size_t)chunk * elem;
        n -= chunk;
    }
    return 0;
}

int dm_allreduce_sum_f32(float *v, int64_t n) { return allreduce(v, n, 4, type_float, op_sum); }
int dm_allreduce_sum_f64(double *v, int64_t n) { return allreduce(v, n, 8, type_double, op_sum); }
int dm_allreduce_max_f64(double *v, int64_t n) { return allreduce(v, n, 8, type_double, op_max); }
int dm_allreduce_min_f64(double *v, int64_t n) { return allreduce(v, n, 8, type_double, op_min); }

int dm_broadcast(void *data, int64_t bytes, int root) {
    char *p = data;
    while (bytes > 0) {
        int chunk = bytes > INT_MAX / 2 ? INT_MAX / 2 : (int)bytes;
        int rc = p_bcast(p, chunk, type_byte, root, comm_world);
        if (rc != 0) return rc;
        p += chunk;
        bytes -= chunk;
    }
    return 0;
}

int dm_barrier(void) { return p_barrier(comm_world); }
void dm_abort(int code) { if (p_abort) p_abort(comm_world, code); }
int dm_finalize(void) { return p_finalize ? p_finalize() : 0; }

void dm_error_string(int code, char *out, size_t len) {
    char buf[512];
    int n = 0;
    if (p_error_string && p_error_string(code, buf, &n) == 0) snprintf(out, len, "%.*s", n, buf);
    else snprintf(out, len, "MPI error %d", code);
}
