// CKernels: the small C layer under TensorCore.
//
// Inner loops that Swift's default x86-64 target (SSE2) cannot make fast: IEEE half conversion
// (F16C), exp-based activations (AVX2 + FMA), im2col / col2im. Every fast path is chosen at run
// time by a CPU check and has a portable twin; tests compare the two.
#ifndef DUALFUSE_CKERNELS_H
#define DUALFUSE_CKERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// MARK: - CPU dispatch

/// 1 when the CPU has F16C (and AVX), else 0.
int df_cpu_has_f16c(void);
/// 1 when the CPU has AVX2 and FMA, else 0.
int df_cpu_has_avx2_fma(void);
/// Forces the portable paths (1) or restores run-time dispatch (0). For tests and benchmarks.
void df_force_portable(int on);

// MARK: - IEEE half (binary16), round to nearest even

/// One float to half bits, portable C (overflow -> inf, underflow -> subnormal / signed zero,
/// NaN -> quiet NaN keeping the top payload bits, as F16C does).
uint16_t df_f32_to_f16_1(float x);
/// One half to float, portable C (exact; NaN payload kept, quiet bit set).
float df_f16_to_f32_1(uint16_t h);
/// Bulk conversions; dispatch to F16C when present and not forced portable.
void df_f32_to_f16(const float *src, uint16_t *dst, size_t n);
void df_f16_to_f32(const uint16_t *src, float *dst, size_t n);
/// The portable bulk loops, always.
void df_f32_to_f16_portable(const float *src, uint16_t *dst, size_t n);
void df_f16_to_f32_portable(const uint16_t *src, float *dst, size_t n);
/// The F16C bulk loops; return 0 (doing nothing) when the CPU lacks F16C, else 1.
int df_f32_to_f16_f16c(const float *src, uint16_t *dst, size_t n);
int df_f16_to_f32_f16c(const uint16_t *src, float *dst, size_t n);
/// x[i] = float(half(x[i])) in place: the value Float16 storage would hold.
void df_round_f16(float *x, size_t n);

// MARK: - Activations (exp by a Cephes-style polynomial, ~2 ulp)

/// y = x * sigmoid(x)
void df_silu_fwd(const float *x, float *y, size_t n);
/// gx (=, or += when accumulate) gy * d silu(x)/dx
void df_silu_bwd(const float *x, const float *gy, float *gx, size_t n, int accumulate);
/// y = 1 / (1 + exp(-x))
void df_sigmoid_fwd(const float *x, float *y, size_t n);
/// y = exp(x)
void df_exp_fwd(const float *x, float *y, size_t n);

// MARK: - Batch norm + SiLU, per channel of an NCHW tensor

/// For channels [c0, c1): mean[c] and biased variance var[c] over N x HW (two passes, Float
/// lanes summed in double per plane).
void df_channel_moments(const float *x, int N, int C, int HW, int c0, int c1, float *mean, float *var);
/// For channels [c0, c1): sums over N x HW of g and of g * (x - mean[c]) (BN backward reductions).
void df_channel_grad_sums(const float *x, const float *g, const float *mean, int N, int C, int HW,
                          int c0, int c1, float *sum_g, float *sum_gx);
/// For channels [c0, c1): z = x * scale[c] + shift[c]; when silu != 0, also a = silu(z).
/// z may be NULL (not stored) when silu != 0; a may be NULL when silu == 0.
void df_channel_affine(const float *x, int N, int C, int HW, int c0, int c1, const float *scale,
                       const float *shift, float *z, float *a, int silu);
/// Backward of a = silu(x * scale[c] + shift[c]) w.r.t. z (the affine output):
/// gz = ga * silu'(z), with z recomputed from x. Channels [c0, c1).
void df_channel_affine_silu_bwd(const float *x, const float *ga, int N, int C, int HW, int c0,
                                int c1, const float *scale, const float *shift, float *gz);

/// For channels [c0, c1): out (= or += when accumulate) ca[c] * g + cb[c] * x + cc[c]
/// (the batch-norm input gradient is this affine form of the upstream gradient and the input).
void df_channel_axpby(const float *g, const float *x, int N, int C, int HW, int c0, int c1,
                      const float *ca, const float *cb, const float *cc, float *out, int accumulate);

// MARK: - im2col / col2im (one image, channels [c0, c1))

/// columns: [C*k*k, oH*oW] (row (c*k + i)*k + j), image: [C, H, W]; zero padding p, stride s.
void df_im2col(const float *img, int C, int H, int W, int k, int s, int p, int oH, int oW, int c0,
               int c1, float *col);
/// image[c] += fold of columns for channels [c0, c1) (the adjoint of df_im2col).
void df_col2im(const float *col, int C, int H, int W, int k, int s, int p, int oH, int oW, int c0,
               int c1, float *img);

#ifdef __cplusplus
}
#endif
#endif
