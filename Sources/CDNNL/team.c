// The OpenMP team oneDNN runs on (libgomp, loaded with libdnnl), lent to the project's own parallel
// loops: one set of threads for the convolutions and everything between them, instead of a second
// pool whose threads must be woken, and must yield the cores, around every convolution.
#include "CDNNL.h"
#include <dlfcn.h>

typedef void (*gomp_parallel_fn)(void (*)(void *), void *, unsigned, unsigned);

static gomp_parallel_fn gompParallel;   // published last (release); NULL until libgomp is attached
static int (*ompThreadNum)(void);
static int (*ompNumThreads)(void);

void df_team_attach(void) {
    if (__atomic_load_n(&gompParallel, __ATOMIC_ACQUIRE)) return;
    void *gomp = dlopen("libgomp.so.1", RTLD_NOW | RTLD_NOLOAD);
    if (!gomp) return;
    int (*num)(void) = (int (*)(void))dlsym(gomp, "omp_get_thread_num");
    int (*count)(void) = (int (*)(void))dlsym(gomp, "omp_get_num_threads");
    gomp_parallel_fn run = (gomp_parallel_fn)dlsym(gomp, "GOMP_parallel");
    if (!num || !count || !run) return;
    ompThreadNum = num;
    ompNumThreads = count;
    __atomic_store_n(&gompParallel, run, __ATOMIC_RELEASE);
}

int df_team_attached(void) { return __atomic_load_n(&gompParallel, __ATOMIC_ACQUIRE) != NULL; }

int df_team_thread(void) { return df_team_attached() ? ompThreadNum() : -1; }

typedef struct {
    df_team_task task;
    void *context;
    int tasks;
} team_job;

// Each thread of the team runs tasks t, t + team size, ... (all of them when the team is smaller).
static void team_body(void *data) {
    const team_job *job = data;
    int n = ompNumThreads(), t = ompThreadNum();
    for (int i = t; i < job->tasks; i += n) job->task(job->context, i);
}

int df_team_run(int tasks, df_team_task task, void *context) {
    gomp_parallel_fn run = __atomic_load_n(&gompParallel, __ATOMIC_ACQUIRE);
    if (!run || tasks < 1) return -1;
    team_job job = {task, context, tasks};
    run(team_body, &job, (unsigned)tasks, 0);
    return 0;
}
