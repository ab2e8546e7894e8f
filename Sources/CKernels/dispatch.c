// The one place that chooses kernel implementations: CPU detection and the per-level tables.
#include "CKernels.h"
#include "internal.h"
#include <pthread.h>

#define DF_GEMM_ARGS (int M, int N, int K, df_matrix A, df_matrix B, float *C, long ldc, int acc, float *ws)
void df_sgemm_portable DF_GEMM_ARGS; void df_bgemm_portable DF_GEMM_ARGS;
#ifdef DF_X86
void df_f32_to_bf16_avx512bf16(const float *src, uint16_t *dst, size_t n);
void df_round_bf16_avx512bf16(float *x, size_t n);
void df_sgemm_avx2 DF_GEMM_ARGS; void df_bgemm_avx2 DF_GEMM_ARGS;
void df_sgemm_avx512 DF_GEMM_ARGS; void df_bgemm_avx512 DF_GEMM_ARGS; void df_bgemm_avx512bf16 DF_GEMM_ARGS;
#endif

int df_cpu_has_f16c(void) {
#ifdef DF_X86
    __builtin_cpu_init();
    return __builtin_cpu_supports("f16c") && __builtin_cpu_supports("avx");
#else
    return 0;
#endif
}

int df_cpu_level(void) {
#ifdef DF_X86
    __builtin_cpu_init();
    int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && df_cpu_has_f16c();
    int avx512 = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                 __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
    return avx512 ? DF_LEVEL_AVX512 : (avx2 ? DF_LEVEL_AVX2 : DF_LEVEL_PORTABLE);
#else
    return DF_LEVEL_PORTABLE;
#endif
}

int df_cpu_has_avx512_bf16(void) {
#ifdef DF_X86
    __builtin_cpu_init();
    return df_cpu_level() >= DF_LEVEL_AVX512 && __builtin_cpu_supports("avx512bf16");
#else
    return 0;
#endif
}

#define DF_FILL(t, v)                                                                              \
    t.f32_to_f16 = df_f32_to_f16_##v; t.f16_to_f32 = df_f16_to_f32_##v; t.round_f16 = df_round_f16_##v; \
    t.f32_to_bf16 = df_f32_to_bf16_##v; t.bf16_to_f32 = df_bf16_to_f32_##v;                       \
    t.round_bf16 = df_round_bf16_##v;                                                              \
    t.silu_fwd = df_silu_fwd_##v; t.silu_bwd = df_silu_bwd_##v; t.sigmoid_fwd = df_sigmoid_fwd_##v; \
    t.sigmoid_bwd = df_sigmoid_bwd_##v; t.exp_fwd = df_exp_fwd_##v;                                 \
    t.add_into = df_add_into_##v; t.add_scaled_into = df_add_scaled_into_##v; t.scale = df_scale_##v; \
    t.add = df_add_##v; t.sub = df_sub_##v; t.mul = df_mul_##v; t.sum_squares = df_sum_squares_##v; \
    t.all_finite = df_all_finite_##v;                                                              \
    t.channel_moments = df_channel_moments_##v; t.channel_sums = df_channel_sums_##v;              \
    t.channel_grad_sums = df_channel_grad_sums_##v; t.channel_affine = df_channel_affine_##v;      \
    t.channel_axpby = df_channel_axpby_##v;                                                        \
    t.channel_bias_silu = df_channel_bias_silu_##v;                                                \
    t.blocked_sums = df_blocked_sums_##v; t.blocked_affine = df_blocked_affine_##v;                \
    t.blocked_affine_laid = df_blocked_affine_laid_##v;                                            \
    t.blocked_grad_sums = df_blocked_grad_sums_##v; t.blocked_axpby = df_blocked_axpby_##v;        \
    t.blocked_move = df_blocked_move_##v; t.add_laid = df_add_laid_##v;                           \
    t.conv1_wgrad3 = df_conv1_wgrad3_##v;                                                          \
    t.im2col = df_im2col_##v; t.col2im = df_col2im_##v; t.maxpool_fwd = df_maxpool_fwd_##v;        \
    t.sgemm = df_sgemm_##v; t.bgemm = df_bgemm_##v;

static df_kernels make_table(int level, int bf16) {
    df_kernels t;
    memset(&t, 0, sizeof t);
    t.level = level;
    t.bf16 = 0;
    t.name = "portable";
    DF_FILL(t, portable)
#ifdef DF_X86
    if (level == DF_LEVEL_AVX2) { DF_FILL(t, avx2) t.name = "avx2"; }
    if (level == DF_LEVEL_AVX512) {
        DF_FILL(t, avx512)
        t.name = "avx512";
        if (bf16) {
            t.bf16 = 1;
            t.name = "avx512+bf16";
            t.f32_to_bf16 = df_f32_to_bf16_avx512bf16;
            t.round_bf16 = df_round_bf16_avx512bf16;
            t.bgemm = df_bgemm_avx512bf16;
        }
    }
#else
    (void)bf16;
#endif
    return t;
}

static df_kernels g_tables[3][2];
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static void fill_tables(void) {
    for (int l = 0; l < 3; l++)
        for (int b = 0; b < 2; b++) g_tables[l][b] = make_table(l, b && l == DF_LEVEL_AVX512);
}

const df_kernels *df_kernels_for_level(int level, int bf16) {
    pthread_once(&g_once, fill_tables);
    if (level < 0) level = 0;
    if (level > DF_LEVEL_AVX512) level = DF_LEVEL_AVX512;
    int b = (bf16 && level == DF_LEVEL_AVX512 && df_cpu_has_avx512_bf16()) ? 1 : 0;
    return &g_tables[level][b];
}

#if defined(__GLIBC__)
#include <malloc.h>
#endif

void df_configure_allocator(void) {
#if defined(__GLIBC__)
    mallopt(M_MMAP_THRESHOLD, 128 * 1024);
    mallopt(M_TRIM_THRESHOLD, 256 * 1024);
#endif
}
