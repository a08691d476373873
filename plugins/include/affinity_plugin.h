/*
 * affinity_plugin.h — the LesionAffinity plugin ABI, version 1 (DESIGN.md §4).
 *
 * A plugin is a shared library exporting one C symbol, AFFINITY_PLUGIN_ENTRY_SYMBOL
 * ("affinity_plugin_entry"), of type affinity_plugin_entry_fn: it returns a pointer to a static
 * affinity_plugin that lives as long as the process (the host never unloads a plugin).
 *
 * Rules for both sides:
 *  - Only plain C types, file descriptors and host-provided buffers cross the boundary. Strings are
 *    NUL-terminated UTF-8. Arrays are row-major float32 unless said otherwise.
 *  - Every fallible call returns an int32_t status: AFFINITY_OK (0) or a negative AFFINITY_E_* code.
 *    On failure the plugin writes one sentence (the "last error") into the host-provided
 *    affinity_error; the pointer may be NULL when the host does not want the text. The host owns the
 *    buffer, so no plugin needs thread-local state and concurrent calls never clobber a message.
 *  - Structs are versioned by their first field, struct_size, and only ever grow: a reader of the
 *    struct uses only the fields that fit inside the struct_size the writer announced, and a function
 *    pointer only when it fits inside the table's struct_size and is not NULL. Fields added after the
 *    first release are marked "ABI 1.1" below; the AFFINITY_*_V1_0_SIZE macros give the first
 *    release's sizes, which are the minimum a host accepts. (A plugin compiled against a newer header
 *    but written for an older one announces the new size with the new fields zeroed and the new
 *    functions NULL: a zero that means "not reported" is documented for every such field.)
 *  - A plugin never calls exit/abort on bad input and never lets a C++ exception or longjmp escape a
 *    call.
 *
 * Kinds: image decoder, dataset reader, classification head. One plugin is one kind; its table is
 * reached through the matching pointer of affinity_plugin (the others are NULL).
 */
#ifndef AFFINITY_PLUGIN_H
#define AFFINITY_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/** The ABI version this header describes. A host loads only plugins announcing exactly this. */
#define AFFINITY_PLUGIN_ABI_VERSION 1u
/** The name of the one exported entry symbol. */
#define AFFINITY_PLUGIN_ENTRY_SYMBOL "affinity_plugin_entry"

/* Status codes (negative: failure). */
#define AFFINITY_OK 0
#define AFFINITY_E_FAILED (-1)          /* anything not covered below */
#define AFFINITY_E_INVALID_ARGUMENT (-2) /* bad options JSON, wrong shape, NULL pointer, index out of range */
#define AFFINITY_E_UNSUPPORTED (-3)      /* a valid input this plugin does not handle (e.g. a compressed DICOM) */
#define AFFINITY_E_CORRUPT (-4)          /* damaged or truncated data */
#define AFFINITY_E_IO (-5)               /* an operating-system call failed (open, read, opendir) */
#define AFFINITY_E_NO_MEMORY (-6)
#define AFFINITY_E_TOO_LARGE (-7)        /* the host's buffer or size limit is too small */
#define AFFINITY_E_BROKEN_ENTRY (-8)     /* dataset readers: this sample is broken (reason in the error) */

/** The last error of a call: a sentence for people, written by the plugin on failure. */
typedef struct affinity_error {
    char message[512];
} affinity_error;

/* ---------------------------------------------------------------------------------------------- */
/* Image decoder                                                                                    */

/** Bits of affinity_image_info.flags (ABI 1.1): which optional header fields the file has. */
#define AFFINITY_INFO_HAS_PIXEL_SPACING   (1u << 0) /* pixel_spacing_x/_y come from the file */
#define AFFINITY_INFO_HAS_SLICE_THICKNESS (1u << 1)
#define AFFINITY_INFO_HAS_POSITION        (1u << 2) /* image_position */
#define AFFINITY_INFO_HAS_ORIENTATION     (1u << 3) /* image_orientation */
#define AFFINITY_INFO_HAS_INSTANCE_NUMBER (1u << 4)
#define AFFINITY_INFO_HAS_RESCALE         (1u << 5) /* the file states a Modality LUT (slope/intercept) */
#define AFFINITY_INFO_HAS_WINDOW          (1u << 6) /* window_center/_width are the window decode() applies */

/** The sizes of the fixed text fields of affinity_image_info (each NUL-terminated, truncated to fit;
 *  a DICOM UI value is at most 64 characters, a CS value 16). */
#define AFFINITY_INFO_SHORT_TEXT 32
#define AFFINITY_INFO_UID_TEXT 72

/**
 * What a decoder learns from a file's header.
 *
 * The host zeroes the struct, sets struct_size to the size it knows and passes it in; the plugin
 * writes at most min(host's struct_size, its own) bytes and sets struct_size to the number it wrote.
 * The host then reads only fields inside that size. Fields of ABI 1.1 that a plugin leaves at zero
 * mean "not reported" (frames 0: one frame; flags 0: nothing optional known; empty strings).
 *
 * Geometry follows DICOM (PS3.3 C.7.6.2): patient coordinates in millimetres; image_position is the
 * centre of the first transmitted pixel (top-left) of the reported frame; image_orientation holds the
 * direction cosines of the first row (towards increasing column) then of the first column (towards
 * increasing row). For multi-frame files whose geometry varies per frame (DICOM enhanced objects'
 * per-frame functional groups), the fields describe the frame chosen with the "frame" option.
 */
typedef struct affinity_image_info {
    uint32_t struct_size;   /* sizeof(affinity_image_info) as the writer (the plugin) knows it */
    uint32_t width;         /* columns */
    uint32_t height;        /* rows */
    uint32_t channels;      /* channels stored in the file (the decoded image is always gray) */
    uint32_t bits;          /* bits per stored sample */
    uint32_t reserved;
    double pixel_spacing_x; /* millimetres per column, 0 when the format does not say */
    double pixel_spacing_y; /* millimetres per row, 0 when the format does not say */
    /* ---- ABI 1.1 (volumes and DICOM metadata) ---- */
    uint32_t frames;        /* frames (slices) in the file, each width × height; 0: not reported (1) */
    uint32_t is_signed;     /* 1: the stored samples are signed (two's complement), 0: unsigned */
    uint32_t flags;         /* AFFINITY_INFO_HAS_* */
    int32_t instance_number;        /* DICOM (0020,0013), with AFFINITY_INFO_HAS_INSTANCE_NUMBER */
    double slice_thickness;         /* millimetres, with AFFINITY_INFO_HAS_SLICE_THICKNESS */
    double image_position[3];       /* x, y, z (mm), with AFFINITY_INFO_HAS_POSITION */
    double image_orientation[6];    /* row cosines x, y, z, then column cosines x, y, z, with
                                       AFFINITY_INFO_HAS_ORIENTATION */
    double rescale_slope;           /* Modality LUT: value = stored · slope + intercept; 1 and 0 when */
    double rescale_intercept;       /*   the file has none (both 0: not reported) */
    double window_center;           /* the window decode() applies with the options given (for DICOM */
    double window_width;            /*   the lung window unless the options say otherwise) */
    char modality[AFFINITY_INFO_SHORT_TEXT];            /* e.g. "CT" */
    char photometric[AFFINITY_INFO_SHORT_TEXT];         /* e.g. "MONOCHROME2" */
    char transfer_syntax[AFFINITY_INFO_UID_TEXT];       /* the transfer syntax UID */
    char sop_instance_uid[AFFINITY_INFO_UID_TEXT];
    char series_instance_uid[AFFINITY_INFO_UID_TEXT];
    char study_instance_uid[AFFINITY_INFO_UID_TEXT];
} affinity_image_info;

/** sizeof(affinity_image_info) in the first release of ABI 1 (through pixel_spacing_y). */
#define AFFINITY_IMAGE_INFO_V1_0_SIZE offsetof(affinity_image_info, frames)

/**
 * An image decoder: bytes in memory → one gray float image in [0, 1], height × width row-major.
 * Colour files are reduced to gray (ITU-R BT.601 luma, as PIL's convert("L")); modality-specific
 * mappings (DICOM: rescale to Hounsfield units, then a window) are the decoder's job and take their
 * settings from the options JSON ("{}" or NULL: defaults).
 *
 * Options shared by the decoders of multi-frame or windowed formats (ABI 1.1): "frame" (integer
 * ≥ 0, default 0: the frame of a multi-frame file that info and decode describe; a frame the file
 * does not have is AFFINITY_E_INVALID_ARGUMENT), "window_center" and "window_width" (numbers, width
 * > 0: the window decode applies to the Modality-LUT values). A decoder should refuse keys it does
 * not know (AFFINITY_E_INVALID_ARGUMENT) rather than ignore them.
 */
typedef struct affinity_image_decoder {
    uint32_t struct_size;
    uint32_t reserved;
    /** A score in [0, 100] saying how sure the decoder is that the bytes are its format (0: not it).
     *  Looks at the first bytes only; never fails. */
    int32_t (*probe)(const uint8_t *bytes, size_t length);
    /** Reads the header: geometry only, no pixel memory allocated. */
    int32_t (*info)(const uint8_t *bytes, size_t length, const char *options_json,
                    affinity_image_info *info, affinity_error *error);
    /** Decodes into `pixels`, a host buffer of `capacity` floats (≥ width·height from `info`);
     *  writes the geometry into `info`. On failure the buffer's contents are unspecified. */
    int32_t (*decode)(const uint8_t *bytes, size_t length, const char *options_json,
                      float *pixels, size_t capacity, affinity_image_info *info, affinity_error *error);
    /* ---- ABI 1.1 ---- */
    /** The Modality-LUT values (DICOM: stored · rescale slope + intercept, Hounsfield units for CT;
     *  not windowed, not inverted for MONOCHROME1) of frames first_frame … first_frame + frame_count − 1,
     *  into `values`, a host buffer of `capacity` floats (≥ frame_count·width·height): frames in order,
     *  rows top to bottom, columns left to right as stored. `info` describes first_frame. The window
     *  options are accepted and ignored; a "frame" option is refused (the arguments say which).
     *  AFFINITY_E_INVALID_ARGUMENT when the range is empty or outside the file's frames.
     *  NULL (or outside the table's struct_size): the decoder has no values, only decode. */
    int32_t (*values)(const uint8_t *bytes, size_t length, const char *options_json,
                      uint32_t first_frame, uint32_t frame_count, float *values, size_t capacity,
                      affinity_image_info *info, affinity_error *error);
} affinity_image_decoder;

/** sizeof(affinity_image_decoder) in the first release of ABI 1 (through decode). */
#define AFFINITY_IMAGE_DECODER_V1_0_SIZE offsetof(affinity_image_decoder, values)

/* ---------------------------------------------------------------------------------------------- */
/* Dataset reader                                                                                   */

/**
 * One sample, as a reader hands it over: the files, opened read-only, and the class label. The host
 * decodes the image with its decoders (PNG built in, the others as plugins) and derives the lesion
 * instances from the mask's label map by the MODEL.md §1.2 rule (values ≥ 2 merged, 8-connected
 * components over 100 pixels). So a reader knows a layout, a decoder knows a format, and the §1.2
 * rule exists once.
 */
typedef struct affinity_sample {
    uint32_t struct_size;
    int32_t image_fd;   /* the image file; the host closes it */
    int32_t mask_fd;    /* the label-map file (0 bg, 1 lung, 2 GGO, 3 consolidation), or -1: no mask
                           (a negative slice, or a layout without masks); the host closes it */
    int32_t label;      /* class id 0 Normal, 1 common pneumonia, 2 COVID-19; -1: the layout has none */
    char name[256];     /* the image's path relative to the root, for reports */
} affinity_sample;

/**
 * A dataset reader: a folder layout → an ordered list of samples. `open` scans the root (reading
 * split files, listing folders) and sets aside every entry it cannot use (missing file, bad label,
 * malformed line) as a broken entry with a reason, instead of failing; it fails only when the root
 * itself is unusable. Reader handles are used from one thread at a time.
 */
typedef struct affinity_dataset_reader {
    uint32_t struct_size;
    uint32_t reserved;
    int32_t (*open)(const char *root, const char *options_json, void **reader, affinity_error *error);
    /** The number of usable samples. */
    int64_t (*count)(void *reader);
    /** Opens sample `index` (0 ≤ index < count). A file that vanished since `open` gives
     *  AFFINITY_E_BROKEN_ENTRY or AFFINITY_E_IO with a reason; both fds are then closed. */
    int32_t (*read)(void *reader, int64_t index, affinity_sample *sample, affinity_error *error);
    /** The number of entries set aside by `open`. */
    int64_t (*broken_count)(void *reader);
    /** Entry `index` of those: its name and the reason, truncated to the host's buffers. */
    int32_t (*broken_entry)(void *reader, int64_t index, char *name, size_t name_size,
                            char *reason, size_t reason_size);
    void (*close)(void *reader);
} affinity_dataset_reader;

/* ---------------------------------------------------------------------------------------------- */
/* Classification head                                                                              */

/** One trainable parameter: its buffers belong to the head and stay valid until `destroy`. The host
 *  reads and writes `value` (optimizer steps, checkpoint loads) and reads and zeroes `gradient`. */
typedef struct affinity_parameter {
    uint32_t struct_size;
    uint32_t rank;          /* 1 … 4 */
    int64_t shape[4];       /* outermost first; unused dimensions 1 */
    int64_t count;          /* product of the shape */
    const char *name;       /* e.g. "fc1.weight"; stable across versions of the plugin */
    float *value;
    float *gradient;
} affinity_parameter;

/**
 * An image-classification head in place of the affinity layer + classifier (MODEL.md §6): the
 * lesion-mask-feature batch [rois, channels, height, width] (8 × 256 × 28 × 28) → 3 logits
 * (0 Normal, 1 CP, 2 COVID-19). Semantics follow the engine's (STYLE.md): `backward` uses what the
 * last `forward` kept and ADDS into the parameters' gradients and into `features_gradient`; the host
 * zeroes gradients once per step. A head handle is used from one thread at a time.
 */
typedef struct affinity_head {
    uint32_t struct_size;
    uint32_t reserved;
    /** Creates a head with freshly initialised parameters, drawn from `seed`. */
    int32_t (*create)(const char *config_json, uint64_t seed, void **head, affinity_error *error);
    int32_t (*parameter_count)(void *head);
    int32_t (*parameter)(void *head, int32_t index, affinity_parameter *parameter, affinity_error *error);
    /** logits[3] ← head(features[rois, channels, height, width]). */
    int32_t (*forward)(void *head, const float *features, int32_t rois, int32_t channels,
                       int32_t height, int32_t width, float *logits, affinity_error *error);
    /** features_gradient[rois, channels, height, width] += ∂L/∂features and every parameter's
     *  gradient += ∂L/∂parameter, from logits_gradient[3] = ∂L/∂logits of the last forward. */
    int32_t (*backward)(void *head, const float *logits_gradient, float *features_gradient,
                        affinity_error *error);
    void (*destroy)(void *head);
} affinity_head;

/* ---------------------------------------------------------------------------------------------- */
/* The plugin                                                                                       */

typedef enum affinity_plugin_kind {
    AFFINITY_KIND_IMAGE_DECODER = 1,
    AFFINITY_KIND_DATASET_READER = 2,
    AFFINITY_KIND_HEAD = 3,
} affinity_plugin_kind;

typedef struct affinity_plugin {
    uint32_t abi_version;       /* AFFINITY_PLUGIN_ABI_VERSION */
    uint32_t struct_size;       /* sizeof(affinity_plugin) as the plugin was compiled */
    const char *id;             /* unique among loaded plugins: [a-z0-9-]+, e.g. "covidx-ct" */
    const char *version;        /* the plugin's own version, e.g. "1.0.0" */
    const char *description;    /* one sentence */
    uint32_t kind;              /* affinity_plugin_kind */
    uint32_t reserved;
    const affinity_image_decoder *decoder;  /* kind == AFFINITY_KIND_IMAGE_DECODER, else NULL */
    const affinity_dataset_reader *reader;  /* kind == AFFINITY_KIND_DATASET_READER, else NULL */
    const affinity_head *head;              /* kind == AFFINITY_KIND_HEAD, else NULL */
} affinity_plugin;

/** The entry symbol's type. `host_abi_version` is the host's AFFINITY_PLUGIN_ABI_VERSION; a plugin
 *  may return NULL when it cannot serve that host. */
typedef const affinity_plugin *(*affinity_plugin_entry_fn)(uint32_t host_abi_version);

#ifdef __cplusplus
}
#endif

#endif /* AFFINITY_PLUGIN_H */
