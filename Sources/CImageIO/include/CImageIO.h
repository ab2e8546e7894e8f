#ifndef CIMAGEIO_H
#define CIMAGEIO_H

/*
 * CImageIO: JPEG (libjpeg-turbo) and PNG (libpng) decode and encode for DualFuse.
 *
 * Pixels are 8-bit, interleaved HWC, rows top to bottom, no row padding.
 *
 * Decoding delivers the channel count the caller asks for, whatever the file stores:
 *   channels 1: luma. RGB sources use the ITU-R BT.601 weights of OpenCV's cvtColor
 *               (Y = (4899 R + 9617 G + 1868 B + 8192) >> 14); a colour JPEG delivers its own
 *               Y component (libjpeg's JCS_GRAYSCALE output, as OpenCV's IMREAD_GRAYSCALE does).
 *   channels 3: R, G, B (RGB order, not OpenCV's BGR); grey sources are replicated.
 * Alpha is dropped without compositing (as OpenCV's IMREAD_COLOR). Palette PNGs are expanded;
 * 1/2/4-bit grey is scaled to 8 bit; 16-bit PNG samples keep their high byte (value >> 8, libpng's
 * png_set_strip_16, which is what OpenCV's imread does for 8-bit output).
 *
 * Every libjpeg / libpng error is caught inside this target (setjmp/longjmp never crosses into
 * Swift) and returned as an error code with a message. Truncated data is an error: libjpeg's
 * "premature end" warnings (JWRN_JPEG_EOF, JWRN_HIT_MARKER) and its other entropy-data warnings
 * (bad Huffman/arithmetic code, lost resync, bogus progression) are treated as corruption, and a
 * PNG is read through its IEND chunk (CRC errors in critical chunks are errors).
 */

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Result codes of every cimg_* function. */
enum {
    CIMG_OK = 0,
    CIMG_ERR_IO = 1,        /* the file cannot be opened, read or written */
    CIMG_ERR_FORMAT = 2,    /* neither PNG nor JPEG (by signature) */
    CIMG_ERR_CORRUPT = 3,   /* corrupt or truncated image data */
    CIMG_ERR_MEMORY = 4,    /* allocation failed */
    CIMG_ERR_ARGUMENT = 5,  /* bad argument (channel count, size, quality) */
    CIMG_ERR_TOO_LARGE = 6  /* more than CIMG_MAX_PIXELS pixels */
};

/** File formats recognised by signature. */
enum { CIMG_FORMAT_UNKNOWN = 0, CIMG_FORMAT_PNG = 1, CIMG_FORMAT_JPEG = 2 };

/** Size of the message buffers callers pass (a message is always NUL-terminated). */
#define CIMG_MESSAGE_SIZE 256
/** Largest image accepted, in pixels (width * height). */
#define CIMG_MAX_PIXELS (1L << 28)

/** What a file stores, known after reading its header (and, for verify, all its data). */
typedef struct {
    int width;
    int height;
    int channels;   /* stored channels: 1 grey, 2 grey+alpha, 3 RGB, 4 RGBA (palette: 3 or 4) */
    int bit_depth;  /* stored bits per sample: 1, 2, 4, 8 or 16 */
    int format;     /* CIMG_FORMAT_* */
} cimg_info;

/** A decoded image; `pixels` is malloc'ed, release it with cimg_free. */
typedef struct {
    unsigned char *pixels; /* [height, width, channels] */
    int width;
    int height;
    int channels;          /* the requested channel count, 1 or 3 */
    cimg_info source;
} cimg_image;

/** The format of `data` by its signature. */
int cimg_format_of(const unsigned char *data, size_t size);

/** Decodes a PNG or JPEG held in memory to `channels` (1 or 3) channels. */
int cimg_decode(const unsigned char *data, size_t size, int channels, cimg_image *out, char *message);

/** Reads and decodes a PNG or JPEG file to `channels` (1 or 3) channels. */
int cimg_decode_file(const char *path, int channels, cimg_image *out, char *message);

/**
 * Reads a whole file and checks that it decodes, without keeping the pixels: a PNG is inflated
 * row by row through IEND, a JPEG is entropy-decoded in full at 1/8 scale. Fills `info`.
 */
int cimg_verify_file(const char *path, cimg_info *info, char *message);

/** Writes `pixels` [height, width, channels] (channels 1, 3 or 4) as PNG; `level` 0-9 is the zlib level. */
int cimg_encode_png_file(const char *path, const unsigned char *pixels, int width, int height,
                         int channels, int level, char *message);

/** Writes `pixels` [height, width, channels] (channels 1 or 3) as baseline JPEG of `quality` 1-100. */
int cimg_encode_jpeg_file(const char *path, const unsigned char *pixels, int width, int height,
                          int channels, int quality, char *message);

/** Releases memory returned by this target. */
void cimg_free(void *pointer);

/** Converts interleaved RGB to OpenCV BT.601 luma: out[i] = (4899 R + 9617 G + 1868 B + 8192) >> 14. */
void cimg_rgb_to_luma(const unsigned char *rgb, unsigned char *luma, size_t pixels);

#ifdef __cplusplus
}
#endif

#endif /* CIMAGEIO_H */
