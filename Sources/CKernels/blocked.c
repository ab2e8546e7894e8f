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
// Float32 (z) or bfloat16 words (zh, widened exactly).
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

static inline __attribute__((always_inline)) void df_blocked_sums_body(
    const float *z, const uint16_t *zh, int N, int C, int HW, int B, int i0, int i1, const float *mean, double *out) {
    (void)N;
    if (zh) DF_WIDTH(sums_items, B, z, zh, C, HW, B, i0, i1, mean, out, 1);
    else DF_WIDTH(sums_items, B, z, zh, C, HW, B, i0, i1, mean, out, 0);
}
DF_VARIANTS(df_blocked_sums,
            (const float *z, const uint16_t *zh, int N, int C, int HW, int B, int i0, int i1, const float *mean, double *out),
            (z, zh, N, C, HW, B, i0, i1, mean, out))

// MARK: - Affine (+ SiLU) into NCHW

static inline __attribute__((always_inline)) void df_blocked_affine_body(
    const float *z, const uint16_t *zh, int N, int C, int HW, int B, int i0, int i1, const float *scale, const float *shift,
    float *out, int silu) {
    (void)N;
#define DF_AFFINE(s, h) DF_WIDTH(affine_items, B, z, zh, C, HW, B, i0, i1, scale, shift, out, s, h)
    if (zh) { if (silu) DF_AFFINE(1, 1); else DF_AFFINE(0, 1); }
    else { if (silu) DF_AFFINE(1, 0); else DF_AFFINE(0, 0); }
#undef DF_AFFINE
}
DF_VARIANTS(df_blocked_affine,
            (const float *z, const uint16_t *zh, int N, int C, int HW, int B, int i0, int i1, const float *scale,
             const float *shift, float *out, int silu),
            (z, zh, N, C, HW, B, i0, i1, scale, shift, out, silu))

// MARK: - Affine (+ SiLU) in the blocked layout

static inline __attribute__((always_inline)) void df_blocked_affine_laid_body(
    const float *z, const uint16_t *zh, int N, int C, int HW, int B, int i0, int i1, const float *scale, const float *shift,
    int silu, float *out, uint16_t *outh) {
    (void)N;
#define DF_AFFINE_LAID(s, h, t) DF_WIDTH(affine_laid_items, B, z, zh, C, HW, B, i0, i1, scale, shift, out, outh, s, h, t)
    if (zh) {
        if (outh) { if (silu) DF_AFFINE_LAID(1, 1, 1); else DF_AFFINE_LAID(0, 1, 1); }
        else { if (silu) DF_AFFINE_LAID(1, 1, 0); else DF_AFFINE_LAID(0, 1, 0); }
    } else {
        if (outh) { if (silu) DF_AFFINE_LAID(1, 0, 1); else DF_AFFINE_LAID(0, 0, 1); }
        else { if (silu) DF_AFFINE_LAID(1, 0, 0); else DF_AFFINE_LAID(0, 0, 0); }
    }
#undef DF_AFFINE_LAID
}
DF_VARIANTS(df_blocked_affine_laid,
            (const float *z, const uint16_t *zh, int N, int C, int HW, int B, int i0, int i1, const float *scale,
             const float *shift, int silu, float *out, uint16_t *outh),
            (z, zh, N, C, HW, B, i0, i1, scale, shift, silu, out, outh))

// MARK: - Gradient sums from an NCHW output gradient

static inline __attribute__((always_inline)) void df_blocked_grad_sums_body(
    const float *z, const uint16_t *zh, const float *g, const float *mean, const float *scale, const float *shift,
    int N, int C, int HW, int B, int i0, int i1, float *dz, double *sum_g, double *sum_gx) {
    (void)N;
#define DF_GRAD(f, h) DF_WIDTH(grad_sums_items, B, z, zh, g, mean, scale, shift, C, HW, B, i0, i1, dz, sum_g, sum_gx, f, h)
    int fused = scale && shift;
    if (zh) { if (fused) DF_GRAD(1, 1); else DF_GRAD(0, 1); }
    else { if (fused) DF_GRAD(1, 0); else DF_GRAD(0, 0); }
#undef DF_GRAD
}
DF_VARIANTS(df_blocked_grad_sums,
            (const float *z, const uint16_t *zh, const float *g, const float *mean, const float *scale, const float *shift,
             int N, int C, int HW, int B, int i0, int i1, float *dz, double *sum_g, double *sum_gx),
            (z, zh, g, mean, scale, shift, N, C, HW, B, i0, i1, dz, sum_g, sum_gx))

// MARK: - Input gradient, blocked

static inline __attribute__((always_inline)) void df_blocked_axpby_body(
    float *dz, const float *z, const uint16_t *zh, int N, int C, int HW, int B, int i0, int i1, const float *ca,
    const float *cb, const float *cc, uint16_t *outh) {
    (void)N;
#define DF_AXPBY(t, h) DF_WIDTH(axpby_items, B, dz, z, zh, C, HW, B, i0, i1, ca, cb, cc, outh, t, h)
    if (zh) { if (outh) DF_AXPBY(1, 1); else DF_AXPBY(0, 1); }
    else { if (outh) DF_AXPBY(1, 0); else DF_AXPBY(0, 0); }
#undef DF_AXPBY
}
DF_VARIANTS(df_blocked_axpby,
            (float *dz, const float *z, const uint16_t *zh, int N, int C, int HW, int B, int i0, int i1, const float *ca,
             const float *cb, const float *cc, uint16_t *outh),
            (dz, z, zh, N, C, HW, B, i0, i1, ca, cb, cc, outh))

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
