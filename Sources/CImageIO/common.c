/* Shared pieces of CImageIO: messages, whole-file reads, format sniffing, luma, dispatch. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

int cimg_fail(char *message, int code, const char *format, ...) {
    if (message) {
        va_list args;
        va_start(args, format);
        vsnprintf(message, CIMG_MESSAGE_SIZE, format, args);
        va_end(args);
    }
    return code;
}

int cimg_read_file(const char *path, unsigned char **data, size_t *size, char *message) {
    *data = NULL;
    *size = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return cimg_fail(message, CIMG_ERR_IO, "cannot open: %s", strerror(errno));
    if (fseek(f, 0, SEEK_END) != 0) {
        fclose(f);
        return cimg_fail(message, CIMG_ERR_IO, "cannot seek: %s", strerror(errno));
    }
    long length = ftell(f);
    if (length < 0 || fseek(f, 0, SEEK_SET) != 0) {
        fclose(f);
        return cimg_fail(message, CIMG_ERR_IO, "cannot read size: %s", strerror(errno));
    }
    unsigned char *buffer = (unsigned char *)malloc(length > 0 ? (size_t)length : 1);
    if (!buffer) {
        fclose(f);
        return cimg_fail(message, CIMG_ERR_MEMORY, "out of memory reading %ld bytes", length);
    }
    size_t got = fread(buffer, 1, (size_t)length, f);
    int failed = ferror(f);
    fclose(f);
    if (failed || got != (size_t)length) {
        free(buffer);
        return cimg_fail(message, CIMG_ERR_IO, "read %zu of %ld bytes", got, length);
    }
    *data = buffer;
    *size = (size_t)length;
    return CIMG_OK;
}

int cimg_format_of(const unsigned char *data, size_t size) {
    static const unsigned char png_sig[8] = {0x89, 'P', 'N', 'G', 0x0D, 0x0A, 0x1A, 0x0A};
    if (size >= 8 && memcmp(data, png_sig, 8) == 0) return CIMG_FORMAT_PNG;
    if (size >= 3 && data[0] == 0xFF && data[1] == 0xD8 && data[2] == 0xFF) return CIMG_FORMAT_JPEG;
    return CIMG_FORMAT_UNKNOWN;
}

void cimg_rgb_to_luma(const unsigned char *rgb, unsigned char *luma, size_t pixels) {
    for (size_t i = 0; i < pixels; i++) {
        unsigned r = rgb[3 * i], g = rgb[3 * i + 1], b = rgb[3 * i + 2];
        luma[i] = (unsigned char)((4899u * r + 9617u * g + 1868u * b + 8192u) >> 14);
    }
}

static int decode_any(const unsigned char *data, size_t size, int channels, cimg_image *out,
                      int verify_only, char *message) {
    switch (cimg_format_of(data, size)) {
    case CIMG_FORMAT_PNG: return cimg_png_decode(data, size, channels, out, verify_only, message);
    case CIMG_FORMAT_JPEG: return cimg_jpeg_decode(data, size, channels, out, verify_only, message);
    default:
        if (size == 0) return cimg_fail(message, CIMG_ERR_CORRUPT, "empty file");
        return cimg_fail(message, CIMG_ERR_FORMAT, "not a PNG or JPEG file (unknown signature)");
    }
}

int cimg_decode(const unsigned char *data, size_t size, int channels, cimg_image *out, char *message) {
    if (!out) return cimg_fail(message, CIMG_ERR_ARGUMENT, "no output image");
    memset(out, 0, sizeof(*out));
    if (channels != 1 && channels != 3)
        return cimg_fail(message, CIMG_ERR_ARGUMENT, "channels must be 1 or 3, got %d", channels);
    return decode_any(data, size, channels, out, 0, message);
}

int cimg_decode_file(const char *path, int channels, cimg_image *out, char *message) {
    if (!out) return cimg_fail(message, CIMG_ERR_ARGUMENT, "no output image");
    memset(out, 0, sizeof(*out));
    if (channels != 1 && channels != 3)
        return cimg_fail(message, CIMG_ERR_ARGUMENT, "channels must be 1 or 3, got %d", channels);
    unsigned char *data;
    size_t size;
    int rc = cimg_read_file(path, &data, &size, message);
    if (rc != CIMG_OK) return rc;
    rc = decode_any(data, size, channels, out, 0, message);
    free(data);
    return rc;
}

int cimg_verify_file(const char *path, cimg_info *info, char *message) {
    unsigned char *data;
    size_t size;
    int rc = cimg_read_file(path, &data, &size, message);
    if (rc != CIMG_OK) return rc;
    cimg_image image;
    memset(&image, 0, sizeof(image));
    rc = decode_any(data, size, 1, &image, 1, message);
    free(data);
    if (info) *info = image.source;
    return rc;
}

void cimg_free(void *pointer) { free(pointer); }

void cimg_convert_channels(const unsigned char *src, int src_channels, unsigned char *dst,
                           int dst_channels, size_t pixels) {
    if (dst_channels == 1) {
        switch (src_channels) {
        case 1: memcpy(dst, src, pixels); break;
        case 2: for (size_t i = 0; i < pixels; i++) dst[i] = src[2 * i]; break;
        case 3: cimg_rgb_to_luma(src, dst, pixels); break;
        default:
            for (size_t i = 0; i < pixels; i++) {
                const unsigned char *p = src + 4 * i;
                dst[i] = (unsigned char)((4899u * p[0] + 9617u * p[1] + 1868u * p[2] + 8192u) >> 14);
            }
        }
    } else {
        switch (src_channels) {
        case 1:
        case 2:
            for (size_t i = 0; i < pixels; i++) {
                unsigned char v = src[src_channels * i];
                dst[3 * i] = v; dst[3 * i + 1] = v; dst[3 * i + 2] = v;
            }
            break;
        case 3: memcpy(dst, src, 3 * pixels); break;
        default:
            for (size_t i = 0; i < pixels; i++) {
                dst[3 * i] = src[4 * i]; dst[3 * i + 1] = src[4 * i + 1]; dst[3 * i + 2] = src[4 * i + 2];
            }
        }
    }
}
