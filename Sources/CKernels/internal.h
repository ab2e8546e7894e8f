// Shared between the CKernels translation units; not part of the public header.
#ifndef DUALFUSE_CKERNELS_INTERNAL_H
#define DUALFUSE_CKERNELS_INTERNAL_H
#include <string.h>
#include <stdint.h>
#include <math.h>

/// 1 when the AVX2 + FMA paths may run (CPU has them and they are not forced off).
int df_use_avx2(void);

/// Compiles `body` twice: once for the default target and once for AVX2 + FMA, and defines
/// `name` to pick one at run time. The body is an always-inline function, so clang vectorises
/// each copy for its own target.
#if defined(__x86_64__)
#define DF_MULTIVERSION(name, params, args)                                       \
    __attribute__((target("avx2,fma"))) static void name##_avx2 params {          \
        name##_body args;                                                        \
    }                                                                            \
    static void name##_base params { name##_body args; }                         \
    void name params {                                                           \
        if (df_use_avx2()) name##_avx2 args; else name##_base args;              \
    }
#else
#define DF_MULTIVERSION(name, params, args) \
    void name params { name##_body args; }
#endif

static inline uint32_t df_f2u(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline float df_u2f(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

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
#endif
