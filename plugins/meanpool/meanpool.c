/*
 * meanpool — the ablation baseline head of issue 7, written in C to show the ABI is language-neutral.
 *
 * features [R, C, H, W] → m[c] = mean over the R RoIs of each RoI's spatial mean, i.e. the mean of
 * the R RoI vectors (every RoI counts once, padded duplicates included, as in the affinity layer)
 * → fc1 Linear C→hidden → ReLU → fc2 Linear hidden→hidden → ReLU → logits Linear hidden→3.
 * The MLP mirrors MODEL.md §6.4 (s2new) so only the pooling differs from the affinity model.
 * Initialisation: PyTorch's default Linear init, weight and bias U(−1/√fan_in, 1/√fan_in), drawn from
 * a splitmix64 stream of the seed.
 *
 * Config JSON keys: "channels" (default 256), "hidden" (default 128).
 */
#include "../include/affinity_plugin.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MP_PARAMS 6

typedef struct meanpool {
    int channels, hidden;
    float *storage;           /* all values then all gradients, one allocation */
    float *value[MP_PARAMS];  /* fc1.weight fc1.bias fc2.weight fc2.bias logits.weight logits.bias */
    float *grad[MP_PARAMS];
    int64_t count[MP_PARAMS];
    int64_t shape[MP_PARAMS][2];
    int rank[MP_PARAMS];
    /* what backward needs from the last forward */
    float *m, *h1, *h2;       /* [C], [hidden], [hidden] (after ReLU) */
    float *dh1, *dh2, *dm;    /* scratch */
    int32_t rois, height, width;
    int has_forward;
} meanpool;

static const char *const names[MP_PARAMS] = {
    "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "logits.weight", "logits.bias",
};

static int32_t fail(affinity_error *error, int32_t code, const char *format, ...) {
    if (error) {
        va_list ap;
        va_start(ap, format);
        vsnprintf(error->message, sizeof error->message, format, ap);
        va_end(ap);
    }
    return code;
}

/* The integer value of "key" in a flat JSON object, or `fallback` when the key is absent.
 * Returns 0 and sets *ok = 0 when the key is present but its value is not an integer. */
static long json_int(const char *json, const char *key, long fallback, int *ok) {
    if (!json) return fallback;
    char quoted[64];
    snprintf(quoted, sizeof quoted, "\"%s\"", key);
    const char *p = strstr(json, quoted);
    if (!p) return fallback;
    p += strlen(quoted);
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') p++;
    if (*p != ':') { *ok = 0; return 0; }
    p++;
    char *end;
    long v = strtol(p, &end, 10);
    if (end == p || (*end != ',' && *end != '}' && *end != ' ' && *end != '\n' && *end != '\r' && *end != '\t')) {
        *ok = 0;
        return 0;
    }
    return v;
}

static uint64_t splitmix64(uint64_t *state) {
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Uniform in [-bound, bound). */
static float uniform(uint64_t *state, float bound) {
    double u = (double)(splitmix64(state) >> 11) * (1.0 / 9007199254740992.0);
    return (float)((2.0 * u - 1.0) * bound);
}

static void mp_destroy(void *handle) {
    meanpool *h = handle;
    if (!h) return;
    free(h->storage);
    free(h);
}

static int32_t mp_create(const char *config_json, uint64_t seed, void **out, affinity_error *error) {
    if (!out) return fail(error, AFFINITY_E_INVALID_ARGUMENT, "The meanpool head was created without a place to put it.");
    *out = NULL;
    int ok = 1;
    long channels = json_int(config_json, "channels", 256, &ok);
    long hidden = json_int(config_json, "hidden", 128, &ok);
    if (!ok) return fail(error, AFFINITY_E_INVALID_ARGUMENT, "The meanpool config has a non-integer \"channels\" or \"hidden\": %s.", config_json);
    if (channels < 1 || channels > 65536 || hidden < 1 || hidden > 65536)
        return fail(error, AFFINITY_E_INVALID_ARGUMENT,
                    "The meanpool head needs 1 ≤ channels, hidden ≤ 65536, got channels %ld and hidden %ld.", channels, hidden);
    meanpool *h = calloc(1, sizeof *h);
    if (!h) return fail(error, AFFINITY_E_NO_MEMORY, "Out of memory creating the meanpool head.");
    h->channels = (int)channels;
    h->hidden = (int)hidden;
    const int64_t C = channels, Hd = hidden;
    int64_t shapes[MP_PARAMS][2] = {{Hd, C}, {Hd, 1}, {Hd, Hd}, {Hd, 1}, {3, Hd}, {3, 1}};
    int ranks[MP_PARAMS] = {2, 1, 2, 1, 2, 1};
    int64_t total = 0;
    for (int i = 0; i < MP_PARAMS; i++) {
        h->shape[i][0] = shapes[i][0];
        h->shape[i][1] = shapes[i][1];
        h->rank[i] = ranks[i];
        h->count[i] = shapes[i][0] * shapes[i][1];
        total += h->count[i];
    }
    int64_t scratch = 3 * C + 4 * Hd;
    h->storage = calloc((size_t)(2 * total + scratch), sizeof(float));
    if (!h->storage) { free(h); return fail(error, AFFINITY_E_NO_MEMORY, "Out of memory creating the meanpool head."); }
    float *p = h->storage;
    for (int i = 0; i < MP_PARAMS; i++) { h->value[i] = p; p += h->count[i]; }
    for (int i = 0; i < MP_PARAMS; i++) { h->grad[i] = p; p += h->count[i]; }
    h->m = p; p += C;
    h->dm = p; p += C;
    p += C; /* spare */
    h->h1 = p; p += Hd;
    h->h2 = p; p += Hd;
    h->dh1 = p; p += Hd;
    h->dh2 = p;
    uint64_t state = seed;
    int64_t fan_in[MP_PARAMS] = {C, C, Hd, Hd, Hd, Hd};
    for (int i = 0; i < MP_PARAMS; i++) {
        float bound = 1.0f / sqrtf((float)fan_in[i]);
        for (int64_t j = 0; j < h->count[i]; j++) h->value[i][j] = uniform(&state, bound);
    }
    *out = h;
    return AFFINITY_OK;
}

static int32_t mp_parameter_count(void *handle) { return handle ? MP_PARAMS : 0; }

static int32_t mp_parameter(void *handle, int32_t index, affinity_parameter *out, affinity_error *error) {
    meanpool *h = handle;
    if (!h || !out) return fail(error, AFFINITY_E_INVALID_ARGUMENT, "meanpool: parameter() needs a head and an output struct.");
    if (index < 0 || index >= MP_PARAMS)
        return fail(error, AFFINITY_E_INVALID_ARGUMENT, "The meanpool head has %d parameters; index %d is out of range.", MP_PARAMS, index);
    affinity_parameter p;
    memset(&p, 0, sizeof p);
    p.struct_size = sizeof p;
    p.rank = (uint32_t)h->rank[index];
    p.shape[0] = h->shape[index][0];
    p.shape[1] = h->rank[index] == 2 ? h->shape[index][1] : 1;
    p.shape[2] = 1;
    p.shape[3] = 1;
    p.count = h->count[index];
    p.name = names[index];
    p.value = h->value[index];
    p.gradient = h->grad[index];
    /* Copy only what fits in the host's struct (the struct only grows). */
    size_t n = out->struct_size && out->struct_size < sizeof p ? out->struct_size : sizeof p;
    memcpy(out, &p, n);
    out->struct_size = (uint32_t)n;
    return AFFINITY_OK;
}

/* y[o] = relu?(b[o] + Σ_i W[o, i] x[i]) */
static void linear(float *y, const float *x, const float *W, const float *b, int in, int out, int relu) {
    for (int o = 0; o < out; o++) {
        const float *row = W + (int64_t)o * in;
        double s = b[o];
        for (int i = 0; i < in; i++) s += (double)row[i] * x[i];
        float v = (float)s;
        y[o] = relu && v < 0 ? 0 : v;
    }
}

static int32_t mp_forward(void *handle, const float *features, int32_t rois, int32_t channels, int32_t height,
                          int32_t width, float *logits, affinity_error *error) {
    meanpool *h = handle;
    if (!h || !features || !logits) return fail(error, AFFINITY_E_INVALID_ARGUMENT, "meanpool: forward() got a NULL pointer.");
    if (rois < 1 || height < 1 || width < 1 || channels != h->channels)
        return fail(error, AFFINITY_E_INVALID_ARGUMENT,
                    "The meanpool head expects features [rois ≥ 1, %d, h ≥ 1, w ≥ 1], got [%d, %d, %d, %d].",
                    h->channels, rois, channels, height, width);
    const int C = h->channels, Hd = h->hidden;
    const int64_t plane = (int64_t)height * width;
    const double scale = 1.0 / ((double)rois * (double)plane);
    for (int c = 0; c < C; c++) {
        double s = 0;
        for (int k = 0; k < rois; k++) {
            const float *f = features + ((int64_t)k * C + c) * plane;
            for (int64_t i = 0; i < plane; i++) s += f[i];
        }
        h->m[c] = (float)(s * scale);
    }
    linear(h->h1, h->m, h->value[0], h->value[1], C, Hd, 1);
    linear(h->h2, h->h1, h->value[2], h->value[3], Hd, Hd, 1);
    linear(logits, h->h2, h->value[4], h->value[5], Hd, 3, 0);
    h->rois = rois;
    h->height = height;
    h->width = width;
    h->has_forward = 1;
    return AFFINITY_OK;
}

/* Backward of y = W x + b for one vector: dW += dy ⊗ x, db += dy, dx = Wᵀ dy (overwritten). */
static void linear_backward(float *dx, float *dW, float *db, const float *dy, const float *x, const float *W, int in, int out) {
    if (dx) memset(dx, 0, (size_t)in * sizeof(float));
    for (int o = 0; o < out; o++) {
        const float g = dy[o];
        db[o] += g;
        if (g == 0) continue;
        float *dr = dW + (int64_t)o * in;
        const float *wr = W + (int64_t)o * in;
        for (int i = 0; i < in; i++) {
            dr[i] += g * x[i];
            if (dx) dx[i] += g * wr[i];
        }
    }
}

static int32_t mp_backward(void *handle, const float *logits_gradient, float *features_gradient, affinity_error *error) {
    meanpool *h = handle;
    if (!h || !logits_gradient) return fail(error, AFFINITY_E_INVALID_ARGUMENT, "meanpool: backward() got a NULL pointer.");
    if (!h->has_forward) return fail(error, AFFINITY_E_INVALID_ARGUMENT, "The meanpool head's backward was called before any forward.");
    const int C = h->channels, Hd = h->hidden;
    linear_backward(h->dh2, h->grad[4], h->grad[5], logits_gradient, h->h2, h->value[4], Hd, 3);
    for (int i = 0; i < Hd; i++) if (h->h2[i] <= 0) h->dh2[i] = 0;
    linear_backward(h->dh1, h->grad[2], h->grad[3], h->dh2, h->h1, h->value[2], Hd, Hd);
    for (int i = 0; i < Hd; i++) if (h->h1[i] <= 0) h->dh1[i] = 0;
    linear_backward(h->dm, h->grad[0], h->grad[1], h->dh1, h->m, h->value[0], C, Hd);
    if (features_gradient) {
        const int64_t plane = (int64_t)h->height * h->width;
        const float scale = (float)(1.0 / ((double)h->rois * (double)plane));
        for (int k = 0; k < h->rois; k++) {
            for (int c = 0; c < C; c++) {
                const float g = h->dm[c] * scale;
                float *d = features_gradient + ((int64_t)k * C + c) * plane;
                for (int64_t i = 0; i < plane; i++) d[i] += g;
            }
        }
    }
    return AFFINITY_OK;
}

static const affinity_head head_table = {
    .struct_size = sizeof(affinity_head),
    .create = mp_create,
    .parameter_count = mp_parameter_count,
    .parameter = mp_parameter,
    .forward = mp_forward,
    .backward = mp_backward,
    .destroy = mp_destroy,
};

static const affinity_plugin plugin = {
    .abi_version = AFFINITY_PLUGIN_ABI_VERSION,
    .struct_size = sizeof(affinity_plugin),
    .id = "meanpool",
    .version = "1.0.0",
    .description = "Classification head: mean of the RoI feature vectors, then a 3-layer MLP (the ablation baseline, in C).",
    .kind = AFFINITY_KIND_HEAD,
    .head = &head_table,
};

__attribute__((visibility("default"))) const affinity_plugin *affinity_plugin_entry(uint32_t host_abi_version) {
    (void)host_abi_version;
    return &plugin;
}
