/*
 * fuzz_decoder.c — libFuzzer target for an image-decoder plugin through the plugin ABI
 * (plugins/include/affinity_plugin.h), calling it as PluginHost does: probe, info, then decode and
 * values into host buffers of exactly the size info reported. scripts/fuzz compiles it with the
 * plugin's own sources (jpeg.c; dicom.cpp with GDCM) under clang -fsanitize=fuzzer,address,undefined.
 *
 * Input: byte 0 chooses the options JSON and the struct size the host announces; with its high bit
 * set, the options are the bytes after it up to a NUL (fuzzing the plugin's options parser); the
 * rest is the file. Checks: statuses are AFFINITY_OK or a negative AFFINITY_E_*; an error message
 * is NUL-terminated inside its buffer; info's struct_size never grows past the host's; a buffer one
 * value short is refused (AFFINITY_E_TOO_LARGE), never overrun (ASan: the buffers are exact).
 */
#include "affinity_plugin.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const affinity_plugin *affinity_plugin_entry(uint32_t host_abi_version);

/* The most values one input may make the harness allocate (a host limit, as maxDecodedValues). */
#define FUZZ_MAX_VALUES (1u << 24)

static void check(int condition, const char *what) {
    if (!condition) {
        fprintf(stderr, "fuzz_decoder: check failed: %s\n", what);
        abort();
    }
}

static void check_status(int32_t status, const affinity_error *error) {
    check(status == AFFINITY_OK || (status <= AFFINITY_E_FAILED && status >= AFFINITY_E_BROKEN_ENTRY), "status is not an AFFINITY_* code");
    if (status != AFFINITY_OK) check(memchr(error->message, 0, sizeof error->message) != NULL, "error message not NUL-terminated");
}

static const char *const fixed_options[] = {
    NULL, "{}", "{\"frame\": 1}", "{\"window_center\": -600, \"window_width\": 1500}", "{\"frame\": 0, \"window_width\": 1e-300}",
    "{\"colour\": 1}", "[1, 2]", "{\"window_width\": -5}",
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const affinity_image_decoder *decoder;
    if (!decoder) {
        const affinity_plugin *plugin = affinity_plugin_entry(AFFINITY_PLUGIN_ABI_VERSION);
        check(plugin && plugin->abi_version == AFFINITY_PLUGIN_ABI_VERSION && plugin->decoder, "not a decoder plugin");
        decoder = plugin->decoder;
    }
    if (size < 1) return 0;
    const uint8_t mode = data[0];
    const uint8_t *bytes = data + 1;
    size_t length = size - 1;
    char *options = NULL;
    if (mode & 0x80) {
        const uint8_t *nul = memchr(bytes, 0, length);
        if (!nul) return 0;
        options = strdup((const char *)bytes);
        length -= (size_t)(nul - bytes) + 1;
        bytes = nul + 1;
    } else {
        const char *o = fixed_options[mode % (sizeof fixed_options / sizeof *fixed_options)];
        options = o ? strdup(o) : NULL;
    }
    /* An exact copy, so that ASan sees any read past the end of the file. */
    uint8_t *file = malloc(length ? length : 1);
    memcpy(file, bytes, length);

    int32_t score = decoder->probe(file, length);
    check(score >= 0 && score <= 100, "probe score outside 0…100");

    affinity_error error;
    affinity_image_info info;
    memset(&info, 0, sizeof info);
    const uint32_t host_size = (mode & 0x40) ? (uint32_t)AFFINITY_IMAGE_INFO_V1_0_SIZE : (uint32_t)sizeof info;
    info.struct_size = host_size;
    int32_t status = decoder->info(file, length, options, &info, &error);
    check_status(status, &error);
    if (status == AFFINITY_OK) check(info.struct_size <= host_size, "info wrote more than the host's struct");
    const uint64_t pixels = (uint64_t)info.width * info.height;
    const uint32_t frames = info.struct_size > offsetof(affinity_image_info, frames) && info.frames > 0 ? info.frames : 1;
    if (status == AFFINITY_OK && pixels > 0 && pixels <= FUZZ_MAX_VALUES) {
        /* decode: a buffer one value short first (must be refused), then the exact one. */
        float *short_buffer = malloc((size_t)(pixels - 1) * sizeof(float) + 1);
        affinity_image_info again;
        memset(&again, 0, sizeof again);
        again.struct_size = sizeof again;
        status = decoder->decode(file, length, options, short_buffer, (size_t)pixels - 1, &again, &error);
        check_status(status, &error);
        check(status != AFFINITY_OK, "decode accepted a buffer too small for the image");
        free(short_buffer);
        float *buffer = malloc((size_t)pixels * sizeof(float));
        status = decoder->decode(file, length, options, buffer, (size_t)pixels, &again, &error);
        check_status(status, &error);
        if (status == AFFINITY_OK) {
            check(again.width == info.width && again.height == info.height, "decode reports another size than info");
            for (uint64_t i = 0; i < pixels; i++) check(buffer[i] >= 0.0f && buffer[i] <= 1.0f, "decoded value outside [0, 1]");
        }
        free(buffer);
        /* values (ABI 1.1): the first frames, and a range past the end. */
        if (decoder->struct_size > offsetof(affinity_image_decoder, values) && decoder->values) {
            uint32_t count = frames < 3 ? frames : 3;
            if (pixels * count <= FUZZ_MAX_VALUES) {
                float *values = malloc((size_t)(pixels * count) * sizeof(float));
                status = decoder->values(file, length, options, 0, count, values, (size_t)(pixels * count), &again, &error);
                check_status(status, &error);
                free(values);
            }
            float one;
            status = decoder->values(file, length, options, frames, 1, &one, 1, &again, &error);
            check_status(status, &error);
            check(status != AFFINITY_OK, "values accepted a frame past the last");
        }
    }
    free(file);
    free(options);
    return 0;
}
