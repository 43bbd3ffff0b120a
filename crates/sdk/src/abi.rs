//! The C ABI between the `tomoflow` host and plugin libraries.
//!
//! Everything here is `#[repr(C)]` and mirrors `docs/plugin-abi.md` and `include/tomoflow.h`
//! field for field. A plugin written in C includes that header; a plugin written in Rust never
//! touches this module directly: it implements [`crate::NodeDef`] and calls
//! [`crate::export_plugin!`].
//!
//! Rules of the road:
//! - Strings are NUL-terminated UTF-8 and are borrowed for the duration of the call only.
//! - Tensors are DLPack `DLManagedTensor`s. Whoever receives one owns it and must call its
//!   `deleter` exactly once; the deleter returns the memory to the side that allocated it.
//! - Every call into a plugin may fail: it returns non-zero after `host.set_error` was called.
//! - The host never unloads a library.

use std::ffi::{c_char, c_void};

/// `"TOMOFLOW"` read as a little-endian u64: the first field of every descriptor.
pub const TF_MAGIC: u64 = u64::from_le_bytes(*b"TOMOFLOW");
/// ABI major version: a host refuses libraries with another major.
pub const TF_ABI_MAJOR: u32 = 1;
/// ABI minor version: a host accepts libraries with a minor up to its own.
pub const TF_ABI_MINOR: u32 = 0;
/// Name of the one symbol every plugin library exports.
pub const TF_ENTRY_SYMBOL: &str = "tomoflow_plugin_descriptor";

/// Status code for success; any other value is a failure described through `set_error`.
pub const TF_OK: i32 = 0;
/// Status code for a failure (details were passed to `set_error`).
pub const TF_ERR: i32 = 1;
/// Status code returned by `emit` when the run was cancelled: stop work and return.
pub const TF_CANCELLED: i32 = 2;

/// Node flag: the node type writes a file given by its `path` parameter (an exporter).
pub const TF_NODE_EXPORTER: u32 = 1;

/// Log levels for `TfHost::log`.
pub const TF_LOG_ERROR: i32 = 1;
/// Warning level.
pub const TF_LOG_WARN: i32 = 2;
/// Info level.
pub const TF_LOG_INFO: i32 = 3;
/// Debug level.
pub const TF_LOG_DEBUG: i32 = 4;

/// DLPack device (only `kDLCPU` = 1 is produced by tomoflow today).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DLDevice {
    /// DLPack device type: 1 = CPU.
    pub device_type: i32,
    /// Device ordinal.
    pub device_id: i32,
}

/// DLPack data type: `code` 0 = int, 1 = uint, 2 = float; `bits` per lane; `lanes` = 1.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DLDataType {
    /// Type code: 0 int, 1 uint, 2 float.
    pub code: u8,
    /// Bits per lane (8, 16, 32, 64).
    pub bits: u8,
    /// Number of lanes (always 1 here).
    pub lanes: u16,
}

/// DLPack tensor view (DLPack v0.8 layout).
#[repr(C)]
#[derive(Debug)]
pub struct DLTensor {
    /// Pointer to the first element (after `byte_offset`).
    pub data: *mut c_void,
    /// Where the data lives.
    pub device: DLDevice,
    /// Number of dimensions.
    pub ndim: i32,
    /// Element type.
    pub dtype: DLDataType,
    /// `ndim` extents, slowest-varying first (C order: z, y, x for volumes).
    pub shape: *mut i64,
    /// Strides in elements, or null for a compact C-order tensor.
    pub strides: *mut i64,
    /// Offset in bytes from `data` to the first element.
    pub byte_offset: u64,
}

/// DLPack managed tensor: a view plus the means to free it.
#[repr(C)]
#[derive(Debug)]
pub struct DLManagedTensor {
    /// The tensor view.
    pub dl_tensor: DLTensor,
    /// Opaque context of the owner.
    pub manager_ctx: *mut c_void,
    /// Frees the tensor; called exactly once by whoever owns it last.
    pub deleter: Option<unsafe extern "C" fn(*mut DLManagedTensor)>,
}

/// A named tensor inside a message.
#[repr(C)]
#[derive(Debug)]
pub struct TfNamedTensor {
    /// Tensor name, e.g. `"data"`.
    pub name: *const c_char,
    /// The tensor; ownership travels with the message.
    pub tensor: *mut DLManagedTensor,
}

/// Opaque host context handed to every call; pass it back to the host functions.
#[repr(C)]
pub struct TfHostCtx {
    _private: [u8; 0],
}

/// The host's function table (VapourSynth style). Valid for the lifetime of the process.
#[repr(C)]
pub struct TfHost {
    /// `size_of::<TfHost>()` as the host sees it; new functions are only appended.
    pub struct_size: u32,
    /// Host ABI major.
    pub abi_major: u32,
    /// Host ABI minor.
    pub abi_minor: u32,
    /// Allocate a compact tensor owned by the host allocator; null on failure.
    pub alloc_tensor: unsafe extern "C" fn(
        ctx: *mut TfHostCtx,
        dtype: DLDataType,
        ndim: i32,
        shape: *const i64,
    ) -> *mut DLManagedTensor,
    /// Emit one message on output port `port` (index into the node type's outputs).
    /// Takes ownership of all tensors, also on failure. `meta_json` is a JSON object.
    /// Returns `TF_OK`, `TF_ERR` (see the node's error) or `TF_CANCELLED`.
    pub emit: unsafe extern "C" fn(
        ctx: *mut TfHostCtx,
        port: u32,
        meta_json: *const c_char,
        n_tensors: u32,
        tensors: *const TfNamedTensor,
    ) -> i32,
    /// Log a line through the host's `tracing` subscriber, attributed to the node.
    pub log: unsafe extern "C" fn(ctx: *mut TfHostCtx, level: i32, msg: *const c_char),
    /// Report progress: `done` of `total` units (chunks, steps, ...).
    pub progress: unsafe extern "C" fn(ctx: *mut TfHostCtx, done: u64, total: u64),
    /// Non-zero when the run was cancelled: return from work as soon as possible.
    pub cancelled: unsafe extern "C" fn(ctx: *mut TfHostCtx) -> i32,
    /// Record the error message of the failing call (the last one wins).
    pub set_error: unsafe extern "C" fn(ctx: *mut TfHostCtx, msg: *const c_char),
    /// Run `f(user, i)` for `i` in `0..n` on the host's shared thread pool; returns when all
    /// calls returned. This is how plugins share one thread budget.
    pub parallel_for: unsafe extern "C" fn(
        ctx: *mut TfHostCtx,
        n: u64,
        f: unsafe extern "C" fn(user: *mut c_void, i: u64),
        user: *mut c_void,
    ),
}

/// Facts about the node instance being created.
#[repr(C)]
pub struct TfNodeInfo {
    /// Node id in the workflow, e.g. `"recon"`.
    pub node_id: *const c_char,
    /// Instance label, e.g. `"bg=mixed,rep1"` (`"main"` when not swept).
    pub instance: *const c_char,
    /// Seed derived from the workflow seed and the node's identity.
    pub seed: u64,
    /// A per-key directory for checkpoints that survives interruption.
    pub scratch_dir: *const c_char,
    /// Directory that relative paths in parameters are resolved against (the run's working directory).
    pub base_dir: *const c_char,
    /// Number of threads the host pool has.
    pub threads: u32,
    /// `size_of::<TfNodeInfo>()` as the host sees it; fields are only appended.
    pub struct_size: u32,
}

/// One port of a node type.
#[repr(C)]
pub struct TfPort {
    /// Port name, unique among the node's inputs (or outputs).
    pub name: *const c_char,
    /// Data kind, e.g. `"volume"`; the host connects only equal kinds.
    pub kind: *const c_char,
    /// One line of documentation.
    pub doc: *const c_char,
}

/// Validate parameters (JSON object) without creating a node. Return `TF_OK` or `TF_ERR`.
pub type TfCheckFn = unsafe extern "C" fn(
    host: *const TfHost,
    ctx: *mut TfHostCtx,
    params_json: *const c_char,
) -> i32;
/// Create a node instance; returns an opaque pointer, or null after `set_error`.
pub type TfCreateFn = unsafe extern "C" fn(
    host: *const TfHost,
    ctx: *mut TfHostCtx,
    info: *const TfNodeInfo,
    params_json: *const c_char,
) -> *mut c_void;
/// Deliver one input message (ownership of the tensors passes to the plugin).
pub type TfProcessFn = unsafe extern "C" fn(
    node: *mut c_void,
    ctx: *mut TfHostCtx,
    port: u32,
    meta_json: *const c_char,
    n_tensors: u32,
    tensors: *const TfNamedTensor,
) -> i32;
/// All inputs ended: produce the remaining outputs.
pub type TfFinishFn = unsafe extern "C" fn(node: *mut c_void, ctx: *mut TfHostCtx) -> i32;
/// Free the node instance.
pub type TfDestroyFn = unsafe extern "C" fn(node: *mut c_void);

/// A node type provided by a plugin.
#[repr(C)]
pub struct TfNodeType {
    /// Node type name, unique across loaded plugins, e.g. `"mrc-read"`.
    pub name: *const c_char,
    /// Markdown documentation (first line is the summary).
    pub doc: *const c_char,
    /// Input ports.
    pub inputs: *const TfPort,
    /// Number of input ports.
    pub n_inputs: u32,
    /// Output ports.
    pub outputs: *const TfPort,
    /// Number of output ports.
    pub n_outputs: u32,
    /// JSON Schema (draft 2020-12) of the parameter object.
    pub params_schema: *const c_char,
    /// Bit set of `TF_NODE_*` flags.
    pub flags: u32,
    /// For exporters: comma-separated file extensions it writes, e.g. `"mrc,map,rec"`.
    pub export_extensions: *const c_char,
    /// Parameter check.
    pub check: Option<TfCheckFn>,
    /// Constructor.
    pub create: Option<TfCreateFn>,
    /// Message handler.
    pub process: Option<TfProcessFn>,
    /// End-of-input handler.
    pub finish: Option<TfFinishFn>,
    /// Destructor.
    pub destroy: Option<TfDestroyFn>,
}

/// What `tomoflow_plugin_descriptor()` returns. Lives for the whole process.
#[repr(C)]
pub struct TfPluginDescriptor {
    /// Must equal [`TF_MAGIC`].
    pub magic: u64,
    /// ABI major the plugin was built for.
    pub abi_major: u32,
    /// ABI minor the plugin was built for.
    pub abi_minor: u32,
    /// `size_of::<TfPluginDescriptor>()` as the plugin sees it.
    pub struct_size: u32,
    /// Plugin name, e.g. `"io"`.
    pub name: *const c_char,
    /// Plugin version (semver).
    pub version: *const c_char,
    /// Build id chosen by the plugin, or empty: the host then hashes the library file.
    pub build_id: *const c_char,
    /// One-line description.
    pub description: *const c_char,
    /// Node types.
    pub node_types: *const TfNodeType,
    /// Number of node types.
    pub n_node_types: u32,
    /// `size_of::<TfNodeType>()` as the plugin sees it (the stride of `node_types`), so that
    /// later minor versions can append fields to node types; 0 means the ABI 1.0 size.
    pub node_type_size: u32,
}

/// Signature of the exported entry symbol.
pub type TfEntryFn = unsafe extern "C" fn() -> *const TfPluginDescriptor;

// Descriptors are immutable after construction and only hold pointers to leaked statics.
unsafe impl Sync for TfPluginDescriptor {}
unsafe impl Send for TfPluginDescriptor {}
unsafe impl Sync for TfNodeType {}
unsafe impl Send for TfNodeType {}
unsafe impl Sync for TfPort {}
unsafe impl Send for TfPort {}

/// DLPack type code for signed integers.
pub const DL_INT: u8 = 0;
/// DLPack type code for unsigned integers.
pub const DL_UINT: u8 = 1;
/// DLPack type code for IEEE floats.
pub const DL_FLOAT: u8 = 2;
/// DLPack CPU device type.
pub const DL_CPU: i32 = 1;
