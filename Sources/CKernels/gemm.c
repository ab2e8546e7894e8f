// Packed GEMMs (the BLIS scheme): C[M, N] (=, or += when accumulate) A[M, K] x B[K, N].
//
// Both operands are packed into panels (A: MR rows x KC, B: KC x NR columns, zero-padded at the
// edges) and a register-blocked micro-kernel computes one MR x NR tile of C. Loop order:
//   for jc in N by NC: for pc in K by KC: pack B[pc, jc]; for ic in M by MC: pack A[ic, pc];
//     for jr in NC by NR: for ir in MC by MR: tile += Apanel x Bpanel
// Every level's micro-kernel updates each C element as one sequential chain of fused
// multiply-adds over k (starting from 0, or from C when accumulating; a KC block continues the
// chain from the stored partial), so the Float32 result is bit-identical on every level and
// independent of the blocking and of how callers split M or N across threads.
//
// The bfloat16 GEMM rounds both operands to bfloat16 while packing. With AVX512_BF16 it packs
// k in pairs and uses vdpbf16ps (each step adds the two exact products of a pair, odd k first);
// elsewhere it packs the rounded values as Float32 into the Float32 kernels (the portable twin).
#include "CKernels.h"
#include "internal.h"

#ifndef DF_KC
#define DF_KC 256
#endif
#ifndef DF_MC
#define DF_MC 96
#endif
#ifndef DF_NC
#define DF_NC 768
#endif

size_t df_gemm_workspace_floats(void) {
    // A block (MC x KC, MR-padded) + B block (KC x NC, NR-padded), plus alignment slack.
    return (size_t)(DF_MC + 16) * DF_KC + (size_t)DF_KC * (DF_NC + 64) + 64;
}

static inline float *align64(float *p) { return (float *)(((uintptr_t)p + 63) & ~(uintptr_t)63); }

// MARK: - Packing (Float32)

/// a: MR-row strips of A[m0.., k0..], each k-major: a[s][k][i] = A(m0 + s*MR + i, k0 + k), zero rows past mc.
static inline __attribute__((always_inline)) void pack_a(int MR, const df_matrix *A, int m0, int k0, int mc, int kc,
                                                       float *a) {
    for (int s = 0; s < mc; s += MR) {
        int rows = mc - s < MR ? mc - s : MR;
        for (int k = 0; k < kc; k++) {
            const float *src = A->p + (long)(m0 + s) * A->rs + (long)(k0 + k) * A->cs;
            int i = 0;
            for (; i < rows; i++) a[i] = src[(long)i * A->rs];
            for (; i < MR; i++) a[i] = 0.0f;
            a += MR;
        }
    }
}

/// b: NR-column strips of B[k0.., n0..], each k-major: b[s][k][j] = B(k0 + k, n0 + s*NR + j), zero columns past nc.
static inline __attribute__((always_inline)) void pack_b(int NR, const df_matrix *B, int k0, int n0, int kc, int nc,
                                                       float *b) {
    for (int s = 0; s < nc; s += NR) {
        int cols = nc - s < NR ? nc - s : NR;
        if (B->cs == 1) {
            for (int k = 0; k < kc; k++) {
                const float *src = B->p + (long)(k0 + k) * B->rs + (n0 + s);
                int j = 0;
                for (; j < cols; j++) b[j] = src[j];
                for (; j < NR; j++) b[j] = 0.0f;
                b += NR;
            }
        } else {
            for (int k = 0; k < kc; k++) {
                const float *src = B->p + (long)(k0 + k) * B->rs + (long)(n0 + s) * B->cs;
                int j = 0;
                for (; j < cols; j++) b[j] = src[(long)j * B->cs];
                for (; j < NR; j++) b[j] = 0.0f;
                b += NR;
            }
        }
    }
}

/// Rounds a packed panel to bfloat16 values in place (the portable twin of the bfloat16 GEMM).
static inline __attribute__((always_inline)) void round_panel_bf16(float *p, size_t n) {
    for (size_t i = 0; i < n; i++) p[i] = df_u2f((uint32_t)df_f32_to_bf16_1(p[i]) << 16);
}

// MARK: - Tile helpers

/// Copies the valid mv x nv part of a tile between C and a dense MR x NR scratch tile.
static inline void tile_load(float *t, int NR, const float *c, long ldc, int mv, int nv, int load) {
    for (int i = 0; i < mv; i++)
        for (int j = 0; j < nv; j++) t[i * NR + j] = load ? c[i * ldc + j] : 0.0f;
}
static inline void tile_store(const float *t, int NR, float *c, long ldc, int mv, int nv) {
    for (int i = 0; i < mv; i++)
        for (int j = 0; j < nv; j++) c[i * ldc + j] = t[i * NR + j];
}

// MARK: - Micro-kernels (Float32)

/// Portable: 4 x 16, fmaf (a correctly rounded fused multiply-add, as the SIMD kernels' FMA).
#define P_MR 4
#define P_NR 16
static void ukr_portable(int kc, const float *a, const float *b, float *c, long ldc, int load) {
    float acc[P_MR][P_NR];
    for (int i = 0; i < P_MR; i++)
        for (int j = 0; j < P_NR; j++) acc[i][j] = load ? c[i * ldc + j] : 0.0f;
    for (int k = 0; k < kc; k++) {
        for (int i = 0; i < P_MR; i++) {
            float ai = a[i];
            for (int j = 0; j < P_NR; j++) acc[i][j] = fmaf(ai, b[j], acc[i][j]);
        }
        a += P_MR;
        b += P_NR;
    }
    for (int i = 0; i < P_MR; i++)
        for (int j = 0; j < P_NR; j++) c[i * ldc + j] = acc[i][j];
}

#ifdef DF_X86
/// AVX2: 6 x 16 (12 ymm accumulators).
#define A2_MR 6
#define A2_NR 16
DF_TARGET_AVX2 static void ukr_avx2(int kc, const float *a, const float *b, float *c, long ldc, int load) {
    __m256 acc[A2_MR][2];
    for (int i = 0; i < A2_MR; i++) {
        acc[i][0] = load ? _mm256_loadu_ps(c + i * ldc) : _mm256_setzero_ps();
        acc[i][1] = load ? _mm256_loadu_ps(c + i * ldc + 8) : _mm256_setzero_ps();
    }
    for (int k = 0; k < kc; k++) {
        __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8);
        for (int i = 0; i < A2_MR; i++) {
            __m256 ai = _mm256_broadcast_ss(a + i);
            acc[i][0] = _mm256_fmadd_ps(ai, b0, acc[i][0]);
            acc[i][1] = _mm256_fmadd_ps(ai, b1, acc[i][1]);
        }
        a += A2_MR;
        b += A2_NR;
    }
    for (int i = 0; i < A2_MR; i++) {
        _mm256_storeu_ps(c + i * ldc, acc[i][0]);
        _mm256_storeu_ps(c + i * ldc + 8, acc[i][1]);
    }
}

/// AVX-512: 8 x 32 (16 zmm accumulators).
#define A5_MR 8
#define A5_NR 32
DF_TARGET_AVX512 static void ukr_avx512(int kc, const float *a, const float *b, float *c, long ldc, int load) {
    __m512 acc[A5_MR][2];
    for (int i = 0; i < A5_MR; i++) {
        acc[i][0] = load ? _mm512_loadu_ps(c + i * ldc) : _mm512_setzero_ps();
        acc[i][1] = load ? _mm512_loadu_ps(c + i * ldc + 16) : _mm512_setzero_ps();
    }
    for (int k = 0; k < kc; k++) {
        __m512 b0 = _mm512_load_ps(b), b1 = _mm512_load_ps(b + 16);
        for (int i = 0; i < A5_MR; i++) {
            __m512 ai = _mm512_set1_ps(a[i]);
            acc[i][0] = _mm512_fmadd_ps(ai, b0, acc[i][0]);
            acc[i][1] = _mm512_fmadd_ps(ai, b1, acc[i][1]);
        }
        a += A5_MR;
        b += A5_NR;
    }
    for (int i = 0; i < A5_MR; i++) {
        _mm512_storeu_ps(c + i * ldc, acc[i][0]);
        _mm512_storeu_ps(c + i * ldc + 16, acc[i][1]);
    }
}

// MARK: - bfloat16 micro-kernel (AVX512_BF16): 8 x 32, k in pairs

/// a: per k pair, MR pairs (32-bit each); b: per k pair, NR pairs. acc += a0*b0 + a1*b1 per pair.
DF_TARGET_AVX512BF16 static void ukr_bf16(int kp, const uint16_t *a, const uint16_t *b, float *c, long ldc, int load) {
    __m512 acc[A5_MR][2];
    for (int i = 0; i < A5_MR; i++) {
        acc[i][0] = load ? _mm512_loadu_ps(c + i * ldc) : _mm512_setzero_ps();
        acc[i][1] = load ? _mm512_loadu_ps(c + i * ldc + 16) : _mm512_setzero_ps();
    }
    for (int k = 0; k < kp; k++) {
        __m512bh b0 = (__m512bh)_mm512_load_si512((const void *)b);
        __m512bh b1 = (__m512bh)_mm512_load_si512((const void *)(b + 32));
        for (int i = 0; i < A5_MR; i++) {
            uint32_t pair;
            memcpy(&pair, a + 2 * i, 4);
            __m512bh ai = (__m512bh)_mm512_set1_epi32((int)pair);
            acc[i][0] = _mm512_dpbf16_ps(acc[i][0], ai, b0);
            acc[i][1] = _mm512_dpbf16_ps(acc[i][1], ai, b1);
        }
        a += 2 * A5_MR;
        b += 2 * A5_NR;
    }
    for (int i = 0; i < A5_MR; i++) {
        _mm512_storeu_ps(c + i * ldc, acc[i][0]);
        _mm512_storeu_ps(c + i * ldc + 16, acc[i][1]);
    }
}

/// Packs A[m0.., k0..] as MR-row strips of bfloat16 pairs: a[s][kp][i][2] (zero past mc and past kc).
DF_TARGET_AVX512BF16 static void pack_a_bf16(const df_matrix *A, int m0, int k0, int mc, int kc, uint16_t *a) {
    for (int s = 0; s < mc; s += A5_MR) {
        int rows = mc - s < A5_MR ? mc - s : A5_MR;
        for (int k = 0; k < kc; k += 2) {
            for (int i = 0; i < A5_MR; i++) {
                float v0 = 0.0f, v1 = 0.0f;
                if (i < rows) {
                    const float *src = A->p + (long)(m0 + s + i) * A->rs + (long)(k0 + k) * A->cs;
                    v0 = src[0];
                    if (k + 1 < kc) v1 = src[A->cs];
                }
                a[2 * i] = df_f32_to_bf16_1(v0);
                a[2 * i + 1] = df_f32_to_bf16_1(v1);
            }
            a += 2 * A5_MR;
        }
    }
}

/// Packs B[k0.., n0..] as NR-column strips of bfloat16 pairs: b[s][kp][j][2], converting 16 floats
/// at a time with vcvtneps2bf16 where B's rows are contiguous.
DF_TARGET_AVX512BF16 static void pack_b_bf16(const df_matrix *B, int k0, int n0, int kc, int nc, uint16_t *b) {
    for (int s = 0; s < nc; s += A5_NR) {
        int cols = nc - s < A5_NR ? nc - s : A5_NR;
        for (int k = 0; k < kc; k += 2) {
            const float *r0 = B->p + (long)(k0 + k) * B->rs + (long)(n0 + s) * B->cs;
            const float *r1 = k + 1 < kc ? r0 + B->rs : NULL;
            if (B->cs == 1 && cols == A5_NR) {
                for (int h = 0; h < 2; h++) {
                    __m512 x0 = _mm512_loadu_ps(r0 + 16 * h);
                    __m512 x1 = r1 ? _mm512_loadu_ps(r1 + 16 * h) : _mm512_setzero_ps();
                    __m256i h0 = (__m256i)_mm512_cvtneps_pbh(x0), h1 = (__m256i)_mm512_cvtneps_pbh(x1);
                    __m512i w0 = _mm512_cvtepu16_epi32(h0), w1 = _mm512_cvtepu16_epi32(h1);
                    __m512i pairs = _mm512_or_si512(w0, _mm512_slli_epi32(w1, 16));   // (k, k+1) per column
                    _mm512_store_si512((void *)(b + 32 * h), pairs);
                }
            } else {
                for (int j = 0; j < A5_NR; j++) {
                    float v0 = 0.0f, v1 = 0.0f;
                    if (j < cols) {
                        v0 = r0[(long)j * B->cs];
                        if (r1) v1 = r1[(long)j * B->cs];
                    }
                    b[2 * j] = df_f32_to_bf16_1(v0);
                    b[2 * j + 1] = df_f32_to_bf16_1(v1);
                }
            }
            b += 2 * A5_NR;
        }
    }
}
#endif

// MARK: - Drivers

/// One driver per micro-kernel: MR, NR, the kernel, and whether operands are rounded to bfloat16.
#define DF_GEMM_DRIVER(fname, MR, NR, UKR, TARGET, ROUND)                                                    \
    TARGET static void fname(int M, int N, int K, df_matrix A, df_matrix B, float *C, long ldc,          \
                             int accumulate, float *ws) {                                                \
        float *apack = align64(ws);                                                                        \
        float *bpack = align64(apack + (size_t)(DF_MC + 16) * DF_KC);                                    \
        float tile[MR * NR] __attribute__((aligned(64)));                                                  \
        for (int jc = 0; jc < N; jc += DF_NC) {                                                            \
            int nc = N - jc < DF_NC ? N - jc : DF_NC;                                                      \
            for (int pc = 0; pc < K; pc += DF_KC) {                                                        \
                int kc = K - pc < DF_KC ? K - pc : DF_KC;                                                  \
                int load = accumulate || pc > 0;                                                           \
                pack_b(NR, &B, pc, jc, kc, nc, bpack);                                                     \
                if (ROUND) round_panel_bf16(bpack, (size_t)((nc + NR - 1) / NR) * NR * kc);                \
                for (int ic = 0; ic < M; ic += DF_MC) {                                                    \
                    int mc = M - ic < DF_MC ? M - ic : DF_MC;                                              \
                    pack_a(MR, &A, ic, pc, mc, kc, apack);                                                 \
                    if (ROUND) round_panel_bf16(apack, (size_t)((mc + MR - 1) / MR) * MR * kc);            \
                    for (int jr = 0; jr < nc; jr += NR) {                                                  \
                        int nv = nc - jr < NR ? nc - jr : NR;                                              \
                        const float *bp = bpack + (size_t)jr * kc;                                         \
                        for (int ir = 0; ir < mc; ir += MR) {                                              \
                            int mv = mc - ir < MR ? mc - ir : MR;                                          \
                            const float *ap = apack + (size_t)ir * kc;                                     \
                            float *c = C + (long)(ic + ir) * ldc + (jc + jr);                              \
                            if (mv == MR && nv == NR) {                                                    \
                                UKR(kc, ap, bp, c, ldc, load);                                             \
                            } else {                                                                       \
                                tile_load(tile, NR, c, ldc, mv, nv, load);                                 \
                                UKR(kc, ap, bp, tile, NR, 1);                                              \
                                tile_store(tile, NR, c, ldc, mv, nv);                                      \
                            }                                                                              \
                        }                                                                                  \
                    }                                                                                      \
                }                                                                                          \
            }                                                                                              \
        }                                                                                                  \
    }

DF_GEMM_DRIVER(sgemm_portable, P_MR, P_NR, ukr_portable, , 0)
DF_GEMM_DRIVER(bgemm_portable, P_MR, P_NR, ukr_portable, , 1)
#ifdef DF_X86
DF_GEMM_DRIVER(sgemm_avx2, A2_MR, A2_NR, ukr_avx2, DF_TARGET_AVX2, 0)
DF_GEMM_DRIVER(bgemm_avx2, A2_MR, A2_NR, ukr_avx2, DF_TARGET_AVX2, 1)
DF_GEMM_DRIVER(sgemm_avx512, A5_MR, A5_NR, ukr_avx512, DF_TARGET_AVX512, 0)
DF_GEMM_DRIVER(bgemm_avx512, A5_MR, A5_NR, ukr_avx512, DF_TARGET_AVX512, 1)

/// bfloat16 pairs on AVX512_BF16. Same blocking; KC is even so pairs never straddle blocks.
DF_TARGET_AVX512BF16 static void bgemm_avx512bf16(int M, int N, int K, df_matrix A, df_matrix B, float *C, long ldc,
                                                  int accumulate, float *ws) {
    uint16_t *apack = (uint16_t *)align64(ws);
    uint16_t *bpack = (uint16_t *)align64((float *)apack + (size_t)(DF_MC + 16) * DF_KC);
    float tile[A5_MR * A5_NR] __attribute__((aligned(64)));
    for (int jc = 0; jc < N; jc += DF_NC) {
        int nc = N - jc < DF_NC ? N - jc : DF_NC;
        for (int pc = 0; pc < K; pc += DF_KC) {
            int kc = K - pc < DF_KC ? K - pc : DF_KC;
            int kp = (kc + 1) / 2;
            int load = accumulate || pc > 0;
            pack_b_bf16(&B, pc, jc, kc, nc, bpack);
            for (int ic = 0; ic < M; ic += DF_MC) {
                int mc = M - ic < DF_MC ? M - ic : DF_MC;
                pack_a_bf16(&A, ic, pc, mc, kc, apack);
                for (int jr = 0; jr < nc; jr += A5_NR) {
                    int nv = nc - jr < A5_NR ? nc - jr : A5_NR;
                    const uint16_t *bp = bpack + (size_t)jr * 2 * kp;
                    for (int ir = 0; ir < mc; ir += A5_MR) {
                        int mv = mc - ir < A5_MR ? mc - ir : A5_MR;
                        const uint16_t *ap = apack + (size_t)ir * 2 * kp;
                        float *c = C + (long)(ic + ir) * ldc + (jc + jr);
                        if (mv == A5_MR && nv == A5_NR) {
                            ukr_bf16(kp, ap, bp, c, ldc, load);
                        } else {
                            tile_load(tile, A5_NR, c, ldc, mv, nv, load);
                            ukr_bf16(kp, ap, bp, tile, A5_NR, 1);
                            tile_store(tile, A5_NR, c, ldc, mv, nv);
                        }
                    }
                }
            }
        }
    }
}
#endif

void df_sgemm_portable(int M, int N, int K, df_matrix A, df_matrix B, float *C, long ldc, int acc, float *ws) {
    sgemm_portable(M, N, K, A, B, C, ldc, acc, ws);
}
void df_bgemm_portable(int M, int N, int K, df_matrix A, df_matrix B, float *C, long ldc, int acc, float *ws) {
    bgemm_portable(M, N, K, A, B, C, ldc, acc, ws);
}
#ifdef DF_X86
void df_sgemm_avx2(int M, int N, int K, df_matrix A, df_matrix B, float *C, long ldc, int acc, float *ws) {
    sgemm_avx2(M, N, K, A, B, C, ldc, acc, ws);
}
void df_bgemm_avx2(int M, int N, int K, df_matrix A, df_matrix B, float *C, long ldc, int acc, float *ws) {
    bgemm_avx2(M, N, K, A, B, C, ldc, acc, ws);
}
void df_sgemm_avx512(int M, int N, int K, df_matrix A, df_matrix B, float *C, long ldc, int acc, float *ws) {
    sgemm_avx512(M, N, K, A, B, C, ldc, acc, ws);
}
void df_bgemm_avx512(int M, int N, int K, df_matrix A, df_matrix B, float *C, long ldc, int acc, float *ws) {
    bgemm_avx512(M, N, K, A, B, C, ldc, acc, ws);
}
void df_bgemm_avx512bf16(int M, int N, int K, df_matrix A, df_matrix B, float *C, long ldc, int acc, float *ws) {
    bgemm_avx512bf16(M, N, K, A, B, C, ldc, acc, ws);
}
#endif
