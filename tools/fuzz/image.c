// libFuzzer target: PNG or JPEG decoding and verification (libpng / libjpeg behind CImageIO).
// Built twice, with FUZZ_FORMAT = CIMG_FORMAT_PNG or CIMG_FORMAT_JPEG: inputs of the other
// format are skipped, so each target spends its time on one decoder. Every error must come back
// as a result code with a message; nothing may crash, leak or read out of bounds (ASan).
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "CImageIO.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (cimg_format_of(data, size) != FUZZ_FORMAT) return 0;
    char message[CIMG_MESSAGE_SIZE];
    for (int channels = 1; channels <= 3; channels += 2) {
        cimg_image img;
        memset(&img, 0, sizeof img);
        if (cimg_decode(data, size, channels, &img, message) == CIMG_OK) cimg_free(img.pixels);
    }
    // The scan's path: verify a file (row-by-row PNG inflate, JPEG at 1/8 scale).
    char path[64];
    snprintf(path, sizeof path, "/dev/shm/dualfuse-fuzz-%d", (int)getpid());
    FILE *f = fopen(path, "wb");
    if (f) {
        fwrite(data, 1, size, f);
        fclose(f);
        cimg_info info;
        (void)cimg_verify_file(path, &info, message);
        unlink(path);
    }
    return 0;
}
