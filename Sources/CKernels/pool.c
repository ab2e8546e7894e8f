// Max pooling, separable: a row pass (the maximum over each output column's window of every input
// row) and a column pass over those row maxima. Ties keep the first maximum in raster order, as
// the two-dimensional scan does; a NaN wins over every number and the last NaN in raster order is
// the one kept (PyTorch's CPU rule).
#include "CKernels.h"
#include "internal.h"

/// The output positions o whose window offset j (0..k-1) lands inside [0, n): o*s - p + j in range.
static inline void df_window_range(int j, int n, int s, int p, int on, int *lo, int *hi) {
    int a = p - j;                                   // o*s >= a
    int l = a <= 0 ? 0 : (a + s - 1) / s;
    int b = n - 1 + p - j;                           // o*s <= b
    int h = b < 0 ? -1 : b / s;
    if (h > on - 1) h = on - 1;
    *lo = l;
    *hi = h;
}

static inline __attribute__((always_inline)) void df_maxpool_fwd_body(
    const float *x, int planes, int H, int W, int k, int s, int p, int oH, int oW, float *y,
    int32_t *arg, float *rowMax, int32_t *rowArg) {
    for (int plane = 0; plane < planes; plane++) {
        const float *src = x + (size_t)plane * H * W;
        // Row pass: rowMax[r][ox] over the in-range window columns of input row r.
        for (int r = 0; r < H; r++) {
            const float *row = src + (size_t)r * W;
            float *m = rowMax + (size_t)r * oW;
            int32_t *a = rowArg + (size_t)r * oW;
            for (int ox = 0; ox < oW; ox++) {
                int x0 = ox * s - p;
                m[ox] = -INFINITY;
                a[ox] = x0 < 0 ? 0 : x0;
            }
            for (int j = 0; j < k; j++) {
                int lo, hi;
                df_window_range(j, W, s, p, oW, &lo, &hi);
                for (int ox = lo; ox <= hi; ox++) {
                    int xx = ox * s - p + j;
                    float v = row[xx];
                    int take = (v > m[ox]) | (v != v);
                    m[ox] = take ? v : m[ox];
                    a[ox] = take ? xx : a[ox];
                }
            }
        }
        // Column pass over the row maxima.
        float *dst = y + (size_t)plane * oH * oW;
        int32_t *idx = arg ? arg + (size_t)plane * oH * oW : NULL;
        for (int oy = 0; oy < oH; oy++) {
            float *o = dst + (size_t)oy * oW;
            int y0 = oy * s - p;
            if (y0 < 0) y0 = 0;
            int y1 = oy * s - p + k;
            if (y1 > H) y1 = H;
            if (idx) {
                int32_t *oi = idx + (size_t)oy * oW;
                for (int ox = 0; ox < oW; ox++) { o[ox] = -INFINITY; oi[ox] = y0 * W + rowArg[(size_t)y0 * oW + ox]; }
                for (int r = y0; r < y1; r++) {
                    const float *m = rowMax + (size_t)r * oW;
                    const int32_t *a = rowArg + (size_t)r * oW;
                    for (int ox = 0; ox < oW; ox++) {
                        float v = m[ox];
                        int take = (v > o[ox]) | (v != v);
                        o[ox] = take ? v : o[ox];
                        oi[ox] = take ? r * W + a[ox] : oi[ox];
                    }
                }
            } else {
                for (int ox = 0; ox < oW; ox++) o[ox] = -INFINITY;
                for (int r = y0; r < y1; r++) {
                    const float *m = rowMax + (size_t)r * oW;
                    for (int ox = 0; ox < oW; ox++) {
                        float v = m[ox];
                        o[ox] = ((v > o[ox]) | (v != v)) ? v : o[ox];
                    }
                }
            }
        }
    }
}
DF_VARIANTS(df_maxpool_fwd,
            (const float *x, int planes, int H, int W, int k, int s, int p, int oH, int oW, float *y,
             int32_t *arg, float *rowMax, int32_t *rowArg),
            (x, planes, H, W, k, s, p, oH, oW, y, arg, rowMax, rowArg))
