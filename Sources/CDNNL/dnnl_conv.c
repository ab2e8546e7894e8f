// Convolutions on oneDNN: see CDNNL.h. One cached entry per (pass, shape, operand type): the
// primitive with oneDNN's preferred layouts and the reorders between them and the plain tensors.
#include "CDNNL.h"
#include <oneapi/dnnl/dnnl.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

// libdnnl is opened at run time (the tools start where it is absent). Its OpenMP team also runs the
// project's own parallel loops (team.c), so its threads wait for the next piece of work by
// spinning briefly, GOMP_SPINCOUNT 10000 (about 0.3 ms on a Zen 3), before they sleep, unless the
// user chose OMP_WAIT_POLICY or GOMP_SPINCOUNT: waking a sleeping thread for each of the ~190
// primitives and loops of a batch-1 inference cost a quarter of it (measured on a Zen 3 VM, dual
// mid at 320 px: 32-44 ms sleeping at once, 28 ms spinning briefly). Spinning without end would
// take the cores from threads outside the team (the data loader's). Each function below is looked
// up by name.
#define DNNL_FUNCTIONS(X) \
    X(dnnl_engine_create) X(dnnl_engine_destroy) X(dnnl_stream_create) X(dnnl_stream_wait) \
    X(dnnl_get_effective_cpu_isa) X(dnnl_version) X(dnnl_memory_desc_equal) X(dnnl_memory_desc_get_size) \
    X(dnnl_memory_desc_init_by_tag) X(dnnl_memory_create) X(dnnl_memory_destroy) \
    X(dnnl_reorder_primitive_desc_create) X(dnnl_primitive_desc_create) X(dnnl_primitive_desc_destroy) \
    X(dnnl_primitive_desc_query_md) X(dnnl_primitive_create) X(dnnl_primitive_destroy) X(dnnl_primitive_execute) \
    X(dnnl_convolution_forward_desc_init) X(dnnl_convolution_backward_data_desc_init) \
    X(dnnl_convolution_backward_weights_desc_init) \
    X(dnnl_primitive_attr_create) X(dnnl_primitive_attr_destroy) X(dnnl_primitive_attr_set_post_ops) \
    X(dnnl_primitive_attr_set_scratchpad_mode) \
    X(dnnl_post_ops_create) X(dnnl_post_ops_destroy) X(dnnl_post_ops_append_sum)

#define DECLARE(f) static __typeof__(f) *p_##f;
DNNL_FUNCTIONS(DECLARE)

// 1 when every function was found.
static int load_library(void) {
    if (!getenv("OMP_WAIT_POLICY") && !getenv("GOMP_SPINCOUNT")) setenv("GOMP_SPINCOUNT", "10000", 1);
    void *h = dlopen("libdnnl.so.2", RTLD_NOW | RTLD_LOCAL);
    if (!h) h = dlopen("libdnnl.so", RTLD_NOW | RTLD_LOCAL);
    if (!h) return 0;
    int ok = 1;
#define LOAD(f) if (!(p_##f = (__typeof__(f) *)dlsym(h, #f))) ok = 0;
    DNNL_FUNCTIONS(LOAD)
    return ok;
}

// From here on the names mean the loaded functions.
#define dnnl_engine_create p_dnnl_engine_create
#define dnnl_engine_destroy p_dnnl_engine_destroy
#define dnnl_stream_create p_dnnl_stream_create
#define dnnl_stream_wait p_dnnl_stream_wait
#define dnnl_get_effective_cpu_isa p_dnnl_get_effective_cpu_isa
#define dnnl_version p_dnnl_version
#define dnnl_memory_desc_equal p_dnnl_memory_desc_equal
#define dnnl_memory_desc_get_size p_dnnl_memory_desc_get_size
#define dnnl_memory_desc_init_by_tag p_dnnl_memory_desc_init_by_tag
#define dnnl_memory_create p_dnnl_memory_create
#define dnnl_memory_destroy p_dnnl_memory_destroy
#define dnnl_reorder_primitive_desc_create p_dnnl_reorder_primitive_desc_create
#define dnnl_primitive_desc_create p_dnnl_primitive_desc_create
#define dnnl_primitive_desc_destroy p_dnnl_primitive_desc_destroy
#define dnnl_primitive_desc_query_md p_dnnl_primitive_desc_query_md
#define dnnl_primitive_create p_dnnl_primitive_create
#define dnnl_primitive_destroy p_dnnl_primitive_destroy
#define dnnl_primitive_execute p_dnnl_primitive_execute
#define dnnl_convolution_forward_desc_init p_dnnl_convolution_forward_desc_init
#define dnnl_convolution_backward_data_desc_init p_dnnl_convolution_backward_data_desc_init
#define dnnl_convolution_backward_weights_desc_init p_dnnl_convolution_backward_weights_desc_init
#define dnnl_primitive_attr_create p_dnnl_primitive_attr_create
#define dnnl_primitive_attr_destroy p_dnnl_primitive_attr_destroy
#define dnnl_primitive_attr_set_post_ops p_dnnl_primitive_attr_set_post_ops
#define dnnl_primitive_attr_set_scratchpad_mode p_dnnl_primitive_attr_set_scratchpad_mode
#define dnnl_post_ops_create p_dnnl_post_ops_create
#define dnnl_post_ops_destroy p_dnnl_post_ops_destroy
#define dnnl_post_ops_append_sum p_dnnl_post_ops_append_sum

enum { PASS_FORWARD = 0, PASS_DATA = 1, PASS_WEIGHTS = 2 };

// An entry's operand type (its bf16 field): 0 Float32, 1 bfloat16 (Float32 weight gradients),
// BF16_F32_DIFF_SRC backward data on bfloat16 operands writing a Float32 input gradient.
enum { BF16_F32_DIFF_SRC = 2 };

typedef struct entry {
    int pass, bf16;
    df_dnnl_conv g;
    // Not dnnl_success: oneDNN refused this (pass, shape, type) when it was first asked; the entry
    // stays (with no primitive) so that later calls fail at once instead of asking again.
    dnnl_status_t refused;
    dnnl_primitive_t prim;
    // Reorders plain -> primitive for the two inputs, primitive -> plain for the output (NULL: same layout).
    dnnl_primitive_t to0, to1, from;
    // primitive -> plain adding to what the plain output holds (a sum post-op), made on first need;
    // addTried: made or failed (then the output is reordered to scratch and added in a loop).
    dnnl_primitive_t fromAdd;
    int addTried;
    dnnl_memory_desc_t plain0, plain1, plainOut, md0, md1, mdOut;
    // The primitive's scratchpad (user-managed: scratch slot 5, passed at every execution).
    dnnl_memory_desc_t mdScratch;
    size_t scratchpadBytes;
    // Forward only: the weights wFrom points at, reordered to md1 (frozen-weight calls; see
    // df_dnnl_conv_forward_frozen). wFrom NULL: nothing cached.
    const float *wFrom;
    void *wBuf;
    struct entry *next;    // every entry (cache)
    struct entry *chain;   // the entries of the same hash bucket (buckets)
} entry;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int state;                 // 0 not tried, 1 ready, -1 unavailable
static dnnl_engine_t engine;
static dnnl_stream_t stream;
static entry *cache;
// The entries by hash of (pass, type, shape): a training step asks for a few hundred of them, each
// several times (the primitive, and the layout queries of the fused Conv block).
#define BUCKETS 512
static entry *buckets[BUCKETS];
// Scratch slots: 0, 1 the reordered inputs, 2 the output in the primitive's layout, 3 the plain
// output to add, 4 the output gradient reordered by a backward_weights call that keeps it, 5 the
// convolution's own scratchpad. The scratchpad is ours (user mode), not oneDNN's global one: that
// one is per calling thread, and a primitive run from another thread than before (the test runner
// moves work between threads) was once handed no scratchpad memory at all (oneDNN 2.6.3, a gemm
// backward-data convolution on AVX2 writing its im2col columns at offsets from address 0).
static float *scratch[6];
static size_t scratchBytes[6];
// What slot 4 holds: the plain gradient it came from and its layout (valid until the next call).
static const float *keptFrom;
static dnnl_memory_desc_t keptMd;
static int keptValid;
static long weightHits[2];         // frozen-weight forward calls: [0] served from the cache, [1] reordered
static long convCalls;             // convolution primitives run, and their time (execution alone:
static double convSeconds;         // none of the reorders around them)
// The reorders run around them and their time: [0] of activations and their gradients, [1] of
// weights and weight gradients.
static long reorderCalls[2];
static double reorderSeconds[2];
static void (*setThreads)(int);   // libgomp's omp_set_num_threads (oneDNN's threads), if loaded

static int ready_locked(void) {
    if (state == 0) {
        state = -1;
        if (load_library() && dnnl_engine_create(&engine, dnnl_cpu, 0) == dnnl_success) {
            if (dnnl_stream_create(&stream, engine, dnnl_stream_default_flags) == dnnl_success) state = 1;
            else dnnl_engine_destroy(engine);
        }
        void *gomp = dlopen("libgomp.so.1", RTLD_NOW | RTLD_NOLOAD);
        setThreads = gomp ? (void (*)(int))dlsym(gomp, "omp_set_num_threads") : NULL;
        if (state == 1) df_team_attach();
    }
    return state == 1;
}

int df_dnnl_available(void) {
    pthread_mutex_lock(&lock);
    int r = ready_locked();
    pthread_mutex_unlock(&lock);
    return r;
}

const char *df_dnnl_isa(void) {
    if (!df_dnnl_available()) return "unavailable";
    switch (dnnl_get_effective_cpu_isa()) {
    case dnnl_cpu_isa_avx512_core_amx: return "avx512_core_amx";
    case dnnl_cpu_isa_avx512_core_bf16: return "avx512_core_bf16";
    case dnnl_cpu_isa_avx512_core_vnni: return "avx512_core_vnni";
    case dnnl_cpu_isa_avx512_core: return "avx512_core";
    case dnnl_cpu_isa_avx2_vnni: return "avx2_vnni";
    case dnnl_cpu_isa_avx2: return "avx2";
    case dnnl_cpu_isa_avx: return "avx";
    case dnnl_cpu_isa_sse41: return "sse41";
    default: return "other";
    }
}

const char *df_dnnl_version(void) {
    static char text[32];
    if (!df_dnnl_available()) return "unavailable";
    const dnnl_version_t *v = dnnl_version();
    snprintf(text, sizeof text, "%d.%d.%d", v->major, v->minor, v->patch);
    return text;
}

static int out_size(int in, int k, int s, int p) { return (in + 2 * p - k) / s + 1; }

static int same_shape(const df_dnnl_conv *a, const df_dnnl_conv *b) {
    return a->n == b->n && a->c == b->c && a->h == b->h && a->w == b->w && a->o == b->o && a->k == b->k && a->s == b->s && a->p == b->p;
}

#define CHECK(x) do { dnnl_status_t st_ = (x); if (st_ != dnnl_success) { status = st_; goto fail; } } while (0)

// A reorder between two layouts of the same tensor, or NULL when they are the same.
static dnnl_status_t make_reorder(const dnnl_memory_desc_t *from, const dnnl_memory_desc_t *to, dnnl_primitive_t *out) {
    *out = NULL;
    if (dnnl_memory_desc_equal(from, to)) return dnnl_success;
    dnnl_primitive_desc_t pd;
    dnnl_status_t st = dnnl_reorder_primitive_desc_create(&pd, from, engine, to, engine, NULL);
    if (st != dnnl_success) return st;
    st = dnnl_primitive_create(out, pd);
    dnnl_primitive_desc_destroy(pd);
    return st;
}

static void destroy_entry(entry *e) {
    if (e->prim) dnnl_primitive_destroy(e->prim);
    if (e->to0) dnnl_primitive_destroy(e->to0);
    if (e->to1) dnnl_primitive_destroy(e->to1);
    if (e->from) dnnl_primitive_destroy(e->from);
    if (e->fromAdd) dnnl_primitive_destroy(e->fromAdd);
    free(e->wBuf);
    free(e);
}

static dnnl_status_t build(entry *e) {
    dnnl_status_t status = dnnl_success;
    const df_dnnl_conv *g = &e->g;
    dnnl_data_type_t dt = e->bf16 ? dnnl_bf16 : dnnl_f32;
    dnnl_dims_t src = {g->n, g->c, g->h, g->w}, wei = {g->o, g->c, g->k, g->k},
                dst = {g->n, g->o, out_size(g->h, g->k, g->s, g->p), out_size(g->w, g->k, g->s, g->p)};
    dnnl_dims_t strides = {g->s, g->s}, pad = {g->p, g->p};
    dnnl_memory_desc_t srcAny, weiAny, dstAny, weiAnyF32, srcPlain, weiPlain, dstPlain;
    dnnl_primitive_desc_t fwd = NULL, pd = NULL;
    dnnl_primitive_attr_t attr = NULL;
    CHECK(dnnl_primitive_attr_create(&attr));
    CHECK(dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user));
    CHECK(dnnl_memory_desc_init_by_tag(&srcAny, 4, src, dt, dnnl_format_tag_any));
    CHECK(dnnl_memory_desc_init_by_tag(&weiAny, 4, wei, dt, dnnl_format_tag_any));
    CHECK(dnnl_memory_desc_init_by_tag(&dstAny, 4, dst, dt, dnnl_format_tag_any));
    CHECK(dnnl_memory_desc_init_by_tag(&weiAnyF32, 4, wei, dnnl_f32, dnnl_format_tag_any));
    dnnl_memory_desc_t srcAnyF32;
    CHECK(dnnl_memory_desc_init_by_tag(&srcAnyF32, 4, src, dnnl_f32, dnnl_format_tag_any));
    CHECK(dnnl_memory_desc_init_by_tag(&srcPlain, 4, src, dnnl_f32, dnnl_nchw));
    CHECK(dnnl_memory_desc_init_by_tag(&weiPlain, 4, wei, dnnl_f32, dnnl_oihw));
    CHECK(dnnl_memory_desc_init_by_tag(&dstPlain, 4, dst, dnnl_f32, dnnl_nchw));
    dnnl_convolution_desc_t fd;
    CHECK(dnnl_convolution_forward_desc_init(&fd, dnnl_forward_training, dnnl_convolution_direct, &srcAny, &weiAny, NULL, &dstAny,
                                             strides, pad, pad));
    CHECK(dnnl_primitive_desc_create(&fwd, &fd, attr, engine, NULL));
    dnnl_query_t q0, q1, qOut;
    if (e->pass == PASS_FORWARD) {
        // Under bf16 the outputs and input gradients are bfloat16 (the Float32 sums rounded to
        // nearest even), as an autocast convolution's; the weight gradient stays Float32.
        pd = fwd; fwd = NULL;
        q0 = dnnl_query_src_md; q1 = dnnl_query_weights_md; qOut = dnnl_query_dst_md;
        e->plain0 = srcPlain; e->plain1 = weiPlain; e->plainOut = dstPlain;
    } else if (e->pass == PASS_DATA) {
        dnnl_convolution_desc_t bd;
        // BF16_F32_DIFF_SRC: the Float32 sums of the input gradient as they are, not rounded to bfloat16.
        CHECK(dnnl_convolution_backward_data_desc_init(&bd, dnnl_convolution_direct, e->bf16 == BF16_F32_DIFF_SRC ? &srcAnyF32 : &srcAny,
                                                       &weiAny, &dstAny, strides, pad, pad));
        CHECK(dnnl_primitive_desc_create(&pd, &bd, attr, engine, fwd));
        q0 = dnnl_query_diff_dst_md; q1 = dnnl_query_weights_md; qOut = dnnl_query_diff_src_md;
        e->plain0 = dstPlain; e->plain1 = weiPlain; e->plainOut = srcPlain;
    } else {
        dnnl_convolution_desc_t wd;
        CHECK(dnnl_convolution_backward_weights_desc_init(&wd, dnnl_convolution_direct, &srcAny, &weiAnyF32, NULL, &dstAny,
                                                          strides, pad, pad));
        CHECK(dnnl_primitive_desc_create(&pd, &wd, attr, engine, fwd));
        q0 = dnnl_query_src_md; q1 = dnnl_query_diff_dst_md; qOut = dnnl_query_diff_weights_md;
        e->plain0 = srcPlain; e->plain1 = dstPlain; e->plainOut = weiPlain;
    }
    e->md0 = *dnnl_primitive_desc_query_md(pd, q0, 0);
    e->md1 = *dnnl_primitive_desc_query_md(pd, q1, 0);
    e->mdOut = *dnnl_primitive_desc_query_md(pd, qOut, 0);
    e->mdScratch = *dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
    e->scratchpadBytes = dnnl_memory_desc_get_size(&e->mdScratch);
    CHECK(dnnl_primitive_create(&e->prim, pd));
    CHECK(make_reorder(&e->plain0, &e->md0, &e->to0));
    CHECK(make_reorder(&e->plain1, &e->md1, &e->to1));
    CHECK(make_reorder(&e->mdOut, &e->plainOut, &e->from));
fail:
    if (fwd) dnnl_primitive_desc_destroy(fwd);
    if (pd) dnnl_primitive_desc_destroy(pd);
    if (attr) dnnl_primitive_attr_destroy(attr);
    return status;
}

// The reorder primitive layout -> plain that adds to the destination (dst = src + dst).
static dnnl_status_t make_adding_reorder(entry *e) {
    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t ops = NULL;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_status_t status = dnnl_success;
    CHECK(dnnl_primitive_attr_create(&attr));
    CHECK(dnnl_post_ops_create(&ops));
    CHECK(dnnl_post_ops_append_sum(ops, 1.0f));
    CHECK(dnnl_primitive_attr_set_post_ops(attr, ops));
    CHECK(dnnl_reorder_primitive_desc_create(&pd, &e->mdOut, engine, &e->plainOut, engine, attr));
    CHECK(dnnl_primitive_create(&e->fromAdd, pd));
fail:
    if (pd) dnnl_primitive_desc_destroy(pd);
    if (ops) dnnl_post_ops_destroy(ops);
    if (attr) dnnl_primitive_attr_destroy(attr);
    return status;
}

static float *scratch_slot(int i, size_t bytes) {
    if (scratchBytes[i] < bytes) {
        free(scratch[i]);
        size_t rounded = (bytes + 4095) & ~(size_t)4095;
        scratch[i] = aligned_alloc(64, rounded);
        scratchBytes[i] = scratch[i] ? rounded : 0;
    }
    return scratch[i];
}

static dnnl_status_t wrap(dnnl_memory_t *m, const dnnl_memory_desc_t *md, const void *p) {
    return dnnl_memory_create(m, md, engine, (void *)p);
}

static double seconds_between(const struct timespec *t0, const struct timespec *t1) {
    return (double)(t1->tv_sec - t0->tv_sec) + 1e-9 * (double)(t1->tv_nsec - t0->tv_nsec);
}

// Runs a reorder to its end and adds its time to kind's tally (0 activations, 1 weights).
static dnnl_status_t reorder(dnnl_primitive_t r, dnnl_memory_t from, dnnl_memory_t to, int kind) {
    dnnl_exec_arg_t args[2] = {{DNNL_ARG_FROM, from}, {DNNL_ARG_TO, to}};
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    dnnl_status_t status = dnnl_primitive_execute(r, stream, 2, args);
    if (status == dnnl_success) status = dnnl_stream_wait(stream);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (status == dnnl_success) {
        reorderCalls[kind]++;
        reorderSeconds[kind] += seconds_between(&t0, &t1);
    }
    return status;
}

// The bucket of (pass, shape, type): FNV-1a over the key's ints.
static unsigned bucket_of(int pass, const df_dnnl_conv *g, int bf16) {
    const int key[10] = {pass, bf16, g->n, g->c, g->h, g->w, g->o, g->k, g->s, g->p};
    unsigned h = 2166136261u;
    for (int i = 0; i < 10; i++) h = (h ^ (unsigned)key[i]) * 16777619u;
    return h % BUCKETS;
}

// The cached entry of (pass, shape, type), built on first use; NULL with *status set on failure
// (remembered: a refused combination is not built again).
static entry *lookup_locked(int pass, const df_dnnl_conv *g, int bf16, dnnl_status_t *status) {
    unsigned b = bucket_of(pass, g, bf16);
    entry *e = buckets[b];
    while (e && !(e->pass == pass && e->bf16 == bf16 && same_shape(&e->g, g))) e = e->chain;
    if (!e) {
        e = calloc(1, sizeof *e);
        if (!e) { *status = dnnl_out_of_memory; return NULL; }
        e->pass = pass; e->bf16 = bf16; e->g = *g;
        dnnl_status_t st = build(e);
        if (st != dnnl_success) {
            // Keep the key and the answer only.
            entry key = {.pass = pass, .bf16 = bf16, .g = *g, .refused = st};
            destroy_entry(e);
            e = calloc(1, sizeof *e);
            if (!e) { *status = st; return NULL; }
            *e = key;
        }
        e->next = cache; cache = e;
        e->chain = buckets[b]; buckets[b] = e;
    }
    if (e->refused != dnnl_success) { *status = e->refused; return NULL; }
    return e;
}

int df_dnnl_bf16_native(void) {
    static int answer = -1;
    pthread_mutex_lock(&lock);
    if (answer < 0) {
        answer = 0;
        if (ready_locked()) {
            // A small 3x3 convolution: oneDNN either has bfloat16 convolutions on this CPU or not.
            df_dnnl_conv g = {.n = 1, .c = 16, .h = 8, .w = 8, .o = 16, .k = 3, .s = 1, .p = 1};
            dnnl_status_t status = dnnl_success;
            answer = lookup_locked(PASS_FORWARD, &g, 1, &status) != NULL;
        }
    }
    int r = answer;
    pthread_mutex_unlock(&lock);
    return r;
}

size_t df_dnnl_conv_keep_bytes(const df_dnnl_conv *g, int bf16) {
    dnnl_status_t status = dnnl_success;
    size_t bytes = 0;
    pthread_mutex_lock(&lock);
    if (ready_locked()) {
        entry *f = lookup_locked(PASS_FORWARD, g, bf16, &status);
        entry *w = f ? lookup_locked(PASS_WEIGHTS, g, bf16, &status) : NULL;
        if (f && w && f->to0 && w->to0 && dnnl_memory_desc_equal(&f->md0, &w->md0)) bytes = dnnl_memory_desc_get_size(&f->md0);
    }
    pthread_mutex_unlock(&lock);
    return bytes;
}

int df_dnnl_conv_unkeep(const df_dnnl_conv *g, int bf16, const void *kept, float *x) {
    dnnl_status_t status = dnnl_success;
    dnnl_memory_t mk = NULL, mx = NULL;
    dnnl_primitive_t back = NULL;
    pthread_mutex_lock(&lock);
    if (!ready_locked()) { pthread_mutex_unlock(&lock); return dnnl_runtime_error; }
    entry *w = lookup_locked(PASS_WEIGHTS, g, bf16, &status);
    if (!w) { pthread_mutex_unlock(&lock); return status; }
    keptValid = 0;
    CHECK(make_reorder(&w->md0, &w->plain0, &back));
    CHECK(wrap(&mk, &w->md0, kept));
    CHECK(wrap(&mx, &w->plain0, x));
    if (back) CHECK(reorder(back, mk, mx, 0));
    else memcpy(x, kept, dnnl_memory_desc_get_size(&w->plain0));
    CHECK(dnnl_stream_wait(stream));
fail:
    if (back) dnnl_primitive_destroy(back);
    if (mk) dnnl_memory_destroy(mk);
    if (mx) dnnl_memory_destroy(mx);
    pthread_mutex_unlock(&lock);
    return status;
}

// share: 1 keep the output gradient's reordered copy in slot 4 (backward weights), 2 use the kept
// copy when it is this call's output gradient in the same layout (backward data), 0 neither.
// keepSrc (forward): the input reordered to the primitive's layout goes there instead of scratch.
// keptSrc (backward weights): the input, already in the primitive's layout (in0 is not read).
// frozenW (forward): the weights do not change between such calls; their reordered copy is cached per
// shape and pointer.
// laid: the output gradient is already in the primitive's layout (backward data: in0; backward
// weights: in1), or the forward writes its output in the primitive's layout (out), with no reorder;
// 2 (backward data): and the input gradient is written in the primitive's layout (out); 3 (forward):
// and the input is already in the primitive's layout (in0).
static int run(int pass, const df_dnnl_conv *g, int bf16, int threads, const void *in0, const void *in1, void *out,
               int accumulate, int share, void *keepSrc, const void *keptSrc, int frozenW, int laid) {
    dnnl_status_t status = dnnl_success;
    dnnl_memory_t u0 = NULL, u1 = NULL, uo = NULL, m0 = NULL, m1 = NULL, mo = NULL, tmp = NULL, ms = NULL;
    pthread_mutex_lock(&lock);
    if (!ready_locked()) { pthread_mutex_unlock(&lock); return dnnl_runtime_error; }
    entry *e = lookup_locked(pass, g, bf16, &status);
    if (!e) { keptValid = 0; pthread_mutex_unlock(&lock); return status; }
    // A kept input must be in this primitive's layout (the caller asked df_dnnl_conv_keep_bytes).
    if ((keepSrc || keptSrc) && !e->to0) { keptValid = 0; pthread_mutex_unlock(&lock); return dnnl_invalid_arguments; }
    // The kept output gradient serves only the very next call, and only backward data.
    int reuse0 = share == 2 && pass == PASS_DATA && keptValid && keptFrom == in0 && e->to0 && dnnl_memory_desc_equal(&keptMd, &e->md0);
    int keep1 = share == 1 && pass == PASS_WEIGHTS && e->to1;
    keptValid = 0;
    if (setThreads) setThreads(threads < 1 ? 1 : threads);
    CHECK(wrap(&u0, &e->plain0, in0));
    CHECK(wrap(&u1, &e->plain1, in1));
    CHECK(wrap(&uo, &e->plainOut, out));
    if ((laid && pass == PASS_DATA) || (laid == 3 && pass == PASS_FORWARD)) {
        CHECK(wrap(&m0, &e->md0, in0));
    } else if (reuse0) {
        CHECK(wrap(&m0, &e->md0, scratch[4]));
    } else if (keptSrc) {
        CHECK(wrap(&m0, &e->md0, keptSrc));
    } else if (keepSrc) {
        CHECK(wrap(&m0, &e->md0, keepSrc));
        CHECK(reorder(e->to0, u0, m0, 0));
    } else if (e->to0) {
        CHECK(wrap(&m0, &e->md0, scratch_slot(0, dnnl_memory_desc_get_size(&e->md0))));
        CHECK(reorder(e->to0, u0, m0, 0));
    }
    if (laid && pass == PASS_WEIGHTS) {
        CHECK(wrap(&m1, &e->md1, in1));
    } else if (e->to1 && frozenW && pass == PASS_FORWARD) {
        if (e->wFrom != in1) {
            e->wFrom = NULL;
            if (!e->wBuf) e->wBuf = malloc(dnnl_memory_desc_get_size(&e->md1));
            if (!e->wBuf) { status = dnnl_out_of_memory; goto fail; }
            CHECK(wrap(&m1, &e->md1, e->wBuf));
            CHECK(reorder(e->to1, u1, m1, pass != PASS_WEIGHTS));
            e->wFrom = in1;
            weightHits[1]++;
        } else {
            CHECK(wrap(&m1, &e->md1, e->wBuf));
            weightHits[0]++;
        }
    } else if (e->to1) {
        CHECK(wrap(&m1, &e->md1, scratch_slot(keep1 ? 4 : 1, dnnl_memory_desc_get_size(&e->md1))));
        CHECK(reorder(e->to1, u1, m1, pass != PASS_WEIGHTS));
    }
    // The result goes to the plain output directly when the layouts agree and nothing is added.
    size_t outBytes = dnnl_memory_desc_get_size(&e->plainOut);
    int laidOut = (laid && pass == PASS_FORWARD) || (laid == 2 && pass == PASS_DATA && !accumulate);
    if (laidOut) CHECK(wrap(&mo, &e->mdOut, out));
    else if (e->from || accumulate) CHECK(wrap(&mo, &e->mdOut, scratch_slot(2, dnnl_memory_desc_get_size(&e->mdOut))));
    {
        dnnl_memory_t a0 = m0 ? m0 : u0, a1 = m1 ? m1 : u1, ao = mo ? mo : uo;
        int k0, k1, kOut;
        if (pass == PASS_FORWARD) { k0 = DNNL_ARG_SRC; k1 = DNNL_ARG_WEIGHTS; kOut = DNNL_ARG_DST; }
        else if (pass == PASS_DATA) { k0 = DNNL_ARG_DIFF_DST; k1 = DNNL_ARG_WEIGHTS; kOut = DNNL_ARG_DIFF_SRC; }
        else { k0 = DNNL_ARG_SRC; k1 = DNNL_ARG_DIFF_DST; kOut = DNNL_ARG_DIFF_WEIGHTS; }
        int nargs = 3;
        dnnl_exec_arg_t args[4] = {{k0, a0}, {k1, a1}, {kOut, ao}};
        if (e->scratchpadBytes) {
            float *pad = scratch_slot(5, e->scratchpadBytes);
            if (!pad) { status = dnnl_out_of_memory; goto fail; }
            CHECK(wrap(&ms, &e->mdScratch, pad));
            args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_SCRATCHPAD, ms};
        }
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        status = dnnl_primitive_execute(e->prim, stream, nargs, args);
        if (status == dnnl_success) status = dnnl_stream_wait(stream);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        if (status != dnnl_success) goto fail;
        convCalls++;
        convSeconds += seconds_between(&t0, &t1);
    }
    if (accumulate && !e->addTried) {
        e->addTried = 1;
        if (make_adding_reorder(e) != dnnl_success) e->fromAdd = NULL;
    }
    float *sum = NULL;
    if (laidOut) {
        // The output stays in the primitive's layout.
    } else if (accumulate && e->fromAdd) {
        CHECK(reorder(e->fromAdd, mo, uo, pass == PASS_WEIGHTS));   // out += the result, on oneDNN's threads
    } else if (e->from) {
        if (accumulate) {
            sum = scratch_slot(3, outBytes);
            CHECK(wrap(&tmp, &e->plainOut, sum));
            CHECK(reorder(e->from, mo, tmp, pass == PASS_WEIGHTS));
        } else {
            CHECK(reorder(e->from, mo, uo, pass == PASS_WEIGHTS));
        }
    } else if (accumulate) {
        sum = scratch[2];
    }
    CHECK(dnnl_stream_wait(stream));
    if (sum) {
        size_t count = outBytes / sizeof(float);
        float *o = out;
        for (size_t i = 0; i < count; i++) o[i] += sum[i];
    }
    if (keep1) { keptFrom = in1; keptMd = e->md1; keptValid = 1; }
fail:
    if (u0) dnnl_memory_destroy(u0);
    if (u1) dnnl_memory_destroy(u1);
    if (uo) dnnl_memory_destroy(uo);
    if (m0) dnnl_memory_destroy(m0);
    if (m1) dnnl_memory_destroy(m1);
    if (mo) dnnl_memory_destroy(mo);
    if (tmp) dnnl_memory_destroy(tmp);
    if (ms) dnnl_memory_destroy(ms);
    pthread_mutex_unlock(&lock);
    return status;
}

int df_dnnl_conv_forward(const df_dnnl_conv *g, int bf16, int threads, const float *x, const float *w, float *y,
                         void *keep_x) {
    return run(PASS_FORWARD, g, bf16, threads, x, w, y, 0, 0, keep_x, NULL, 0, 0);
}

int df_dnnl_conv_forward_frozen(const df_dnnl_conv *g, int bf16, int threads, const float *x, const float *w, float *y) {
    return run(PASS_FORWARD, g, bf16, threads, x, w, y, 0, 0, NULL, NULL, 1, 0);
}

void df_dnnl_forget_weights(void) {
    pthread_mutex_lock(&lock);
    for (entry *e = cache; e; e = e->next) e->wFrom = NULL;
    pthread_mutex_unlock(&lock);
}

void df_dnnl_conv_time(long *calls, double *seconds) {
    pthread_mutex_lock(&lock);
    *calls = convCalls;
    *seconds = convSeconds;
    pthread_mutex_unlock(&lock);
}

void df_dnnl_reorder_time(int weights, long *calls, double *seconds) {
    int kind = weights ? 1 : 0;
    pthread_mutex_lock(&lock);
    *calls = reorderCalls[kind];
    *seconds = reorderSeconds[kind];
    pthread_mutex_unlock(&lock);
}

void df_dnnl_weight_cache_counts(long *hits, long *reorders) {
    pthread_mutex_lock(&lock);
    *hits = weightHits[0];
    *reorders = weightHits[1];
    pthread_mutex_unlock(&lock);
}

int df_dnnl_conv_backward_data(const df_dnnl_conv *g, int bf16, int threads, const float *w, const float *gy, float *gx,
                               int accumulate, int reuse_gy) {
    return run(PASS_DATA, g, bf16, threads, gy, w, gx, accumulate, reuse_gy ? 2 : 0, NULL, NULL, 0, 0);
}

int df_dnnl_conv_backward_weights(const df_dnnl_conv *g, int bf16, int threads, const float *x, const float *gy, float *gw,
                                  int keep_gy, const void *kept_x) {
    return run(PASS_WEIGHTS, g, bf16, threads, x, gy, gw, 0, keep_gy ? 1 : 0, NULL, kept_x, 0, 0);
}

// B when md is a channel-blocked layout of an [n, c, h, w] tensor with no padding: nChw{B}c (one
// inner block over channels, C a multiple of B) or nhwc (B = C), B a multiple of 8; else 0. Strides are checked only
// on dimensions longer than 1 (oneDNN may choose any stride there).
static int channel_block(const dnnl_memory_desc_t *md) {
    if (md->ndims != 4 || md->format_kind != dnnl_blocked || md->offset0 != 0 || md->extra.flags != 0) return 0;
    for (int d = 0; d < 4; d++) if (md->padded_dims[d] != md->dims[d] || md->padded_offsets[d] != 0) return 0;
    const dnnl_blocking_desc_t *b = &md->format_desc.blocking;
    dnnl_dim_t N = md->dims[0], C = md->dims[1], H = md->dims[2], W = md->dims[3];
    dnnl_dim_t B;
    if (b->inner_nblks == 0) B = C;
    else if (b->inner_nblks == 1 && b->inner_idxs[0] == 1) B = b->inner_blks[0];
    else return 0;
    if (B <= 0 || B % 8 != 0 || C % B != 0) return 0;   // the kernels run 8 channels at a time
    // Element (n, c, h, w) at ((n * C/B + c/B) * H * W + h * W + w) * B + c % B.
    dnnl_dim_t want[4] = {C * H * W, H * W * B, W * B, B};
    if (b->inner_nblks == 0) want[1] = 1;          // nhwc: the channel stride is 1
    dnnl_dim_t len[4] = {N, b->inner_nblks == 0 ? C : C / B, H, W};
    for (int d = 0; d < 4; d++) if (len[d] > 1 && b->strides[d] != want[d]) return 0;
    return (int)B;
}

size_t df_dnnl_conv_blocked_out(const df_dnnl_conv *g, int bf16, int *block) {
    dnnl_status_t status = dnnl_success;
    size_t bytes = 0;
    *block = 0;
    pthread_mutex_lock(&lock);
    if (ready_locked()) {
        entry *f = lookup_locked(PASS_FORWARD, g, bf16, &status);
        entry *d = f ? lookup_locked(PASS_DATA, g, bf16, &status) : NULL;
        entry *w = d ? lookup_locked(PASS_WEIGHTS, g, bf16, &status) : NULL;
        if (f && d && w && dnnl_memory_desc_equal(&f->mdOut, &d->md0) && dnnl_memory_desc_equal(&f->mdOut, &w->md1)) {
            int B = channel_block(&f->mdOut);
            if (B > 0) { *block = B; bytes = dnnl_memory_desc_get_size(&f->mdOut); }
        }
    }
    pthread_mutex_unlock(&lock);
    return bytes;
}

int df_dnnl_conv_src_block(const df_dnnl_conv *g, int bf16) {
    dnnl_status_t status = dnnl_success;
    int B = 0;
    pthread_mutex_lock(&lock);
    if (ready_locked()) {
        entry *w = lookup_locked(PASS_WEIGHTS, g, bf16, &status);
        if (w && w->to0) B = channel_block(&w->md0);
    }
    pthread_mutex_unlock(&lock);
    return B;
}

int df_dnnl_conv_forward_laid(const df_dnnl_conv *g, int bf16, int threads, const float *x, const float *w, void *y,
                              void *keep_x, int frozen_w, const void *x_laid) {
    if (x_laid && keep_x) return dnnl_invalid_arguments;
    if (x_laid) return run(PASS_FORWARD, g, bf16, threads, x_laid, w, y, 0, 0, NULL, NULL, frozen_w, 3);
    return run(PASS_FORWARD, g, bf16, threads, x, w, y, 0, 0, keep_x, NULL, frozen_w, 1);
}

int df_dnnl_conv_forward_src_block(const df_dnnl_conv *g, int bf16) {
    dnnl_status_t status = dnnl_success;
    int B = 0;
    pthread_mutex_lock(&lock);
    if (ready_locked()) {
        entry *f = lookup_locked(PASS_FORWARD, g, bf16, &status);
        if (f && f->to0 && f->md0.data_type == (bf16 ? dnnl_bf16 : dnnl_f32)) B = channel_block(&f->md0);
    }
    pthread_mutex_unlock(&lock);
    return B;
}

int df_dnnl_conv_backward_data_laid(const df_dnnl_conv *g, int bf16, int threads, const float *w, const void *gy,
                                    float *gx, int accumulate) {
    return run(PASS_DATA, g, bf16, threads, gy, w, gx, accumulate, 0, NULL, NULL, 0, 1);
}

int df_dnnl_conv_backward_weights_laid(const df_dnnl_conv *g, int bf16, int threads, const float *x, const void *gy,
                                       float *gw, const void *kept_x) {
    return run(PASS_WEIGHTS, g, bf16, threads, x, gy, gw, 0, 0, NULL, kept_x, 0, 1);
}

int df_dnnl_conv_diff_src_block(const df_dnnl_conv *g, int bf16) {
    dnnl_status_t status = dnnl_success;
    int B = 0;
    pthread_mutex_lock(&lock);
    if (ready_locked()) {
        entry *d = lookup_locked(PASS_DATA, g, bf16 ? BF16_F32_DIFF_SRC : 0, &status);
        // Under bf16 the primitive must also take the output gradient where the bfloat16 forward
        // writes its output (the layout that output's gradient is laid in).
        entry *f = d && bf16 ? lookup_locked(PASS_FORWARD, g, 1, &status) : NULL;
        if (d && d->mdOut.data_type == dnnl_f32 && (!bf16 || (f && dnnl_memory_desc_equal(&f->mdOut, &d->md0))))
            B = channel_block(&d->mdOut);
    }
    pthread_mutex_unlock(&lock);
    return B;
}

int df_dnnl_conv_backward_data_laid_out(const df_dnnl_conv *g, int bf16, int threads, const float *w, const void *gy, float *gx) {
    return run(PASS_DATA, g, bf16 ? BF16_F32_DIFF_SRC : 0, threads, gy, w, gx, 0, 0, NULL, NULL, 0, 2);
}

int df_dnnl_conv_diff_src_words_block(const df_dnnl_conv *g) {
    dnnl_status_t status = dnnl_success;
    int B = 0;
    pthread_mutex_lock(&lock);
    if (ready_locked()) {
        entry *d = lookup_locked(PASS_DATA, g, 1, &status);
        entry *f = d ? lookup_locked(PASS_FORWARD, g, 1, &status) : NULL;
        if (d && f && d->mdOut.data_type == dnnl_bf16 && dnnl_memory_desc_equal(&f->mdOut, &d->md0)) B = channel_block(&d->mdOut);
    }
    pthread_mutex_unlock(&lock);
    return B;
}

int df_dnnl_conv_backward_data_words_out(const df_dnnl_conv *g, int threads, const float *w, const void *gy, void *gx) {
    return run(PASS_DATA, g, 1, threads, gy, w, gx, 0, 0, NULL, NULL, 0, 2);
}

void df_dnnl_release(void) {
    pthread_mutex_lock(&lock);
    if (state != 1) { pthread_mutex_unlock(&lock); return; }
    while (cache) { entry *next = cache->next; destroy_entry(cache); cache = next; }
    memset(buckets, 0, sizeof buckets);
    for (int i = 0; i < 6; i++) { free(scratch[i]); scratch[i] = NULL; scratchBytes[i] = 0; }
    keptValid = 0;
    pthread_mutex_unlock(&lock);
}
