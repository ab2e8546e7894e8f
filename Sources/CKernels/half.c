// IEEE binary16 and bfloat16 conversions: bit-exact portable loops and SIMD twins.
#include "CKernels.h"
#include "internal.h"

uint16_t df_f32_to_f16_1(float x) {
    uint32_t u = df_f2u(x);
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
        if (m == 0) return df_u2f(sign);
        float v = (float)m * 0x1p-24f;           // exact
        return df_u2f(sign | df_f2u(v));
    }
    if (e == 31) {
        if (m == 0) return df_u2f(sign | 0x7F800000u);
        return df_u2f(sign | 0x7FC00000u | (m << 13));
    }
    return df_u2f(sign | ((e + 112u) << 23) | (m << 13));
}

uint16_t df_f32_to_bf16_1(float x) { return df_bf16_bits(x); }

float df_bf16_to_f32_1(uint16_t h) { return df_u2f((uint32_t)h << 16); }

// MARK: - binary16

void df_f32_to_f16_portable(const float *src, uint16_t *dst, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = df_f32_to_f16_1(src[i]);
}
void df_f16_to_f32_portable(const uint16_t *src, float *dst, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = df_f16_to_f32_1(src[i]);
}
void df_round_f16_portable(float *x, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] = df_f16_to_f32_1(df_f32_to_f16_1(x[i]));
}

#ifdef DF_X86
DF_TARGET_AVX2 void df_f32_to_f16_avx2(const float *src, uint16_t *dst, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(dst + i), _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++) dst[i] = df_f32_to_f16_1(src[i]);
}
DF_TARGET_AVX2 void df_f16_to_f32_avx2(const uint16_t *src, float *dst, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
    for (; i < n; i++) dst[i] = df_f16_to_f32_1(src[i]);
}
DF_TARGET_AVX2 void df_round_f16_avx2(float *x, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(x + i, _mm256_cvtph_ps(_mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT)));
    for (; i < n; i++) x[i] = df_f16_to_f32_1(df_f32_to_f16_1(x[i]));
}
DF_TARGET_AVX512 void df_f32_to_f16_avx512(const float *src, uint16_t *dst, size_t n) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm256_storeu_si256((__m256i *)(dst + i), _mm512_cvtps_ph(_mm512_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1u);
        _mm256_mask_storeu_epi16(dst + i, m, _mm512_cvtps_ph(_mm512_maskz_loadu_ps(m, src + i), _MM_FROUND_TO_NEAREST_INT));
    }
}
DF_TARGET_AVX512 void df_f16_to_f32_avx512(const uint16_t *src, float *dst, size_t n) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(dst + i, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(src + i))));
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1u);
        _mm512_mask_storeu_ps(dst + i, m, _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, src + i)));
    }
}
DF_TARGET_AVX512 void df_round_f16_avx512(float *x, size_t n) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(x + i, _mm512_cvtph_ps(_mm512_cvtps_ph(_mm512_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT)));
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1u);
        _mm512_mask_storeu_ps(x + i, m, _mm512_cvtph_ps(_mm512_cvtps_ph(_mm512_maskz_loadu_ps(m, x + i), _MM_FROUND_TO_NEAREST_INT)));
    }
}
#endif

// MARK: - bfloat16 (round to nearest even, subnormals flushed to signed zero, as VCVTNEPS2BF16)

static inline __attribute__((always_inline)) void df_f32_to_bf16_body(const float *src, uint16_t *dst, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = df_f32_to_bf16_1(src[i]);
}
static inline __attribute__((always_inline)) void df_bf16_to_f32_body(const uint16_t *src, float *dst, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = df_u2f((uint32_t)src[i] << 16);
}
static inline __attribute__((always_inline)) void df_round_bf16_body(float *x, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] = df_u2f((uint32_t)df_f32_to_bf16_1(x[i]) << 16);
}
DF_VARIANTS(df_f32_to_bf16, (const float *src, uint16_t *dst, size_t n), (src, dst, n))
DF_VARIANTS(df_bf16_to_f32, (const uint16_t *src, float *dst, size_t n), (src, dst, n))
DF_VARIANTS(df_round_bf16, (float *x, size_t n), (x, n))

#ifdef DF_X86
DF_TARGET_AVX512BF16 void df_f32_to_bf16_avx512bf16(const float *src, uint16_t *dst, size_t n) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256bh h = _mm512_cvtneps_pbh(_mm512_loadu_ps(src + i));
        _mm256_storeu_si256((__m256i *)(dst + i), (__m256i)h);
    }
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1u);
        __m256bh h = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, src + i));
        _mm256_mask_storeu_epi16(dst + i, m, (__m256i)h);
    }
}
DF_TARGET_AVX512BF16 void df_round_bf16_avx512bf16(float *x, size_t n) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256i h = (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(x + i));
        _mm512_storeu_ps(x + i, _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)));
    }
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1u);
        __m256i h = (__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, x + i));
        _mm512_mask_storeu_ps(x + i, m, _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)));
    }
}
#endif
