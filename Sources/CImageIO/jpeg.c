/* JPEG decode and encode over libjpeg-turbo. Errors longjmp back to the setjmp in this file only. */
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>
#include <jerror.h>

#include "internal.h"

/* libjpeg's error manager extended with our jump target and message buffer. */
typedef struct {
    struct jpeg_error_mgr base;
    jmp_buf jump;
    char *message;
    const char *context;
} jpeg_error_state;

static void record(j_common_ptr cinfo) {
    jpeg_error_state *state = (jpeg_error_state *)cinfo->err;
    char text[JMSG_LENGTH_MAX];
    (*cinfo->err->format_message)(cinfo, text);
    if (state->message) snprintf(state->message, CIMG_MESSAGE_SIZE, "JPEG %s: %s", state->context, text);
}

static void on_jpeg_error(j_common_ptr cinfo) {
    record(cinfo);
    longjmp(((jpeg_error_state *)cinfo->err)->jump, 1);
}

/* Warnings about the entropy-coded data (data ends early, bad codes, lost sync) mean the pixels are
 * wrong or missing: they are corruption. Others (unknown JFIF/Adobe versions, a bad ICC marker,
 * extraneous bytes before a marker) leave the pixels intact and are ignored. */
static void on_jpeg_message(j_common_ptr cinfo, int level) {
    if (level >= 0) return; /* trace messages */
    int code = cinfo->err->msg_code;
    if (code == JWRN_JPEG_EOF || code == JWRN_HIT_MARKER || code == JWRN_HUFF_BAD_CODE ||
        code == JWRN_ARITH_BAD_CODE || code == JWRN_MUST_RESYNC || code == JWRN_BOGUS_PROGRESSION ||
        code == JWRN_NOT_SEQUENTIAL) {
        record(cinfo);
        longjmp(((jpeg_error_state *)cinfo->err)->jump, 1);
    }
    cinfo->err->num_warnings++;
}

/* Adobe CMYK JPEGs store inverted ink values; R = C * K / 255 and so on. */
static void cmyk_to_rgb(const unsigned char *cmyk, unsigned char *rgb, size_t pixels) {
    for (size_t i = 0; i < pixels; i++) {
        unsigned k = cmyk[4 * i + 3];
        for (int c = 0; c < 3; c++) rgb[3 * i + c] = (unsigned char)((cmyk[4 * i + c] * k + 127) / 255);
    }
}

int cimg_jpeg_decode(const unsigned char *data, size_t size, int channels, cimg_image *out,
                     int verify_only, char *message) {
    struct jpeg_decompress_struct cinfo;
    jpeg_error_state state;
    memset(&cinfo, 0, sizeof(cinfo));
    cinfo.err = jpeg_std_error(&state.base);
    state.base.error_exit = on_jpeg_error;
    state.base.emit_message = on_jpeg_message;
    state.message = message;
    state.context = "decode";
    unsigned char *volatile native = NULL;
    unsigned char *volatile result = NULL;
    volatile int code = CIMG_ERR_CORRUPT;

    if (setjmp(state.jump)) {
        free(native);
        free(result);
        jpeg_destroy_decompress(&cinfo);
        return code;
    }
    jpeg_create_decompress(&cinfo);
    jpeg_mem_src(&cinfo, data, (unsigned long)size);
    if (jpeg_read_header(&cinfo, TRUE) != JPEG_HEADER_OK) {
        code = cimg_fail(message, CIMG_ERR_CORRUPT, "JPEG decode: no image in the file (tables only)");
        longjmp(state.jump, 1);
    }
    out->source.width = (int)cinfo.image_width;
    out->source.height = (int)cinfo.image_height;
    out->source.channels = cinfo.num_components;
    out->source.bit_depth = cinfo.data_precision;
    out->source.format = CIMG_FORMAT_JPEG;
    if ((double)cinfo.image_width * (double)cinfo.image_height > (double)CIMG_MAX_PIXELS) {
        code = cimg_fail(message, CIMG_ERR_TOO_LARGE, "JPEG decode: %ux%u exceeds %ld pixels",
                         cinfo.image_width, cinfo.image_height, (long)CIMG_MAX_PIXELS);
        longjmp(state.jump, 1);
    }
    int cmyk = cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK;
    if (cmyk) cinfo.out_color_space = JCS_CMYK;
    else cinfo.out_color_space = (channels == 1 || verify_only) ? JCS_GRAYSCALE : JCS_RGB;
    if (verify_only) {
        /* Every entropy-coded byte is still decoded; only the inverse DCT is reduced. */
        cinfo.scale_num = 1;
        cinfo.scale_denom = 8;
        cinfo.dct_method = JDCT_IFAST;
        cinfo.do_fancy_upsampling = FALSE;
    }
    jpeg_start_decompress(&cinfo);

    size_t width = cinfo.output_width, height = cinfo.output_height;
    size_t native_channels = (size_t)cinfo.output_components;
    size_t stride = width * native_channels;
    native = (unsigned char *)malloc(verify_only ? stride + 1 : stride * height + 1);
    if (!native) {
        code = cimg_fail(message, CIMG_ERR_MEMORY, "out of memory for %zux%zu JPEG", width, height);
        longjmp(state.jump, 1);
    }
    while (cinfo.output_scanline < cinfo.output_height) {
        JSAMPROW row = verify_only ? native : native + (size_t)cinfo.output_scanline * stride;
        jpeg_read_scanlines(&cinfo, &row, 1);
    }
    jpeg_finish_decompress(&cinfo);
    jpeg_destroy_decompress(&cinfo);
    if (verify_only) {
        free(native);
        return CIMG_OK;
    }

    size_t pixels = width * height;
    unsigned char *final = native;
    if (cmyk) {
        unsigned char *rgb = (unsigned char *)malloc(pixels * 3 + 1);
        unsigned char *done = rgb && channels == 1 ? (unsigned char *)malloc(pixels + 1) : rgb;
        if (!rgb || !done) {
            free(rgb);
            free(native);
            return cimg_fail(message, CIMG_ERR_MEMORY, "out of memory converting CMYK");
        }
        cmyk_to_rgb(native, rgb, pixels);
        if (channels == 1) {
            cimg_rgb_to_luma(rgb, done, pixels);
            free(rgb);
        }
        free(native);
        final = done;
    } else if ((int)native_channels != channels) {
        unsigned char *converted = (unsigned char *)malloc(pixels * (size_t)channels + 1);
        if (!converted) {
            free(native);
            return cimg_fail(message, CIMG_ERR_MEMORY, "out of memory converting channels");
        }
        cimg_convert_channels(native, (int)native_channels, converted, channels, pixels);
        free(native);
        final = converted;
    }
    out->pixels = final;
    out->width = (int)width;
    out->height = (int)height;
    out->channels = channels;
    return CIMG_OK;
}

int cimg_encode_jpeg_file(const char *path, const unsigned char *pixels, int width, int height,
                          int channels, int quality, char *message) {
    if (width <= 0 || height <= 0 || (channels != 1 && channels != 3) || !pixels)
        return cimg_fail(message, CIMG_ERR_ARGUMENT, "JPEG encode: bad image %dx%dx%d", width, height, channels);
    if (quality < 1 || quality > 100)
        return cimg_fail(message, CIMG_ERR_ARGUMENT, "JPEG encode: quality must be 1-100, got %d", quality);
    FILE *volatile f = fopen(path, "wb");
    if (!f) return cimg_fail(message, CIMG_ERR_IO, "JPEG encode: cannot create file");
    struct jpeg_compress_struct cinfo;
    jpeg_error_state state;
    memset(&cinfo, 0, sizeof(cinfo));
    cinfo.err = jpeg_std_error(&state.base);
    state.base.error_exit = on_jpeg_error;
    state.message = message;
    state.context = "encode";
    if (setjmp(state.jump)) {
        jpeg_destroy_compress(&cinfo);
        fclose(f);
        remove(path);
        return CIMG_ERR_IO;
    }
    jpeg_create_compress(&cinfo);
    jpeg_stdio_dest(&cinfo, f);
    cinfo.image_width = (JDIMENSION)width;
    cinfo.image_height = (JDIMENSION)height;
    cinfo.input_components = channels;
    cinfo.in_color_space = channels == 1 ? JCS_GRAYSCALE : JCS_RGB;
    jpeg_set_defaults(&cinfo);
    jpeg_set_quality(&cinfo, quality, TRUE);
    jpeg_start_compress(&cinfo, TRUE);
    size_t stride = (size_t)width * (size_t)channels;
    while (cinfo.next_scanline < cinfo.image_height) {
        JSAMPROW row = (JSAMPROW)(pixels + (size_t)cinfo.next_scanline * stride);
        jpeg_write_scanlines(&cinfo, &row, 1);
    }
    jpeg_finish_compress(&cinfo);
    jpeg_destroy_compress(&cinfo);
    if (fclose(f) != 0) {
        remove(path);
        return cimg_fail(message, CIMG_ERR_IO, "JPEG encode: write failed (disk full?)");
    }
    return CIMG_OK;
}
