// Exp-based activations (SiLU, sigmoid, exp) and the element-wise loops of the hot path.
#include "CKernels.h"
#include "internal.h"

static inline __attribute__((always_inline)) void df_silu_fwd_body(const float *x, float *y, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] = x[i] / (1.0f + df_exp_approx(-x[i]));
}
DF_VARIANTS(df_silu_fwd, (const float *x, float *y, size_t n), (x, y, n))

static inline __attribute__((always_inline)) void df_silu_bwd_body(const float *x, const float *gy,
                                                                   float *gx, size_t n, int acc) {
    if (acc) {
        for (size_t i = 0; i < n; i++) {
            float s = 1.0f / (1.0f + df_exp_approx(-x[i]));
            gx[i] += gy[i] * (s * (1.0f + x[i] * (1.0f - s)));
        }
    } else {
        for (size_t i = 0; i < n; i++) {
            float s = 1.0f / (1.0f + df_exp_approx(-x[i]));
            gx[i] = gy[i] * (s * (1.0f + x[i] * (1.0f - s)));
        }
    }
}
DF_VARIANTS(df_silu_bwd, (const float *x, const float *gy, float *gx, size_t n, int accumulate),
            (x, gy, gx, n, accumulate))

static inline __attribute__((always_inline)) void df_sigmoid_fwd_body(const float *x, float *y, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] = 1.0f / (1.0f + df_exp_approx(-x[i]));
}
DF_VARIANTS(df_sigmoid_fwd, (const float *x, float *y, size_t n), (x, y, n))

static inline __attribute__((always_inline)) void df_sigmoid_bwd_body(const float *y, const float *gy, float *gx, size_t n) {
    for (size_t i = 0; i < n; i++) gx[i] += gy[i] * y[i] * (1.0f - y[i]);
}
DF_VARIANTS(df_sigmoid_bwd, (const float *y, const float *gy, float *gx, size_t n), (y, gy, gx, n))

static inline __attribute__((always_inline)) void df_exp_fwd_body(const float *x, float *y, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] = df_exp_approx(x[i]);
}
DF_VARIANTS(df_exp_fwd, (const float *x, float *y, size_t n), (x, y, n))

// MARK: - Element-wise

static inline __attribute__((always_inline)) void df_add_into_body(float *dst, const float *src, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] += src[i];
}
DF_VARIANTS(df_add_into, (float *dst, const float *src, size_t n), (dst, src, n))

static inline __attribute__((always_inline)) void df_add_scaled_into_body(float *dst, const float *src, float s, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] += s * src[i];
}
DF_VARIANTS(df_add_scaled_into, (float *dst, const float *src, float s, size_t n), (dst, src, s, n))

static inline __attribute__((always_inline)) void df_scale_body(float *x, float s, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] *= s;
}
DF_VARIANTS(df_scale, (float *x, float s, size_t n), (x, s, n))

static inline __attribute__((always_inline)) void df_add_body(const float *a, const float *b, float *out, size_t n) {
    for (size_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}
DF_VARIANTS(df_add, (const float *a, const float *b, float *out, size_t n), (a, b, out, n))

static inline __attribute__((always_inline)) void df_sub_body(const float *a, const float *b, float *out, size_t n) {
    for (size_t i = 0; i < n; i++) out[i] = a[i] - b[i];
}
DF_VARIANTS(df_sub, (const float *a, const float *b, float *out, size_t n), (a, b, out, n))

static inline __attribute__((always_inline)) void df_mul_body(const float *a, const float *b, float *out, size_t n) {
    for (size_t i = 0; i < n; i++) out[i] = a[i] * b[i];
}
DF_VARIANTS(df_mul, (const float *a, const float *b, float *out, size_t n), (a, b, out, n))

/// Sum of squares in 16 float lanes (a fixed order on every level), added up in double.
static inline __attribute__((always_inline)) void df_sum_squares_body(const float *x, size_t n, double *out) {
    float acc[16] = {0};
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (int j = 0; j < 16; j++) acc[j] += x[i + j] * x[i + j];
    double s = 0;
    for (int j = 0; j < 16; j++) s += acc[j];
    for (; i < n; i++) s += (double)x[i] * x[i];
    *out = s;
}
DF_VARIANTS(df_sum_squares, (const float *x, size_t n, double *out), (x, n, out))

static inline __attribute__((always_inline)) void df_all_finite_body(const float *x, size_t n, int *out) {
    uint32_t bad = 0;
    for (size_t i = 0; i < n; i++) bad |= ((df_f2u(x[i]) & 0x7F800000u) == 0x7F800000u);
    *out = bad == 0;
}
DF_VARIANTS(df_all_finite, (const float *x, size_t n, int *out), (x, n, out))
