// Shared between the CKernels translation units; not part of the public header.
#ifndef DUALFUSE_CKERNELS_INTERNAL_H
#define DUALFUSE_CKERNELS_INTERNAL_H
#include <string.h>
#include <stdint.h>
#include <stddef.h>
#include <math.h>

#if defined(__x86_64__)
#define DF_X86 1
#include <immintrin.h>
#define DF_TARGET_AVX2 __attribute__((target("avx2,fma,f16c")))
#define DF_TARGET_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c"), min_vector_width(512)))
#define DF_TARGET_AVX512BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,avx2,fma,f16c"), min_vector_width(512)))
#endif

/// Compiles the always-inline `name##_body` once per kernel level: `name##_portable` for the
/// default target and, on x86-64, `name##_avx2` (AVX2 + FMA) and `name##_avx512` (AVX-512
/// F/BW/VL/DQ), so clang vectorises each copy for its own instruction set. `dispatch.c` puts the
/// three into the per-level tables; nothing else chooses between them.
#if defined(DF_X86)
#define DF_VARIANTS(name, params, args)                                    \
    DF_TARGET_AVX512 void name##_avx512 params { name##_body args; }       \
    DF_TARGET_AVX2 void name##_avx2 params { name##_body args; }           \
    void name##_portable params { name##_body args; }
#else
#define DF_VARIANTS(name, params, args) \
    void name##_portable params { name##_body args; }
#endif

/// Declares the three variants of a kernel (for dispatch.c).
#define DF_DECLARE(name, params) \
    void name##_portable params; void name##_avx2 params; void name##_avx512 params;

static inline uint32_t df_f2u(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline float df_u2f(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

/// One float to bfloat16 bits: round to nearest even, subnormal to signed zero, NaN quieted with
/// its top payload kept (as VCVTNEPS2BF16). Inline so that loops around it vectorise.
static inline __attribute__((always_inline)) uint16_t df_bf16_bits(float x) {
    uint32_t u = df_f2u(x);
    uint32_t ax = u & 0x7FFFFFFFu;
    if (ax > 0x7F800000u) return (uint16_t)((u >> 16) | 0x0040u);
    if ((ax & 0x7F800000u) == 0) return (uint16_t)((u >> 16) & 0x8000u);
    u += 0x7FFFu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

/// exp(x) by Cephes' range reduction and degree-5 polynomial (max rel. error ~2 ulp), written
/// with operations LLVM vectorises (rintf, int conversion, bit casts). Inputs are clamped to
/// [-87.3, 88]: exp never returns inf or a denormal.
static inline __attribute__((always_inline)) float df_exp_approx(float x) {
    x = x < -87.3f ? -87.3f : (x > 88.0f ? 88.0f : x);
    float fx = rintf(x * 1.44269504088896341f);
    float r = x - fx * 0.693359375f;
    r = r - fx * -2.12194440e-4f;
    float y = 1.9875691500e-4f;
    y = y * r + 1.3981999507e-3f;
    y = y * r + 8.3334519073e-3f;
    y = y * r + 4.1665795894e-2f;
    y = y * r + 1.6666665459e-1f;
    y = y * r + 5.0000001201e-1f;
    y = y * r * r + r + 1.0f;
    int32_t n = (int32_t)fx;
    return y * df_u2f((uint32_t)(n + 127) << 23);
}

// Kernel variants (defined in the other translation units).
DF_DECLARE(df_silu_fwd, (const float *x, float *y, size_t n))
DF_DECLARE(df_silu_bwd, (const float *x, const float *gy, float *gx, size_t n, int accumulate))
DF_DECLARE(df_sigmoid_fwd, (const float *x, float *y, size_t n))
DF_DECLARE(df_sigmoid_bwd, (const float *y, const float *gy, float *gx, size_t n))
DF_DECLARE(df_exp_fwd, (const float *x, float *y, size_t n))
DF_DECLARE(df_add_into, (float *dst, const float *src, size_t n))
DF_DECLARE(df_add_scaled_into, (float *dst, const float *src, float s, size_t n))
DF_DECLARE(df_scale, (float *x, float s, size_t n))
DF_DECLARE(df_add, (const float *a, const float *b, float *out, size_t n))
DF_DECLARE(df_sub, (const float *a, const float *b, float *out, size_t n))
DF_DECLARE(df_mul, (const float *a, const float *b, float *out, size_t n))
DF_DECLARE(df_sum_squares, (const float *x, size_t n, double *out))
DF_DECLARE(df_all_finite, (const float *x, size_t n, int *out))
DF_DECLARE(df_channel_moments, (const float *x, int N, int C, int HW, int c0, int c1, float *mean, float *var))
DF_DECLARE(df_channel_sums, (const float *x, int N, int C, int HW, int c0, int c1, float *sum))
DF_DECLARE(df_channel_grad_sums, (const float *x, const uint16_t *xh, float *g, const float *mean,
                                  const float *scale, const float *shift, int N, int C, int HW, int c0, int c1,
                                  float *sum_g, float *sum_gx))
DF_DECLARE(df_channel_affine, (const float *x, int N, int C, int HW, int c0, int c1, const float *scale,
                               const float *shift, float *z, float *a, int silu))
DF_DECLARE(df_channel_axpby, (const float *g, const float *x, const uint16_t *xh, int N, int C, int HW, int c0,
                              int c1, const float *ca, const float *cb, const float *cc, float *out, int accumulate))
DF_DECLARE(df_channel_bias_silu, (float *y, int N, int C, int HW, int c0, int c1, const float *bias, int silu))
DF_DECLARE(df_maxpool_fwd, (const float *x, int planes, int H, int W, int k, int s, int p, int oH, int oW, float *y,
                            int32_t *arg, float *rowMax, int32_t *rowArg))
DF_DECLARE(df_im2col, (const float *img, int C, int H, int W, int k, int s, int p, int oH, int oW, int c0,
                       int c1, float *col))
DF_DECLARE(df_col2im, (const float *col, int C, int H, int W, int k, int s, int p, int oH, int oW, int c0,
                       int c1, float *img))
DF_DECLARE(df_blocked_sums, (const float *z, const uint16_t *zh, int f16, int N, int C, int HW, int B, int i0, int i1,
                              const float *mean, double *out))
DF_DECLARE(df_blocked_affine, (const float *z, const uint16_t *zh, int f16, int N, int C, int HW, int B, int i0, int i1,
                               const float *scale, const float *shift, float *out, uint16_t *outh, float *outl, int silu))
DF_DECLARE(df_blocked_affine_laid, (const float *z, const uint16_t *zh, int f16, int N, int C, int HW, int B, int c0,
                                    int count, int i0, int i1, const float *scale, const float *shift, int silu, float *out,
                                    uint16_t *outh, int outC, int outC0, int accumulate))
DF_DECLARE(df_blocked_grad_sums, (const float *z, const uint16_t *zh, int f16, const float *g, int g_laid, int g_round,
                                  const float *mean,
                                  const float *scale, const float *shift, int N, int C, int HW, int B, int i0, int i1,
                                  float *dz, double *sum_g, double *sum_gx))
DF_DECLARE(df_conv1_wgrad3, (const float *x, const float *gy, int H, int W, int O, int B, int S, int P, int OH, int OW,
                             int n0, int n1, float *pad, double *part))
DF_DECLARE(df_blocked_axpby, (float *dz, const float *z, const uint16_t *zh, int f16, int N, int C, int HW, int B, int i0,
                              int i1, const float *ca, const float *cb, const float *cc, uint16_t *outh,
                              int round_to))
DF_DECLARE(df_add_laid, (const float *a, const float *b, float *out, uint16_t *words, float *floats, int C, int HW, int B,
                          int i0, int i1))
DF_DECLARE(df_blocked_move, (const float *src, int srcC, int srcStart, float *dst, int dstC, int dstStart, int c, int HW, int B,
                             int dstLaid, int mode, int i0, int i1))
DF_DECLARE(df_f32_to_f16, (const float *src, uint16_t *dst, size_t n))
DF_DECLARE(df_f16_to_f32, (const uint16_t *src, float *dst, size_t n))
DF_DECLARE(df_round_f16, (float *x, size_t n))
DF_DECLARE(df_f32_to_bf16, (const float *src, uint16_t *dst, size_t n))
DF_DECLARE(df_bf16_to_f32, (const uint16_t *src, float *dst, size_t n))
DF_DECLARE(df_round_bf16, (float *x, size_t n))
#endif
