// CVideo: video decoding and encoding over FFmpeg's libraries (libavformat, libavcodec,
// libswscale), for predict's paired video. Frames cross this boundary as packed RGB24.
#ifndef DUALFUSE_CVIDEO_H
#define DUALFUSE_CVIDEO_H
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dv_reader dv_reader;
typedef struct dv_writer dv_writer;

/// Opens the best video stream of `path` for decoding; NULL with a message in `err` on failure.
dv_reader *dv_open(const char *path, char *err, size_t errlen);
/// Frame size, nominal frame rate (frames per second, 0 when unknown) and duration in seconds
/// (0 when unknown) of an opened stream.
void dv_info(const dv_reader *r, int *width, int *height, double *fps, double *duration);
/// Decodes the next frame into `rgb` (width * height * 3 bytes) and its presentation time in
/// seconds. Returns 1 for a frame, 0 at the end of the stream, -1 on an error (message in `err`).
int dv_read(dv_reader *r, uint8_t *rgb, double *seconds, char *err, size_t errlen);
void dv_close(dv_reader *r);

/// Creates an MP4 at `path` for RGB24 frames of `width` x `height` at `fps`: H.264 (libx264)
/// when FFmpeg has the encoder, else MPEG-4 Part 2. NULL with a message in `err` on failure.
dv_writer *dv_create(const char *path, int width, int height, double fps, char *err, size_t errlen);
/// Encodes one frame (width * height * 3 bytes). 0 on success, -1 on an error (message in `err`).
int dv_write(dv_writer *w, const uint8_t *rgb, char *err, size_t errlen);
/// Flushes the encoder, writes the trailer and closes the file. 0 on success.
int dv_finish(dv_writer *w, char *err, size_t errlen);
/// The encoder in use ("libx264" or "mpeg4").
const char *dv_codec(const dv_writer *w);

#ifdef __cplusplus
}
#endif
#endif
