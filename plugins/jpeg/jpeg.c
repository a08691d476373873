/*
 * jpeg — an image decoder over libjpeg-turbo (jpeglib.h, Debian libjpeg62-turbo-dev).
 *
 * libjpeg reports fatal errors through error_exit, which must not return; here it longjmps back to
 * the setjmp in the same C function that called libjpeg, so no longjmp ever crosses a frame of the
 * host (Swift). Warnings (libjpeg's "corrupt data" messages, e.g. a file cut short, which libjpeg
 * would otherwise pad with gray) are treated as errors: the bad-input guarantee of the PNG reader —
 * a damaged file gives a named error, never a partial image.
 *
 * Output: gray float in [0, 1] = sample / 255; colour files are converted by libjpeg to its
 * grayscale (the Y of YCbCr, ITU-R BT.601). CMYK/YCCK files are refused as unsupported.
 *
 * Extra exported symbols (not part of the ABI; used by tests and tools to make JPEG files):
 * affinity_jpeg_encode and affinity_jpeg_free.
 */
#include "../include/affinity_plugin.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>
#include <jerror.h>

/* Refuse images larger than this per side before allocating pixel memory. */
#define JPEG_MAX_SIDE 16384u
/* The most memory libjpeg may allocate for one decode (issue 16). A progressive or multi-scan JPEG
 * keeps every DCT coefficient of the image (2 bytes per sample) until its last scan, and a few
 * hundred bytes of scans can name an 8192² colour image: past this budget libjpeg stops before it
 * allocates (JERR_NO_BACKING_STORE: this build has no temporary files), and the file is refused as
 * too large. Baseline files need a few rows at a time and never come near it. */
#define JPEG_MAX_MEMORY (256L << 20)

typedef struct guarded_error {
    struct jpeg_error_mgr base;
    jmp_buf jump;
    char message[JMSG_LENGTH_MAX];
    int warnings;
    char warning[JMSG_LENGTH_MAX];
} guarded_error;

static void on_error_exit(j_common_ptr cinfo) {
    guarded_error *e = (guarded_error *)cinfo->err;
    e->base.format_message(cinfo, e->message);
    longjmp(e->jump, 1);
}

static void on_emit_message(j_common_ptr cinfo, int level) {
    guarded_error *e = (guarded_error *)cinfo->err;
    if (level < 0) { /* a warning: corrupt data */
        if (e->warnings++ == 0) e->base.format_message(cinfo, e->warning);
    }
}

static void on_output_message(j_common_ptr cinfo) { (void)cinfo; }

static int32_t fail(affinity_error *error, int32_t code, const char *format, ...) {
    if (error) {
        va_list ap;
        va_start(ap, format);
        vsnprintf(error->message, sizeof error->message, format, ap);
        va_end(ap);
    }
    return code;
}

static int32_t jpeg_probe(const uint8_t *bytes, size_t length) {
    if (bytes && length >= 3 && bytes[0] == 0xFF && bytes[1] == 0xD8 && bytes[2] == 0xFF) return 100;
    return 0;
}

static void fill_info(affinity_image_info *info, const struct jpeg_decompress_struct *cinfo) {
    if (!info) return;
    affinity_image_info v;
    memset(&v, 0, sizeof v);
    v.struct_size = sizeof v;
    v.width = cinfo->image_width;
    v.height = cinfo->image_height;
    v.channels = (uint32_t)cinfo->num_components;
    v.bits = (uint32_t)cinfo->data_precision;
    if (cinfo->saw_JFIF_marker && cinfo->density_unit == 2 && cinfo->X_density && cinfo->Y_density) {
        v.pixel_spacing_x = 10.0 / cinfo->X_density; /* dots per cm → mm per dot */
        v.pixel_spacing_y = 10.0 / cinfo->Y_density;
    } else if (cinfo->saw_JFIF_marker && cinfo->density_unit == 1 && cinfo->X_density && cinfo->Y_density) {
        v.pixel_spacing_x = 25.4 / cinfo->X_density;
        v.pixel_spacing_y = 25.4 / cinfo->Y_density;
    }
    size_t n = info->struct_size && info->struct_size < sizeof v ? info->struct_size : sizeof v;
    memcpy(info, &v, n);
    info->struct_size = (uint32_t)n;
}

/* Reads (and with pixels != NULL decodes) one JPEG. All libjpeg calls happen in this frame. */
static int32_t run(const uint8_t *bytes, size_t length, float *pixels, size_t capacity, affinity_image_info *info,
                   affinity_error *error) {
    if (!bytes || length == 0) return fail(error, AFFINITY_E_CORRUPT, "The data is empty, not a JPEG image.");
    if (!jpeg_probe(bytes, length)) return fail(error, AFFINITY_E_CORRUPT, "The data is not a JPEG image (it does not start with the JPEG SOI marker).");
    if (length > (size_t)0xFFFFFFFFu) return fail(error, AFFINITY_E_TOO_LARGE, "The JPEG data is larger than 4 GiB.");
    struct jpeg_decompress_struct cinfo;
    guarded_error jerr;
    memset(&jerr, 0, sizeof jerr);
    cinfo.err = jpeg_std_error(&jerr.base);
    jerr.base.error_exit = on_error_exit;
    jerr.base.emit_message = on_emit_message;
    jerr.base.output_message = on_output_message;
    JSAMPLE *volatile row = NULL;
    if (setjmp(jerr.jump)) {
        const int code = jerr.base.msg_code;
        const uint32_t w = cinfo.image_width, h = cinfo.image_height;
        jpeg_destroy_decompress(&cinfo);
        free(row);
        if (code == JERR_NO_BACKING_STORE || code == JERR_OUT_OF_MEMORY)
            return fail(error, AFFINITY_E_TOO_LARGE, "The JPEG image (%u×%u pixels, progressive or multi-scan) needs more than the %ld MiB "
                        "this decoder allows for one image.", w, h, JPEG_MAX_MEMORY >> 20);
        return fail(error, AFFINITY_E_CORRUPT, "The JPEG image is damaged: %s.", jerr.message);
    }
    jpeg_create_decompress(&cinfo);
    cinfo.mem->max_memory_to_use = JPEG_MAX_MEMORY;
    jpeg_mem_src(&cinfo, (unsigned char *)bytes, (unsigned long)length);
    jpeg_read_header(&cinfo, TRUE);
    if (jerr.warnings) {
        jpeg_destroy_decompress(&cinfo);
        return fail(error, AFFINITY_E_CORRUPT, "The JPEG image is damaged: %s.", jerr.warning);
    }
    if (cinfo.image_width == 0 || cinfo.image_height == 0) {
        jpeg_destroy_decompress(&cinfo);
        return fail(error, AFFINITY_E_CORRUPT, "The JPEG image has a width or height of zero.");
    }
    if (cinfo.image_width > JPEG_MAX_SIDE || cinfo.image_height > JPEG_MAX_SIDE) {
        uint32_t w = cinfo.image_width, h = cinfo.image_height;
        jpeg_destroy_decompress(&cinfo);
        return fail(error, AFFINITY_E_TOO_LARGE, "The JPEG image is %u×%u pixels, larger than the limit of %u pixels per side.",
                    w, h, JPEG_MAX_SIDE);
    }
    if (cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK) {
        jpeg_destroy_decompress(&cinfo);
        return fail(error, AFFINITY_E_UNSUPPORTED, "The JPEG image is CMYK, which this decoder does not handle.");
    }
    fill_info(info, &cinfo);
    if (!pixels) {
        jpeg_destroy_decompress(&cinfo);
        return AFFINITY_OK;
    }
    const size_t width = cinfo.image_width, height = cinfo.image_height;
    if (capacity < width * height) {
        jpeg_destroy_decompress(&cinfo);
        return fail(error, AFFINITY_E_TOO_LARGE, "The host's buffer holds %zu pixels; the JPEG image needs %zu.", capacity, width * height);
    }
    cinfo.out_color_space = JCS_GRAYSCALE;
    jpeg_start_decompress(&cinfo);
    if (cinfo.output_components != 1) { /* not reached with JCS_GRAYSCALE */
        jpeg_destroy_decompress(&cinfo);
        return fail(error, AFFINITY_E_UNSUPPORTED, "libjpeg could not convert this JPEG image to gray.");
    }
    row = malloc(width);
    if (!row) {
        jpeg_destroy_decompress(&cinfo);
        return fail(error, AFFINITY_E_NO_MEMORY, "Out of memory decoding a JPEG image.");
    }
    while (cinfo.output_scanline < cinfo.output_height) {
        const size_t y = cinfo.output_scanline;
        JSAMPROW rows[1] = {row};
        if (jpeg_read_scanlines(&cinfo, rows, 1) != 1) break;
        float *out = pixels + y * width;
        for (size_t x = 0; x < width; x++) out[x] = (float)row[x] * (1.0f / 255.0f);
    }
    jpeg_finish_decompress(&cinfo);
    jpeg_destroy_decompress(&cinfo);
    free(row);
    if (jerr.warnings) return fail(error, AFFINITY_E_CORRUPT, "The JPEG image is damaged: %s.", jerr.warning);
    return AFFINITY_OK;
}

static int32_t jpeg_info(const uint8_t *bytes, size_t length, const char *options_json, affinity_image_info *info,
                         affinity_error *error) {
    (void)options_json;
    if (!info) return fail(error, AFFINITY_E_INVALID_ARGUMENT, "jpeg: info() needs an output struct.");
    return run(bytes, length, NULL, 0, info, error);
}

static int32_t jpeg_decode(const uint8_t *bytes, size_t length, const char *options_json, float *pixels, size_t capacity,
                           affinity_image_info *info, affinity_error *error) {
    (void)options_json;
    if (!pixels) return fail(error, AFFINITY_E_INVALID_ARGUMENT, "jpeg: decode() needs a pixel buffer.");
    return run(bytes, length, pixels, capacity, info, error);
}

/* Encodes `samples` (height × width × channels, 8-bit, channels 1 = gray or 3 = RGB) as a baseline
 * JPEG of the given quality (1–100). On success *out is a malloc'ed buffer for affinity_jpeg_free. */
__attribute__((visibility("default"))) int32_t affinity_jpeg_encode(const uint8_t *samples, uint32_t width, uint32_t height,
                                                                     uint32_t channels, int32_t quality, uint8_t **out,
                                                                     size_t *out_length, affinity_error *error) {
    if (!samples || !out || !out_length || width == 0 || height == 0 || (channels != 1 && channels != 3) ||
        quality < 1 || quality > 100)
        return fail(error, AFFINITY_E_INVALID_ARGUMENT, "affinity_jpeg_encode needs samples, a size, 1 or 3 channels and quality 1–100.");
    struct jpeg_compress_struct cinfo;
    guarded_error jerr;
    memset(&jerr, 0, sizeof jerr);
    cinfo.err = jpeg_std_error(&jerr.base);
    jerr.base.error_exit = on_error_exit;
    jerr.base.emit_message = on_emit_message;
    jerr.base.output_message = on_output_message;
    unsigned char *volatile buffer = NULL;
    unsigned long size = 0;
    if (setjmp(jerr.jump)) {
        jpeg_destroy_compress(&cinfo);
        free(buffer);
        return fail(error, AFFINITY_E_FAILED, "Could not encode the JPEG image: %s.", jerr.message);
    }
    jpeg_create_compress(&cinfo);
    jpeg_mem_dest(&cinfo, (unsigned char **)&buffer, &size);
    cinfo.image_width = width;
    cinfo.image_height = height;
    cinfo.input_components = (int)channels;
    cinfo.in_color_space = channels == 1 ? JCS_GRAYSCALE : JCS_RGB;
    jpeg_set_defaults(&cinfo);
    jpeg_set_quality(&cinfo, quality, TRUE);
    jpeg_start_compress(&cinfo, TRUE);
    while (cinfo.next_scanline < cinfo.image_height) {
        JSAMPROW rows[1] = {(JSAMPROW)(samples + (size_t)cinfo.next_scanline * width * channels)};
        jpeg_write_scanlines(&cinfo, rows, 1);
    }
    jpeg_finish_compress(&cinfo);
    jpeg_destroy_compress(&cinfo);
    *out = buffer;
    *out_length = size;
    return AFFINITY_OK;
}

__attribute__((visibility("default"))) void affinity_jpeg_free(uint8_t *buffer) { free(buffer); }

static const affinity_image_decoder decoder_table = {
    .struct_size = sizeof(affinity_image_decoder),
    .probe = jpeg_probe,
    .info = jpeg_info,
    .decode = jpeg_decode,
};

static const affinity_plugin plugin = {
    .abi_version = AFFINITY_PLUGIN_ABI_VERSION,
    .struct_size = sizeof(affinity_plugin),
    .id = "jpeg",
    .version = "1.0.0",
    .description = "Image decoder: baseline and progressive JPEG through libjpeg-turbo, to gray.",
    .kind = AFFINITY_KIND_IMAGE_DECODER,
    .decoder = &decoder_table,
};

__attribute__((visibility("default"))) const affinity_plugin *affinity_plugin_entry(uint32_t host_abi_version) {
    (void)host_abi_version;
    return &plugin;
}
