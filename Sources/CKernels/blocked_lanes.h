// The lane loops of blocked.c for one vector width, included once per width with DF_W defined (8 or
// 16 channels a vector; 16 where the channel block allows it, so AVX-512 runs whole registers).
// Every lane computes the same scalar sequence at either width, so both give the same bits.
// Names get the suffix _w8 or _w16.
#define DF_CAT2(a, b) a##b
#define DF_CAT(a, b) DF_CAT2(a, b)
#if DF_W == 8
#define DF_N(x) DF_CAT(x, _w8)
#else
#define DF_N(x) DF_CAT(x, _w16)
#endif

typedef float DF_N(df_v) __attribute__((vector_size(DF_W * 4)));
typedef int32_t DF_N(df_vi) __attribute__((vector_size(DF_W * 4)));
typedef uint32_t DF_N(df_vu) __attribute__((vector_size(DF_W * 4)));
typedef uint16_t DF_N(df_vh) __attribute__((vector_size(DF_W * 2)));
typedef _Float16 DF_N(df_vf16) __attribute__((vector_size(DF_W * 2)));
#define V DF_N(df_v)
#define VI DF_N(df_vi)
#define VU DF_N(df_vu)
#define VH DF_N(df_vh)

static inline __attribute__((always_inline)) V DF_N(splat)(float v) {
    V r;
    for (int i = 0; i < DF_W; i++) r[i] = v;
    return r;
}

static inline __attribute__((always_inline)) V DF_N(ld)(const float *p) {
    V v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline __attribute__((always_inline)) void DF_N(st)(float *p, V v) { memcpy(p, &v, sizeof v); }

static inline __attribute__((always_inline)) V DF_N(select)(VI mask, V a, V b) {
    return (V)((mask & (VI)a) | (~mask & (VI)b));
}

/// half.c's df_f16_to_f32_1 lane by lane (exact; NaN payload kept, quiet bit set).
static inline __attribute__((always_inline)) V DF_N(widen_f16)(VU h) {
    VU sign = (h & 0x8000u) << 16, e = (h >> 10) & 0x1Fu, m = h & 0x3FFu;
    VU normal = sign | ((e + 112u) << 23) | (m << 13);
    VU zeroM = (VU)(m == 0u), zeroE = (VU)(e == 0u), topE = (VU)(e == 31u);
    VU special = sign | ((zeroM & 0x7F800000u) | (~zeroM & (0x7FC00000u | (m << 13))));
    V sub = __builtin_convertvector(m, V) * 0x1p-24f;
    VU small = sign | (VU)sub;
    VU r = (zeroE & small) | (~zeroE & ((topE & special) | (~topE & normal)));
    return (V)r;
}

/// DF_W values of the blocked tensor from element k, as Float32: `half` 0 Float32, 1 bfloat16
/// words, 2 IEEE half words (widened exactly by integer ops), 3 IEEE half words converted as
/// _Float16 (F16C's vcvtph2ps where the function's target has it: the same values, NaN quieted
/// with its payload kept, as widen_f16). A constant at every call, so each loop compiles once per
/// element type.
static inline __attribute__((always_inline)) V DF_N(ldz)(const float *z, const uint16_t *zh, size_t k, const int half) {
    if (!half) return DF_N(ld)(z + k);
    if (half == 3) {
        DF_N(df_vf16) f;
        memcpy(&f, zh + k, sizeof f);
        return __builtin_convertvector(f, V);
    }
    VH h;
    memcpy(&h, zh + k, sizeof h);
    VU u = __builtin_convertvector(h, VU);
    if (half == 2) return DF_N(widen_f16)(u);
    return (V)(u << 16);
}

/// internal.h's df_exp_approx lane by lane: the same operations in the same order (the clamp keeps
/// NaN; rint as adding and subtracting 1.5 * 2^23, exact round-to-nearest-even in this range).
static inline __attribute__((always_inline)) V DF_N(exp)(V x) {
    x = DF_N(select)(x < DF_N(splat)(-87.3f), DF_N(splat)(-87.3f), DF_N(select)(x > DF_N(splat)(88.0f), DF_N(splat)(88.0f), x));
    V fx = x * 1.44269504088896341f;
    fx = (fx + 12582912.0f) - 12582912.0f;
    V r = x - fx * 0.693359375f;
    r = r - fx * -2.12194440e-4f;
    V y = DF_N(splat)(1.9875691500e-4f);
    y = y * r + 1.3981999507e-3f;
    y = y * r + 8.3334519073e-3f;
    y = y * r + 4.1665795894e-2f;
    y = y * r + 1.6666665459e-1f;
    y = y * r + 5.0000001201e-1f;
    y = y * r * r + r + 1.0f;
    VI n = __builtin_convertvector(fx, VI);
    return y * (V)((n + 127) << 23);
}

static inline __attribute__((always_inline)) V DF_N(silu)(V v) { return v / (1.0f + DF_N(exp)(-v)); }

/// DF_N(exp) of four vectors at once, each step over all four before the next: the same operations
/// on every lane (so the same bits), but four independent chains side by side in the instruction
/// stream. One vector's chain (about 30 dependent operations) is longer than the scheduler can look
/// ahead across loop iterations; interleaved, the SiLU passes run 1.4-1.6x faster (AVX2, Zen 3).
#define DF_FOUR(stmt) for (int k = 0; k < 4; k++) { stmt; }
static inline __attribute__((always_inline)) void DF_N(exp4)(V x[4]) {
    V fx[4], r[4], y[4];
    DF_FOUR(x[k] = DF_N(select)(x[k] < DF_N(splat)(-87.3f), DF_N(splat)(-87.3f),
                                DF_N(select)(x[k] > DF_N(splat)(88.0f), DF_N(splat)(88.0f), x[k])))
    DF_FOUR(fx[k] = x[k] * 1.44269504088896341f)
    DF_FOUR(fx[k] = (fx[k] + 12582912.0f) - 12582912.0f)
    DF_FOUR(r[k] = x[k] - fx[k] * 0.693359375f)
    DF_FOUR(r[k] = r[k] - fx[k] * -2.12194440e-4f)
    DF_FOUR(y[k] = DF_N(splat)(1.9875691500e-4f))
    DF_FOUR(y[k] = y[k] * r[k] + 1.3981999507e-3f)
    DF_FOUR(y[k] = y[k] * r[k] + 8.3334519073e-3f)
    DF_FOUR(y[k] = y[k] * r[k] + 4.1665795894e-2f)
    DF_FOUR(y[k] = y[k] * r[k] + 1.6666665459e-1f)
    DF_FOUR(y[k] = y[k] * r[k] + 5.0000001201e-1f)
    DF_FOUR(y[k] = y[k] * r[k] * r[k] + r[k] + 1.0f)
    DF_FOUR(VI n = __builtin_convertvector(fx[k], VI); x[k] = y[k] * (V)((n + 127) << 23))
}

/// DF_N(silu) of four vectors, in place.
static inline __attribute__((always_inline)) void DF_N(silu4)(V v[4]) {
    V e[4];
    DF_FOUR(e[k] = -v[k])
    DF_N(exp4)(e);
    DF_FOUR(v[k] = v[k] / (1.0f + e[k]))
}

/// g * silu'(x * sc + sh), as channels.c's df_bn_dz.
static inline __attribute__((always_inline)) V DF_N(bdz)(V g, V x, V sc, V sh) {
    V v = x * sc + sh;
    V s = 1.0f / (1.0f + DF_N(exp)(-v));
    V d = s * (1.0f + v * (1.0f - s));
    return g * d;
}

/// DF_N(bdz) of four vectors (g[k] becomes g[k] * silu'(x[k] * sc + sh)).
static inline __attribute__((always_inline)) void DF_N(bdz4)(V g[4], const V x[4], V sc, V sh) {
    V v[4], e[4];
    DF_FOUR(v[k] = x[k] * sc + sh; e[k] = -v[k])
    DF_N(exp4)(e);
    DF_FOUR(V s = 1.0f / (1.0f + e[k]); V d = s * (1.0f + v[k] * (1.0f - s)); g[k] = g[k] * d)
}

/// internal.h's df_bf16_bits lane by lane (round to nearest even, subnormal to signed zero, NaN
/// quieted), stored at p.
static inline __attribute__((always_inline)) void DF_N(stbf16)(uint16_t *p, V v) {
    VU u = (VU)v, ax = u & 0x7FFFFFFFu;
    VU r = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
    VU nan = (VU)(ax > 0x7F800000u), sub = (VU)((ax & 0x7F800000u) == 0);
    r = (nan & ((u >> 16) | 0x0040u)) | (~nan & r);
    r = (sub & ((u >> 16) & 0x8000u)) | (~sub & r);
    VH h = __builtin_convertvector(r, VH);
    memcpy(p, &h, sizeof h);
}

/// v rounded to bfloat16 values, kept as Float32 (the values DF_N(stbf16) stores, widened).
static inline __attribute__((always_inline)) V DF_N(rndbf16)(V v) {
    VU u = (VU)v, ax = u & 0x7FFFFFFFu;
    VU r = (u + 0x7FFFu + ((u >> 16) & 1u)) & 0xFFFF0000u;
    VU nan = (VU)(ax > 0x7F800000u), sub = (VU)((ax & 0x7F800000u) == 0);
    r = (nan & ((u & 0xFFFF0000u) | 0x00400000u)) | (~nan & r);
    r = (sub & (u & 0x80000000u)) | (~sub & r);
    return (V)r;
}

/// v rounded to IEEE half values, kept as Float32: half.c's df_f16_to_f32_1(df_f32_to_f16_1(x))
/// lane by lane (round to nearest even; past 65504 to inf; half subnormals as multiples of 2^-24,
/// got by adding and subtracting 0.5, whose ulp is 2^-24; NaN quieted, low 13 payload bits cleared).
static inline __attribute__((always_inline)) V DF_N(rndf16)(V v) {
    VU u = (VU)v, sign = u & 0x80000000u, ax = u & 0x7FFFFFFFu;
    VU normal = (ax + 0xFFFu + ((ax >> 13) & 1u)) & 0xFFFFE000u;
    V mag = (V)ax;
    VU small = (VU)((mag + 0.5f) - 0.5f);
    VU nan = (VU)(ax > 0x7F800000u), big = (VU)(ax >= 0x477FF000u), tiny = (VU)(ax < 0x38800000u);
    VU r = (tiny & small) | (~tiny & normal);
    r = (big & 0x7F800000u) | (~big & r);
    r = (nan & ((ax | 0x00400000u) & 0xFFFFE000u)) | (~nan & r);
    return (V)(sign | r);
}

/// The same values by _Float16 conversions (F16C's vcvtps2ph, round to nearest even, and vcvtph2ps
/// where the function's target has it; only the variants with F16C call this).
static inline __attribute__((always_inline)) V DF_N(rndf16_hw)(V v) {
    DF_N(df_vf16) h = __builtin_convertvector(v, DF_N(df_vf16));
    return __builtin_convertvector(h, V);
}

/// Eight lanes h*8 ..< h*8 + 8 of v.
static inline __attribute__((always_inline)) df_f8 DF_N(part)(V v, int h) {
#if DF_W == 8
    (void)h;
    return v;
#else
    return h == 0 ? __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7) : __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
#endif
}

/// The vector of lanes parts[0], parts[1], ... (DF_W / 8 of them).
static inline __attribute__((always_inline)) V DF_N(join)(const df_f8 *parts) {
#if DF_W == 8
    return parts[0];
#else
    return __builtin_shufflevector(parts[0], parts[1], 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
#endif
}

// MARK: Statistics

static inline __attribute__((always_inline)) void DF_N(sums_items)(
    const float *z, const uint16_t *zh, int C, int HW, int B, int i0, int i1, const float *mean, double *out,
    const int half) {
    int CB = C / B;
    for (int it = i0; it < i1; it++) {
        int n = it / CB, cb = it % CB;
        size_t base = (size_t)it * HW * B;
        for (int j0 = 0; j0 < B; j0 += DF_W) {
            V m = mean ? DF_N(ld)(mean + cb * B + j0) : DF_N(splat)(0);
            double tot[DF_W];
            for (int j = 0; j < DF_W; j++) tot[j] = 0;
            for (int p0 = 0; p0 < HW; p0 += DF_BTILE) {
                int len = HW - p0 < DF_BTILE ? HW - p0 : DF_BTILE;
                V acc = DF_N(splat)(0);
                for (int t = 0; t < len; t++) {
                    V v = DF_N(ldz)(z, zh, base + (size_t)(p0 + t) * B + j0, half);
                    if (mean) { V d = v - m; acc += d * d; }
                    else acc += v;
                }
                for (int j = 0; j < DF_W; j++) tot[j] += acc[j];
            }
            for (int j = 0; j < DF_W; j++) out[(size_t)n * C + cb * B + j0 + j] = tot[j];
        }
    }
}

// MARK: Affine (+ SiLU) into NCHW

static inline __attribute__((always_inline)) void DF_N(affine_items)(
    const float *z, const uint16_t *zh, int C, int HW, int B, int i0, int i1, const float *scale, const float *shift,
    float *out, uint16_t *outh, float *outl, const int silu, const int half) {
    int CB = C / B;
    for (int it = i0; it < i1; it++) {
        int n = it / CB, cb = it % CB;
        size_t base = (size_t)it * HW * B;
        for (int j0 = 0; j0 < B; j0 += DF_W) {
            V sc = DF_N(ld)(scale + cb * B + j0), sh = DF_N(ld)(shift + cb * B + j0);
            float *planes = out ? out + ((size_t)n * C + cb * B + j0) * HW : NULL;
            int p = 0;
            for (; p + 8 <= HW; p += 8) {
                V r[8];
                for (int t = 0; t < 8; t++) r[t] = DF_N(ldz)(z, zh, base + (size_t)(p + t) * B + j0, half) * sc + sh;
                if (silu) { DF_N(silu4)(r); DF_N(silu4)(r + 4); }
                if (outh) for (int t = 0; t < 8; t++) DF_N(stbf16)(outh + base + (size_t)(p + t) * B + j0, r[t]);
                if (outl) for (int t = 0; t < 8; t++) DF_N(st)(outl + base + (size_t)(p + t) * B + j0, r[t]);
                if (planes) for (int h = 0; h < DF_W / 8; h++) {
                    df_f8 q[8];
                    for (int t = 0; t < 8; t++) q[t] = DF_N(part)(r[t], h);
                    df_transpose8(q);
                    for (int j = 0; j < 8; j++) df_st8(planes + (size_t)(h * 8 + j) * HW + p, q[j]);
                }
            }
            for (; p < HW; p++) {
                V v = DF_N(ldz)(z, zh, base + (size_t)p * B + j0, half) * sc + sh;
                if (silu) v = DF_N(silu)(v);
                if (outh) DF_N(stbf16)(outh + base + (size_t)p * B + j0, v);
                if (outl) DF_N(st)(outl + base + (size_t)p * B + j0, v);
                if (planes) for (int j = 0; j < DF_W; j++) planes[(size_t)j * HW + p] = v[j];
            }
        }
    }
}

// MARK: Affine (+ SiLU) in the blocked layout

/// Stores v at element k: as bfloat16 words (toHalf), else Float32 assigned or added (accumulate),
/// then rounded to bfloat16 (rnd 1) or IEEE half (rnd 2) values.
static inline __attribute__((always_inline)) void DF_N(laid_store)(float *out, uint16_t *outh, size_t k, V v, const int accumulate,
                                                                   const int toHalf, int rnd, const int hw) {
    if (toHalf) { DF_N(stbf16)(outh + k, v); return; }
    if (accumulate) v = DF_N(ld)(out + k) + v;
    if (rnd == 1) v = DF_N(rndbf16)(v);
    else if (rnd == 2) v = hw ? DF_N(rndf16_hw)(v) : DF_N(rndf16)(v);
    DF_N(st)(out + k, v);
}

static inline __attribute__((always_inline)) void DF_N(affine_laid_items)(
    const float *z, const uint16_t *zh, int C, int HW, int B, int c0, int count, int i0, int i1, const float *scale,
    const float *shift, float *out, uint16_t *outh, int outC, int outC0, const int accumulate, const int silu,
    const int half, const int toHalf, int rnd, const int hw) {
    int CB = C / B, nb = count / B, outCB = outC / B;
    for (int it = i0; it < i1; it++) {
        int n = it / nb, lcb = it % nb;
        size_t base = ((size_t)n * CB + c0 / B + lcb) * HW * B;
        size_t obase = ((size_t)n * outCB + outC0 / B + lcb) * HW * B;
        for (int j0 = 0; j0 < B; j0 += DF_W) {
            int ch = c0 + lcb * B + j0;
            V sc = DF_N(ld)(scale + ch), sh = DF_N(ld)(shift + ch);
            int p = 0;
            if (silu) {
                for (; p + 4 <= HW; p += 4) {
                    V v[4];
                    for (int t = 0; t < 4; t++) v[t] = DF_N(ldz)(z, zh, base + (size_t)(p + t) * B + j0, half) * sc + sh;
                    DF_N(silu4)(v);
                    for (int t = 0; t < 4; t++) DF_N(laid_store)(out, outh, obase + (size_t)(p + t) * B + j0, v[t], accumulate, toHalf, rnd, hw);
                }
            }
            for (; p < HW; p++) {
                size_t k = (size_t)p * B + j0;
                V v = DF_N(ldz)(z, zh, base + k, half) * sc + sh;
                if (silu) v = DF_N(silu)(v);
                DF_N(laid_store)(out, outh, obase + k, v, accumulate, toHalf, rnd, hw);
            }
        }
    }
}

// MARK: Gradient sums from an NCHW (or blocked: glaid) output gradient, read rounded to bfloat16 (gr 1) or half (gr 2) values

static inline __attribute__((always_inline)) void DF_N(grad_pixel)(V gv, V x, V m, V sc, V sh, float *dzp, V *a, V *b,
                                                                   const int fused, int gr, const int hw) {
    if (gr == 1) gv = DF_N(rndbf16)(gv);
    else if (gr == 2) gv = hw ? DF_N(rndf16_hw)(gv) : DF_N(rndf16)(gv);
    V d = fused ? DF_N(bdz)(gv, x, sc, sh) : gv;
    DF_N(st)(dzp, d);
    *a += d;
    *b += d * (x - m);
}

/// DF_N(grad_pixel) of four pixels (in order: the same sums), silu' of the four computed together.
static inline __attribute__((always_inline)) void DF_N(grad_four)(V gv[4], const V x[4], V m, V sc, V sh, float *dz,
                                                                  const size_t ks[4], V *a, V *b, const int fused, int gr,
                                                                  const int hw) {
    if (gr == 1) DF_FOUR(gv[k] = DF_N(rndbf16)(gv[k]))
    else if (gr == 2) DF_FOUR(gv[k] = hw ? DF_N(rndf16_hw)(gv[k]) : DF_N(rndf16)(gv[k]))
    if (fused) DF_N(bdz4)(gv, x, sc, sh);
    for (int t = 0; t < 4; t++) {
        DF_N(st)(dz + ks[t], gv[t]);
        *a += gv[t];
        *b += gv[t] * (x[t] - m);
    }
}

static inline __attribute__((always_inline)) void DF_N(grad_sums_items)(
    const float *z, const uint16_t *zh, const float *g, const float *mean, const float *scale, const float *shift,
    int C, int HW, int B, int i0, int i1, float *dz, double *sum_g, double *sum_gx, const int fused, const int half,
    const int glaid, int gr, const int hw) {
    int CB = C / B;
    for (int it = i0; it < i1; it++) {
        int n = it / CB, cb = it % CB;
        size_t base = (size_t)it * HW * B;
        for (int j0 = 0; j0 < B; j0 += DF_W) {
            int c0 = cb * B + j0;
            V m = DF_N(ld)(mean + c0);
            V sc = fused ? DF_N(ld)(scale + c0) : DF_N(splat)(0), sh = fused ? DF_N(ld)(shift + c0) : DF_N(splat)(0);
            const float *planes = g + ((size_t)n * C + c0) * HW;
            double sg[DF_W], sgx[DF_W];
            for (int j = 0; j < DF_W; j++) { sg[j] = 0; sgx[j] = 0; }
            for (int p0 = 0; p0 < HW; p0 += DF_BTILE) {
                int end = HW - p0 < DF_BTILE ? HW : p0 + DF_BTILE;
                V a = DF_N(splat)(0), b = DF_N(splat)(0);
                int p = p0;
                if (glaid) {
                    // The gradient in the blocked layout too: read where dz is written (may be dz
                    // itself), or (glaid 2) as bfloat16 words.
                    const uint16_t *gw = (const uint16_t *)(const void *)g;
                    for (; p + 4 <= end; p += 4) {
                        V gv[4], x[4];
                        size_t ks[4];
                        for (int t = 0; t < 4; t++) {
                            ks[t] = base + (size_t)(p + t) * B + j0;
                            gv[t] = glaid == 2 ? DF_N(ldz)(NULL, gw, ks[t], 1) : DF_N(ld)(g + ks[t]);
                            x[t] = DF_N(ldz)(z, zh, ks[t], half);
                        }
                        DF_N(grad_four)(gv, x, m, sc, sh, dz, ks, &a, &b, fused, gr, hw);
                    }
                    for (; p < end; p++) {
                        size_t k = base + (size_t)p * B + j0;
                        V gv = glaid == 2 ? DF_N(ldz)(NULL, gw, k, 1) : DF_N(ld)(g + k);
                        DF_N(grad_pixel)(gv, DF_N(ldz)(z, zh, k, half), m, sc, sh, dz + k, &a, &b, fused, gr, hw);
                    }
                }
                for (; p + 8 <= end; p += 8) {
                    // The gradient's 8 pixels of these DF_W channels, transposed 8 x 8 at a time.
                    df_f8 q[DF_W / 8][8];
                    for (int h = 0; h < DF_W / 8; h++) {
                        for (int j = 0; j < 8; j++) q[h][j] = df_ld8(planes + (size_t)(h * 8 + j) * HW + p);
                        df_transpose8(q[h]);
                    }
                    for (int t0 = 0; t0 < 8; t0 += 4) {
                        V gv[4], x[4];
                        size_t ks[4];
                        for (int t = 0; t < 4; t++) {
                            df_f8 parts[DF_W / 8];
                            for (int h = 0; h < DF_W / 8; h++) parts[h] = q[h][t0 + t];
                            gv[t] = DF_N(join)(parts);
                            ks[t] = base + (size_t)(p + t0 + t) * B + j0;
                            x[t] = DF_N(ldz)(z, zh, ks[t], half);
                        }
                        DF_N(grad_four)(gv, x, m, sc, sh, dz, ks, &a, &b, fused, gr, hw);
                    }
                }
                for (; p < end; p++) {
                    V gv;
                    for (int j = 0; j < DF_W; j++) gv[j] = planes[(size_t)j * HW + p];
                    size_t k = base + (size_t)p * B + j0;
                    DF_N(grad_pixel)(gv, DF_N(ldz)(z, zh, k, half), m, sc, sh, dz + k, &a, &b, fused, gr, hw);
                }
                for (int j = 0; j < DF_W; j++) { sg[j] += a[j]; sgx[j] += b[j]; }
            }
            for (int j = 0; j < DF_W; j++) {
                sum_g[(size_t)n * C + c0 + j] = sg[j];
                sum_gx[(size_t)n * C + c0 + j] = sgx[j];
            }
        }
    }
}

// MARK: Input gradient, blocked

static inline __attribute__((always_inline)) void DF_N(axpby_items)(
    float *dz, const float *z, const uint16_t *zh, int C, int HW, int B, int i0, int i1, const float *ca,
    const float *cbv, const float *cc, uint16_t *outh, const int toHalf, const int rnd, const int half, const int hw) {
    int CB = C / B;
    for (int it = i0; it < i1; it++) {
        int cb = it % CB;
        size_t base = (size_t)it * HW * B;
        for (int j0 = 0; j0 < B; j0 += DF_W) {
            int c0 = cb * B + j0;
            V a = DF_N(ld)(ca + c0), b = DF_N(ld)(cbv + c0), k0 = DF_N(ld)(cc + c0);
            for (int p = 0; p < HW; p++) {
                size_t k = base + (size_t)p * B + j0;
                V v = a * DF_N(ld)(dz + k) + b * DF_N(ldz)(z, zh, k, half) + k0;
                if (toHalf) DF_N(stbf16)(outh + k, v);
                else if (rnd == 1) DF_N(st)(dz + k, DF_N(rndbf16)(v));
                else if (rnd == 2) DF_N(st)(dz + k, hw ? DF_N(rndf16_hw)(v) : DF_N(rndf16)(v));
                else DF_N(st)(dz + k, v);
            }
        }
    }
}

#undef DF_FOUR
#undef V
#undef VI
#undef VU
#undef VH
#undef DF_N
#undef DF_CAT
#undef DF_CAT2
