//! The safe side of a plugin: the [`NodeDef`] trait, the [`Ctx`] a node talks to the host
//! through, and the FFI trampolines that [`crate::export_plugin!`] wires up.

use crate::abi::*;
use crate::tensor::{Element, Message, Tensor};
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use std::ffi::{c_char, c_void, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

/// Result type of plugin code.
pub type Result<T, E = anyhow::Error> = std::result::Result<T, E>;

/// The error a node returns when the run was cancelled under it; the host does not report it
/// as a failure of this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cancelled;

impl std::fmt::Display for Cancelled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("cancelled")
    }
}
impl std::error::Error for Cancelled {}

/// A port of a node type: name, data kind, one line of documentation.
#[derive(Debug, Clone, Copy)]
pub struct Port {
    /// Port name.
    pub name: &'static str,
    /// Data kind (`volume`, `labels`, `particles`, `metrics`, ...).
    pub kind: &'static str,
    /// One line of documentation.
    pub doc: &'static str,
}

/// Shorthand constructor for [`Port`] usable in constants.
pub const fn port(name: &'static str, kind: &'static str, doc: &'static str) -> Port {
    Port { name, kind, doc }
}

/// Facts about the node instance being created.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    /// Node id in the workflow.
    pub node_id: String,
    /// Instance label (`"main"` when not swept).
    pub instance: String,
    /// Seed derived from the workflow seed and the node's identity: use it for every random draw.
    pub seed: u64,
    /// Per-key scratch directory for checkpoints; survives interruption.
    pub scratch_dir: PathBuf,
    /// Directory relative paths resolve against (the working directory of the run).
    pub base_dir: PathBuf,
    /// Threads in the host's shared pool.
    pub threads: usize,
}

impl NodeInfo {
    /// Resolve a user-given path against [`NodeInfo::base_dir`].
    pub fn resolve(&self, p: &str) -> PathBuf {
        let path = PathBuf::from(p);
        if path.is_absolute() {
            path
        } else {
            self.base_dir.join(path)
        }
    }
}

/// A running node instance. The host calls `process` once per input message (in arrival
/// order, inputs interleaved) and `finish` once after every input ended.
pub trait Node: Send + 'static {
    /// Handle one message that arrived on input port `input` (index into `INPUTS`).
    fn process(&mut self, ctx: &mut Ctx, input: usize, msg: Message) -> Result<()> {
        let _ = (ctx, msg);
        anyhow::bail!("this node takes no input (got a message on input {input})")
    }
    /// Every input has ended: emit what remains. Source nodes do all their work here.
    fn finish(&mut self, ctx: &mut Ctx) -> Result<()>;
}

/// The static description of a node type plus its constructor.
pub trait NodeDef: Node + Sized {
    /// Typed parameters, deserialised from the workflow's `params:` (after defaults).
    type Params: DeserializeOwned + JsonSchema;
    /// Node type name, unique across plugins, e.g. `"mrc-read"`.
    const NAME: &'static str;
    /// Markdown documentation; the first line is the summary shown by `tomoflow plugins`.
    const DOC: &'static str;
    /// Input ports.
    const INPUTS: &'static [Port];
    /// Output ports.
    const OUTPUTS: &'static [Port];
    /// For exporters: the file extensions written (the node then has a `path` parameter).
    const EXPORT_EXTENSIONS: &'static [&'static str] = &[];
    /// Semantic checks beyond the schema (run by `tomoflow validate`).
    fn check(params: &Self::Params) -> Result<()> {
        let _ = params;
        Ok(())
    }
    /// Create an instance.
    fn create(params: Self::Params, info: &NodeInfo) -> Result<Self>;
}

/// The node's line to the host: emit outputs, log, report progress, share the thread pool.
pub struct Ctx {
    host: *const TfHost,
    raw: *mut TfHostCtx,
    outputs: &'static [Port],
}

impl Ctx {
    fn host(&self) -> &TfHost {
        unsafe { &*self.host }
    }

    /// Emit a message on the named output port. Returns `Err(Cancelled)` when the run stops.
    pub fn emit(&mut self, port: &str, msg: Message) -> Result<()> {
        let idx = self
            .outputs
            .iter()
            .position(|p| p.name == port)
            .ok_or_else(|| {
                let names: Vec<_> = self.outputs.iter().map(|p| p.name).collect();
                anyhow::anyhow!("node has no output port {port:?} (outputs: {names:?})")
            })?;
        self.emit_index(idx, msg)
    }

    /// Emit a message on output port number `idx`.
    pub fn emit_index(&mut self, idx: usize, msg: Message) -> Result<()> {
        let meta = CString::new(serde_json::to_string(&msg.meta)?)?;
        let mut names = Vec::with_capacity(msg.tensors.len());
        for (n, _) in &msg.tensors {
            names.push(CString::new(n.as_str())?);
        }
        let raws: Vec<TfNamedTensor> = msg
            .tensors
            .into_iter()
            .zip(&names)
            .map(|((_, t), n)| TfNamedTensor {
                name: n.as_ptr(),
                tensor: t.into_raw(),
            })
            .collect();
        let rc = unsafe {
            (self.host().emit)(
                self.raw,
                idx as u32,
                meta.as_ptr(),
                raws.len() as u32,
                raws.as_ptr(),
            )
        };
        match rc {
            TF_OK => Ok(()),
            TF_CANCELLED => Err(Cancelled.into()),
            _ => Err(anyhow::anyhow!(
                "the host refused the message on output {idx}"
            )),
        }
    }

    /// Log at info level.
    pub fn info(&self, msg: impl AsRef<str>) {
        self.log(TF_LOG_INFO, msg.as_ref())
    }

    /// Log at warning level.
    pub fn warn(&self, msg: impl AsRef<str>) {
        self.log(TF_LOG_WARN, msg.as_ref())
    }

    /// Log at debug level.
    pub fn debug(&self, msg: impl AsRef<str>) {
        self.log(TF_LOG_DEBUG, msg.as_ref())
    }

    fn log(&self, level: i32, msg: &str) {
        let c = CString::new(msg.replace('\0', " ")).unwrap_or_default();
        unsafe { (self.host().log)(self.raw, level, c.as_ptr()) }
    }

    /// Report progress in units of the node's choice.
    pub fn progress(&self, done: u64, total: u64) {
        unsafe { (self.host().progress)(self.raw, done, total) }
    }

    /// True once the run was cancelled.
    pub fn cancelled(&self) -> bool {
        unsafe { (self.host().cancelled)(self.raw) != 0 }
    }

    /// Return `Err(Cancelled)` if the run was cancelled; call it in long loops.
    pub fn check_cancelled(&self) -> Result<()> {
        if self.cancelled() {
            Err(Cancelled.into())
        } else {
            Ok(())
        }
    }

    /// Allocate a zeroed compact tensor from the host allocator.
    pub fn alloc<T: Element>(&self, shape: &[usize]) -> Result<Tensor> {
        let dims: Vec<i64> = shape.iter().map(|&s| s as i64).collect();
        let p = unsafe {
            (self.host().alloc_tensor)(self.raw, T::DTYPE.to_dl(), dims.len() as i32, dims.as_ptr())
        };
        unsafe { Tensor::from_raw(p) }
            .ok_or_else(|| anyhow::anyhow!("host could not allocate {shape:?}"))
    }

    /// Run `f(i)` for every `i` in `0..n` on the host's shared thread pool (all plugins share
    /// one budget, so a sweep never oversubscribes the machine). A panic in `f` is caught and
    /// re-raised here after all calls returned.
    pub fn parallel_for<F: Fn(usize) + Sync>(&self, n: usize, f: F) {
        self.par().for_each(n, f)
    }

    /// A handle on the host's thread pool that pure functions can take (`Send + Sync + Copy`),
    /// valid for the duration of the current call into the node.
    pub fn par(&self) -> Par<'_> {
        Par {
            host: self.host,
            raw: self.raw,
            _call: std::marker::PhantomData,
        }
    }
}

/// The host's shared thread pool, borrowed for one call into a node (see [`Ctx::par`]).
#[derive(Clone, Copy)]
pub struct Par<'a> {
    host: *const TfHost,
    raw: *mut TfHostCtx,
    _call: std::marker::PhantomData<&'a Ctx>,
}

// SAFETY: the host's `parallel_for` may be called from any thread (docs/plugin-abi.md), and the
// lifetime ties the handle to the call during which the host context is valid.
unsafe impl Send for Par<'_> {}
unsafe impl Sync for Par<'_> {}

impl Par<'_> {
    /// Run `f(i)` for every `i` in `0..n`; returns when all calls returned. Panics in `f` are
    /// caught on the pool and re-raised here.
    pub fn for_each<F: Fn(usize) + Sync>(&self, n: usize, f: F) {
        struct Job<'a, F> {
            f: &'a F,
            panicked: std::sync::atomic::AtomicBool,
        }
        unsafe extern "C" fn call<F: Fn(usize) + Sync>(user: *mut c_void, i: u64) {
            let job = &*(user as *const Job<F>);
            if catch_unwind(AssertUnwindSafe(|| (job.f)(i as usize))).is_err() {
                job.panicked
                    .store(true, std::sync::atomic::Ordering::Relaxed);
            }
        }
        let job = Job {
            f: &f,
            panicked: std::sync::atomic::AtomicBool::new(false),
        };
        unsafe {
            ((*self.host).parallel_for)(
                self.raw,
                n as u64,
                call::<F>,
                &job as *const Job<F> as *mut c_void,
            )
        };
        if job.panicked.load(std::sync::atomic::Ordering::Relaxed) {
            panic!("a parallel task panicked");
        }
    }

    /// `(0..n).map(f)` computed on the pool, in index order.
    pub fn map<R: Send, F: Fn(usize) -> R + Sync>(&self, n: usize, f: F) -> Vec<R> {
        let slots: Vec<std::sync::Mutex<Option<R>>> =
            (0..n).map(|_| std::sync::Mutex::new(None)).collect();
        self.for_each(n, |i| {
            let r = f(i);
            *slots[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
        });
        slots
            .into_iter()
            .map(|s| {
                s.into_inner()
                    .unwrap_or_else(|e| e.into_inner())
                    .expect("every index ran")
            })
            .collect()
    }
}

/// Parameters arrive as JSON; parse them into the node's type with the field path in errors.
fn parse_params<P: DeserializeOwned>(json: *const c_char) -> Result<P> {
    let s = unsafe { CStr::from_ptr(json) }.to_str()?;
    serde_json::from_str(s)
        .map_err(|e| anyhow::anyhow!("invalid parameters: {}", param_error(s, &e)))
}

/// A parameter error that names the field: serde_json reports a position in the one-line JSON
/// the host sends, so the field is the last key that starts before that position.
fn param_error(json: &str, e: &serde_json::Error) -> String {
    let text = e.to_string();
    let msg = text
        .rsplit_once(" at line ")
        .map(|(m, _)| m.to_string())
        .unwrap_or(text.clone());
    if e.line() != 1 || msg.starts_with("missing field") || msg.starts_with("unknown field") {
        return msg;
    }
    let upto = &json[..e.column().min(json.len())];
    // The last `"key":` before the error position.
    let mut field = None;
    let b = upto.as_bytes();
    let mut i = b.len();
    while i >= 2 {
        i -= 1;
        if b[i] == b':' && b[i - 1] == b'"' {
            if let Some(start) = upto[..i - 1].rfind('"') {
                field = Some(&upto[start + 1..i - 1]);
            }
            break;
        }
    }
    match field {
        Some(f) => format!("`{f}`: {msg}"),
        None => msg,
    }
}

fn set_error(host: *const TfHost, ctx: *mut TfHostCtx, msg: &str) {
    let c = CString::new(msg.replace('\0', " ")).unwrap_or_default();
    unsafe { ((*host).set_error)(ctx, c.as_ptr()) }
}

thread_local! {
    static LAST_PANIC: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Install a panic hook (in this plugin's copy of `std`) that records the message and location
/// for the host instead of printing a backtrace to the user's terminal.
pub fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let msg = if let Some(s) = info.payload().downcast_ref::<&str>() {
                s.to_string()
            } else if let Some(s) = info.payload().downcast_ref::<String>() {
                s.clone()
            } else {
                "unknown panic payload".to_string()
            };
            let at = info
                .location()
                .map(|l| format!(" (at {}:{})", l.file(), l.line()))
                .unwrap_or_default();
            LAST_PANIC.with(|p| *p.borrow_mut() = Some(format!("plugin panicked: {msg}{at}")));
        }));
    });
}

fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    if let Some(m) = LAST_PANIC.with(|p| p.borrow_mut().take()) {
        return m;
    }
    if let Some(s) = p.downcast_ref::<&str>() {
        format!("plugin panicked: {s}")
    } else if let Some(s) = p.downcast_ref::<String>() {
        format!("plugin panicked: {s}")
    } else {
        "plugin panicked".to_string()
    }
}

/// Run `f`, turning errors and panics into a status code plus `set_error`.
fn guard(host: *const TfHost, ctx: *mut TfHostCtx, f: impl FnOnce() -> Result<()>) -> i32 {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => TF_OK,
        Ok(Err(e)) if e.is::<Cancelled>() => TF_CANCELLED,
        Ok(Err(e)) => {
            set_error(host, ctx, &format!("{e:#}"));
            TF_ERR
        }
        Err(p) => {
            set_error(host, ctx, &panic_message(p));
            TF_ERR
        }
    }
}

struct Instance<T> {
    node: T,
    host: *const TfHost,
}

unsafe extern "C" fn check_tramp<T: NodeDef>(
    host: *const TfHost,
    ctx: *mut TfHostCtx,
    params: *const c_char,
) -> i32 {
    guard(host, ctx, || {
        let p: T::Params = parse_params(params)?;
        T::check(&p)
    })
}

unsafe extern "C" fn create_tramp<T: NodeDef>(
    host: *const TfHost,
    ctx: *mut TfHostCtx,
    info: *const TfNodeInfo,
    params: *const c_char,
) -> *mut c_void {
    let mut out: *mut c_void = std::ptr::null_mut();
    let rc = guard(host, ctx, || {
        let info = unsafe { &*info };
        let s = |p: *const c_char| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned();
        let info = NodeInfo {
            node_id: s(info.node_id),
            instance: s(info.instance),
            seed: info.seed,
            scratch_dir: PathBuf::from(s(info.scratch_dir)),
            base_dir: PathBuf::from(s(info.base_dir)),
            threads: info.threads.max(1) as usize,
        };
        let p: T::Params = parse_params(params)?;
        T::check(&p)?;
        let node = T::create(p, &info)?;
        out = Box::into_raw(Box::new(Instance { node, host })) as *mut c_void;
        Ok(())
    });
    if rc == TF_OK {
        out
    } else {
        std::ptr::null_mut()
    }
}

unsafe extern "C" fn process_tramp<T: NodeDef>(
    node: *mut c_void,
    ctx: *mut TfHostCtx,
    port: u32,
    meta: *const c_char,
    n: u32,
    tensors: *const TfNamedTensor,
) -> i32 {
    let inst = &mut *(node as *mut Instance<T>);
    // Take ownership of the tensors first, so that they are freed whatever happens next.
    let mut owned = Vec::with_capacity(n as usize);
    if n > 0 && !tensors.is_null() {
        for nt in std::slice::from_raw_parts(tensors, n as usize) {
            let name = CStr::from_ptr(nt.name).to_string_lossy().into_owned();
            if let Some(t) = Tensor::from_raw(nt.tensor) {
                owned.push((name, t));
            }
        }
    }
    let host = inst.host;
    guard(host, ctx, || {
        let s = unsafe { CStr::from_ptr(meta) }.to_str()?;
        let meta = match serde_json::from_str(s)? {
            serde_json::Value::Object(m) => m,
            _ => anyhow::bail!("message metadata is not a JSON object"),
        };
        let msg = Message {
            meta,
            tensors: owned,
        };
        let mut c = Ctx {
            host,
            raw: ctx,
            outputs: T::OUTPUTS,
        };
        inst.node.process(&mut c, port as usize, msg)
    })
}

unsafe extern "C" fn finish_tramp<T: NodeDef>(node: *mut c_void, ctx: *mut TfHostCtx) -> i32 {
    let inst = &mut *(node as *mut Instance<T>);
    let host = inst.host;
    guard(host, ctx, || {
        let mut c = Ctx {
            host,
            raw: ctx,
            outputs: T::OUTPUTS,
        };
        inst.node.finish(&mut c)
    })
}

unsafe extern "C" fn destroy_tramp<T: NodeDef>(node: *mut c_void) {
    if !node.is_null() {
        let _ = catch_unwind(AssertUnwindSafe(|| {
            drop(Box::from_raw(node as *mut Instance<T>))
        }));
    }
}

fn leak_cstr(s: &str) -> *const c_char {
    CString::new(s.replace('\0', " "))
        .expect("no NUL")
        .into_raw()
}

fn leak_ports(ports: &[Port]) -> *const TfPort {
    let v: Vec<TfPort> = ports
        .iter()
        .map(|p| TfPort {
            name: leak_cstr(p.name),
            kind: leak_cstr(p.kind),
            doc: leak_cstr(p.doc),
        })
        .collect();
    Box::leak(v.into_boxed_slice()).as_ptr()
}

/// JSON Schema of a parameter type, with subschemas inlined so that hosts need no `$ref`.
pub fn params_schema<P: JsonSchema>() -> serde_json::Value {
    let settings = schemars::generate::SchemaSettings::draft2020_12().with(|s| {
        s.inline_subschemas = true;
    });
    let schema = settings.into_generator().into_root_schema_for::<P>();
    serde_json::to_value(schema).unwrap_or(serde_json::Value::Null)
}

/// Build the C description of node type `T` (strings are leaked: descriptors live forever).
pub fn node_type<T: NodeDef>() -> TfNodeType {
    let schema = params_schema::<T::Params>();
    TfNodeType {
        name: leak_cstr(T::NAME),
        doc: leak_cstr(T::DOC),
        inputs: leak_ports(T::INPUTS),
        n_inputs: T::INPUTS.len() as u32,
        outputs: leak_ports(T::OUTPUTS),
        n_outputs: T::OUTPUTS.len() as u32,
        params_schema: leak_cstr(&schema.to_string()),
        flags: if T::EXPORT_EXTENSIONS.is_empty() {
            0
        } else {
            TF_NODE_EXPORTER
        },
        export_extensions: leak_cstr(&T::EXPORT_EXTENSIONS.join(",")),
        check: Some(check_tramp::<T>),
        create: Some(create_tramp::<T>),
        process: Some(process_tramp::<T>),
        finish: Some(finish_tramp::<T>),
        destroy: Some(destroy_tramp::<T>),
    }
}

/// Build a whole plugin descriptor; used by [`crate::export_plugin!`]. `build_id` enters the
/// cache keys of the plugin's nodes; empty lets the host hash the library file.
pub fn descriptor(
    name: &str,
    version: &str,
    build_id: &str,
    description: &str,
    types: Vec<TfNodeType>,
) -> &'static TfPluginDescriptor {
    install_panic_hook();
    let n = types.len() as u32;
    let types = Box::leak(types.into_boxed_slice());
    Box::leak(Box::new(TfPluginDescriptor {
        magic: TF_MAGIC,
        abi_major: TF_ABI_MAJOR,
        abi_minor: TF_ABI_MINOR,
        struct_size: std::mem::size_of::<TfPluginDescriptor>() as u32,
        name: leak_cstr(name),
        version: leak_cstr(version),
        build_id: leak_cstr(build_id),
        description: leak_cstr(description),
        node_types: types.as_ptr(),
        n_node_types: n,
        node_type_size: std::mem::size_of::<TfNodeType>() as u32,
    }))
}

/// Export a plugin library: lists its node types and generates the C entry point.
///
/// The build id is `TOMOFLOW_BUILD_ID` at compile time, which the `tomoflow-build-id` crate
/// sets from a `build.rs` (a hash of the sources, so that cache keys survive rebuilds of the
/// same code); without it the host hashes the library file.
///
/// ```ignore
/// tomoflow_sdk::export_plugin! {
///     name: "io",
///     version: env!("CARGO_PKG_VERSION"),
///     description: "volume I/O",
///     nodes: [Phantom, MrcRead],
/// }
/// ```
#[macro_export]
macro_rules! export_plugin {
    (name: $name:expr, version: $version:expr, description: $desc:expr, nodes: [$($t:ty),* $(,)?] $(,)?) => {
        /// Entry point the tomoflow host looks up (see docs/plugin-abi.md).
        #[no_mangle]
        pub extern "C" fn tomoflow_plugin_descriptor() -> *const $crate::abi::TfPluginDescriptor {
            static DESCRIPTOR: ::std::sync::OnceLock<usize> = ::std::sync::OnceLock::new();
            let p = *DESCRIPTOR.get_or_init(|| {
                ::std::panic::catch_unwind(|| {
                    $crate::plugin::descriptor($name, $version, ::std::option_env!("TOMOFLOW_BUILD_ID").unwrap_or(""), $desc, vec![$($crate::plugin::node_type::<$t>()),*])
                        as *const $crate::abi::TfPluginDescriptor as usize
                })
                .unwrap_or(0)
            });
            p as *const $crate::abi::TfPluginDescriptor
        }
    };
}

#[cfg(test)]
mod tests {
    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct P {
        steps: u32,
        weights: std::collections::BTreeMap<String, f64>,
    }

    #[test]
    fn parameter_errors_name_the_field() {
        let json = r#"{"steps":1000000000000,"weights":{"a":1.0}}"#;
        let e = serde_json::from_str::<P>(json).unwrap_err();
        let m = super::param_error(json, &e);
        assert!(m.starts_with("`steps`: invalid value"), "{m}");
        let json = r#"{"steps":3,"weights":{"a":"x"}}"#;
        let e = serde_json::from_str::<P>(json).unwrap_err();
        assert!(super::param_error(json, &e).starts_with("`a`:"));
        let json = r#"{"weights":{}}"#;
        let e = serde_json::from_str::<P>(json).unwrap_err();
        assert_eq!(super::param_error(json, &e), "missing field `steps`");
    }
}
