// Batch-norm passes over a convolution output kept in oneDNN's channel-blocked layout (the fused
// convolution + batch norm of TensorCore): the statistics, the affine (+ SiLU) pass that writes
// NCHW, the gradient sums that read an NCHW output gradient, and the input-gradient pass that
// writes the blocked layout the convolution's backward reads.
//
// Layout: element (n, c, p) of an [N, C, HW] tensor sits at ((n * C/B + c/B) * HW + p) * B + c % B
// (oneDNN's nChw{B}c; nhwc is B == C), B a multiple of 8. Work items are (image, channel block)
// pairs, item i = n * (C/B) + c/B. The loops run over 16 lanes (channels) of a pixel at a time
// where B allows, else 8, in explicit vectors (GCC/clang vector extension, so every kernel level
// computes the same operations; blocked_lanes.h, once per width), and visit each channel's values
// in pixel order: a tile of DF_BTILE pixels sums in
// Float32, tiles add up in double, and per-image sums go out per (n, c) for the caller to add in
// image order. Between the layouts, 8 x 8 blocks are transposed in registers. Values may be
// Float32 (z), or 16-bit words zh: bfloat16, or IEEE half where f16 is 1 (widened exactly).
#include "CKernels.h"
#include "internal.h"

enum { DF_BTILE = 64 };

typedef float df_f8 __attribute__((vector_size(32)));

static inline __attribute__((always_inline)) df_f8 df_ld8(const float *p) {
    df_f8 v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline __attribute__((always_inline)) void df_st8(float *p, df_f8 v) { memcpy(p, &v, sizeof v); }

/// r[i][j] <-> r[j][i] for an 8 x 8 block held as eight rows.
static inline __attribute__((always_inline)) void df_transpose8(df_f8 r[8]) {
    df_f8 t[8], s[8];
    for (int i = 0; i < 8; i += 2) {
        t[i] = __builtin_shufflevector(r[i], r[i + 1], 0, 8, 1, 9, 4, 12, 5, 13);
        t[i + 1] = __builtin_shufflevector(r[i], r[i + 1], 2, 10, 3, 11, 6, 14, 7, 15);
    }
    for (int i = 0; i < 8; i += 4) {
        s[i] = __builtin_shufflevector(t[i], t[i + 2], 0, 1, 8, 9, 4, 5, 12, 13);
        s[i + 1] = __builtin_shufflevector(t[i], t[i + 2], 2, 3, 10, 11, 6, 7, 14, 15);
        s[i + 2] = __builtin_shufflevector(t[i + 1], t[i + 3], 0, 1, 8, 9, 4, 5, 12, 13);
        s[i + 3] = __builtin_shufflevector(t[i + 1], t[i + 3], 2, 3, 10, 11, 6, 7, 14, 15);
    }
    for (int i = 0; i < 4; i++) {
        r[i] = __builtin_shufflevector(s[i], s[i + 4], 0, 1, 2, 3, 8, 9, 10, 11);
        r[i + 4] = __builtin_shufflevector(s[i], s[i + 4], 4, 5, 6, 7, 12, 13, 14, 15);
    }
}


#define DF_W 8
#include "blocked_lanes.h"
#undef DF_W
#define DF_W 16
#include "blocked_lanes.h"
#undef DF_W

/// Calls the lane loop `f` at width 16 when the channel block is a multiple of 16, else 8.
#define DF_WIDTH(f, B, ...) do { if ((B) % 16 == 0) f##_w16(__VA_ARGS__); else f##_w8(__VA_ARGS__); } while (0)

// MARK: - Statistics

/// The element format of z: 0 Float32, 1 bfloat16 words, 2 IEEE half words.
#define DF_FMT(zh, f16) ((zh) ? ((f16) ? 2 : 1) : 0)
/// Calls X(fmt) with the format as a constant.
#define DF_BY_FORMAT(fmt, X) do { if ((fmt) == 0) X(0); else if ((fmt) == 1) X(1); else X(2); } while (0)

static inline __attribute__((always_inline)) void df_blocked_sums_body(
    const float *z, const uint16_t *zh, int f16, int N, int C, int HW, int B, int i0, int i1, const float *mean, double *out) {
    (void)N;
#define DF_SUMS(h) DF_WIDTH(sums_items, B, z, zh, C, HW, B, i0, i1, mean, out, h)
    DF_BY_FORMAT(DF_FMT(zh, f16), DF_SUMS);
#undef DF_SUMS
}
DF_VARIANTS(df_blocked_sums,
            (const float *z, const uint16_t *zh, int f16, int N, int C, int HW, int B, int i0, int i1, const float *mean,
             double *out),
            (z, zh, f16, N, C, HW, B, i0, i1, mean, out))

// MARK: - Affine (+ SiLU) into NCHW

static inline __attribute__((always_inline)) void df_blocked_affine_body(
    const float *z, const uint16_t *zh, int f16, int N, int C, int HW, int B, int i0, int i1, const float *scale,
    const float *shift, float *out, int silu) {
    (void)N;
#define DF_AFFINE_S(h) DF_WIDTH(affine_items, B, z, zh, C, HW, B, i0, i1, scale, shift, out, 1, h)
#define DF_AFFINE_P(h) DF_WIDTH(affine_items, B, z, zh, C, HW, B, i0, i1, scale, shift, out, 0, h)
    if (silu) DF_BY_FORMAT(DF_FMT(zh, f16), DF_AFFINE_S);
    else DF_BY_FORMAT(DF_FMT(zh, f16), DF_AFFINE_P);
#undef DF_AFFINE_S
#undef DF_AFFINE_P
}
DF_VARIANTS(df_blocked_affine,
            (const float *z, const uint16_t *zh, int f16, int N, int C, int HW, int B, int i0, int i1, const float *scale,
             const float *shift, float *out, int silu),
            (z, zh, f16, N, C, HW, B, i0, i1, scale, shift, out, silu))

// MARK: - Affine (+ SiLU) in the blocked layout

static inline __attribute__((always_inline)) void df_blocked_affine_laid_body(
    const float *z, const uint16_t *zh, int f16, int N, int C, int HW, int B, int c0, int count, int i0, int i1,
    const float *scale, const float *shift, int silu, float *out, uint16_t *outh, int outC, int outC0, int accumulate) {
    (void)N;
#define DF_LAID(a, s, t, h) DF_WIDTH(affine_laid_items, B, z, zh, C, HW, B, c0, count, i0, i1, scale, shift, out, outh, outC, \
                                     outC0, a, s, h, t)
#define DF_LAID_SH(h) DF_LAID(0, 1, 1, h)
#define DF_LAID_SF(h) DF_LAID(0, 1, 0, h)
#define DF_LAID_SA(h) DF_LAID(1, 1, 0, h)
#define DF_LAID_PH(h) DF_LAID(0, 0, 1, h)
#define DF_LAID_PF(h) DF_LAID(0, 0, 0, h)
#define DF_LAID_PA(h) DF_LAID(1, 0, 0, h)
    int fmt = DF_FMT(zh, f16);
    if (silu) {
        if (outh) DF_BY_FORMAT(fmt, DF_LAID_SH);
        else if (accumulate) DF_BY_FORMAT(fmt, DF_LAID_SA);
        else DF_BY_FORMAT(fmt, DF_LAID_SF);
    } else {
        if (outh) DF_BY_FORMAT(fmt, DF_LAID_PH);
        else if (accumulate) DF_BY_FORMAT(fmt, DF_LAID_PA);
        else DF_BY_FORMAT(fmt, DF_LAID_PF);
    }
#undef DF_LAID
#undef DF_LAID_SH
#undef DF_LAID_SF
#undef DF_LAID_SA
#undef DF_LAID_PH
#undef DF_LAID_PF
#undef DF_LAID_PA
}
DF_VARIANTS(df_blocked_affine_laid,
            (const float *z, const uint16_t *zh, int f16, int N, int C, int HW, int B, int c0, int count, int i0, int i1,
             const float *scale, const float *shift, int silu, float *out, uint16_t *outh, int outC, int outC0, int accumulate),
            (z, zh, f16, N, C, HW, B, c0, count, i0, i1, scale, shift, silu, out, outh, outC, outC0, accumulate))

// MARK: - Gradient sums from an NCHW output gradient

static inline __attribute__((always_inline)) void df_blocked_grad_sums_body(
    const float *z, const uint16_t *zh, int f16, const float *g, const float *mean, const float *scale, const float *shift,
    int N, int C, int HW, int B, int i0, int i1, float *dz, double *sum_g, double *sum_gx) {
    (void)N;
#define DF_GRAD_F(h) DF_WIDTH(grad_sums_items, B, z, zh, g, mean, scale, shift, C, HW, B, i0, i1, dz, sum_g, sum_gx, 1, h)
#define DF_GRAD_P(h) DF_WIDTH(grad_sums_items, B, z, zh, g, mean, scale, shift, C, HW, B, i0, i1, dz, sum_g, sum_gx, 0, h)
    if (scale && shift) DF_BY_FORMAT(DF_FMT(zh, f16), DF_GRAD_F);
    else DF_BY_FORMAT(DF_FMT(zh, f16), DF_GRAD_P);
#undef DF_GRAD_F
#undef DF_GRAD_P
}
DF_VARIANTS(df_blocked_grad_sums,
            (const float *z, const uint16_t *zh, int f16, const float *g, const float *mean, const float *scale,
             const float *shift, int N, int C, int HW, int B, int i0, int i1, float *dz, double *sum_g, double *sum_gx),
            (z, zh, f16, g, mean, scale, shift, N, C, HW, B, i0, i1, dz, sum_g, sum_gx))

// MARK: - Input gradient, blocked

static inline __attribute__((always_inline)) void df_blocked_axpby_body(
    float *dz, const float *z, const uint16_t *zh, int f16, int N, int C, int HW, int B, int i0, int i1, const float *ca,
    const float *cb, const float *cc, uint16_t *outh, int round_to) {
    (void)N;
#define DF_AXPBY_H(h) DF_WIDTH(axpby_items, B, dz, z, zh, C, HW, B, i0, i1, ca, cb, cc, outh, 1, 0, h)
#define DF_AXPBY_F(h) DF_WIDTH(axpby_items, B, dz, z, zh, C, HW, B, i0, i1, ca, cb, cc, outh, 0, 0, h)
#define DF_AXPBY_B(h) DF_WIDTH(axpby_items, B, dz, z, zh, C, HW, B, i0, i1, ca, cb, cc, outh, 0, 1, h)
#define DF_AXPBY_R(h) DF_WIDTH(axpby_items, B, dz, z, zh, C, HW, B, i0, i1, ca, cb, cc, outh, 0, 2, h)
    if (outh) DF_BY_FORMAT(DF_FMT(zh, f16), DF_AXPBY_H);
    else if (round_to == 1) DF_BY_FORMAT(DF_FMT(zh, f16), DF_AXPBY_B);
    else if (round_to == 2) DF_BY_FORMAT(DF_FMT(zh, f16), DF_AXPBY_R);
    else DF_BY_FORMAT(DF_FMT(zh, f16), DF_AXPBY_F);
#undef DF_AXPBY_H
#undef DF_AXPBY_F
#undef DF_AXPBY_B
#undef DF_AXPBY_R
}
DF_VARIANTS(df_blocked_axpby,
            (float *dz, const float *z, const uint16_t *zh, int f16, int N, int C, int HW, int B, int i0, int i1,
             const float *ca, const float *cb, const float *cc, uint16_t *outh, int round_to),
            (dz, z, zh, f16, N, C, HW, B, i0, i1, ca, cb, cc, outh, round_to))

// MARK: - Layout conversion (plain loops)

void df_blocked_from_nchw(const float *x, int N, int C, int HW, int B, float *out) {
    int CB = C / B;
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++)
            for (int p = 0; p < HW; p++)
                out[(((size_t)n * CB + c / B) * HW + p) * B + c % B] = x[((size_t)n * C + c) * HW + p];
}

void df_blocked_to_nchw(const float *x, int N, int C, int HW, int B, float *out) {
    int CB = C / B;
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++)
            for (int p = 0; p < HW; p++)
                out[((size_t)n * C + c) * HW + p] = x[(((size_t)n * CB + c / B) * HW + p) * B + c % B];
}
