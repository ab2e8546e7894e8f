// Batch-norm passes over a convolution output kept in oneDNN's channel-blocked layout (the fused
// convolution + batch norm of TensorCore): the statistics, the affine (+ SiLU) pass that writes
// NCHW, the gradient sums that read an NCHW output gradient, and the input-gradient pass that
// writes the blocked layout the convolution's backward reads.
//
// Layout: element (n, c, p) of an [N, C, HW] tensor sits at ((n * C/B + c/B) * HW + p) * B + c % B
// (oneDNN's nChw{B}c; nhwc is B == C), B a multiple of 8. Work items are (image, channel block)
// pairs, item i = n * (C/B) + c/B. The loops run over 8 lanes (channels) of a pixel at a time in
// explicit vectors (GCC/clang vector extension, so every kernel level computes the same
// operations), and visit each channel's values in pixel order: a tile of DF_BTILE pixels sums in
// Float32, tiles add up in double, and per-image sums go out per (n, c) for the caller to add in
// image order. Between the layouts, 8 x 8 blocks are transposed in registers. Values may be
// Float32 (z) or bfloat16 words (zh, widened exactly).
#include "CKernels.h"
#include "internal.h"

enum { DF_BTILE = 64 };

typedef float df_f8 __attribute__((vector_size(32)));
typedef int32_t df_i8 __attribute__((vector_size(32)));
typedef uint32_t df_u8 __attribute__((vector_size(32)));
typedef uint16_t df_h8 __attribute__((vector_size(16)));

static inline __attribute__((always_inline)) df_f8 df_splat8(float v) { return (df_f8){v, v, v, v, v, v, v, v}; }

static inline __attribute__((always_inline)) df_f8 df_ld8(const float *p) {
    df_f8 v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline __attribute__((always_inline)) void df_st8(float *p, df_f8 v) { memcpy(p, &v, sizeof v); }

/// Eight values of the blocked tensor from element k: Float32, or bfloat16 words widened when
/// `half` (a constant at every call, so each loop compiles once per element type).
static inline __attribute__((always_inline)) df_f8 df_ldz8(const float *z, const uint16_t *zh, size_t k, const int half) {
    if (!half) return df_ld8(z + k);
    df_h8 h;
    memcpy(&h, zh + k, sizeof h);
    df_u8 u = __builtin_convertvector(h, df_u8) << 16;
    return (df_f8)u;
}

/// Lanes of `a` where `mask` is set (all ones), else lanes of `b`.
static inline __attribute__((always_inline)) df_f8 df_select8(df_i8 mask, df_f8 a, df_f8 b) {
    return (df_f8)((mask & (df_i8)a) | (~mask & (df_i8)b));
}

/// internal.h's df_exp_approx on eight lanes: the same operations in the same order (the clamp
/// keeps NaN; rint as adding and subtracting 1.5 * 2^23, exact round-to-nearest-even here).
static inline __attribute__((always_inline)) df_f8 df_exp8(df_f8 x) {
    x = df_select8(x < df_splat8(-87.3f), df_splat8(-87.3f), df_select8(x > df_splat8(88.0f), df_splat8(88.0f), x));
    df_f8 fx = x * 1.44269504088896341f;
    fx = (fx + 12582912.0f) - 12582912.0f;
    df_f8 r = x - fx * 0.693359375f;
    r = r - fx * -2.12194440e-4f;
    df_f8 y = df_splat8(1.9875691500e-4f);
    y = y * r + 1.3981999507e-3f;
    y = y * r + 8.3334519073e-3f;
    y = y * r + 4.1665795894e-2f;
    y = y * r + 1.6666665459e-1f;
    y = y * r + 5.0000001201e-1f;
    y = y * r * r + r + 1.0f;
    df_i8 n = __builtin_convertvector(fx, df_i8);
    return y * (df_f8)((n + 127) << 23);
}

static inline __attribute__((always_inline)) df_f8 df_silu8(df_f8 v) { return v / (1.0f + df_exp8(-v)); }

/// g * silu'(x * sc + sh), as channels.c's df_bn_dz, on eight lanes.
static inline __attribute__((always_inline)) df_f8 df_bdz8(df_f8 g, df_f8 x, df_f8 sc, df_f8 sh) {
    df_f8 v = x * sc + sh;
    df_f8 s = 1.0f / (1.0f + df_exp8(-v));
    df_f8 d = s * (1.0f + v * (1.0f - s));
    return g * d;
}

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

// MARK: - Statistics

static inline __attribute__((always_inline)) void df_blocked_sums_items(
    const float *z, const uint16_t *zh, int C, int HW, int B, int i0, int i1, const float *mean, double *out,
    const int half) {
    int CB = C / B;
    for (int it = i0; it < i1; it++) {
        int n = it / CB, cb = it % CB;
        size_t base = (size_t)it * HW * B;
        for (int j0 = 0; j0 < B; j0 += 8) {
            df_f8 m = mean ? df_ld8(mean + cb * B + j0) : df_splat8(0);
            double tot[8] = {0, 0, 0, 0, 0, 0, 0, 0};
            for (int p0 = 0; p0 < HW; p0 += DF_BTILE) {
                int len = HW - p0 < DF_BTILE ? HW - p0 : DF_BTILE;
                df_f8 acc = df_splat8(0);
                for (int t = 0; t < len; t++) {
                    df_f8 v = df_ldz8(z, zh, base + (size_t)(p0 + t) * B + j0, half);
                    if (mean) { df_f8 d = v - m; acc += d * d; }
                    else acc += v;
                }
                for (int j = 0; j < 8; j++) tot[j] += acc[j];
            }
            for (int j = 0; j < 8; j++) out[(size_t)n * C + cb * B + j0 + j] = tot[j];
        }
    }
}

static inline __attribute__((always_inline)) void df_blocked_sums_body(
    const float *z, const uint16_t *zh, int N, int C, int HW, int B, int i0, int i1, const float *mean, double *out) {
    (void)N;
    if (zh) df_blocked_sums_items(z, zh, C, HW, B, i0, i1, mean, out, 1);
    else df_blocked_sums_items(z, zh, C, HW, B, i0, i1, mean, out, 0);
}
DF_VARIANTS(df_blocked_sums,
            (const float *z, const uint16_t *zh, int N, int C, int HW, int B, int i0, int i1, const float *mean, double *out),
            (z, zh, N, C, HW, B, i0, i1, mean, out))

// MARK: - Affine (+ SiLU) into NCHW

static inline __attribute__((always_inline)) void df_blocked_affine_items(
    const float *z, const uint16_t *zh, int C, int HW, int B, int i0, int i1, const float *scale, const float *shift,
    float *out, const int silu, const int half) {
    int CB = C / B;
    for (int it = i0; it < i1; it++) {
        int n = it / CB, cb = it % CB;
        size_t base = (size_t)it * HW * B;
        for (int j0 = 0; j0 < B; j0 += 8) {
            df_f8 sc = df_ld8(scale + cb * B + j0), sh = df_ld8(shift + cb * B + j0);
            float *planes = out + ((size_t)n * C + cb * B + j0) * HW;
            int p = 0;
            for (; p + 8 <= HW; p += 8) {
                df_f8 r[8];
                for (int t = 0; t < 8; t++) {
                    df_f8 v = df_ldz8(z, zh, base + (size_t)(p + t) * B + j0, half) * sc + sh;
                    r[t] = silu ? df_silu8(v) : v;
                }
                df_transpose8(r);
                for (int j = 0; j < 8; j++) df_st8(planes + (size_t)j * HW + p, r[j]);
            }
            for (; p < HW; p++) {
                df_f8 v = df_ldz8(z, zh, base + (size_t)p * B + j0, half) * sc + sh;
                if (silu) v = df_silu8(v);
                for (int j = 0; j < 8; j++) planes[(size_t)j * HW + p] = v[j];
            }
        }
    }
}

static inline __attribute__((always_inline)) void df_blocked_affine_body(
    const float *z, const uint16_t *zh, int N, int C, int HW, int B, int i0, int i1, const float *scale, const float *shift,
    float *out, int silu) {
    (void)N;
    if (zh) {
        if (silu) df_blocked_affine_items(z, zh, C, HW, B, i0, i1, scale, shift, out, 1, 1);
        else df_blocked_affine_items(z, zh, C, HW, B, i0, i1, scale, shift, out, 0, 1);
    } else {
        if (silu) df_blocked_affine_items(z, zh, C, HW, B, i0, i1, scale, shift, out, 1, 0);
        else df_blocked_affine_items(z, zh, C, HW, B, i0, i1, scale, shift, out, 0, 0);
    }
}
DF_VARIANTS(df_blocked_affine,
            (const float *z, const uint16_t *zh, int N, int C, int HW, int B, int i0, int i1, const float *scale,
             const float *shift, float *out, int silu),
            (z, zh, N, C, HW, B, i0, i1, scale, shift, out, silu))

// MARK: - Affine (+ SiLU) in the blocked layout

static inline __attribute__((always_inline)) void df_blocked_affine_laid_items(
    const float *z, const uint16_t *zh, int C, int HW, int B, int i0, int i1, const float *scale, const float *shift,
    float *out, uint16_t *outh, const int silu, const int half, const int toHalf) {
    int CB = C / B;
    for (int it = i0; it < i1; it++) {
        int cb = it % CB;
        size_t base = (size_t)it * HW * B;
        for (int j0 = 0; j0 < B; j0 += 8) {
            df_f8 sc = df_ld8(scale + cb * B + j0), sh = df_ld8(shift + cb * B + j0);
            for (int p = 0; p < HW; p++) {
                size_t k = base + (size_t)p * B + j0;
                df_f8 v = df_ldz8(z, zh, k, half) * sc + sh;
                if (silu) v = df_silu8(v);
                if (toHalf) for (int j = 0; j < 8; j++) outh[k + j] = df_bf16_bits(v[j]);
                else df_st8(out + k, v);
            }
        }
    }
}

static inline __attribute__((always_inline)) void df_blocked_affine_laid_body(
    const float *z, const uint16_t *zh, int N, int C, int HW, int B, int i0, int i1, const float *scale, const float *shift,
    int silu, float *out, uint16_t *outh) {
    (void)N;
#define DF_AFFINE_LAID(s, h, t) df_blocked_affine_laid_items(z, zh, C, HW, B, i0, i1, scale, shift, out, outh, s, h, t)
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

/// One pixel's step of the gradient sums: dz stored (blocked), the Float32 tile sums updated.
static inline __attribute__((always_inline)) void df_grad_pixel(df_f8 gv, df_f8 x, df_f8 m, df_f8 sc, df_f8 sh, float *dzp,
                                                                df_f8 *a, df_f8 *b, const int fused) {
    df_f8 d = fused ? df_bdz8(gv, x, sc, sh) : gv;
    df_st8(dzp, d);
    *a += d;
    *b += d * (x - m);
}

static inline __attribute__((always_inline)) void df_blocked_grad_sums_items(
    const float *z, const uint16_t *zh, const float *g, const float *mean, const float *scale, const float *shift,
    int C, int HW, int B, int i0, int i1, float *dz, double *sum_g, double *sum_gx, const int fused, const int half) {
    int CB = C / B;
    for (int it = i0; it < i1; it++) {
        int n = it / CB, cb = it % CB;
        size_t base = (size_t)it * HW * B;
        for (int j0 = 0; j0 < B; j0 += 8) {
            int c0 = cb * B + j0;
            df_f8 m = df_ld8(mean + c0);
            df_f8 sc = fused ? df_ld8(scale + c0) : df_splat8(0), sh = fused ? df_ld8(shift + c0) : df_splat8(0);
            const float *planes = g + ((size_t)n * C + c0) * HW;
            double sg[8] = {0, 0, 0, 0, 0, 0, 0, 0}, sgx[8] = {0, 0, 0, 0, 0, 0, 0, 0};
            for (int p0 = 0; p0 < HW; p0 += DF_BTILE) {
                int end = HW - p0 < DF_BTILE ? HW : p0 + DF_BTILE;
                df_f8 a = df_splat8(0), b = df_splat8(0);
                int p = p0;
                for (; p + 8 <= end; p += 8) {
                    df_f8 r[8];
                    for (int j = 0; j < 8; j++) r[j] = df_ld8(planes + (size_t)j * HW + p);
                    df_transpose8(r);
                    for (int t = 0; t < 8; t++) {
                        size_t k = base + (size_t)(p + t) * B + j0;
                        df_grad_pixel(r[t], df_ldz8(z, zh, k, half), m, sc, sh, dz + k, &a, &b, fused);
                    }
                }
                for (; p < end; p++) {
                    df_f8 gv;
                    for (int j = 0; j < 8; j++) gv[j] = planes[(size_t)j * HW + p];
                    size_t k = base + (size_t)p * B + j0;
                    df_grad_pixel(gv, df_ldz8(z, zh, k, half), m, sc, sh, dz + k, &a, &b, fused);
                }
                for (int j = 0; j < 8; j++) { sg[j] += a[j]; sgx[j] += b[j]; }
            }
            for (int j = 0; j < 8; j++) {
                sum_g[(size_t)n * C + c0 + j] = sg[j];
                sum_gx[(size_t)n * C + c0 + j] = sgx[j];
            }
        }
    }
}

static inline __attribute__((always_inline)) void df_blocked_grad_sums_body(
    const float *z, const uint16_t *zh, const float *g, const float *mean, const float *scale, const float *shift,
    int N, int C, int HW, int B, int i0, int i1, float *dz, double *sum_g, double *sum_gx) {
    (void)N;
    int fused = scale && shift;
    if (zh) {
        if (fused) df_blocked_grad_sums_items(z, zh, g, mean, scale, shift, C, HW, B, i0, i1, dz, sum_g, sum_gx, 1, 1);
        else df_blocked_grad_sums_items(z, zh, g, mean, scale, shift, C, HW, B, i0, i1, dz, sum_g, sum_gx, 0, 1);
    } else {
        if (fused) df_blocked_grad_sums_items(z, zh, g, mean, scale, shift, C, HW, B, i0, i1, dz, sum_g, sum_gx, 1, 0);
        else df_blocked_grad_sums_items(z, zh, g, mean, scale, shift, C, HW, B, i0, i1, dz, sum_g, sum_gx, 0, 0);
    }
}
DF_VARIANTS(df_blocked_grad_sums,
            (const float *z, const uint16_t *zh, const float *g, const float *mean, const float *scale, const float *shift,
             int N, int C, int HW, int B, int i0, int i1, float *dz, double *sum_g, double *sum_gx),
            (z, zh, g, mean, scale, shift, N, C, HW, B, i0, i1, dz, sum_g, sum_gx))

// MARK: - Input gradient, blocked

static inline __attribute__((always_inline)) void df_blocked_axpby_items(
    float *dz, const float *z, const uint16_t *zh, int C, int HW, int B, int i0, int i1, const float *ca,
    const float *cbv, const float *cc, uint16_t *outh, const int toHalf, const int half) {
    int CB = C / B;
    for (int it = i0; it < i1; it++) {
        int cb = it % CB;
        size_t base = (size_t)it * HW * B;
        for (int j0 = 0; j0 < B; j0 += 8) {
            int c0 = cb * B + j0;
            df_f8 a = df_ld8(ca + c0), b = df_ld8(cbv + c0), k0 = df_ld8(cc + c0);
            for (int p = 0; p < HW; p++) {
                size_t k = base + (size_t)p * B + j0;
                df_f8 v = a * df_ld8(dz + k) + b * df_ldz8(z, zh, k, half) + k0;
                if (toHalf) {
                    for (int j = 0; j < 8; j++) outh[k + j] = df_bf16_bits(v[j]);
                } else {
                    df_st8(dz + k, v);
                }
            }
        }
    }
}

static inline __attribute__((always_inline)) void df_blocked_axpby_body(
    float *dz, const float *z, const uint16_t *zh, int N, int C, int HW, int B, int i0, int i1, const float *ca,
    const float *cb, const float *cc, uint16_t *outh) {
    (void)N;
    if (zh) {
        if (outh) df_blocked_axpby_items(dz, z, zh, C, HW, B, i0, i1, ca, cb, cc, outh, 1, 1);
        else df_blocked_axpby_items(dz, z, zh, C, HW, B, i0, i1, ca, cb, cc, outh, 0, 1);
    } else {
        if (outh) df_blocked_axpby_items(dz, z, zh, C, HW, B, i0, i1, ca, cb, cc, outh, 1, 0);
        else df_blocked_axpby_items(dz, z, zh, C, HW, B, i0, i1, ca, cb, cc, outh, 0, 0);
    }
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
