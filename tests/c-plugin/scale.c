/*
 * scale.c: a complete tomoflow plugin written in C against include/tomoflow.h.
 *
 * Node type `c-scale` (volume -> volume): multiplies every f32 voxel by the parameter
 * `factor` (number > 0, default 2.0). It shows every part of the ABI a typical node uses:
 *   - a static descriptor with one node type, its ports and its parameter schema;
 *   - check/create parsing the parameter JSON (here with a tiny hand-written scan);
 *   - process taking ownership of the input tensors and freeing each exactly once;
 *   - host->alloc_tensor for the output, host->parallel_for for the work (the host's one
 *     shared thread budget), host->emit handing the output to the host, host->progress;
 *   - error reporting with host->set_error + TF_ERR, and TF_CANCELLED passed through.
 *
 * Build:  cc -shared -fPIC -O2 -I include -o libscale.so tests/c-plugin/scale.c
 * Use:    tomoflow --plugin-path libscale.so plugins c-scale
 * See docs/plugin-abi.md for the rules this file follows.
 */
#include "tomoflow.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------------------------
 * Parameters: {"factor": <number>}. The host has already validated the object against the
 * schema below and filled in the default, so a tiny scan is enough here; check() still
 * rejects nonsense so that the plugin is safe when called by any host.
 * ---------------------------------------------------------------------------------------- */

/* Find the value of top-level key `key` (a JSON number) in `json`. Returns 1 if found. */
static int json_number(const char *json, const char *key, double *out) {
    size_t klen = strlen(key);
    const char *p = json;
    while ((p = strchr(p, '"')) != NULL) {
        p++;
        if (strncmp(p, key, klen) == 0 && p[klen] == '"') {
            const char *v = p + klen + 1;
            while (*v == ' ' || *v == '\t' || *v == '\n' || *v == '\r') v++;
            if (*v != ':') continue;
            v++;
            char *end = NULL;
            double d = strtod(v, &end);
            if (end == v) return 0;
            *out = d;
            return 1;
        }
        /* Skip the rest of this string (keys and string values alike). */
        while (*p && *p != '"') {
            if (*p == '\\' && p[1]) p++;
            p++;
        }
        if (*p) p++;
    }
    return 0;
}

/* Parse and check the parameters; on failure set the error and return TF_ERR. */
static int32_t parse_params(const TfHost *host, TfHostCtx *ctx, const char *params_json,
                            float *factor) {
    double f = 2.0;
    if (strstr(params_json, "\"factor\"") != NULL && !json_number(params_json, "factor", &f)) {
        host->set_error(ctx, "parameter `factor` must be a number");
        return TF_ERR;
    }
    if (!(f > 0.0) || !isfinite(f)) {
        char msg[128];
        snprintf(msg, sizeof msg, "parameter `factor` must be a finite number > 0, got %g", f);
        host->set_error(ctx, msg);
        return TF_ERR;
    }
    *factor = (float)f;
    return TF_OK;
}

/* ------------------------------------------------------------------------------------------
 * The node instance.
 * ---------------------------------------------------------------------------------------- */

typedef struct Scale {
    const TfHost *host; /* valid for the whole process */
    float factor;
    uint64_t chunks_done;
} Scale;

static int32_t scale_check(const TfHost *host, TfHostCtx *ctx, const char *params_json) {
    float factor;
    return parse_params(host, ctx, params_json, &factor);
}

static void *scale_create(const TfHost *host, TfHostCtx *ctx, const TfNodeInfo *info,
                          const char *params_json) {
    (void)info;
    if (host->abi_major != TF_ABI_MAJOR) {
        host->set_error(ctx, "c-scale: host speaks another ABI major");
        return NULL;
    }
    float factor;
    if (parse_params(host, ctx, params_json, &factor) != TF_OK) return NULL;
    Scale *s = (Scale *)calloc(1, sizeof *s);
    if (s == NULL) {
        host->set_error(ctx, "c-scale: out of memory");
        return NULL;
    }
    s->host = host;
    s->factor = factor;
    return s;
}

static void scale_destroy(void *node) { free(node); }

/* Free every tensor of a message we received (we own them all, whatever happens). */
static void free_tensors(uint32_t n, const TfNamedTensor *tensors) {
    for (uint32_t i = 0; i < n; i++) {
        DLManagedTensor *t = tensors[i].tensor;
        if (t != NULL && t->deleter != NULL) t->deleter(t);
    }
}

/* Work shared with the pool threads by parallel_for. */
typedef struct Job {
    const float *in;
    float *out;
    uint64_t n;
    float factor;
} Job;

#define BLOCK 65536u

static void scale_block(void *user, uint64_t i) {
    const Job *job = (const Job *)user;
    uint64_t lo = i * BLOCK;
    uint64_t hi = lo + BLOCK < job->n ? lo + BLOCK : job->n;
    for (uint64_t k = lo; k < hi; k++) job->out[k] = job->in[k] * job->factor;
}

/* Total chunks announced by the chunk metadata (`"count": N`), or 0 if absent. */
static uint64_t chunk_count(const char *meta_json) {
    double c = 0.0;
    if (json_number(meta_json, "count", &c) && c >= 1.0) return (uint64_t)c;
    return 0;
}

static int32_t fail(Scale *s, TfHostCtx *ctx, uint32_t n, const TfNamedTensor *tensors,
                    const char *msg) {
    free_tensors(n, tensors);
    s->host->set_error(ctx, msg);
    return TF_ERR;
}

static int32_t scale_process(void *node, TfHostCtx *ctx, uint32_t port, const char *meta_json,
                             uint32_t n_tensors, const TfNamedTensor *tensors) {
    Scale *s = (Scale *)node;
    const TfHost *host = s->host;
    (void)port; /* one input port */

    /* Find the voxels: tensor "data" (see the volume chunk convention). */
    const DLTensor *in = NULL;
    for (uint32_t i = 0; i < n_tensors; i++) {
        if (tensors[i].name != NULL && strcmp(tensors[i].name, "data") == 0 &&
            tensors[i].tensor != NULL) {
            in = &tensors[i].tensor->dl_tensor;
        }
    }
    if (in == NULL) return fail(s, ctx, n_tensors, tensors, "c-scale: chunk has no tensor `data`");
    if (in->dtype.code != DL_FLOAT || in->dtype.bits != 32 || in->dtype.lanes != 1)
        return fail(s, ctx, n_tensors, tensors, "c-scale: expected f32 voxels");
    if (in->device.device_type != DL_CPU)
        return fail(s, ctx, n_tensors, tensors, "c-scale: expected a CPU tensor");

    uint64_t n = 1;
    for (int32_t d = 0; d < in->ndim; d++) n *= (uint64_t)in->shape[d];
    if (in->strides != NULL) {
        int64_t expect = 1;
        for (int32_t d = in->ndim - 1; d >= 0; d--) {
            if (in->shape[d] > 1 && in->strides[d] != expect)
                return fail(s, ctx, n_tensors, tensors, "c-scale: expected a compact C-order tensor");
            expect *= in->shape[d];
        }
    }

    /* The output comes from the host allocator, same shape. */
    DLDataType f32 = {DL_FLOAT, 32, 1};
    DLManagedTensor *out = host->alloc_tensor(ctx, f32, in->ndim, in->shape);
    if (out == NULL) return fail(s, ctx, n_tensors, tensors, "c-scale: cannot allocate the output");

    Job job;
    job.in = (const float *)((const char *)in->data + in->byte_offset);
    job.out = (float *)((char *)out->dl_tensor.data + out->dl_tensor.byte_offset);
    job.n = n;
    job.factor = s->factor;
    host->parallel_for(ctx, (n + BLOCK - 1) / BLOCK, scale_block, &job);

    /* Done with the input: free every tensor exactly once. */
    free_tensors(n_tensors, tensors);

    if (host->cancelled(ctx)) {
        out->deleter(out);
        return TF_CANCELLED;
    }

    /* Same metadata (the chunk geometry is unchanged); the host takes `out` in every case. */
    TfNamedTensor msg = {"data", out};
    int32_t rc = host->emit(ctx, 0, meta_json, 1, &msg);
    if (rc != TF_OK) return rc; /* TF_ERR: the host set the error; TF_CANCELLED: stop */

    s->chunks_done++;
    host->progress(ctx, s->chunks_done, chunk_count(meta_json));
    return TF_OK;
}

static int32_t scale_finish(void *node, TfHostCtx *ctx) {
    Scale *s = (Scale *)node;
    char line[96];
    snprintf(line, sizeof line, "c-scale: scaled %llu chunks by %g",
             (unsigned long long)s->chunks_done, (double)s->factor);
    s->host->log(ctx, TF_LOG_DEBUG, line);
    return TF_OK;
}

/* ------------------------------------------------------------------------------------------
 * The descriptor: static, never freed (the host never unloads the library).
 * ---------------------------------------------------------------------------------------- */

static const TfPort SCALE_INPUTS[] = {
    {"volume", "volume", "input volume (f32)"},
};
static const TfPort SCALE_OUTPUTS[] = {
    {"volume", "volume", "the input times `factor` (f32)"},
};

static const char SCALE_SCHEMA[] =
    "{"
    "\"$schema\": \"https://json-schema.org/draft/2020-12/schema\","
    "\"title\": \"CScaleParams\","
    "\"description\": \"Parameters of `c-scale`.\","
    "\"type\": \"object\","
    "\"properties\": {"
    "  \"factor\": {"
    "    \"description\": \"Multiply every voxel by this (> 0).\","
    "    \"type\": \"number\","
    "    \"exclusiveMinimum\": 0,"
    "    \"default\": 2.0"
    "  }"
    "},"
    "\"additionalProperties\": false"
    "}";

static const TfNodeType NODE_TYPES[] = {
    {
        "c-scale",
        "Multiply every voxel of a volume by `factor` (a plugin written in C).\n\n"
        "Streaming: one output chunk per input chunk, same geometry.",
        SCALE_INPUTS,
        1,
        SCALE_OUTPUTS,
        1,
        SCALE_SCHEMA,
        0,  /* flags: not an exporter */
        "", /* export_extensions */
        scale_check,
        scale_create,
        scale_process,
        scale_finish,
        scale_destroy,
    },
};

static const TfPluginDescriptor DESCRIPTOR = {
    TF_MAGIC,
    TF_ABI_MAJOR,
    TF_ABI_MINOR,
    (uint32_t)sizeof(TfPluginDescriptor),
    "c-scale",
    "0.1.0",
    "", /* build id: let the host hash the library file */
    "Example plugin written in C: scale a volume",
    NODE_TYPES,
    (uint32_t)(sizeof NODE_TYPES / sizeof NODE_TYPES[0]),
    (uint32_t)sizeof(TfNodeType),
};

const TfPluginDescriptor *tomoflow_plugin_descriptor(void) { return &DESCRIPTOR; }
