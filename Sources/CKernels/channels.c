// Per-channel loops over NCHW tensors for batch norm (moments, gradient sums, affine + SiLU).
#include "CKernels.h"
#include "internal.h"

/// Eight float lanes (GCC/clang vector extension): lane j of a running sum takes elements j, j + 8,
/// j + 16, ... in order, the same order on every kernel level.
typedef float df_v8 __attribute__((vector_size(32)));

static inline __attribute__((always_inline)) df_v8 df_load8(const float *p) {
    df_v8 v;
    memcpy(&v, p, sizeof v);
    return v;
}

/// Sum of a plane in 8 independent float lanes, then in double.
static inline __attribute__((always_inline)) double plane_sum(const float *p, int n) {
    df_v8 acc = {0, 0, 0, 0, 0, 0, 0, 0};
    int i = 0;
    for (; i + 8 <= n; i += 8) acc += df_load8(p + i);
    double s = 0;
    for (int j = 0; j < 8; j++) s += acc[j];
    for (; i < n; i++) s += p[i];
    return s;
}

static inline __attribute__((always_inline)) double plane_sq_dev(const float *p, int n, float m) {
    df_v8 acc = {0, 0, 0, 0, 0, 0, 0, 0}, mv = {m, m, m, m, m, m, m, m};
    int i = 0;
    for (; i + 8 <= n; i += 8) { df_v8 d = df_load8(p + i) - mv; acc += d * d; }
    double s = 0;
    for (int j = 0; j < 8; j++) s += acc[j];
    for (; i < n; i++) { double d = p[i] - m; s += d * d; }
    return s;
}

static inline __attribute__((always_inline)) void df_channel_moments_body(
    const float *x, int N, int C, int HW, int c0, int c1, float *mean, float *var) {
    double cnt = (double)N * (double)HW;
    for (int c = c0; c < c1; c++) {
        double s = 0;
        for (int n = 0; n < N; n++) s += plane_sum(x + ((size_t)n * C + c) * HW, HW);
        float m = (float)(s / cnt);
        double v = 0;
        for (int n = 0; n < N; n++) v += plane_sq_dev(x + ((size_t)n * C + c) * HW, HW, m);
        mean[c] = m;
        var[c] = (float)(v / cnt);
    }
}
DF_VARIANTS(df_channel_moments,
                (const float *x, int N, int C, int HW, int c0, int c1, float *mean, float *var),
                (x, N, C, HW, c0, c1, mean, var))

/// The gradient at the batch-norm output when the layer is fused with SiLU: g * silu'(x * scale +
/// shift), recomputed from the saved input. One statement per rounding, so the fused and unfused
/// paths round identically.
static inline __attribute__((always_inline)) float df_bn_dz(float g, float x, float sc, float sh) {
    float v = x * sc + sh;
    float s = 1.0f / (1.0f + df_exp_approx(-v));
    float d = s * (1.0f + v * (1.0f - s));
    return g * d;
}

enum { DF_TILE = 512 };

/// Elements [i, i + len) of a plane of x as Float32: in place, or widened from bfloat16 words (xh,
/// when given) into `buf` (exact).
static inline __attribute__((always_inline)) const float *df_x_tile(const float *xp, const uint16_t *xhp, int i,
                                                                    int len, float *buf) {
    if (!xhp) return xp + i;
    for (int t = 0; t < len; t++) buf[t] = df_u2f((uint32_t)xhp[i + t] << 16);
    return buf;
}

static inline __attribute__((always_inline)) void df_channel_grad_sums_body(
    const float *x, const uint16_t *xh, float *g, const float *mean, const float *scale,
    const float *shift, int N, int C, int HW, int c0, int c1, float *sum_g, float *sum_gx) {
    float xbuf[DF_TILE], dz[DF_TILE];
    for (int c = c0; c < c1; c++) {
        double sg = 0, sgx = 0;
        float m = mean[c];
        float sc = scale ? scale[c] : 0.0f, sh = shift ? shift[c] : 0.0f;
        df_v8 mv = {m, m, m, m, m, m, m, m};
        for (int n = 0; n < N; n++) {
            size_t off = ((size_t)n * C + c) * HW;
            const float *xp = xh ? NULL : x + off;
            const uint16_t *xhp = xh ? xh + off : NULL;
            float *gp = g + off;
            df_v8 a = {0, 0, 0, 0, 0, 0, 0, 0}, b = {0, 0, 0, 0, 0, 0, 0, 0};
            int full = HW & ~7, i = 0;
            // A tile at a time (L1-sized): with SiLU, dz into a buffer (a plain loop, vectorised at
            // full width) and stored over g; the sums in 8 lanes, in the same order on every path.
            for (; i < full; i += DF_TILE) {
                int len = full - i < DF_TILE ? full - i : DF_TILE;
                const float *xt = df_x_tile(xp, xhp, i, len, xbuf);
                const float *d8 = gp + i;
                if (scale) {
                    for (int t = 0; t < len; t++) dz[t] = df_bn_dz(gp[i + t], xt[t], sc, sh);
                    d8 = dz;
                }
                for (int t = 0; t < len; t += 8) {
                    df_v8 d = df_load8(d8 + t);
                    a += d;
                    b += d * (df_load8(xt + t) - mv);
                }
                if (scale) memcpy(gp + i, dz, (size_t)len * sizeof(float));
            }
            i = full;
            for (int j = 0; j < 8; j++) { sg += a[j]; sgx += b[j]; }
            for (; i < HW; i++) {
                float xv = xhp ? df_u2f((uint32_t)xhp[i] << 16) : xp[i];
                float d = scale ? df_bn_dz(gp[i], xv, sc, sh) : gp[i];
                sg += d;
                sgx += (double)d * (xv - m);
                if (scale) gp[i] = d;
            }
        }
        sum_g[c] = (float)sg;
        sum_gx[c] = (float)sgx;
    }
}
DF_VARIANTS(df_channel_grad_sums,
                (const float *x, const uint16_t *xh, float *g, const float *mean, const float *scale,
                 const float *shift, int N, int C, int HW, int c0, int c1, float *sum_g, float *sum_gx),
                (x, xh, g, mean, scale, shift, N, C, HW, c0, c1, sum_g, sum_gx))

static inline __attribute__((always_inline)) void df_channel_affine_body(
    const float *x, int N, int C, int HW, int c0, int c1, const float *scale, const float *shift,
    float *z, float *a, int silu) {
    for (int n = 0; n < N; n++)
        for (int c = c0; c < c1; c++) {
            size_t off = ((size_t)n * C + c) * HW;
            const float *xp = x + off;
            float sc = scale[c], sh = shift[c];
            if (!silu) {
                float *zp = z + off;
                for (int i = 0; i < HW; i++) zp[i] = xp[i] * sc + sh;
            } else if (z) {
                float *zp = z + off, *ap = a + off;
                for (int i = 0; i < HW; i++) {
                    float v = xp[i] * sc + sh;
                    zp[i] = v;
                    ap[i] = v / (1.0f + df_exp_approx(-v));
                }
            } else {
                float *ap = a + off;
                for (int i = 0; i < HW; i++) {
                    float v = xp[i] * sc + sh;
                    ap[i] = v / (1.0f + df_exp_approx(-v));
                }
            }
        }
}
DF_VARIANTS(df_channel_affine,
                (const float *x, int N, int C, int HW, int c0, int c1, const float *scale,
                 const float *shift, float *z, float *a, int silu),
                (x, N, C, HW, c0, c1, scale, shift, z, a, silu))

static inline __attribute__((always_inline)) void df_channel_axpby_body(
    const float *g, const float *x, const uint16_t *xh, int N, int C, int HW, int c0, int c1,
    const float *ca, const float *cb, const float *cc, float *out, int accumulate) {
    float xbuf[DF_TILE];
    for (int n = 0; n < N; n++)
        for (int c = c0; c < c1; c++) {
            size_t off = ((size_t)n * C + c) * HW;
            const float *gp = g + off, *xp = xh ? NULL : x + off;
            const uint16_t *xhp = xh ? xh + off : NULL;
            float *op = out + off;
            float a = ca[c], b = cb[c], k = cc[c];
            for (int i = 0; i < HW; i += DF_TILE) {
                int len = HW - i < DF_TILE ? HW - i : DF_TILE;
                const float *xt = df_x_tile(xp, xhp, i, len, xbuf);
                const float *gt = gp + i;
                float *ot = op + i;
                if (accumulate) for (int t = 0; t < len; t++) ot[t] += a * gt[t] + b * xt[t] + k;
                else for (int t = 0; t < len; t++) ot[t] = a * gt[t] + b * xt[t] + k;
            }
        }
}
DF_VARIANTS(df_channel_axpby,
                (const float *g, const float *x, const uint16_t *xh, int N, int C, int HW, int c0, int c1,
                 const float *ca, const float *cb, const float *cc, float *out, int accumulate),
                (g, x, xh, N, C, HW, c0, c1, ca, cb, cc, out, accumulate))

static inline __attribute__((always_inline)) void df_channel_sums_body(
    const float *x, int N, int C, int HW, int c0, int c1, float *sum) {
    for (int c = c0; c < c1; c++) {
        double s = 0;
        for (int n = 0; n < N; n++) s += plane_sum(x + ((size_t)n * C + c) * HW, HW);
        sum[c] += (float)s;
    }
}
DF_VARIANTS(df_channel_sums, (const float *x, int N, int C, int HW, int c0, int c1, float *sum),
            (x, N, C, HW, c0, c1, sum))

static inline __attribute__((always_inline)) void df_channel_bias_silu_body(
    float *y, int N, int C, int HW, int c0, int c1, const float *bias, int silu) {
    for (int n = 0; n < N; n++)
        for (int c = c0; c < c1; c++) {
            float *p = y + ((size_t)n * C + c) * HW;
            float b = bias ? bias[c] : 0.0f;
            if (silu) for (int i = 0; i < HW; i++) { float v = p[i] + b; p[i] = v / (1.0f + df_exp_approx(-v)); }
            else for (int i = 0; i < HW; i++) p[i] += b;
        }
}
DF_VARIANTS(df_channel_bias_silu, (float *y, int N, int C, int HW, int c0, int c1, const float *bias, int silu),
            (y, N, C, HW, c0, c1, bias, silu))
