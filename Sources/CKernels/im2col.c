// im2col / col2im for one image, as the lowering of convolution to sgemm.
#include "CKernels.h"
#include "internal.h"

/// Output columns ox whose input column ix = ox*s - p + kj lies in [0, W): [lo, hi).
static inline void valid_range(int W, int s, int p, int kj, int oW, int *lo, int *hi) {
    int a = p - kj;                                  // need ox*s >= a
    int l = a <= 0 ? 0 : (a + s - 1) / s;
    int b = W + p - kj;                              // need ox*s < b
    int h = b <= 0 ? 0 : (b + s - 1) / s;
    if (h > oW) h = oW;
    if (l > h) l = h;
    *lo = l; *hi = h;
}

static inline __attribute__((always_inline)) void df_im2col_body(const float *img, int C, int H, int W, int k, int s, int p,
                                                               int oH, int oW, int c0, int c1, float *col) {
    (void)C;
    size_t plane = (size_t)oH * oW;
    for (int c = c0; c < c1; c++)
        for (int ki = 0; ki < k; ki++)
            for (int kj = 0; kj < k; kj++) {
                float *dst = col + ((size_t)(c * k + ki) * k + kj) * plane;
                int lo, hi;
                valid_range(W, s, p, kj, oW, &lo, &hi);
                for (int oy = 0; oy < oH; oy++, dst += oW) {
                    int iy = oy * s - p + ki;
                    if (iy < 0 || iy >= H) { memset(dst, 0, sizeof(float) * oW); continue; }
                    const float *src = img + ((size_t)c * H + iy) * W - p + kj;
                    for (int ox = 0; ox < lo; ox++) dst[ox] = 0;
                    if (s == 1) memcpy(dst + lo, src + lo, sizeof(float) * (hi - lo));
                    else for (int ox = lo; ox < hi; ox++) dst[ox] = src[ox * s];
                    for (int ox = hi; ox < oW; ox++) dst[ox] = 0;
                }
            }
}
DF_VARIANTS(df_im2col, (const float *img, int C, int H, int W, int k, int s, int p, int oH, int oW, int c0,
                        int c1, float *col), (img, C, H, W, k, s, p, oH, oW, c0, c1, col))

static inline __attribute__((always_inline)) void df_col2im_body(const float *col, int C, int H, int W, int k, int s, int p,
                                                               int oH, int oW, int c0, int c1, float *img) {
    (void)C;
    size_t plane = (size_t)oH * oW;
    for (int c = c0; c < c1; c++)
        for (int ki = 0; ki < k; ki++)
            for (int kj = 0; kj < k; kj++) {
                const float *srcc = col + ((size_t)(c * k + ki) * k + kj) * plane;
                int lo, hi;
                valid_range(W, s, p, kj, oW, &lo, &hi);
                for (int oy = 0; oy < oH; oy++, srcc += oW) {
                    int iy = oy * s - p + ki;
                    if (iy < 0 || iy >= H) continue;
                    float *dst = img + ((size_t)c * H + iy) * W - p + kj;
                    if (s == 1) for (int ox = lo; ox < hi; ox++) dst[ox] += srcc[ox];
                    else for (int ox = lo; ox < hi; ox++) dst[ox * s] += srcc[ox];
                }
            }
}
DF_VARIANTS(df_col2im, (const float *col, int C, int H, int W, int k, int s, int p, int oH, int oW, int c0,
                        int c1, float *img), (col, C, H, W, k, s, p, oH, oW, c0, c1, img))
