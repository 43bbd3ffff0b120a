/*
 * tomoflow.h: the C ABI between the tomoflow host and plugin libraries.
 *
 * This header mirrors crates/sdk/src/abi.rs field for field (that file is authoritative;
 * tests/tests/abi_layout.rs checks that both agree on every size and offset). The rules
 * (ownership, threads, call sequence) are in docs/plugin-abi.md; a complete plugin written
 * against this header is tests/c-plugin/scale.c.
 *
 * Summary of the rules:
 *  - Strings are NUL-terminated UTF-8, borrowed for the duration of the call only.
 *  - Tensors are DLPack DLManagedTensors. Whoever receives one owns it and must call its
 *    deleter exactly once; the deleter returns the memory to the side that allocated it.
 *    Deleters may be called from any thread.
 *  - Every call into a plugin may fail: it returns non-zero after host->set_error was called.
 *  - The host never unloads a library: descriptors and everything they point to must stay
 *    valid for the whole process (use static storage).
 *
 * C99 or later; also usable from C++.
 */
#ifndef TOMOFLOW_H
#define TOMOFLOW_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------------------------------- */
/* Versioning                                                                               */
/* ---------------------------------------------------------------------------------------- */

/** "TOMOFLOW" read as a little-endian u64: the first field of every descriptor. */
#define TF_MAGIC 0x574F4C464F4D4F54ULL
/** ABI major version: a host refuses libraries with another major. */
#define TF_ABI_MAJOR 1u
/** ABI minor version: a host accepts libraries with a minor up to its own. */
#define TF_ABI_MINOR 0u
/** Name of the one symbol every plugin library exports. */
#define TF_ENTRY_SYMBOL "tomoflow_plugin_descriptor"

/* ---------------------------------------------------------------------------------------- */
/* Status codes, flags, log levels                                                          */
/* ---------------------------------------------------------------------------------------- */

/** Success. */
#define TF_OK 0
/** Failure; the details were passed to host->set_error. */
#define TF_ERR 1
/** Returned by emit when the run was cancelled: stop work and return TF_CANCELLED. */
#define TF_CANCELLED 2

/** Node flag: the node type writes a file given by its `path` parameter (an exporter). */
#define TF_NODE_EXPORTER 1u

/** Log levels for TfHost.log. */
#define TF_LOG_ERROR 1
#define TF_LOG_WARN 2
#define TF_LOG_INFO 3
#define TF_LOG_DEBUG 4

/* ---------------------------------------------------------------------------------------- */
/* DLPack (v0.8 layout)                                                                     */
/*                                                                                          */
/* If dlpack.h was included before this header, its definitions are used (they have the    */
/* same layout). If you need both headers, include dlpack.h first.                          */
/* ---------------------------------------------------------------------------------------- */

#if !defined(DLPACK_VERSION) && !defined(DLPACK_DLPACK_H_) && !defined(DLPACK_MAJOR_VERSION)
#define TOMOFLOW_DEFINES_DLPACK 1

/** DLPack device (tomoflow only produces and accepts CPU tensors: device_type 1). */
typedef struct DLDevice {
    /** DLPack device type: 1 = CPU (kDLCPU). An enum in dlpack.h; 32 bits wide. */
    int32_t device_type;
    /** Device ordinal. */
    int32_t device_id;
} DLDevice;

/** DLPack data type: code 0 = int, 1 = uint, 2 = float; bits per lane; lanes = 1. */
typedef struct DLDataType {
    uint8_t code;
    uint8_t bits;
    uint16_t lanes;
} DLDataType;

/** DLPack tensor view. */
typedef struct DLTensor {
    /** Pointer to the data; the first element is at (char *)data + byte_offset. */
    void *data;
    /** Where the data lives. */
    DLDevice device;
    /** Number of dimensions. */
    int32_t ndim;
    /** Element type. */
    DLDataType dtype;
    /** ndim extents, slowest-varying first (C order: z, y, x for volumes). */
    int64_t *shape;
    /** Strides in elements, or NULL for a compact C-order tensor. */
    int64_t *strides;
    /** Offset in bytes from data to the first element. */
    uint64_t byte_offset;
} DLTensor;

/** DLPack managed tensor: a view plus the means to free it. */
typedef struct DLManagedTensor {
    /** The tensor view. */
    DLTensor dl_tensor;
    /** Opaque context of the owner. */
    void *manager_ctx;
    /** Frees the tensor; called exactly once by whoever owns it last (may be NULL). */
    void (*deleter)(struct DLManagedTensor *self);
} DLManagedTensor;

#endif /* DLPack */

/** DLPack type codes (DLDataType.code). */
#ifndef DL_INT
#define DL_INT 0
#endif
#ifndef DL_UINT
#define DL_UINT 1
#endif
#ifndef DL_FLOAT
#define DL_FLOAT 2
#endif
/** DLPack CPU device type (DLDevice.device_type). */
#ifndef DL_CPU
#define DL_CPU 1
#endif

/* ---------------------------------------------------------------------------------------- */
/* Messages and the host function table                                                     */
/* ---------------------------------------------------------------------------------------- */

/** A named tensor inside a message. */
typedef struct TfNamedTensor {
    /** Tensor name, e.g. "data". Borrowed for the call. */
    const char *name;
    /** The tensor; ownership travels with the message. */
    DLManagedTensor *tensor;
} TfNamedTensor;

/** Opaque host context handed to every call; pass it back to the host functions. */
typedef struct TfHostCtx TfHostCtx;

/** Body of a parallel_for: called once for every i in 0..n, from pool threads. */
typedef void (*TfParallelFn)(void *user, uint64_t i);

/** The host's function table. Valid for the lifetime of the process. */
typedef struct TfHost {
    /** sizeof(TfHost) as the host sees it; new functions are only appended. */
    uint32_t struct_size;
    /** Host ABI major. */
    uint32_t abi_major;
    /** Host ABI minor. */
    uint32_t abi_minor;
    /** Allocate a zeroed compact CPU tensor owned by the host allocator; NULL on failure. */
    DLManagedTensor *(*alloc_tensor)(TfHostCtx *ctx, DLDataType dtype, int32_t ndim,
                                     const int64_t *shape);
    /** Emit one message on output port `port` (index into the node type's outputs).
     *  Takes ownership of all tensors, also on failure. meta_json is a JSON object.
     *  Returns TF_OK, TF_ERR (the node's error was set) or TF_CANCELLED. */
    int32_t (*emit)(TfHostCtx *ctx, uint32_t port, const char *meta_json, uint32_t n_tensors,
                    const TfNamedTensor *tensors);
    /** Log a line through the host's logger, attributed to the node (TF_LOG_*). */
    void (*log)(TfHostCtx *ctx, int32_t level, const char *msg);
    /** Report progress: `done` of `total` units (chunks, steps, ...). */
    void (*progress)(TfHostCtx *ctx, uint64_t done, uint64_t total);
    /** Non-zero when the run was cancelled: return from work as soon as possible. */
    int32_t (*cancelled)(TfHostCtx *ctx);
    /** Record the error message of the failing call (the last one wins). */
    void (*set_error)(TfHostCtx *ctx, const char *msg);
    /** Run f(user, i) for i in 0..n on the host's shared thread pool; returns when all calls
     *  returned. This is how plugins share one thread budget. */
    void (*parallel_for)(TfHostCtx *ctx, uint64_t n, TfParallelFn f, void *user);
} TfHost;

/* ---------------------------------------------------------------------------------------- */
/* Node types and the plugin descriptor                                                     */
/* ---------------------------------------------------------------------------------------- */

/** Facts about the node instance being created (borrowed for the create call). */
typedef struct TfNodeInfo {
    /** Node id in the workflow, e.g. "recon". */
    const char *node_id;
    /** Instance label, e.g. "bg=mixed,rep1" ("main" when not swept). */
    const char *instance;
    /** Seed derived from the workflow seed and the node's identity. */
    uint64_t seed;
    /** A per-key directory for checkpoints that survives interruption. */
    const char *scratch_dir;
    /** Directory that relative paths in parameters are resolved against. */
    const char *base_dir;
    /** Number of threads the host pool has. */
    uint32_t threads;
    /** sizeof(TfNodeInfo) as the host sees it; fields are only appended. */
    uint32_t struct_size;
} TfNodeInfo;

/** One port of a node type. */
typedef struct TfPort {
    /** Port name, unique among the node's inputs (or outputs). */
    const char *name;
    /** Data kind, e.g. "volume"; the host connects only equal kinds. */
    const char *kind;
    /** One line of documentation. */
    const char *doc;
} TfPort;

/** Validate parameters (JSON object text) without creating a node. TF_OK or TF_ERR. */
typedef int32_t (*TfCheckFn)(const TfHost *host, TfHostCtx *ctx, const char *params_json);
/** Create a node instance; returns an opaque pointer, or NULL after set_error. */
typedef void *(*TfCreateFn)(const TfHost *host, TfHostCtx *ctx, const TfNodeInfo *info,
                            const char *params_json);
/** Deliver one input message (ownership of the tensors passes to the plugin). */
typedef int32_t (*TfProcessFn)(void *node, TfHostCtx *ctx, uint32_t port, const char *meta_json,
                               uint32_t n_tensors, const TfNamedTensor *tensors);
/** All inputs ended: produce the remaining outputs. */
typedef int32_t (*TfFinishFn)(void *node, TfHostCtx *ctx);
/** Free the node instance. */
typedef void (*TfDestroyFn)(void *node);

/** A node type provided by a plugin. */
typedef struct TfNodeType {
    /** Node type name, unique across loaded plugins, e.g. "mrc-read". */
    const char *name;
    /** Markdown documentation (first line is the summary). */
    const char *doc;
    /** Input ports (may be NULL when n_inputs is 0). */
    const TfPort *inputs;
    /** Number of input ports. */
    uint32_t n_inputs;
    /** Output ports (may be NULL when n_outputs is 0). */
    const TfPort *outputs;
    /** Number of output ports. */
    uint32_t n_outputs;
    /** JSON Schema (draft 2020-12) of the parameter object; NULL or "" = {"type":"object"}. */
    const char *params_schema;
    /** Bit set of TF_NODE_* flags. */
    uint32_t flags;
    /** For exporters: comma-separated file extensions it writes, e.g. "mrc,map,rec". */
    const char *export_extensions;
    /** Parameter check. */
    TfCheckFn check;
    /** Constructor. */
    TfCreateFn create;
    /** Message handler. */
    TfProcessFn process;
    /** End-of-input handler. */
    TfFinishFn finish;
    /** Destructor. */
    TfDestroyFn destroy;
} TfNodeType;

/** What tomoflow_plugin_descriptor() returns. Lives for the whole process. */
typedef struct TfPluginDescriptor {
    /** Must equal TF_MAGIC. */
    uint64_t magic;
    /** ABI major the plugin was built for (TF_ABI_MAJOR). */
    uint32_t abi_major;
    /** ABI minor the plugin was built for (TF_ABI_MINOR). */
    uint32_t abi_minor;
    /** sizeof(TfPluginDescriptor) as the plugin sees it. */
    uint32_t struct_size;
    /** Plugin name, e.g. "io". */
    const char *name;
    /** Plugin version (semver). */
    const char *version;
    /** Build id chosen by the plugin, or "": the host then hashes the library file. */
    const char *build_id;
    /** One-line description. */
    const char *description;
    /** Node types. */
    const TfNodeType *node_types;
    /** Number of node types. */
    uint32_t n_node_types;
    /** sizeof(TfNodeType) as the plugin sees it (stride of node_types); 0 = the ABI 1.0 size. */
    uint32_t node_type_size;
} TfPluginDescriptor;

/** Signature of the exported entry symbol. */
typedef const TfPluginDescriptor *(*TfEntryFn)(void);

/* Symbol visibility for the entry point. */
#if defined(_WIN32)
#define TF_EXPORT __declspec(dllexport)
#elif defined(__GNUC__) || defined(__clang__)
#define TF_EXPORT __attribute__((visibility("default")))
#else
#define TF_EXPORT
#endif

/** The one symbol a plugin library exports. Must return the same pointer on every call. */
TF_EXPORT const TfPluginDescriptor *tomoflow_plugin_descriptor(void);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* TOMOFLOW_H */
