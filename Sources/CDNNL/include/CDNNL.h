// Convolutions on oneDNN (Debian's libdnnl): the three passes of a 2-D convolution on Float32
// tensors in plain layouts (NCHW activations, OIHW weights), with Float32 or bfloat16 operands.
// Inside, oneDNN picks its own blocked layouts and its best kernels for the CPU (AMX tiles where the
// CPU has them, else AVX512_BF16 / AVX-512 JIT code); the plain tensors are reordered to and from
// them on every call. Primitives are created once per shape and cached; calls are serialised (the
// library's scratch memory is shared). Every function returns 0 on success, else a dnnl_status_t.
#ifndef CDNNL_H
#define CDNNL_H
#include <stddef.h>

typedef struct {
    int n, c, h, w;   // input
    int o, k, s, p;   // output channels, square kernel, stride, padding
} df_dnnl_conv;

// 1 when oneDNN runs here (the engine could be created).
int df_dnnl_available(void);
// oneDNN's ISA name for this CPU ("avx512_core_amx", "avx512_core_bf16", ...).
const char *df_dnnl_isa(void);
// Library version, e.g. "2.6.3".
const char *df_dnnl_version(void);
// 1 when oneDNN has bfloat16 convolutions on this CPU (oneDNN 2.6: AVX-512 and up), else 0: then
// every bf16 call below fails, and a bfloat16 convolution runs as a Float32 one on operands rounded
// to bfloat16 by the caller.
int df_dnnl_bf16_native(void);

// y [n,o,oh,ow] = conv(x, w). Under bf16, x and w are rounded to bfloat16 (nearest even), the
// products accumulate in Float32 and y holds the bfloat16-rounded outputs. keep_x (or NULL): where
// x goes in oneDNN's layout, df_dnnl_conv_keep_bytes(g, bf16) bytes, for backward_weights' kept_x.
int df_dnnl_conv_forward(const df_dnnl_conv *g, int bf16, int threads, const float *x, const float *w, float *y,
                         void *keep_x);
// The forward for weights that do not change between calls (inference): the weights' reordered copy
// is kept per shape and reused while w is the same pointer. The caller guarantees that the values
// behind w do not change until df_dnnl_forget_weights().
int df_dnnl_conv_forward_frozen(const df_dnnl_conv *g, int bf16, int threads, const float *x, const float *w, float *y);
// Drops every cached weight copy (the next frozen call reorders again).
void df_dnnl_forget_weights(void);
// Frozen-weight forward calls so far: served from the cache, and reordered.
void df_dnnl_weight_cache_counts(long *hits, long *reorders);
// Convolution primitives run so far, and the seconds their executions took (the convolutions alone,
// not the reorders of their inputs, weights and outputs around them).
void df_dnnl_conv_time(long *calls, double *seconds);
// The reorders run around them so far (between plain and oneDNN's layouts, and the adding ones), and
// their seconds: weights != 0 those of weights and weight gradients, else those of activations and
// their gradients.
void df_dnnl_reorder_time(int weights, long *calls, double *seconds);
// Bytes of x in the layout the forward and weight-gradient primitives share, or 0 when they do not
// share one (or x needs no reorder): then keep_x / kept_x cannot be used.
size_t df_dnnl_conv_keep_bytes(const df_dnnl_conv *g, int bf16);
// x [n,c,h,w] (Float32, plain) from a kept copy (for a weight gradient that cannot use it).
int df_dnnl_conv_unkeep(const df_dnnl_conv *g, int bf16, const void *kept, float *x);
// gx [n,c,h,w] (+= when accumulate) = the input gradient of gy [n,o,oh,ow] through w. With
// reuse_gy, gy's reordered copy kept by the backward_weights call just before (same gy pointer, same
// layout, no oneDNN call in between) is used instead of reordering gy again.
int df_dnnl_conv_backward_data(const df_dnnl_conv *g, int bf16, int threads, const float *w, const float *gy, float *gx,
                               int accumulate, int reuse_gy);
// gw [o,c,k,k] = the weight gradient (assigned) of gy through x, accumulated in Float32. With
// keep_gy, gy's reordered copy is kept for the backward_data call that follows. With kept_x (x as
// a forward's keep_x wrote it), x is not read.
int df_dnnl_conv_backward_weights(const df_dnnl_conv *g, int bf16, int threads, const float *x, const float *gy, float *gw,
                                  int keep_gy, const void *kept_x);
// The convolution whose output stays in oneDNN's layout (the fused convolution + batch norm):
// bytes of the forward's output in the primitive's own layout when that layout is channel-blocked
// (nChw{B}c with C a multiple of B, or nhwc as B = C; B a multiple of 8; see CKernels' blocked_sums) and both backward
// passes take the output gradient in the same layout; *block gets B. 0 otherwise.
size_t df_dnnl_conv_blocked_out(const df_dnnl_conv *g, int bf16, int *block);
// B when the weight gradient takes x in a channel-blocked layout other than NCHW (as above): x
// rebuilt in that layout (Float32, or bfloat16 words under bf16) can be its kept_x. 0 otherwise.
int df_dnnl_conv_src_block(const df_dnnl_conv *g, int bf16);
// The forward writing y in that layout (Float32, or bfloat16 words under bf16); keep_x as above;
// frozen_w: the weights' reordered copy cached as in df_dnnl_conv_forward_frozen. With x_laid, x is
// not read (it may be NULL): x_laid holds it already in the layout the forward takes it in (see
// df_dnnl_conv_forward_src_block; keep_x must then be NULL).
int df_dnnl_conv_forward_laid(const df_dnnl_conv *g, int bf16, int threads, const float *x, const float *w, void *y,
                              void *keep_x, int frozen_w, const void *x_laid);
// B when the forward takes x in a channel-blocked layout other than NCHW (Float32, or bfloat16
// words under bf16), which x_laid above may be given in. 0 otherwise.
int df_dnnl_conv_forward_src_block(const df_dnnl_conv *g, int bf16);
// The input gradient from gy in that layout (+= when accumulate).
int df_dnnl_conv_backward_data_laid(const df_dnnl_conv *g, int bf16, int threads, const float *w, const void *gy,
                                    float *gx, int accumulate);
// The weight gradient (assigned) from gy in that layout; x, or kept_x as a forward's keep_x wrote it.
int df_dnnl_conv_backward_weights_laid(const df_dnnl_conv *g, int bf16, int threads, const float *x, const void *gy,
                                       float *gw, const void *kept_x);
// B when the input gradient comes out of the primitive in a channel-blocked Float32 layout (as
// above): df_dnnl_conv_backward_data_laid_out can write gx in it. 0 otherwise. Under bf16 this is
// a backward-data primitive of its own: bfloat16 operands, the input gradient's Float32 sums not
// rounded to bfloat16 (the reader rounds them as it reads).
int df_dnnl_conv_diff_src_block(const df_dnnl_conv *g, int bf16);
// The input gradient (assigned, Float32) from gy in the output's layout (bfloat16 words under
// bf16), written in the primitive's own channel-blocked layout (no reorder; the layout
// df_dnnl_conv_diff_src_block names).
int df_dnnl_conv_backward_data_laid_out(const df_dnnl_conv *g, int bf16, int threads, const float *w, const void *gy, float *gx);
// On bfloat16 operands: B when the backward-data primitive that rounds its input gradient to
// bfloat16 (the one the NCHW path reorders from) writes it in a channel-blocked layout and takes
// the output gradient where the bfloat16 forward writes the output. 0 otherwise.
int df_dnnl_conv_diff_src_words_block(const df_dnnl_conv *g);
// The input gradient as that primitive's bfloat16 words, in that layout (gy: bfloat16 words in the
// output's layout).
int df_dnnl_conv_backward_data_words_out(const df_dnnl_conv *g, int threads, const float *w, const void *gy, void *gx);
// Frees the cached primitives and scratch memory.
void df_dnnl_release(void);

// MARK: - oneDNN's OpenMP team (team.c)

// A task of df_team_run: task index i of the job.
typedef void (*df_team_task)(void *context, int i);
// Looks up libgomp's entry points when libgomp is loaded (libdnnl loads it; called when it is opened).
void df_team_attach(void);
// 1 once df_team_run can run tasks on oneDNN's OpenMP team.
int df_team_attached(void);
// The calling thread's number in its OpenMP team (0 outside a team), or -1 before df_team_attach.
int df_team_thread(void);
// Runs task(context, i) for i in 0 ..< tasks on an OpenMP team of `tasks` threads (the calling
// thread is one of them) and returns 0 when all have finished; -1 (nothing run) before
// df_team_attach found libgomp.
int df_team_run(int tasks, df_team_task task, void *context);

#endif
