//! The host side of the ABI: the function table handed to plugins and the per-call context.

use std::ffi::{c_char, c_void, CStr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tomoflow_sdk::abi::*;
use tomoflow_sdk::{DType, Tensor};

/// A message as the engine carries it: JSON metadata text plus shared tensors.
#[derive(Debug)]
pub struct Packet {
    /// JSON object text.
    pub meta: String,
    /// Named tensors, shared by every consumer.
    pub tensors: Vec<(String, Arc<Tensor>)>,
}

impl Packet {
    /// Bytes of tensor data.
    pub fn nbytes(&self) -> u64 {
        self.tensors
            .iter()
            .map(|(_, t)| (t.len() * t.dtype().size()) as u64)
            .sum()
    }
}

/// Where a node's emitted packets go (implemented by the executor).
pub trait Emitter: Send {
    /// Deliver a packet emitted on output `port`. `Err(true)` = cancelled, `Err(false)` = failure
    /// (with the message stored by the emitter).
    fn emit(&mut self, port: usize, packet: Arc<Packet>) -> Result<(), EmitError>;
}

/// Why an emit did not go through.
#[derive(Debug)]
pub enum EmitError {
    /// The run is being cancelled.
    Cancelled,
    /// Something failed (e.g. the store could not write).
    Failed(String),
}

/// Progress sink for a node.
pub trait Progress: Send + Sync {
    /// `done` of `total` units.
    fn set(&self, done: u64, total: u64);
}

/// Everything a call into a plugin can reach through its `TfHostCtx*`.
pub struct NodeCtx {
    /// Node instance id, for logs.
    pub label: String,
    /// Error message set by the plugin.
    pub error: Mutex<Option<String>>,
    /// Why the host refused an emit (store full, bad tensor): more precise than what the plugin
    /// reports after it, so it wins.
    pub emit_error: Mutex<Option<String>>,
    /// Run-wide cancellation flag.
    pub cancel: Arc<AtomicBool>,
    /// Receiver of emitted packets (None for parameter checks).
    pub emitter: Mutex<Option<Box<dyn Emitter>>>,
    /// Number of output ports (emit checks the index).
    pub n_outputs: usize,
    /// Progress sink.
    pub progress: Option<Arc<dyn Progress>>,
    /// Shared thread pool for `parallel_for`.
    pub pool: Option<Arc<rayon::ThreadPool>>,
}

impl NodeCtx {
    /// A context for calls that emit nothing (parameter checks).
    pub fn detached(label: &str) -> NodeCtx {
        NodeCtx {
            label: label.to_string(),
            error: Mutex::new(None),
            emit_error: Mutex::new(None),
            cancel: Arc::new(AtomicBool::new(false)),
            emitter: Mutex::new(None),
            n_outputs: 0,
            progress: None,
            pool: None,
        }
    }

    /// The raw pointer plugins receive.
    pub fn as_raw(&self) -> *mut TfHostCtx {
        self as *const NodeCtx as *mut TfHostCtx
    }

    /// Take the error message the plugin left, or a generic one.
    pub fn take_error(&self, what: &str) -> String {
        if let Some(e) = self.emit_error.lock().ok().and_then(|mut e| e.take()) {
            return e;
        }
        self.error
            .lock()
            .ok()
            .and_then(|mut e| e.take())
            .unwrap_or_else(|| format!("{what} failed without a message"))
    }
}

unsafe fn ctx<'a>(p: *mut TfHostCtx) -> &'a NodeCtx {
    &*(p as *const NodeCtx)
}

unsafe fn cstr(p: *const c_char) -> String {
    if p.is_null() {
        String::new()
    } else {
        CStr::from_ptr(p).to_string_lossy().into_owned()
    }
}

struct HostBuf {
    _data: Vec<u64>,
    shape: Vec<i64>,
}

unsafe extern "C" fn delete_host_buf(p: *mut DLManagedTensor) {
    if p.is_null() {
        return;
    }
    let m = Box::from_raw(p);
    drop(Box::from_raw(m.manager_ctx as *mut HostBuf));
}

unsafe extern "C" fn host_alloc(
    _c: *mut TfHostCtx,
    dtype: DLDataType,
    ndim: i32,
    shape: *const i64,
) -> *mut DLManagedTensor {
    let Some(dt) = DType::from_dl(dtype) else {
        return std::ptr::null_mut();
    };
    if !(0..=16).contains(&ndim) || (ndim > 0 && shape.is_null()) {
        return std::ptr::null_mut();
    }
    let dims: Vec<i64> = if ndim == 0 {
        Vec::new()
    } else {
        std::slice::from_raw_parts(shape, ndim as usize).to_vec()
    };
    if dims.iter().any(|&d| d < 0) {
        return std::ptr::null_mut();
    }
    let Some(n) = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d as usize))
    else {
        return std::ptr::null_mut();
    };
    let Some(bytes) = n.checked_mul(dt.size()) else {
        return std::ptr::null_mut();
    };
    let words = bytes.div_ceil(8);
    let mut data = Vec::new();
    if data.try_reserve_exact(words).is_err() {
        return std::ptr::null_mut();
    }
    data.resize(words, 0u64);
    let mut owner = Box::new(HostBuf {
        _data: data,
        shape: dims,
    });
    let m = Box::new(DLManagedTensor {
        dl_tensor: DLTensor {
            data: owner._data.as_mut_ptr() as *mut c_void,
            device: DLDevice {
                device_type: DL_CPU,
                device_id: 0,
            },
            ndim,
            dtype,
            shape: owner.shape.as_mut_ptr(),
            strides: std::ptr::null_mut(),
            byte_offset: 0,
        },
        manager_ctx: Box::into_raw(owner) as *mut c_void,
        deleter: Some(delete_host_buf),
    });
    Box::into_raw(m)
}

unsafe extern "C" fn host_emit(
    c: *mut TfHostCtx,
    port: u32,
    meta: *const c_char,
    n: u32,
    tensors: *const TfNamedTensor,
) -> i32 {
    let c = ctx(c);
    // Own every tensor first so that all are freed whatever happens.
    let mut owned = Vec::with_capacity(n as usize);
    if n > 0 && !tensors.is_null() {
        for nt in std::slice::from_raw_parts(tensors, n as usize) {
            if let Some(t) = Tensor::from_raw(nt.tensor) {
                owned.push((cstr(nt.name), t));
            }
        }
    }
    let fail = |msg: String| {
        if let Ok(mut e) = c.emit_error.lock() {
            *e = Some(msg);
        }
        TF_ERR
    };
    if c.cancel.load(Ordering::Relaxed) {
        return TF_CANCELLED;
    }
    if port as usize >= c.n_outputs {
        return fail(format!(
            "emit on output {port}, but the node has {} outputs",
            c.n_outputs
        ));
    }
    let meta = cstr(meta);
    match serde_json::from_str::<serde_json::Value>(&meta) {
        Ok(serde_json::Value::Object(_)) => {}
        _ => {
            return fail(format!(
                "emitted metadata is not a JSON object: {:.200}",
                meta
            ))
        }
    }
    let mut shared = Vec::with_capacity(owned.len());
    for (name, t) in owned {
        if t.dtype_checked().is_none() {
            return fail(format!("tensor `{name}` has an unsupported DLPack dtype"));
        }
        if !t.is_compact_cpu() {
            return fail(format!("tensor `{name}` is not compact C-order CPU memory"));
        }
        shared.push((name, Arc::new(t)));
    }
    let packet = Arc::new(Packet {
        meta,
        tensors: shared,
    });
    let mut guard = match c.emitter.lock() {
        Ok(g) => g,
        Err(_) => return fail("emitter poisoned".into()),
    };
    match guard.as_mut() {
        None => fail("this call may not emit".into()),
        Some(e) => match e.emit(port as usize, packet) {
            Ok(()) => TF_OK,
            Err(EmitError::Cancelled) => TF_CANCELLED,
            Err(EmitError::Failed(m)) => fail(m),
        },
    }
}

unsafe extern "C" fn host_log(c: *mut TfHostCtx, level: i32, msg: *const c_char) {
    let c = ctx(c);
    let msg = cstr(msg);
    let node = c.label.as_str();
    match level {
        TF_LOG_ERROR => tracing::error!(node, "{msg}"),
        TF_LOG_WARN => tracing::warn!(node, "{msg}"),
        TF_LOG_INFO => tracing::info!(node, "{msg}"),
        _ => tracing::debug!(node, "{msg}"),
    }
}

unsafe extern "C" fn host_progress(c: *mut TfHostCtx, done: u64, total: u64) {
    if let Some(p) = &ctx(c).progress {
        p.set(done, total);
    }
}

unsafe extern "C" fn host_cancelled(c: *mut TfHostCtx) -> i32 {
    ctx(c).cancel.load(Ordering::Relaxed) as i32
}

unsafe extern "C" fn host_set_error(c: *mut TfHostCtx, msg: *const c_char) {
    let c = ctx(c);
    if let Ok(mut e) = c.error.lock() {
        *e = Some(cstr(msg));
    }
}

struct SendPtr(*mut c_void);
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

unsafe extern "C" fn host_parallel_for(
    c: *mut TfHostCtx,
    n: u64,
    f: unsafe extern "C" fn(*mut c_void, u64),
    user: *mut c_void,
) {
    use rayon::prelude::*;
    let c = ctx(c);
    let user = SendPtr(user);
    let run = || {
        let u = &user;
        (0..n).into_par_iter().for_each(|i| unsafe { f(u.0, i) });
    };
    match &c.pool {
        Some(pool) => pool.install(run),
        None => (0..n).for_each(|i| f(user.0, i)),
    }
}

/// The function table every plugin receives.
pub static HOST: TfHost = TfHost {
    struct_size: std::mem::size_of::<TfHost>() as u32,
    abi_major: TF_ABI_MAJOR,
    abi_minor: TF_ABI_MINOR,
    alloc_tensor: host_alloc,
    emit: host_emit,
    log: host_log,
    progress: host_progress,
    cancelled: host_cancelled,
    set_error: host_set_error,
    parallel_for: host_parallel_for,
};
