// CPNG: libpng 1.6 (pkg-config `libpng`, Debian `libpng-dev`).
//
// libpng reports errors by longjmp-ing out of the failing call. Swift cannot catch a longjmp, and
// jumping across Swift frames is undefined behaviour, so every libpng call that can fail is made
// from one of the small C functions below. Each sets its own setjmp point, turns a libpng error into
// a return code plus a message kept in the context struct, and never lets a longjmp reach Swift.
// Warnings are swallowed (libpng prints them to stderr by default).
#pragma once
#include <png.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>

/// Size of the error-message buffers below.
#define LA_PNG_MESSAGE_SIZE 256

/// 1 when this machine stores integers little-endian (libpng's 16-bit samples are big-endian).
static inline int la_png_host_is_little_endian(void) {
    const unsigned short one = 1;
    return *(const unsigned char *)&one == 1;
}

static inline void la_png_copy_message(char *dst, const char *msg) {
    if (!msg) msg = "unknown libpng error";
    strncpy(dst, msg, LA_PNG_MESSAGE_SIZE - 1);
    dst[LA_PNG_MESSAGE_SIZE - 1] = '\0';
}

static inline void la_png_silent_warning(png_structp png, png_const_charp msg) {
    (void)png;
    (void)msg;
}

// MARK: - Reading from memory

/// State of one decode from an in-memory PNG file. Zero-initialise, fill `data`/`size`, then call
/// `la_png_read_header`, `la_png_read_configure`, `la_png_read_image` in that order and finally
/// `la_png_read_destroy` (always, also after a failure).
typedef struct la_png_reader {
    png_structp png;
    png_infop info;
    const unsigned char *data;
    size_t size;
    size_t offset;
    /// Set when libpng asked for bytes beyond the end of the data (a truncated file).
    int hit_end;
    /// libpng's error text after a failed call.
    char message[LA_PNG_MESSAGE_SIZE];
} la_png_reader;

static inline void la_png_reader_error(png_structp png, png_const_charp msg) {
    la_png_reader *r = (la_png_reader *)png_get_error_ptr(png);
    if (r) la_png_copy_message(r->message, msg);
    png_longjmp(png, 1);
}

static inline void la_png_reader_read(png_structp png, png_bytep out, png_size_t length) {
    la_png_reader *r = (la_png_reader *)png_get_io_ptr(png);
    if (length > r->size - r->offset) {
        r->hit_end = 1;
        png_error(png, "unexpected end of PNG data");
    }
    memcpy(out, r->data + r->offset, length);
    r->offset += length;
}

static inline const char *la_png_reader_message(const la_png_reader *r) { return r->message; }

/// Creates the libpng structs and reads everything up to the first IDAT (signature, IHDR, PLTE,
/// tRNS, ancillary chunks). `max_width`/`max_height` become libpng's user limits.
/// Returns 0 on success, -1 on a libpng error (see `message`, `hit_end`).
static inline int la_png_read_header(la_png_reader *r, png_uint_32 max_width, png_uint_32 max_height,
                                     png_uint_32 *width, png_uint_32 *height, int *bit_depth,
                                     int *color_type, int *interlace) {
    r->png = png_create_read_struct(PNG_LIBPNG_VER_STRING, r, la_png_reader_error, la_png_silent_warning);
    if (!r->png) {
        la_png_copy_message(r->message, "png_create_read_struct failed (out of memory)");
        return -1;
    }
    r->info = png_create_info_struct(r->png);
    if (!r->info) {
        la_png_copy_message(r->message, "png_create_info_struct failed (out of memory)");
        return -1;
    }
    if (setjmp(png_jmpbuf(r->png))) return -1;
    png_set_read_fn(r->png, r, la_png_reader_read);
    png_set_user_limits(r->png, max_width, max_height);
    png_read_info(r->png, r->info);
    int compression = 0, filter = 0;
    png_get_IHDR(r->png, r->info, width, height, bit_depth, color_type, interlace, &compression, &filter);
    return 0;
}

/// Sets the decoding transforms — palette → RGB, 1/2/4-bit gray → 8-bit, tRNS → alpha channel,
/// 16-bit samples in host byte order, Adam7 de-interlacing — and reports the decoded layout.
/// Returns 0 on success, -1 on a libpng error.
static inline int la_png_read_configure(la_png_reader *r, int *channels, int *bit_depth, size_t *rowbytes) {
    if (setjmp(png_jmpbuf(r->png))) return -1;
    int color_type = png_get_color_type(r->png, r->info);
    int depth = png_get_bit_depth(r->png, r->info);
    if (color_type == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(r->png);
    if (color_type == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(r->png);
    if (png_get_valid(r->png, r->info, PNG_INFO_tRNS)) png_set_tRNS_to_alpha(r->png);
    if (depth == 16 && la_png_host_is_little_endian()) png_set_swap(r->png);
    (void)png_set_interlace_handling(r->png);
    png_read_update_info(r->png, r->info);
    *channels = png_get_channels(r->png, r->info);
    *bit_depth = png_get_bit_depth(r->png, r->info);
    *rowbytes = png_get_rowbytes(r->png, r->info);
    return 0;
}

/// Decodes all rows into `buffer` (`height` rows of `rowbytes` bytes) and reads the chunks after the
/// image data up to IEND, so that damage there is reported too. Returns 0 on success, -1 on error.
static inline int la_png_read_image(la_png_reader *r, unsigned char *buffer, size_t rowbytes, png_uint_32 height) {
    png_bytep *rows = (png_bytep *)malloc((size_t)height * sizeof(png_bytep));
    if (!rows) {
        la_png_copy_message(r->message, "out of memory for row pointers");
        return -1;
    }
    for (png_uint_32 y = 0; y < height; y++) rows[y] = buffer + (size_t)y * rowbytes;
    if (setjmp(png_jmpbuf(r->png))) {
        free(rows);
        return -1;
    }
    png_read_image(r->png, rows);
    png_read_end(r->png, NULL);
    free(rows);
    return 0;
}

/// Frees the libpng structs of a reader (safe after any failure, and more than once).
static inline void la_png_read_destroy(la_png_reader *r) {
    if (r->png) png_destroy_read_struct(&r->png, r->info ? &r->info : NULL, NULL);
    r->png = NULL;
    r->info = NULL;
}

// MARK: - Writing to memory

/// State of one encode into a growable memory buffer. Zero-initialise, call `la_png_write`, then
/// `la_png_write_free` (always) to release `data`.
typedef struct la_png_writer {
    unsigned char *data;
    size_t size;
    size_t capacity;
    char message[LA_PNG_MESSAGE_SIZE];
} la_png_writer;

static inline void la_png_writer_error(png_structp png, png_const_charp msg) {
    la_png_writer *w = (la_png_writer *)png_get_error_ptr(png);
    if (w) la_png_copy_message(w->message, msg);
    png_longjmp(png, 1);
}

static inline void la_png_writer_write(png_structp png, png_bytep bytes, png_size_t length) {
    la_png_writer *w = (la_png_writer *)png_get_io_ptr(png);
    if (length > w->capacity - w->size) {
        size_t capacity = w->capacity ? w->capacity : 65536;
        while (length > capacity - w->size) capacity *= 2;
        unsigned char *grown = (unsigned char *)realloc(w->data, capacity);
        if (!grown) png_error(png, "out of memory for the encoded PNG");
        w->data = grown;
        w->capacity = capacity;
    }
    memcpy(w->data + w->size, bytes, length);
    w->size += length;
}

static inline void la_png_writer_flush(png_structp png) { (void)png; }

static inline const char *la_png_writer_message(const la_png_writer *w) { return w->message; }

/// Encodes `height` rows of `rowbytes` bytes at `pixels` as a PNG of the given colour type and bit
/// depth (16-bit samples in host byte order), optionally Adam7-interlaced, zlib level
/// `compression_level` (0–9). Returns 0 on success, -1 on a libpng error (see `message`).
static inline int la_png_write(la_png_writer *w, const unsigned char *pixels, size_t rowbytes,
                               png_uint_32 width, png_uint_32 height, int bit_depth, int color_type,
                               int interlaced, int compression_level) {
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, w, la_png_writer_error, la_png_silent_warning);
    if (!png) {
        la_png_copy_message(w->message, "png_create_write_struct failed (out of memory)");
        return -1;
    }
    png_infop info = png_create_info_struct(png);
    if (!info) {
        png_destroy_write_struct(&png, NULL);
        la_png_copy_message(w->message, "png_create_info_struct failed (out of memory)");
        return -1;
    }
    png_bytep *rows = (png_bytep *)malloc((size_t)(height ? height : 1) * sizeof(png_bytep));
    if (!rows) {
        png_destroy_write_struct(&png, &info);
        la_png_copy_message(w->message, "out of memory for row pointers");
        return -1;
    }
    for (png_uint_32 y = 0; y < height; y++) rows[y] = (png_bytep)(pixels + (size_t)y * rowbytes);
    if (setjmp(png_jmpbuf(png))) {
        free(rows);
        png_destroy_write_struct(&png, &info);
        return -1;
    }
    png_set_write_fn(png, w, la_png_writer_write, la_png_writer_flush);
    png_set_compression_level(png, compression_level);
    png_set_IHDR(png, info, width, height, bit_depth, color_type,
                 interlaced ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    if (bit_depth == 16 && la_png_host_is_little_endian()) png_set_swap(png);
    if (interlaced) (void)png_set_interlace_handling(png);
    png_write_image(png, rows);
    png_write_end(png, NULL);
    free(rows);
    png_destroy_write_struct(&png, &info);
    return 0;
}

/// Releases the output buffer of a writer.
static inline void la_png_write_free(la_png_writer *w) {
    free(w->data);
    w->data = NULL;
    w->size = 0;
    w->capacity = 0;
}
