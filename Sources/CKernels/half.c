// IEEE binary16 conversion: a portable bit-exact implementation and an F16C path chosen at run time.
#include "CKernels.h"
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define DF_X86 1
#endif

static int g_force_portable = 0;

void df_force_portable(int on) { g_force_portable = on; }

int df_cpu_has_f16c(void) {
#ifdef DF_X86
    __builtin_cpu_init();
    return __builtin_cpu_supports("f16c") && __builtin_cpu_supports("avx");
#else
    return 0;
#endif
}

int df_cpu_has_avx2_fma(void) {
#ifdef DF_X86
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return 0;
#endif
}

int df_use_avx2(void) { return !g_force_portable && df_cpu_has_avx2_fma(); }
static int use_f16c(void) { return !g_force_portable && df_cpu_has_f16c(); }

static inline uint32_t f2u(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline float u2f(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

uint16_t df_f32_to_f16_1(float x) {
    uint32_t u = f2u(x);
    uint32_t sign = (u >> 16) & 0x8000u;
    uint32_t ax = u & 0x7FFFFFFFu;
    if (ax >= 0x7F800000u) {                     // inf or NaN
        if (ax > 0x7F800000u) return (uint16_t)(sign | 0x7E00u | ((ax >> 13) & 0x3FFu));
        return (uint16_t)(sign | 0x7C00u);
    }
    if (ax >= 0x477FF000u) return (uint16_t)(sign | 0x7C00u);   // >= 65520 rounds to inf
    if (ax < 0x38800000u) {                      // below 2^-14: half subnormal or zero
        if (ax <= 0x33000000u) return (uint16_t)sign;           // <= 2^-25 rounds to zero (tie -> even)
        uint32_t e = ax >> 23;
        uint32_t m = (ax & 0x7FFFFFu) | 0x800000u;
        uint32_t shift = 126u - e;               // 14 ... 24
        uint32_t r = m >> shift;
        uint32_t rem = m & ((1u << shift) - 1u);
        uint32_t half = 1u << (shift - 1u);
        if (rem > half || (rem == half && (r & 1u))) r++;
        return (uint16_t)(sign | r);
    }
    uint32_t r = (ax - 0x38000000u) >> 13;       // rebias exponent 127 -> 15
    uint32_t rem = ax & 0x1FFFu;
    if (rem > 0x1000u || (rem == 0x1000u && (r & 1u))) r++;
    return (uint16_t)(sign | r);
}

float df_f16_to_f32_1(uint16_t h) {
    uint32_t sign = ((uint32_t)h & 0x8000u) << 16;
    uint32_t e = ((uint32_t)h >> 10) & 0x1Fu;
    uint32_t m = (uint32_t)h & 0x3FFu;
    if (e == 0) {
        if (m == 0) return u2f(sign);
        float v = (float)m * 0x1p-24f;           // exact
        return u2f(sign | f2u(v));
    }
    if (e == 31) {
        if (m == 0) return u2f(sign | 0x7F800000u);
        return u2f(sign | 0x7FC00000u | (m << 13));
    }
    return u2f(sign | ((e + 112u) << 23) | (m << 13));
}

void df_f32_to_f16_portable(const float *src, uint16_t *dst, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = df_f32_to_f16_1(src[i]);
}

void df_f16_to_f32_portable(const uint16_t *src, float *dst, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = df_f16_to_f32_1(src[i]);
}

#ifdef DF_X86
__attribute__((target("avx,f16c")))
static void f32_to_f16_f16c(const float *src, uint16_t *dst, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(src + i);
        __m128i h = _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        _mm_storeu_si128((__m128i *)(dst + i), h);
    }
    if (i < n) {
        float tmp[8] = {0};
        uint16_t out[8];
        memcpy(tmp, src + i, (n - i) * sizeof(float));
        __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(tmp), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        _mm_storeu_si128((__m128i *)out, h);
        memcpy(dst + i, out, (n - i) * sizeof(uint16_t));
    }
}

__attribute__((target("avx,f16c")))
static void f16_to_f32_f16c(const uint16_t *src, float *dst, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m128i h = _mm_loadu_si128((const __m128i *)(src + i));
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(h));
    }
    if (i < n) {
        uint16_t tmp[8] = {0};
        float out[8];
        memcpy(tmp, src + i, (n - i) * sizeof(uint16_t));
        _mm256_storeu_ps(out, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)tmp)));
        memcpy(dst + i, out, (n - i) * sizeof(float));
    }
}

__attribute__((target("avx,f16c")))
static void round_f16_f16c(float *x, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i);
        __m128i h = _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        _mm256_storeu_ps(x + i, _mm256_cvtph_ps(h));
    }
    for (; i < n; i++) x[i] = df_f16_to_f32_1(df_f32_to_f16_1(x[i]));
}
#endif

int df_f32_to_f16_f16c(const float *src, uint16_t *dst, size_t n) {
#ifdef DF_X86
    if (!df_cpu_has_f16c()) return 0;
    f32_to_f16_f16c(src, dst, n);
    return 1;
#else
    (void)src; (void)dst; (void)n;
    return 0;
#endif
}

int df_f16_to_f32_f16c(const uint16_t *src, float *dst, size_t n) {
#ifdef DF_X86
    if (!df_cpu_has_f16c()) return 0;
    f16_to_f32_f16c(src, dst, n);
    return 1;
#else
    (void)src; (void)dst; (void)n;
    return 0;
#endif
}

void df_f32_to_f16(const float *src, uint16_t *dst, size_t n) {
#ifdef DF_X86
    if (use_f16c()) { f32_to_f16_f16c(src, dst, n); return; }
#endif
    df_f32_to_f16_portable(src, dst, n);
}

void df_f16_to_f32(const uint16_t *src, float *dst, size_t n) {
#ifdef DF_X86
    if (use_f16c()) { f16_to_f32_f16c(src, dst, n); return; }
#endif
    df_f16_to_f32_portable(src, dst, n);
}

void df_round_f16(float *x, size_t n) {
#ifdef DF_X86
    if (use_f16c()) { round_f16_f16c(x, n); return; }
#endif
    for (size_t i = 0; i < n; i++) x[i] = df_f16_to_f32_1(df_f32_to_f16_1(x[i]));
}
