/* PNG decode and encode over libpng. Errors longjmp back to the setjmp in this file only. */
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* Error state shared with libpng's callbacks. */
typedef struct {
    char *message;
    const char *context; /* "decode" or "encode" */
} png_error_state;

typedef struct {
    const unsigned char *data;
    size_t size;
    size_t position;
} png_memory_reader;

static void on_png_error(png_structp png, png_const_charp text) {
    png_error_state *state = (png_error_state *)png_get_error_ptr(png);
    if (state && state->message) snprintf(state->message, CIMG_MESSAGE_SIZE, "PNG %s: %s", state->context, text);
    png_longjmp(png, 1);
}

static void on_png_warning(png_structp png, png_const_charp text) {
    (void)png;
    (void)text; /* ancillary-chunk problems: libpng recovers, so do we */
}

static void read_from_memory(png_structp png, png_bytep out, png_size_t count) {
    png_memory_reader *reader = (png_memory_reader *)png_get_io_ptr(png);
    if (reader->size - reader->position < count) png_error(png, "file ends early (truncated PNG data)");
    memcpy(out, reader->data + reader->position, count);
    reader->position += count;
}

int cimg_png_decode(const unsigned char *data, size_t size, int channels, cimg_image *out,
                    int verify_only, char *message) {
    png_error_state state = {message, "decode"};
    png_memory_reader reader = {data, size, 0};
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &state, on_png_error, on_png_warning);
    if (!png) return cimg_fail(message, CIMG_ERR_MEMORY, "out of memory (png_create_read_struct)");
    png_infop info = png_create_info_struct(png);
    if (!info) {
        png_destroy_read_struct(&png, NULL, NULL);
        return cimg_fail(message, CIMG_ERR_MEMORY, "out of memory (png_create_info_struct)");
    }
    /* Buffers written after setjmp: volatile pointers so the longjmp path frees what exists. */
    unsigned char *volatile native = NULL;
    unsigned char *volatile converted = NULL;
    png_bytep *volatile rows = NULL;
    volatile int code = CIMG_ERR_CORRUPT;

    if (setjmp(png_jmpbuf(png))) {
        free(native);
        free(converted);
        free(rows);
        png_destroy_read_struct(&png, &info, NULL);
        return code;
    }
    png_set_read_fn(png, &reader, read_from_memory);
    png_read_info(png, info);

    png_uint_32 width = 0, height = 0;
    int bit_depth = 0, color_type = 0, interlace = 0;
    png_get_IHDR(png, info, &width, &height, &bit_depth, &color_type, &interlace, NULL, NULL);
    int stored = png_get_channels(png, info);
    if (color_type == PNG_COLOR_TYPE_PALETTE) stored = png_get_valid(png, info, PNG_INFO_tRNS) ? 4 : 3;
    out->source.width = (int)width;
    out->source.height = (int)height;
    out->source.channels = stored;
    out->source.bit_depth = bit_depth;
    out->source.format = CIMG_FORMAT_PNG;
    if ((double)width * (double)height > (double)CIMG_MAX_PIXELS) {
        code = cimg_fail(message, CIMG_ERR_TOO_LARGE, "PNG decode: %ux%u exceeds %ld pixels",
                         (unsigned)width, (unsigned)height, (long)CIMG_MAX_PIXELS);
        png_longjmp(png, 1);
    }

    if (bit_depth == 16) png_set_strip_16(png); /* keep the high byte: value >> 8 */
    if (color_type == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
    if (color_type == PNG_COLOR_TYPE_GRAY && bit_depth < 8) png_set_expand_gray_1_2_4_to_8(png);
    int passes = png_set_interlace_handling(png);
    png_read_update_info(png, info);

    int native_channels = png_get_channels(png, info);
    size_t row_bytes = png_get_rowbytes(png, info);
    if (row_bytes != (size_t)width * (size_t)native_channels) {
        code = cimg_fail(message, CIMG_ERR_CORRUPT, "PNG decode: unexpected row size %zu for %u x %d channels",
                         row_bytes, (unsigned)width, native_channels);
        png_longjmp(png, 1);
    }

    if (verify_only) {
        native = (unsigned char *)malloc(row_bytes ? row_bytes : 1);
        if (!native) {
            code = cimg_fail(message, CIMG_ERR_MEMORY, "out of memory");
            png_longjmp(png, 1);
        }
        for (int pass = 0; pass < passes; pass++)
            for (png_uint_32 y = 0; y < height; y++) png_read_row(png, native, NULL);
        png_read_end(png, NULL);
        free(native);
        png_destroy_read_struct(&png, &info, NULL);
        return CIMG_OK;
    }

    size_t pixels = (size_t)width * (size_t)height;
    native = (unsigned char *)malloc(pixels * (size_t)native_channels + 1);
    rows = (png_bytep *)malloc(sizeof(png_bytep) * (height ? height : 1));
    if (!native || !rows) {
        code = cimg_fail(message, CIMG_ERR_MEMORY, "out of memory for %ux%u PNG", (unsigned)width, (unsigned)height);
        png_longjmp(png, 1);
    }
    for (png_uint_32 y = 0; y < height; y++) rows[y] = native + (size_t)y * row_bytes;
    png_read_image(png, rows);
    png_read_end(png, NULL);

    unsigned char *result = native;
    if (native_channels != channels) {
        converted = (unsigned char *)malloc(pixels * (size_t)channels + 1);
        if (!converted) {
            code = cimg_fail(message, CIMG_ERR_MEMORY, "out of memory converting channels");
            png_longjmp(png, 1);
        }
        cimg_convert_channels(native, native_channels, converted, channels, pixels);
        free(native);
        native = NULL;
        result = converted;
    }
    free(rows);
    png_destroy_read_struct(&png, &info, NULL);
    out->pixels = result;
    out->width = (int)width;
    out->height = (int)height;
    out->channels = channels;
    return CIMG_OK;
}

int cimg_encode_png_file(const char *path, const unsigned char *pixels, int width, int height,
                         int channels, int level, char *message) {
    if (width <= 0 || height <= 0 || channels < 1 || channels > 4 || !pixels)
        return cimg_fail(message, CIMG_ERR_ARGUMENT, "PNG encode: bad image %dx%dx%d", width, height, channels);
    if (level < 0 || level > 9)
        return cimg_fail(message, CIMG_ERR_ARGUMENT, "PNG encode: level must be 0-9, got %d", level);
    FILE *f = fopen(path, "wb");
    if (!f) return cimg_fail(message, CIMG_ERR_IO, "PNG encode: cannot create file");
    png_error_state state = {message, "encode"};
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &state, on_png_error, on_png_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!png || !info) {
        png_destroy_write_struct(&png, NULL);
        fclose(f);
        remove(path);
        return cimg_fail(message, CIMG_ERR_MEMORY, "PNG encode: out of memory");
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        fclose(f);
        remove(path);
        return CIMG_ERR_IO;
    }
    png_init_io(png, f);
    png_set_compression_level(png, level);
    if (level == 0) png_set_filter(png, 0, PNG_FILTER_NONE);
    else if (level <= 3) png_set_filter(png, 0, PNG_FILTER_SUB);
    static const int types[5] = {0, PNG_COLOR_TYPE_GRAY, PNG_COLOR_TYPE_GRAY_ALPHA, PNG_COLOR_TYPE_RGB,
                                 PNG_COLOR_TYPE_RGB_ALPHA};
    png_set_IHDR(png, info, (png_uint_32)width, (png_uint_32)height, 8, types[channels], PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    size_t stride = (size_t)width * (size_t)channels;
    for (int y = 0; y < height; y++) png_write_row(png, (png_const_bytep)(pixels + (size_t)y * stride));
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    if (fclose(f) != 0) {
        remove(path);
        return cimg_fail(message, CIMG_ERR_IO, "PNG encode: write failed (disk full?)");
    }
    return CIMG_OK;
}
