// Exp-based activations: SiLU and sigmoid forward, SiLU backward.
#include "CKernels.h"
#include "internal.h"

static inline __attribute__((always_inline)) void df_silu_fwd_body(const float *x, float *y, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] = x[i] / (1.0f + df_exp_approx(-x[i]));
}
DF_MULTIVERSION(df_silu_fwd, (const float *x, float *y, size_t n), (x, y, n))

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
DF_MULTIVERSION(df_silu_bwd, (const float *x, const float *gy, float *gx, size_t n, int acc),
                (x, gy, gx, n, acc))

static inline __attribute__((always_inline)) void df_sigmoid_fwd_body(const float *x, float *y, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] = 1.0f / (1.0f + df_exp_approx(-x[i]));
}
DF_MULTIVERSION(df_sigmoid_fwd, (const float *x, float *y, size_t n), (x, y, n))

static inline __attribute__((always_inline)) void df_exp_fwd_body(const float *x, float *y, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] = df_exp_approx(x[i]);
}
DF_MULTIVERSION(df_exp_fwd, (const float *x, float *y, size_t n), (x, y, n))
