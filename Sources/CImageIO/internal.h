#ifndef CIMAGEIO_INTERNAL_H
#define CIMAGEIO_INTERNAL_H

#include <stdarg.h>
#include <stddef.h>
#include "CImageIO.h"

/* Writes a formatted message into `message` (which may be NULL) and returns `code`. */
int cimg_fail(char *message, int code, const char *format, ...) __attribute__((format(printf, 3, 4)));

/* Reads a whole file into a malloc'ed buffer. */
int cimg_read_file(const char *path, unsigned char **data, size_t *size, char *message);

/* Converts `pixels` interleaved pixels from `src_channels` (1 grey, 2 grey+alpha, 3 RGB, 4 RGBA)
 * to `dst_channels` (1 luma or 3 RGB); alpha is dropped. `src` and `dst` must not overlap. */
void cimg_convert_channels(const unsigned char *src, int src_channels, unsigned char *dst,
                           int dst_channels, size_t pixels);

/* Codec entry points. With `verify_only` the codec decodes everything and keeps nothing (only
 * `out->source` is filled). `channels` is the requested output count (1 or 3). */
int cimg_png_decode(const unsigned char *data, size_t size, int channels, cimg_image *out,
                    int verify_only, char *message);
int cimg_jpeg_decode(const unsigned char *data, size_t size, int channels, cimg_image *out,
                     int verify_only, char *message);

#endif
