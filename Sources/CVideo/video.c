// FFmpeg-backed readers and writers of predict's paired video.
#include "CVideo.h"
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/imgutils.h>
#include <libavutil/opt.h>
#include <libswscale/swscale.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// FFmpeg's libraries are opened at run time, on the first video opened or created: the tools start
// where they are absent, and their dependencies (libsoxr brings libgomp) stay out of every process
// that never touches video. GOMP_SPINCOUNT is set to 10000 first unless the user set it or
// OMP_WAIT_POLICY, as the oneDNN loader does (CDNNL), so whichever loads libgomp first gives its
// threads the same brief spin before they sleep.
#define LIB_AVUTIL "libavutil.so." AV_STRINGIFY(LIBAVUTIL_VERSION_MAJOR)
#define LIB_AVCODEC "libavcodec.so." AV_STRINGIFY(LIBAVCODEC_VERSION_MAJOR)
#define LIB_AVFORMAT "libavformat.so." AV_STRINGIFY(LIBAVFORMAT_VERSION_MAJOR)
#define LIB_SWSCALE "libswscale.so." AV_STRINGIFY(LIBSWSCALE_VERSION_MAJOR)
#define FFMPEG_FUNCTIONS(X) \
    X(0, av_d2q) X(0, av_frame_alloc) X(0, av_frame_free) X(0, av_frame_get_buffer) X(0, av_frame_make_writable) \
    X(0, av_frame_unref) X(0, av_log_set_level) X(0, av_opt_set) X(0, av_strerror) \
    X(1, av_packet_alloc) X(1, av_packet_free) X(1, av_packet_rescale_ts) X(1, av_packet_unref) X(1, avcodec_alloc_context3) \
    X(1, avcodec_find_encoder) X(1, avcodec_find_encoder_by_name) X(1, avcodec_free_context) X(1, avcodec_open2) \
    X(1, avcodec_parameters_from_context) X(1, avcodec_parameters_to_context) X(1, avcodec_receive_frame) \
    X(1, avcodec_receive_packet) X(1, avcodec_send_frame) X(1, avcodec_send_packet) \
    X(2, av_find_best_stream) X(2, av_guess_frame_rate) X(2, av_interleaved_write_frame) X(2, av_read_frame) \
    X(2, av_write_trailer) X(2, avformat_alloc_output_context2) X(2, avformat_close_input) X(2, avformat_find_stream_info) \
    X(2, avformat_free_context) X(2, avformat_new_stream) X(2, avformat_open_input) X(2, avformat_write_header) \
    X(2, avio_closep) X(2, avio_open) \
    X(3, sws_freeContext) X(3, sws_getCachedContext) X(3, sws_getContext) X(3, sws_scale)

#define DECLARE(lib, f) static __typeof__(f) *p_##f;
FFMPEG_FUNCTIONS(DECLARE)

static pthread_once_t once = PTHREAD_ONCE_INIT;
static char missing[256];   // empty when every library and function was found

static void load(void) {
    if (!getenv("OMP_WAIT_POLICY") && !getenv("GOMP_SPINCOUNT")) setenv("GOMP_SPINCOUNT", "10000", 1);
    const char *names[4] = {LIB_AVUTIL, LIB_AVCODEC, LIB_AVFORMAT, LIB_SWSCALE};
    void *libs[4];
    for (int i = 0; i < 4; i++) {
        if (!(libs[i] = dlopen(names[i], RTLD_NOW | RTLD_LOCAL))) {
            snprintf(missing, sizeof missing, "FFmpeg's %s is not installed (apt-get install libavformat-dev libavcodec-dev libswscale-dev)",
                     names[i]);
            return;
        }
    }
#define LOAD(lib, f) \
    if (!missing[0] && !(p_##f = (__typeof__(f) *)dlsym(libs[lib], #f))) snprintf(missing, sizeof missing, "%s lacks %s", names[lib], #f);
    FFMPEG_FUNCTIONS(LOAD)
}

// 1 when FFmpeg is ready, else the reason in err.
static int ready(char *err, size_t len) {
    pthread_once(&once, load);
    if (missing[0] && err && len) snprintf(err, len, "%s", missing);
    return !missing[0];
}

// From here on the names mean the loaded functions.
#define av_d2q p_av_d2q
#define av_frame_alloc p_av_frame_alloc
#define av_frame_free p_av_frame_free
#define av_frame_get_buffer p_av_frame_get_buffer
#define av_frame_make_writable p_av_frame_make_writable
#define av_frame_unref p_av_frame_unref
#define av_log_set_level p_av_log_set_level
#define av_opt_set p_av_opt_set
#define av_strerror p_av_strerror
#define av_packet_alloc p_av_packet_alloc
#define av_packet_free p_av_packet_free
#define av_packet_rescale_ts p_av_packet_rescale_ts
#define av_packet_unref p_av_packet_unref
#define avcodec_alloc_context3 p_avcodec_alloc_context3
#define avcodec_find_encoder p_avcodec_find_encoder
#define avcodec_find_encoder_by_name p_avcodec_find_encoder_by_name
#define avcodec_free_context p_avcodec_free_context
#define avcodec_open2 p_avcodec_open2
#define avcodec_parameters_from_context p_avcodec_parameters_from_context
#define avcodec_parameters_to_context p_avcodec_parameters_to_context
#define avcodec_receive_frame p_avcodec_receive_frame
#define avcodec_receive_packet p_avcodec_receive_packet
#define avcodec_send_frame p_avcodec_send_frame
#define avcodec_send_packet p_avcodec_send_packet
#define av_find_best_stream p_av_find_best_stream
#define av_guess_frame_rate p_av_guess_frame_rate
#define av_interleaved_write_frame p_av_interleaved_write_frame
#define av_read_frame p_av_read_frame
#define av_write_trailer p_av_write_trailer
#define avformat_alloc_output_context2 p_avformat_alloc_output_context2
#define avformat_close_input p_avformat_close_input
#define avformat_find_stream_info p_avformat_find_stream_info
#define avformat_free_context p_avformat_free_context
#define avformat_new_stream p_avformat_new_stream
#define avformat_open_input p_avformat_open_input
#define avformat_write_header p_avformat_write_header
#define avio_closep p_avio_closep
#define avio_open p_avio_open
#define sws_freeContext p_sws_freeContext
#define sws_getCachedContext p_sws_getCachedContext
#define sws_getContext p_sws_getContext
#define sws_scale p_sws_scale

static void say(char *err, size_t len, const char *what, int code) {
    if (!err || len == 0) return;
    char buf[AV_ERROR_MAX_STRING_SIZE] = {0};
    if (code < 0) av_strerror(code, buf, sizeof buf);
    snprintf(err, len, "%s%s%s", what, code < 0 ? ": " : "", code < 0 ? buf : "");
}

struct dv_reader {
    AVFormatContext *fmt;
    AVCodecContext *dec;
    struct SwsContext *sws;
    AVFrame *frame;
    AVPacket *packet;
    int stream;
    int width, height;
    int draining;
};

/// FFmpeg's own log lines (encoder statistics, warnings) stay quiet: errors come back as messages.
static void quiet(void) { av_log_set_level(AV_LOG_ERROR); }

dv_reader *dv_open(const char *path, char *err, size_t errlen) {
    if (!ready(err, errlen)) return NULL;
    quiet();
    dv_reader *r = calloc(1, sizeof *r);
    if (!r) { say(err, errlen, "out of memory", 0); return NULL; }
    int rc = avformat_open_input(&r->fmt, path, NULL, NULL);
    if (rc < 0) { say(err, errlen, "cannot open", rc); free(r); return NULL; }
    if ((rc = avformat_find_stream_info(r->fmt, NULL)) < 0) { say(err, errlen, "no stream information", rc); dv_close(r); return NULL; }
    const AVCodec *codec = NULL;
    r->stream = av_find_best_stream(r->fmt, AVMEDIA_TYPE_VIDEO, -1, -1, &codec, 0);
    if (r->stream < 0 || !codec) { say(err, errlen, "no decodable video stream", r->stream); dv_close(r); return NULL; }
    r->dec = avcodec_alloc_context3(codec);
    if (!r->dec) { say(err, errlen, "out of memory", 0); dv_close(r); return NULL; }
    avcodec_parameters_to_context(r->dec, r->fmt->streams[r->stream]->codecpar);
    r->dec->thread_count = 1;
    if ((rc = avcodec_open2(r->dec, codec, NULL)) < 0) { say(err, errlen, "cannot open the decoder", rc); dv_close(r); return NULL; }
    r->width = r->dec->width;
    r->height = r->dec->height;
    if (r->width <= 0 || r->height <= 0 || (long)r->width * r->height > (1L << 28)) {
        say(err, errlen, "unusable frame size", 0); dv_close(r); return NULL;
    }
    r->frame = av_frame_alloc();
    r->packet = av_packet_alloc();
    if (!r->frame || !r->packet) { say(err, errlen, "out of memory", 0); dv_close(r); return NULL; }
    return r;
}

void dv_info(const dv_reader *r, int *width, int *height, double *fps, double *duration) {
    AVStream *s = r->fmt->streams[r->stream];
    *width = r->width;
    *height = r->height;
    AVRational fr = av_guess_frame_rate(r->fmt, s, NULL);
    *fps = fr.num > 0 && fr.den > 0 ? av_q2d(fr) : 0;
    *duration = s->duration != AV_NOPTS_VALUE ? s->duration * av_q2d(s->time_base)
              : (r->fmt->duration != AV_NOPTS_VALUE ? r->fmt->duration / (double)AV_TIME_BASE : 0);
}

static int convert(dv_reader *r, uint8_t *rgb) {
    if (r->frame->width != r->width || r->frame->height != r->height) return -1;
    r->sws = sws_getCachedContext(r->sws, r->width, r->height, r->frame->format, r->width, r->height, AV_PIX_FMT_RGB24,
                                  SWS_BILINEAR, NULL, NULL, NULL);
    if (!r->sws) return -1;
    uint8_t *dst[4] = {rgb, NULL, NULL, NULL};
    int stride[4] = {r->width * 3, 0, 0, 0};
    sws_scale(r->sws, (const uint8_t *const *)r->frame->data, r->frame->linesize, 0, r->height, dst, stride);
    return 0;
}

int dv_read(dv_reader *r, uint8_t *rgb, double *seconds, char *err, size_t errlen) {
    AVStream *s = r->fmt->streams[r->stream];
    for (;;) {
        int rc = avcodec_receive_frame(r->dec, r->frame);
        if (rc == 0) {
            int64_t pts = r->frame->best_effort_timestamp;
            *seconds = pts == AV_NOPTS_VALUE ? -1 : pts * av_q2d(s->time_base);
            if (convert(r, rgb) != 0) { say(err, errlen, "frame size changed inside the stream", 0); return -1; }
            av_frame_unref(r->frame);
            return 1;
        }
        if (rc == AVERROR_EOF) return 0;
        if (rc != AVERROR(EAGAIN)) { say(err, errlen, "decoding failed", rc); return -1; }
        if (r->draining) return 0;
        rc = av_read_frame(r->fmt, r->packet);
        if (rc == AVERROR_EOF) {
            r->draining = 1;
            avcodec_send_packet(r->dec, NULL);
            continue;
        }
        if (rc < 0) { say(err, errlen, "reading failed", rc); return -1; }
        if (r->packet->stream_index == r->stream) {
            rc = avcodec_send_packet(r->dec, r->packet);
            if (rc < 0 && rc != AVERROR(EAGAIN)) { av_packet_unref(r->packet); say(err, errlen, "corrupt packet", rc); return -1; }
        }
        av_packet_unref(r->packet);
    }
}

void dv_close(dv_reader *r) {
    if (!r) return;
    sws_freeContext(r->sws);
    av_frame_free(&r->frame);
    av_packet_free(&r->packet);
    avcodec_free_context(&r->dec);
    avformat_close_input(&r->fmt);
    free(r);
}

struct dv_writer {
    AVFormatContext *fmt;
    AVCodecContext *enc;
    AVStream *stream;
    struct SwsContext *sws;
    AVFrame *frame;
    AVPacket *packet;
    int64_t next_pts;
    int src_width, src_height;
    const char *codec;
};

static int drain(dv_writer *w, char *err, size_t errlen) {
    for (;;) {
        int rc = avcodec_receive_packet(w->enc, w->packet);
        if (rc == AVERROR(EAGAIN) || rc == AVERROR_EOF) return 0;
        if (rc < 0) { say(err, errlen, "encoding failed", rc); return -1; }
        // One frame long (the muxer's edit list would otherwise drop the last frame).
        if (w->packet->duration == 0) w->packet->duration = 1;
        av_packet_rescale_ts(w->packet, w->enc->time_base, w->stream->time_base);
        w->packet->stream_index = w->stream->index;
        rc = av_interleaved_write_frame(w->fmt, w->packet);
        if (rc < 0) { say(err, errlen, "writing failed", rc); return -1; }
    }
}

dv_writer *dv_create(const char *path, int width, int height, double fps, char *err, size_t errlen) {
    if (!ready(err, errlen)) return NULL;
    quiet();
    dv_writer *w = calloc(1, sizeof *w);
    if (!w) { say(err, errlen, "out of memory", 0); return NULL; }
    int rc = avformat_alloc_output_context2(&w->fmt, NULL, "mp4", path);
    if (rc < 0 || !w->fmt) { say(err, errlen, "cannot create an MP4 container", rc); free(w); return NULL; }
    const AVCodec *codec = avcodec_find_encoder_by_name("libx264");
    w->codec = "libx264";
    if (!codec) { codec = avcodec_find_encoder(AV_CODEC_ID_MPEG4); w->codec = "mpeg4"; }
    if (!codec) { say(err, errlen, "FFmpeg has neither an H.264 nor an MPEG-4 encoder", 0); dv_finish(w, NULL, 0); return NULL; }
    w->stream = avformat_new_stream(w->fmt, NULL);
    w->enc = avcodec_alloc_context3(codec);
    if (!w->stream || !w->enc) { say(err, errlen, "out of memory", 0); dv_finish(w, NULL, 0); return NULL; }
    // Even sizes (4:2:0 chroma); the frame is scaled to them.
    w->enc->width = width & ~1;
    w->enc->height = height & ~1;
    if (w->enc->width < 2 || w->enc->height < 2) { say(err, errlen, "frame too small to encode", 0); dv_finish(w, NULL, 0); return NULL; }
    AVRational rate = av_d2q(fps > 0 ? fps : 25, 100000);
    w->enc->time_base = av_inv_q(rate);
    w->enc->framerate = rate;
    w->enc->pix_fmt = AV_PIX_FMT_YUV420P;
    w->enc->gop_size = 12;
    w->enc->thread_count = 1;
    if (strcmp(w->codec, "libx264") == 0) av_opt_set(w->enc->priv_data, "preset", "veryfast", 0), av_opt_set(w->enc->priv_data, "crf", "23", 0);
    else w->enc->bit_rate = 4000000;
    if (w->fmt->oformat->flags & AVFMT_GLOBALHEADER) w->enc->flags |= AV_CODEC_FLAG_GLOBAL_HEADER;
    if ((rc = avcodec_open2(w->enc, codec, NULL)) < 0) { say(err, errlen, "cannot open the encoder", rc); dv_finish(w, NULL, 0); return NULL; }
    avcodec_parameters_from_context(w->stream->codecpar, w->enc);
    w->stream->time_base = w->enc->time_base;
    if ((rc = avio_open(&w->fmt->pb, path, AVIO_FLAG_WRITE)) < 0) { say(err, errlen, "cannot write", rc); dv_finish(w, NULL, 0); return NULL; }
    if ((rc = avformat_write_header(w->fmt, NULL)) < 0) { say(err, errlen, "cannot write the header", rc); dv_finish(w, NULL, 0); return NULL; }
    w->frame = av_frame_alloc();
    w->packet = av_packet_alloc();
    if (!w->frame || !w->packet) { say(err, errlen, "out of memory", 0); dv_finish(w, NULL, 0); return NULL; }
    w->frame->format = AV_PIX_FMT_YUV420P;
    w->frame->width = w->enc->width;
    w->frame->height = w->enc->height;
    if (av_frame_get_buffer(w->frame, 0) < 0) { say(err, errlen, "out of memory", 0); dv_finish(w, NULL, 0); return NULL; }
    w->src_width = width;
    w->src_height = height;
    w->sws = sws_getContext(width, height, AV_PIX_FMT_RGB24, w->enc->width, w->enc->height, AV_PIX_FMT_YUV420P,
                            SWS_BILINEAR, NULL, NULL, NULL);
    if (!w->sws) { say(err, errlen, "cannot convert RGB to YUV", 0); dv_finish(w, NULL, 0); return NULL; }
    return w;
}

int dv_write(dv_writer *w, const uint8_t *rgb, char *err, size_t errlen) {
    if (av_frame_make_writable(w->frame) < 0) { say(err, errlen, "out of memory", 0); return -1; }
    const uint8_t *src[4] = {rgb, NULL, NULL, NULL};
    int stride[4] = {w->src_width * 3, 0, 0, 0};
    sws_scale(w->sws, src, stride, 0, w->src_height, w->frame->data, w->frame->linesize);
    w->frame->pts = w->next_pts++;
    int rc = avcodec_send_frame(w->enc, w->frame);
    if (rc < 0) { say(err, errlen, "encoding failed", rc); return -1; }
    return drain(w, err, errlen);
}

const char *dv_codec(const dv_writer *w) { return w->codec; }

int dv_finish(dv_writer *w, char *err, size_t errlen) {
    if (!w) return 0;
    int status = 0;
    if (w->enc && w->fmt && w->fmt->pb && w->packet) {
        avcodec_send_frame(w->enc, NULL);
        if (drain(w, err, errlen) < 0) status = -1;
        if (av_write_trailer(w->fmt) < 0 && status == 0) { say(err, errlen, "cannot write the trailer", 0); status = -1; }
    }
    sws_freeContext(w->sws);
    av_frame_free(&w->frame);
    av_packet_free(&w->packet);
    avcodec_free_context(&w->enc);
    if (w->fmt && w->fmt->pb) avio_closep(&w->fmt->pb);
    avformat_free_context(w->fmt);
    free(w);
    return status;
}
