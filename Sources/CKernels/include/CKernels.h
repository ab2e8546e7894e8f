// CKernels: the small C layer under TensorCore.
//
// Inner loops that Swift's default x86-64 target (SSE2) cannot make fast: IEEE half and bfloat16
// conversion, exp-based activations, batch-norm passes, element-wise loops, im2col / col2im and
// the packed GEMMs. Each kernel exists once per level (portable C, AVX2 + FMA, AVX-512) from one
// source body; `df_kernels_for_level` is the one place that picks a level's functions, and
// TensorCore's compute context holds the table it runs with. Tests pin every level to portable.
#ifndef DUALFUSE_CKERNELS_H
#define DUALFUSE_CKERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#pragma clang assume_nonnull begin

// MARK: - CPU features and kernel levels

/// Kernel levels, in increasing order of what the CPU must have.
enum {
    DF_LEVEL_PORTABLE = 0,   ///< plain C (whatever the compiler's default target gives)
    DF_LEVEL_AVX2 = 1,       ///< AVX2 + FMA + F16C
    DF_LEVEL_AVX512 = 2,     ///< AVX-512 F/BW/VL/DQ (+ AVX2, FMA, F16C)
};

/// The highest level this CPU runs.
int df_cpu_level(void);
/// 1 when the CPU has AVX512_BF16 (vcvtneps2bf16, vdpbf16ps) on top of AVX-512, else 0.
int df_cpu_has_avx512_bf16(void);
/// 1 when the CPU has F16C (and AVX), else 0.
int df_cpu_has_f16c(void);

/// Packed-GEMM operand: element (r, c) of the logical matrix is at p[r * rs + c * cs].
typedef struct df_matrix {
    const float *p;
    long rs, cs;
} df_matrix;

/// Every kernel of one level. Filled by `df_kernels_for_level`; never changed afterwards.
typedef struct df_kernels {
    int level;               ///< DF_LEVEL_*
    int bf16;                ///< 1 when bfloat16 conversions and dot products use AVX512_BF16
    const char *name;        ///< "portable", "avx2", "avx512", "avx512+bf16"

    // Conversions. f16: IEEE binary16, round to nearest even, overflow to inf, subnormals kept.
    // bf16: round to nearest even, subnormal inputs to signed zero, NaN quieted (as VCVTNEPS2BF16).
    void (*f32_to_f16)(const float *src, uint16_t *dst, size_t n);
    void (*f16_to_f32)(const uint16_t *src, float *dst, size_t n);
    void (*round_f16)(float *x, size_t n);          ///< x = float(half(x)) in place
    void (*f32_to_bf16)(const float *src, uint16_t *dst, size_t n);
    void (*bf16_to_f32)(const uint16_t *src, float *dst, size_t n);
    void (*round_bf16)(float *x, size_t n);         ///< x = float(bfloat16(x)) in place

    // Activations (exp by a Cephes-style polynomial, ~2 ulp).
    void (*silu_fwd)(const float *x, float *y, size_t n);
    /// gx (=, or += when accumulate) gy * silu'(x)
    void (*silu_bwd)(const float *x, const float *gy, float *gx, size_t n, int accumulate);
    void (*sigmoid_fwd)(const float *x, float *y, size_t n);
    /// gx += gy * y * (1 - y), y the sigmoid output
    void (*sigmoid_bwd)(const float *y, const float *gy, float *gx, size_t n);
    void (*exp_fwd)(const float *x, float *y, size_t n);

    // Element-wise.
    void (*add_into)(float *dst, const float *src, size_t n);                  ///< dst += src
    void (*add_scaled_into)(float *dst, const float *src, float s, size_t n);  ///< dst += s * src
    void (*scale)(float *x, float s, size_t n);                                ///< x *= s
    void (*add)(const float *a, const float *b, float *out, size_t n);
    void (*sub)(const float *a, const float *b, float *out, size_t n);
    void (*mul)(const float *a, const float *b, float *out, size_t n);
    /// *out = sum of x[i]^2 (16 float lanes, then double)
    void (*sum_squares)(const float *x, size_t n, double *out);
    /// *out = 1 when no element is inf or NaN
    void (*all_finite)(const float *x, size_t n, int *out);

    // Per channel of NCHW tensors [N, C, HW], channels [c0, c1).
    /// mean and biased variance over N x HW (two passes; 8 float lanes per plane, summed in double)
    void (*channel_moments)(const float *x, int N, int C, int HW, int c0, int c1, float *mean, float *var);
    /// sum[c] += sum over N x HW of x
    void (*channel_sums)(const float *x, int N, int C, int HW, int c0, int c1, float *sum);
    /// sums over N x HW of dz and of dz * (x - mean[c]) (the batch-norm backward reductions), where
    /// dz = g; or, with scale and shift (batch norm fused with SiLU), dz = g * silu'(x * scale[c] +
    /// shift[c]), which then replaces g in place (the input-gradient pass reads it from there).
    /// With xh, x is read from these bfloat16 words instead (x may then be NULL).
    void (*channel_grad_sums)(const float *_Nullable x, const uint16_t *_Nullable xh, float *g, const float *mean,
                              const float *_Nullable scale, const float *_Nullable shift, int N, int C, int HW,
                              int c0, int c1, float *sum_g, float *sum_gx);
    /// z = x * scale[c] + shift[c]; with silu, a = silu(z) (z may then be NULL; a is NULL without silu)
    void (*channel_affine)(const float *x, int N, int C, int HW, int c0, int c1, const float *scale,
                           const float *shift, float *_Nullable z, float *_Nullable a, int silu);
    /// out (= or += when accumulate) ca[c] * g + cb[c] * x + cc[c]; x from xh's bfloat16 words when given
    void (*channel_axpby)(const float *g, const float *_Nullable x, const uint16_t *_Nullable xh, int N, int C, int HW,
                          int c0, int c1, const float *ca, const float *cb, const float *cc, float *out, int accumulate);
    /// y = y + bias[c] (bias may be NULL), then silu when silu != 0, in place
    void (*channel_bias_silu)(float *y, int N, int C, int HW, int c0, int c1, const float *_Nullable bias, int silu);

    // Batch norm over a convolution output kept in oneDNN's channel-blocked layout (blocked.c):
    // element (n, c, p) of [N, C, HW] at ((n * C/B + c/B) * HW + p) * B + c % B (nChw{B}c; nhwc is
    // B == C; B a multiple of 8, C of B). Work items [i0, i1) are (image, channel block) pairs
    // i = n * C/B + c/B. Values z are Float32, or 16-bit words zh (then z may be NULL): bfloat16, or
    // IEEE half where f16 is 1. Per-image
    // sums go to out[n * C + c] (double; the caller adds the images in order).
    /// out = per-image sums of z, or with mean, of (z - mean[c])^2
    void (*blocked_sums)(const float *_Nullable z, const uint16_t *_Nullable zh, int f16, int N, int C, int HW, int B, int i0,
                         int i1, const float *_Nullable mean, double *out);
    /// out (NCHW, Float32; skipped when NULL) = z * scale[c] + shift[c], then silu when silu != 0;
    /// with outh, the same values also as bfloat16 words in z's blocked layout (as
    /// blocked_affine_laid writes them); with outl, also as Float32 in z's blocked layout
    void (*blocked_affine)(const float *_Nullable z, const uint16_t *_Nullable zh, int f16, int N, int C, int HW, int B, int i0,
                           int i1, const float *scale, const float *shift, float *_Nullable out, uint16_t *_Nullable outh,
                           float *_Nullable outl, int silu);
    /// The same values in the blocked layout, for channels [c0, c0 + count) (c0 and count multiples
    /// of B; items over N x count/B), into channels [outC0, outC0 + count) of an [N, outC, HW] blocked
    /// tensor: Float32 (=, or += when accumulate & 1; then rounded to bfloat16 values when accumulate >> 1
    /// is 1, to IEEE half values when 2), or as bfloat16 words into outh when given
    void (*blocked_affine_laid)(const float *_Nullable z, const uint16_t *_Nullable zh, int f16, int N, int C, int HW, int B,
                                int c0, int count, int i0, int i1, const float *scale, const float *shift, int silu,
                                float *_Nullable out, uint16_t *_Nullable outh, int outC, int outC0, int accumulate);
    /// dz (blocked, Float32) = g (NCHW; with g_laid 1 in the blocked layout, where dz may be g itself;
    /// g_laid 2: bfloat16 words in the blocked layout, g pointing at them, g_round ignored;
    /// g_round 1 or 2: g's values rounded to bfloat16 or IEEE half values as they are read), or with
    /// scale and shift g * silu'(z * scale[c] + shift[c]); sum_g and sum_gx get the per-image sums
    /// of dz and of dz * (z - mean[c]) (the same values from either layout of g)
    void (*blocked_grad_sums)(const float *_Nullable z, const uint16_t *_Nullable zh, int f16, const float *g, int g_laid,
                              int g_round, const float *mean,
                              const float *_Nullable scale, const float *_Nullable shift, int N, int C, int HW, int B,
                              int i0, int i1, float *dz, double *sum_g, double *sum_gx);
    /// v = ca[c] * dz + cb[c] * z + cc[c]: as bfloat16 words into outh when given, else into dz in
    /// place, there rounded to bfloat16 values when round_to is 1 and to IEEE half values when 2
    void (*blocked_axpby)(float *dz, const float *_Nullable z, const uint16_t *_Nullable zh, int f16, int N, int C, int HW, int B,
                          int i0, int i1, const float *ca, const float *cb, const float *cc, uint16_t *_Nullable outh,
                          int round_to);
    /// Channels [srcStart, srcStart + c) of src (blocked [N, srcC, HW], block B; starts and c
    /// multiples of B) into channels [dstStart, dstStart + c) of dst: blocked [N, dstC, HW] when
    /// dstLaid, else NCHW. Items i0 ..< i1 of N x c/B (image, block). mode bit 0: += (else =); bit 1:
    /// src's values rounded to bfloat16 values (round_bf16's rule) first
    void (*blocked_move)(const float *src, int srcC, int srcStart, float *dst, int dstC, int dstStart, int c, int HW, int B,
                         int dstLaid, int mode, int i0, int i1);
    /// out = a + b (NCHW [N, C, HW]) and the sums also in the channel-blocked layout with block B (a
    /// multiple of 8): as bfloat16 words (round_bf16's rule) into words when given, else as Float32
    /// into floats; items i0 ..< i1 of N x C/B
    void (*add_laid)(const float *a, const float *b, float *out, uint16_t *_Nullable words, float *_Nullable floats, int C,
                     int HW, int B, int i0, int i1);
    /// The weight gradient [O, 1, 3, 3] of a 3 x 3 convolution with one input channel (stride S,
    /// padding P), per image n0 <= n < n1 into part[(n - n0) * O * 9 ...] (double): x [N, 1, H, W]
    /// NCHW, gy [N, O, OH, OW] channel-blocked (B a multiple of 8). Each output row sums in Float32,
    /// rows in double. pad: scratch of ((OH - 1) * S + 3) * ((OW - 1) * S + 3) floats.
    void (*conv1_wgrad3)(const float *x, const float *gy, int H, int W, int O, int B, int S, int P, int OH, int OW,
                         int n0, int n1, float *pad, double *part);

    /// Max pooling of `planes` planes [H, W] -> y [oH, oW] (window k, stride s, padding p; padding
    /// never wins). arg (may be NULL) gets each output's input index within its plane: the first
    /// maximum in raster order, or the last NaN. Scratch: rowMax and rowArg hold H * oW each.
    void (*maxpool_fwd)(const float *x, int planes, int H, int W, int k, int s, int p, int oH, int oW, float *y,
                        int32_t *_Nullable arg, float *rowMax, int32_t *rowArg);

    // Convolution lowering, one image, channels [c0, c1).
    /// columns: [C*k*k, oH*oW] (row (c*k + i)*k + j) of image [C, H, W]; zero padding p, stride s
    void (*im2col)(const float *img, int C, int H, int W, int k, int s, int p, int oH, int oW, int c0,
                   int c1, float *col);
    /// image[c] += fold of the columns (the adjoint of im2col)
    void (*col2im)(const float *col, int C, int H, int W, int k, int s, int p, int oH, int oW, int c0,
                   int c1, float *img);

    // Packed GEMMs, single-threaded (callers split M or N across threads).
    /// C[M, N] (=, or += when accumulate) A[M, K] x B[K, N]; C row-major with leading dimension
    /// ldc; `ws` holds df_gemm_workspace_floats() floats. Every level gives identical bits.
    void (*sgemm)(int M, int N, int K, df_matrix A, df_matrix B, float *C, long ldc, int accumulate, float *ws);
    /// The same with both operands rounded to bfloat16 (products and sums in Float32).
    void (*bgemm)(int M, int N, int K, df_matrix A, df_matrix B, float *C, long ldc, int accumulate, float *ws);
} df_kernels;

/// The channel-blocked layout (see blocked_sums) of an NCHW Float32 tensor, and back: plain loops, for
/// tests and fallbacks.
void df_blocked_from_nchw(const float *x, int N, int C, int HW, int B, float *out);
void df_blocked_to_nchw(const float *x, int N, int C, int HW, int B, float *out);

/// Floats of scratch memory one GEMM call needs (packing buffers).
size_t df_gemm_workspace_floats(void);

/// glibc: fixes the mmap threshold at its default 128 KiB (switching off its upward adjustment after
/// large frees) and the trim threshold at 256 KiB, so freed large blocks leave the process.
void df_configure_allocator(void);

/// The table of `level` (clamped to what exists; the caller checks the CPU runs it), with the
/// bfloat16 paths native when `bf16` is 1 and the CPU has AVX512_BF16.
const df_kernels *df_kernels_for_level(int level, int bf16);

// MARK: - Scalar reference conversions (portable C; the oracles of the tests)

/// One float to IEEE half bits (overflow -> inf, underflow -> subnormal / signed zero, NaN ->
/// quiet NaN keeping the top payload bits, as F16C does).
uint16_t df_f32_to_f16_1(float x);
/// One half to float (exact; NaN payload kept, quiet bit set).
float df_f16_to_f32_1(uint16_t h);
/// One float to bfloat16 bits (round to nearest even; subnormal -> signed zero; NaN quieted).
uint16_t df_f32_to_bf16_1(float x);
float df_bf16_to_f32_1(uint16_t h);

#pragma clang assume_nonnull end

#ifdef __cplusplus
}
#endif
#endif
