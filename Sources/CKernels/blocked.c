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
/// IEEE half words are widened by the lanes' integer ops in the portable variants and by F16C
/// (format 3, the same values) in the others: `hw` is each body's last parameter, a constant.
#define DF_BY_FORMAT(fmt, X) do { if ((fmt) == 0) X(0); else if ((fmt) == 1) X(1); else if (hw) X(3); else X(2); } while (0)

#define DF_UNPAREN(...) __VA_ARGS__
/// DF_VARIANTS for these bodies: `hw` 1 where the variant's target has F16C.
#ifdef DF_X86
#define DF_VARIANTS_HW(name, params, args)                                           \
    DF_TARGET_AVX512 void name##_avx512 params { name##_body(DF_UNPAREN args, 1); } \
    DF_TARGET_AVX2 void name##_avx2 params { name##_body(DF_UNPAREN args, 1); }     \
    void name##_portable params { name##_body(DF_UNPAREN args, 0); }
#else
#define DF_VARIANTS_HW(name, params, args) \
    void name##_portable params { name##_body(DF_UNPAREN args, 0); }
#endif

static inline __attribute__((always_inline)) void df_blocked_sums_body(
    const float *z, const uint16_t *zh, int f16, int N, int C, int HW, int B, int i0, int i1, const float *mean, double *out, const int hw) {
    (void)N;
#define DF_SUMS(h) DF_WIDTH(sums_items, B, z, zh, C, HW, B, i0, i1, mean, out, h)
    DF_BY_FORMAT(DF_FMT(zh, f16), DF_SUMS);
#undef DF_SUMS
}
DF_VARIANTS_HW(df_blocked_sums,
            (const float *z, const uint16_t *zh, int f16, int N, int C, int HW, int B, int i0, int i1, const float *mean,
             double *out),
            (z, zh, f16, N, C, HW, B, i0, i1, mean, out))

// MARK: - Affine (+ SiLU) into NCHW

static inline __attribute__((always_inline)) void df_blocked_affine_body(
    const float *z, const uint16_t *zh, int f16, int N, int C, int HW, int B, int i0, int i1, const float *scale,
    const float *shift, float *out, uint16_t *outh, float *outl, int silu, const int hw) {
    (void)N;
#define DF_AFFINE_S(h) DF_WIDTH(affine_items, B, z, zh, C, HW, B, i0, i1, scale, shift, out, outh, outl, 1, h)
#define DF_AFFINE_P(h) DF_WIDTH(affine_items, B, z, zh, C, HW, B, i0, i1, scale, shift, out, outh, outl, 0, h)
    if (silu) DF_BY_FORMAT(DF_FMT(zh, f16), DF_AFFINE_S);
    else DF_BY_FORMAT(DF_FMT(zh, f16), DF_AFFINE_P);
#undef DF_AFFINE_S
#undef DF_AFFINE_P
}
DF_VARIANTS_HW(df_blocked_affine,
            (const float *z, const uint16_t *zh, int f16, int N, int C, int HW, int B, int i0, int i1, const float *scale,
             const float *shift, float *out, uint16_t *outh, float *outl, int silu),
            (z, zh, f16, N, C, HW, B, i0, i1, scale, shift, out, outh, outl, silu))

// MARK: - Affine (+ SiLU) in the blocked layout

static inline __attribute__((always_inline)) void df_blocked_affine_laid_body(
    const float *z, const uint16_t *zh, int f16, int N, int C, int HW, int B, int c0, int count, int i0, int i1,
    const float *scale, const float *shift, int silu, float *out, uint16_t *outh, int outC, int outC0, int accumulate, const int hw) {
    (void)N;
    // accumulate: bit 0 add (else assign), bits 1-2 the rounding after (1 bfloat16, 2 IEEE half values).
    int rnd = accumulate >> 1;
    accumulate &= 1;
#define DF_LAID(a, s, t, h) DF_WIDTH(affine_laid_items, B, z, zh, C, HW, B, c0, count, i0, i1, scale, shift, out, outh, outC, \
                                     outC0, a, s, h, t, rnd, hw)
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
DF_VARIANTS_HW(df_blocked_affine_laid,
            (const float *z, const uint16_t *zh, int f16, int N, int C, int HW, int B, int c0, int count, int i0, int i1,
             const float *scale, const float *shift, int silu, float *out, uint16_t *outh, int outC, int outC0, int accumulate),
            (z, zh, f16, N, C, HW, B, c0, count, i0, i1, scale, shift, silu, out, outh, outC, outC0, accumulate))

// MARK: - Gradient sums from an NCHW output gradient (or one in the blocked layout: g_laid)

static inline __attribute__((always_inline)) void df_blocked_grad_sums_body(
    const float *z, const uint16_t *zh, int f16, const float *g, int g_laid, int g_round, const float *mean,
    const float *scale, const float *shift, int N, int C, int HW, int B, int i0, int i1, float *dz, double *sum_g,
    double *sum_gx, const int hw) {
    (void)N;
#define DF_GRAD_F(h) DF_WIDTH(grad_sums_items, B, z, zh, g, mean, scale, shift, C, HW, B, i0, i1, dz, sum_g, sum_gx, 1, h, 0, g_round, hw)
#define DF_GRAD_P(h) DF_WIDTH(grad_sums_items, B, z, zh, g, mean, scale, shift, C, HW, B, i0, i1, dz, sum_g, sum_gx, 0, h, 0, g_round, hw)
#define DF_GRAD_LF(h) DF_WIDTH(grad_sums_items, B, z, zh, g, mean, scale, shift, C, HW, B, i0, i1, dz, sum_g, sum_gx, 1, h, 1, g_round, hw)
#define DF_GRAD_LP(h) DF_WIDTH(grad_sums_items, B, z, zh, g, mean, scale, shift, C, HW, B, i0, i1, dz, sum_g, sum_gx, 0, h, 1, g_round, hw)
#define DF_GRAD_WF(h) DF_WIDTH(grad_sums_items, B, z, zh, g, mean, scale, shift, C, HW, B, i0, i1, dz, sum_g, sum_gx, 1, h, 2, 0, hw)
#define DF_GRAD_WP(h) DF_WIDTH(grad_sums_items, B, z, zh, g, mean, scale, shift, C, HW, B, i0, i1, dz, sum_g, sum_gx, 0, h, 2, 0, hw)
    if (g_laid == 2) {
        if (scale && shift) DF_BY_FORMAT(DF_FMT(zh, f16), DF_GRAD_WF);
        else DF_BY_FORMAT(DF_FMT(zh, f16), DF_GRAD_WP);
    } else if (g_laid) {
        if (scale && shift) DF_BY_FORMAT(DF_FMT(zh, f16), DF_GRAD_LF);
        else DF_BY_FORMAT(DF_FMT(zh, f16), DF_GRAD_LP);
    } else {
        if (scale && shift) DF_BY_FORMAT(DF_FMT(zh, f16), DF_GRAD_F);
        else DF_BY_FORMAT(DF_FMT(zh, f16), DF_GRAD_P);
    }
#undef DF_GRAD_F
#undef DF_GRAD_P
#undef DF_GRAD_LF
#undef DF_GRAD_LP
#undef DF_GRAD_WF
#undef DF_GRAD_WP
}
DF_VARIANTS_HW(df_blocked_grad_sums,
            (const float *z, const uint16_t *zh, int f16, const float *g, int g_laid, int g_round, const float *mean,
             const float *scale, const float *shift, int N, int C, int HW, int B, int i0, int i1, float *dz, double *sum_g,
             double *sum_gx),
            (z, zh, f16, g, g_laid, g_round, mean, scale, shift, N, C, HW, B, i0, i1, dz, sum_g, sum_gx))

// MARK: - Input gradient, blocked

static inline __attribute__((always_inline)) void df_blocked_axpby_body(
    float *dz, const float *z, const uint16_t *zh, int f16, int N, int C, int HW, int B, int i0, int i1, const float *ca,
    const float *cb, const float *cc, uint16_t *outh, int round_to, const int hw) {
    (void)N;
#define DF_AXPBY_H(h) DF_WIDTH(axpby_items, B, dz, z, zh, C, HW, B, i0, i1, ca, cb, cc, outh, 1, 0, h, hw)
#define DF_AXPBY_F(h) DF_WIDTH(axpby_items, B, dz, z, zh, C, HW, B, i0, i1, ca, cb, cc, outh, 0, 0, h, hw)
#define DF_AXPBY_B(h) DF_WIDTH(axpby_items, B, dz, z, zh, C, HW, B, i0, i1, ca, cb, cc, outh, 0, 1, h, hw)
#define DF_AXPBY_R(h) DF_WIDTH(axpby_items, B, dz, z, zh, C, HW, B, i0, i1, ca, cb, cc, outh, 0, 2, h, hw)
    if (outh) DF_BY_FORMAT(DF_FMT(zh, f16), DF_AXPBY_H);
    else if (round_to == 1) DF_BY_FORMAT(DF_FMT(zh, f16), DF_AXPBY_B);
    else if (round_to == 2) DF_BY_FORMAT(DF_FMT(zh, f16), DF_AXPBY_R);
    else DF_BY_FORMAT(DF_FMT(zh, f16), DF_AXPBY_F);
#undef DF_AXPBY_H
#undef DF_AXPBY_F
#undef DF_AXPBY_B
#undef DF_AXPBY_R
}
DF_VARIANTS_HW(df_blocked_axpby,
            (float *dz, const float *z, const uint16_t *zh, int f16, int N, int C, int HW, int B, int i0, int i1,
             const float *ca, const float *cb, const float *cc, uint16_t *outh, int round_to),
            (dz, z, zh, f16, N, C, HW, B, i0, i1, ca, cb, cc, outh, round_to))

// MARK: - Channel slices between blocked tensors, or into NCHW

/// bfloat16 rounding of one value (the rule of round_bf16).
static inline __attribute__((always_inline)) float df_bf16_value(float x) { return df_u2f((uint32_t)df_bf16_bits(x) << 16); }

static inline __attribute__((always_inline)) void df_blocked_move_body(const float *src, int srcC, int srcStart, float *dst,
                                                                       int dstC, int dstStart, int c, int HW, int B,
                                                                       int dstLaid, int mode, int i0, int i1) {
    const int add = mode & 1, rnd = (mode >> 1) & 1, CB = c / B;
    for (int it = i0; it < i1; it++) {
        int n = it / CB, j = it % CB;
        // Block j of the slice: HW pixels of B channels, contiguous in the blocked layout.
        const float *s = src + ((size_t)n * srcC + srcStart + (size_t)j * B) * HW;
        float *d = dst + ((size_t)n * dstC + dstStart + (size_t)j * B) * HW;
        if (dstLaid) {
            size_t m = (size_t)HW * B, i = 0;
            if (!add && !rnd) { memcpy(d, s, m * sizeof(float)); continue; }
            // Eight at a time (the lanes' bfloat16 rounding: the same rule), then the rest.
            for (; i + 8 <= m; i += 8) {
                df_f8 v = df_ld8(s + i);
                if (rnd) v = rndbf16_w8(v);
                df_st8(d + i, add ? df_ld8(d + i) + v : v);
            }
            for (; i < m; i++) {
                float v = rnd ? df_bf16_value(s[i]) : s[i];
                d[i] = add ? d[i] + v : v;
            }
            continue;
        }
        // Into B rows of HW pixels (NCHW): tiles of 8 pixels x 8 channels turned over in registers,
        // then the pixels left over 32 at a time.
        int pf = 0;
        if (B % 8 == 0) {
            for (; pf + 8 <= HW; pf += 8) {
                for (int l0 = 0; l0 < B; l0 += 8) {
                    df_f8 r[8];
                    for (int i = 0; i < 8; i++) r[i] = df_ld8(s + (size_t)(pf + i) * B + l0);
                    if (rnd) for (int i = 0; i < 8; i++) r[i] = rndbf16_w8(r[i]);
                    df_transpose8(r);
                    for (int j = 0; j < 8; j++) {
                        float *row = d + (size_t)(l0 + j) * HW + pf;
                        df_st8(row, add ? df_ld8(row) + r[j] : r[j]);
                    }
                }
            }
        }
        for (int p0 = pf; p0 < HW; p0 += 32) {
            int pn = HW - p0 < 32 ? HW - p0 : 32;
            const float *sp = s + (size_t)p0 * B;
            for (int l = 0; l < B; l++) {
                float *row = d + (size_t)l * HW + p0;
                if (add && rnd) for (int p = 0; p < pn; p++) row[p] += df_bf16_value(sp[(size_t)p * B + l]);
                else if (add) for (int p = 0; p < pn; p++) row[p] += sp[(size_t)p * B + l];
                else if (rnd) for (int p = 0; p < pn; p++) row[p] = df_bf16_value(sp[(size_t)p * B + l]);
                else for (int p = 0; p < pn; p++) row[p] = sp[(size_t)p * B + l];
            }
        }
    }
}
DF_VARIANTS(df_blocked_move,
            (const float *src, int srcC, int srcStart, float *dst, int dstC, int dstStart, int c, int HW, int B, int dstLaid,
             int mode, int i0, int i1),
            (src, srcC, srcStart, dst, dstC, dstStart, c, HW, B, dstLaid, mode, i0, i1))

// MARK: - A sum in NCHW, also in the blocked layout (bfloat16 words or Float32)

typedef uint32_t df_u8v __attribute__((vector_size(32)));
typedef uint16_t df_h8v __attribute__((vector_size(16)));

static inline __attribute__((always_inline)) void df_add_laid_body(const float *a, const float *b, float *out, uint16_t *words,
                                                                   float *floats, int C, int HW, int B, int i0, int i1) {
    const int CB = C / B;
    for (int it = i0; it < i1; it++) {
        int n = it / CB, cb = it % CB;
        // Channel cb * B's plane in NCHW; block cb in the blocked layout (the same offset).
        size_t first = ((size_t)n * C + (size_t)cb * B) * HW;
        uint16_t *w = words ? words + first : NULL;
        float *f = floats ? floats + first : NULL;
        for (int l0 = 0; l0 < B; l0 += 8) {
            int p = 0;
            for (; p + 8 <= HW; p += 8) {
                // Eight channels' sums over eight pixels, turned over to eight pixels' channels.
                df_f8 r[8];
                for (int j = 0; j < 8; j++) {
                    size_t o = first + (size_t)(l0 + j) * HW + p;
                    r[j] = df_ld8(a + o) + df_ld8(b + o);
                    df_st8(out + o, r[j]);
                }
                df_transpose8(r);
                if (w) {
                    for (int i = 0; i < 8; i++) {
                        df_h8v h = __builtin_convertvector((df_u8v)rndbf16_w8(r[i]) >> 16, df_h8v);
                        memcpy(w + (size_t)(p + i) * B + l0, &h, sizeof h);
                    }
                } else {
                    for (int i = 0; i < 8; i++) df_st8(f + (size_t)(p + i) * B + l0, r[i]);
                }
            }
            for (; p < HW; p++) {
                for (int j = 0; j < 8; j++) {
                    size_t o = first + (size_t)(l0 + j) * HW + p;
                    float v = a[o] + b[o];
                    out[o] = v;
                    if (w) w[(size_t)p * B + l0 + j] = df_bf16_bits(v);
                    else f[(size_t)p * B + l0 + j] = v;
                }
            }
        }
    }
}
DF_VARIANTS(df_add_laid, (const float *a, const float *b, float *out, uint16_t *words, float *floats, int C, int HW, int B, int i0,
                          int i1),
            (a, b, out, words, floats, C, HW, B, i0, i1))

// MARK: - Weight gradient of a 3 x 3 convolution with one input channel

/// part[(n - n0) * O * 9 + o * 9 + kh * 3 + kw] = the sum over image n's output pixels of
/// gy[n, o, oh, ow] * x[n, 0, oh * S + kh - P, ow * S + kw - P] (x zero outside the image), for
/// images n0 <= n < n1. gy in the blocked layout (block B, a multiple of 8), x NCHW. Each output
/// row's products add up in Float32 pixel by pixel, the rows in double. pad: scratch of
/// ((OH - 1) * S + 3) * ((OW - 1) * S + 3) floats (the image with its zero border).
static inline __attribute__((always_inline)) void df_conv1_wgrad3_body(const float *x, const float *gy, int H, int W, int O,
                                                                       int B, int S, int P, int OH, int OW, int n0, int n1,
                                                                       float *pad, double *part) {
    int PH = (OH - 1) * S + 3, PW = (OW - 1) * S + 3, OB = O / B;
    for (int n = n0; n < n1; n++) {
        const float *xi = x + (size_t)n * H * W;
        for (int r = 0; r < PH; r++) {
            int ih = r - P;
            for (int c = 0; c < PW; c++) {
                int iw = c - P;
                pad[(size_t)r * PW + c] = (ih >= 0 && ih < H && iw >= 0 && iw < W) ? xi[(size_t)ih * W + iw] : 0.0f;
            }
        }
        double *out = part + (size_t)(n - n0) * O * 9;
        for (int ob = 0; ob < OB; ob++) {
            const float *g = gy + ((size_t)n * OB + ob) * OH * OW * B;
            for (int j0 = 0; j0 < B; j0 += 8) {
                double tot[9][8];
                for (int t = 0; t < 9; t++) for (int j = 0; j < 8; j++) tot[t][j] = 0;
                for (int oh = 0; oh < OH; oh++) {
                    const float *r0 = pad + (size_t)oh * S * PW, *r1 = r0 + PW, *r2 = r1 + PW;
                    const float *gr = g + (size_t)oh * OW * B + j0;
                    df_f8 a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0}, a4 = {0}, a5 = {0}, a6 = {0}, a7 = {0}, a8 = {0};
                    for (int ow = 0; ow < OW; ow++) {
                        df_f8 gv = df_ld8(gr + (size_t)ow * B);
                        int c = ow * S;
                        a0 += gv * r0[c]; a1 += gv * r0[c + 1]; a2 += gv * r0[c + 2];
                        a3 += gv * r1[c]; a4 += gv * r1[c + 1]; a5 += gv * r1[c + 2];
                        a6 += gv * r2[c]; a7 += gv * r2[c + 1]; a8 += gv * r2[c + 2];
                    }
                    df_f8 a[9] = {a0, a1, a2, a3, a4, a5, a6, a7, a8};
                    for (int t = 0; t < 9; t++) for (int j = 0; j < 8; j++) tot[t][j] += a[t][j];
                }
                for (int t = 0; t < 9; t++) for (int j = 0; j < 8; j++) out[(size_t)(ob * B + j0 + j) * 9 + t] = tot[t][j];
            }
        }
    }
}
DF_VARIANTS(df_conv1_wgrad3,
            (const float *x, const float *gy, int H, int W, int O, int B, int S, int P, int OH, int OW, int n0, int n1,
             float *pad, double *part),
            (x, gy, H, W, O, B, S, P, OH, OW, n0, n1, pad, part))

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
