//! Plugin libraries: discovery, loading, ABI checks, and safe calls into node types.
//!
//! Search order (first wins when two libraries provide the same node type): every
//! `--plugin-path` entry, then `TOMOFLOW_PLUGIN_PATH` (colon-separated), then the directory of
//! the `tomoflow` executable and its `plugins/` subdirectory. An entry may be a directory
//! (its `lib*.so` / `*.dylib` / `*.dll` files are tried, not recursively) or a library file.
//! Libraries are never unloaded.

pub mod host;
pub mod schema;

use crate::error::did_you_mean;
use host::{NodeCtx, HOST};
use indexmap::IndexMap;
use serde_json::Value;
use std::ffi::{c_void, CStr, CString};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tomoflow_sdk::abi::*;

/// A port as the host sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortInfo {
    /// Port name.
    pub name: String,
    /// Data kind.
    pub kind: String,
    /// Documentation.
    pub doc: String,
}

/// A loaded plugin library.
#[derive(Debug)]
pub struct PluginLib {
    /// Plugin name.
    pub name: String,
    /// Plugin version.
    pub version: String,
    /// Build id: the plugin's own, or the blake3 of the library file.
    pub build_id: String,
    /// One-line description.
    pub description: String,
    /// Library file.
    pub path: PathBuf,
    /// ABI version the plugin was built for.
    pub abi: (u32, u32),
}

/// A node type provided by a loaded plugin.
pub struct NodeType {
    /// Node type name.
    pub name: String,
    /// Markdown documentation.
    pub doc: String,
    /// Input ports.
    pub inputs: Vec<PortInfo>,
    /// Output ports.
    pub outputs: Vec<PortInfo>,
    /// Parameter JSON schema.
    pub schema: Value,
    /// Extensions written, for exporters (empty otherwise).
    pub export_extensions: Vec<String>,
    /// The library providing it.
    pub plugin: Arc<PluginLib>,
    raw: &'static TfNodeType,
}

impl std::fmt::Debug for NodeType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "NodeType({} from {})",
            self.name,
            self.plugin.path.display()
        )
    }
}

// The raw descriptor is immutable and lives for the whole process.
unsafe impl Send for NodeType {}
unsafe impl Sync for NodeType {}

impl NodeType {
    /// First line of the documentation.
    pub fn summary(&self) -> &str {
        self.doc.lines().next().unwrap_or("")
    }

    /// Ask the plugin to check parameters (JSON object text).
    pub fn check(&self, params_json: &str) -> Result<(), String> {
        let ctx = NodeCtx::detached(&self.name);
        let p = CString::new(params_json).map_err(|e| e.to_string())?;
        let rc = guarded(|| unsafe {
            (self.raw.check.expect("checked at load"))(&HOST, ctx.as_raw(), p.as_ptr())
        });
        match rc {
            Some(TF_OK) => Ok(()),
            Some(_) => Err(ctx.take_error("parameter check")),
            None => Err("the plugin crashed while checking parameters".into()),
        }
    }

    /// Create an instance; the context must outlive it.
    pub fn create(
        &self,
        ctx: &NodeCtx,
        info: &NodeInfoOwned,
        params_json: &str,
    ) -> Result<NodeInstance<'_>, String> {
        let p = CString::new(params_json).map_err(|e| e.to_string())?;
        let node_id = CString::new(info.node_id.as_str()).map_err(|e| e.to_string())?;
        let instance = CString::new(info.instance.as_str()).map_err(|e| e.to_string())?;
        let scratch = CString::new(info.scratch_dir.to_string_lossy().as_bytes())
            .map_err(|e| e.to_string())?;
        let base =
            CString::new(info.base_dir.to_string_lossy().as_bytes()).map_err(|e| e.to_string())?;
        let raw_info = TfNodeInfo {
            node_id: node_id.as_ptr(),
            instance: instance.as_ptr(),
            seed: info.seed,
            scratch_dir: scratch.as_ptr(),
            base_dir: base.as_ptr(),
            threads: info.threads as u32,
            struct_size: std::mem::size_of::<TfNodeInfo>() as u32,
        };
        let ptr = guarded(|| unsafe {
            (self.raw.create.expect("checked at load"))(&HOST, ctx.as_raw(), &raw_info, p.as_ptr())
                as usize
        });
        match ptr {
            Some(0) => Err(ctx.take_error("create")),
            Some(p) => Ok(NodeInstance {
                ty: self,
                ptr: p as *mut c_void,
            }),
            None => Err("the plugin crashed while creating the node".into()),
        }
    }

    /// Input port by name.
    pub fn input(&self, name: &str) -> Option<(usize, &PortInfo)> {
        self.inputs.iter().enumerate().find(|(_, p)| p.name == name)
    }

    /// Output port by name.
    pub fn output(&self, name: &str) -> Option<(usize, &PortInfo)> {
        self.outputs
            .iter()
            .enumerate()
            .find(|(_, p)| p.name == name)
    }
}

/// Facts passed to `create`.
#[derive(Debug, Clone)]
pub struct NodeInfoOwned {
    /// Node id.
    pub node_id: String,
    /// Instance label.
    pub instance: String,
    /// Derived seed.
    pub seed: u64,
    /// Scratch directory.
    pub scratch_dir: PathBuf,
    /// Base directory for relative paths.
    pub base_dir: PathBuf,
    /// Threads in the shared pool.
    pub threads: usize,
}

/// A live node instance inside a plugin; destroyed on drop.
pub struct NodeInstance<'a> {
    ty: &'a NodeType,
    ptr: *mut c_void,
}

impl NodeInstance<'_> {
    /// Deliver a packet on input `port`; the plugin receives its own handles to the tensors.
    pub fn process(
        &mut self,
        ctx: &NodeCtx,
        port: usize,
        packet: &host::Packet,
    ) -> Result<(), CallError> {
        let meta =
            CString::new(packet.meta.as_str()).map_err(|e| CallError::Failed(e.to_string()))?;
        let names: Vec<CString> = packet
            .tensors
            .iter()
            .map(|(n, _)| CString::new(n.as_str()).unwrap_or_default())
            .collect();
        let raws: Vec<TfNamedTensor> = packet
            .tensors
            .iter()
            .zip(&names)
            .map(|((_, t), n)| TfNamedTensor {
                name: n.as_ptr(),
                tensor: tomoflow_sdk::Tensor::share(t),
            })
            .collect();
        let rc = guarded(|| unsafe {
            (self.ty.raw.process.expect("checked at load"))(
                self.ptr,
                ctx.as_raw(),
                port as u32,
                meta.as_ptr(),
                raws.len() as u32,
                raws.as_ptr(),
            )
        });
        status(rc, ctx, "process")
    }

    /// Signal end of input.
    pub fn finish(&mut self, ctx: &NodeCtx) -> Result<(), CallError> {
        let rc = guarded(|| unsafe {
            (self.ty.raw.finish.expect("checked at load"))(self.ptr, ctx.as_raw())
        });
        status(rc, ctx, "finish")
    }
}

impl Drop for NodeInstance<'_> {
    fn drop(&mut self) {
        let _ = guarded(|| unsafe { (self.ty.raw.destroy.expect("checked at load"))(self.ptr) });
    }
}

/// Outcome of a failed call into a plugin.
#[derive(Debug, Clone)]
pub enum CallError {
    /// The run was cancelled.
    Cancelled,
    /// The plugin reported an error (or crashed).
    Failed(String),
}

fn status(rc: Option<i32>, ctx: &NodeCtx, what: &str) -> Result<(), CallError> {
    match rc {
        Some(TF_OK) => Ok(()),
        Some(TF_CANCELLED) => Err(CallError::Cancelled),
        Some(_) => Err(CallError::Failed(ctx.take_error(what))),
        None => Err(CallError::Failed(format!(
            "the plugin panicked in {what} and did not catch it"
        ))),
    }
}

fn guarded<T>(f: impl FnOnce() -> T) -> Option<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).ok()
}

/// All node types found, by name.
#[derive(Debug, Default)]
pub struct Registry {
    /// Loaded libraries in search order.
    pub libs: Vec<Arc<PluginLib>>,
    /// Node types by name.
    pub types: IndexMap<String, Arc<NodeType>>,
    /// Libraries that were found but refused, with the reason.
    pub rejected: Vec<(PathBuf, String)>,
    /// Node types hidden by an earlier library of the same type name.
    pub shadowed: Vec<(String, PathBuf)>,
}

fn is_library(p: &Path) -> bool {
    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
    (name.starts_with("lib") && name.ends_with(".so"))
        || name.ends_with(".dylib")
        || name.ends_with(".dll")
}

impl Registry {
    /// The default search path: explicit entries, then `TOMOFLOW_PLUGIN_PATH`, then the
    /// executable's directory and its `plugins/` subdirectory.
    pub fn search_path(explicit: &[PathBuf]) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = Vec::new();
        for e in explicit {
            for part in std::env::split_paths(e.as_os_str()) {
                v.push(part);
            }
        }
        if let Some(env) = std::env::var_os("TOMOFLOW_PLUGIN_PATH") {
            v.extend(std::env::split_paths(&env).filter(|p| !p.as_os_str().is_empty()));
        }
        if let Ok(exe) = std::env::current_exe() {
            if let Some(dir) = exe.parent() {
                v.push(dir.to_path_buf());
                v.push(dir.join("plugins"));
                // `cargo test` binaries live in target/<profile>/deps: look one level up too.
                if dir.file_name().is_some_and(|n| n == "deps") {
                    if let Some(up) = dir.parent() {
                        v.push(up.to_path_buf());
                    }
                }
            }
        }
        v
    }

    /// Load every plugin on the search path.
    pub fn discover(explicit: &[PathBuf]) -> Registry {
        let mut reg = Registry::default();
        let mut seen = std::collections::HashSet::new();
        for entry in Self::search_path(explicit) {
            let explicit_entry = explicit
                .iter()
                .any(|e| std::env::split_paths(e.as_os_str()).any(|p| p == entry));
            let files: Vec<PathBuf> = if entry.is_dir() {
                match std::fs::read_dir(&entry) {
                    Ok(rd) => {
                        let mut f: Vec<PathBuf> = rd
                            .filter_map(|e| e.ok())
                            .map(|e| e.path())
                            .filter(|p| is_library(p))
                            .collect();
                        f.sort();
                        f
                    }
                    Err(_) => continue,
                }
            } else if entry.is_file() {
                vec![entry.clone()]
            } else {
                if explicit_entry {
                    reg.rejected
                        .push((entry.clone(), "no such file or directory".into()));
                }
                continue;
            };
            for f in files {
                let canon = std::fs::canonicalize(&f).unwrap_or(f.clone());
                if !seen.insert(canon.clone()) {
                    continue;
                }
                match load_library(&canon) {
                    Ok(None) => {
                        if explicit_entry && entry.is_file() {
                            reg.rejected.push((
                                f,
                                "not a tomoflow plugin (no `tomoflow_plugin_descriptor` symbol)"
                                    .into(),
                            ));
                        }
                    }
                    Ok(Some((lib, types))) => {
                        let lib = Arc::new(lib);
                        for t in types {
                            if reg.types.contains_key(&t.name) {
                                reg.shadowed.push((t.name.clone(), lib.path.clone()));
                            } else {
                                reg.types.insert(
                                    t.name.clone(),
                                    Arc::new(NodeType {
                                        plugin: lib.clone(),
                                        ..t
                                    }),
                                );
                            }
                        }
                        reg.libs.push(lib);
                    }
                    Err(e) => reg.rejected.push((f, e)),
                }
            }
        }
        reg
    }

    /// A node type by name, or an error listing what is available.
    pub fn get(&self, name: &str) -> Result<&Arc<NodeType>, String> {
        self.types.get(name).ok_or_else(|| {
            let mut msg = format!(
                "unknown node type `{name}`{}; available: {}",
                did_you_mean(name, self.types.keys().map(|s| s.as_str())),
                if self.types.is_empty() {
                    "none (no plugin library found: build with `cargo build --release` or pass --plugin-path)".to_string()
                } else {
                    self.types.keys().cloned().collect::<Vec<_>>().join(", ")
                }
            );
            for (p, why) in &self.rejected {
                msg.push_str(&format!("\n  note: plugin {} was refused: {why}", p.display()));
            }
            msg
        })
    }

    /// The exporter for a data kind and file extension.
    pub fn exporter(&self, kind: &str, ext: &str) -> Option<&Arc<NodeType>> {
        self.types.values().find(|t| {
            t.inputs.len() == 1
                && t.inputs[0].kind == kind
                && t.export_extensions.iter().any(|e| e == ext)
        })
    }

    /// Extensions that some exporter writes for `kind`.
    pub fn export_extensions(&self, kind: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .types
            .values()
            .filter(|t| t.inputs.len() == 1 && t.inputs[0].kind == kind)
            .flat_map(|t| t.export_extensions.iter().cloned())
            .collect();
        v.sort();
        v.dedup();
        v
    }
}

/// Refuse truncated ELF files before `dlopen` maps them (the loader accepts a file cut after
/// its headers, and the process would crash later, on the first touch of a missing page), and
/// return the GNU build id when the library has one (`NT_GNU_BUILD_ID`: a hash the linker
/// computes over the output, so it changes whenever the code does).
fn check_elf(path: &Path) -> Result<Option<String>, String> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(path).map_err(|e| format!("cannot read: {e}"))?;
    let len = f.metadata().map_err(|e| format!("cannot read: {e}"))?.len();
    let read = |off: u64, n: u64| -> Result<Vec<u8>, String> {
        if off.saturating_add(n) > len {
            return Err(format!(
                "truncated library: {len} bytes, its ELF headers need at least {}",
                off.saturating_add(n)
            ));
        }
        let mut b = vec![0u8; n as usize];
        f.read_exact_at(&mut b, off)
            .map_err(|e| format!("cannot read: {e}"))?;
        Ok(b)
    };
    if len < 4 || read(0, 4)? != b"\x7fELF" {
        return Ok(None); // not ELF (e.g. Mach-O): leave it to the platform loader
    }
    let h = read(0, 64)
        .map_err(|_| "not a 64-bit ELF library (or truncated in its header)".to_string())?;
    if h[4] != 2 {
        return Err("not a 64-bit ELF library".into());
    }
    let le = h[5] == 1;
    let u16_at = |b: &[u8], o: usize| -> u64 {
        let x = [b[o], b[o + 1]];
        (if le {
            u16::from_le_bytes(x)
        } else {
            u16::from_be_bytes(x)
        }) as u64
    };
    let u32_at = |b: &[u8], o: usize| -> u64 {
        let x: [u8; 4] = b[o..o + 4].try_into().expect("4 bytes");
        (if le {
            u32::from_le_bytes(x)
        } else {
            u32::from_be_bytes(x)
        }) as u64
    };
    let u64_at = |b: &[u8], o: usize| -> u64 {
        let x: [u8; 8] = b[o..o + 8].try_into().expect("8 bytes");
        if le {
            u64::from_le_bytes(x)
        } else {
            u64::from_be_bytes(x)
        }
    };
    let (phoff, shoff) = (u64_at(&h, 32), u64_at(&h, 40));
    let (phentsize, phnum) = (u16_at(&h, 54).max(56), u16_at(&h, 56));
    let (shentsize, shnum) = (u16_at(&h, 58), u16_at(&h, 60));
    // The section header table sits at the very end of the file: its presence proves the length.
    read(shoff, shentsize * shnum)?;
    let ph = read(phoff, phentsize * phnum)?;
    let mut build_id = None;
    for i in 0..phnum as usize {
        let o = i * phentsize as usize;
        let p_type = u32_at(&ph, o);
        let (p_offset, p_filesz) = (u64_at(&ph, o + 8), u64_at(&ph, o + 32));
        if p_offset.saturating_add(p_filesz) > len {
            return Err(format!(
                "truncated library: {len} bytes, its ELF headers need at least {}",
                p_offset.saturating_add(p_filesz)
            ));
        }
        if p_type == 4 && p_filesz <= 1 << 16 {
            let notes = read(p_offset, p_filesz)?;
            let mut k = 0usize;
            while k + 12 <= notes.len() {
                let (namesz, descsz, ntype) = (
                    u32_at(&notes, k) as usize,
                    u32_at(&notes, k + 4) as usize,
                    u32_at(&notes, k + 8),
                );
                let name_at = k + 12;
                let desc_at = name_at + namesz.div_ceil(4) * 4;
                let end = desc_at + descsz.div_ceil(4) * 4;
                if end > notes.len() {
                    break;
                }
                if ntype == 3 && &notes[name_at..name_at + namesz] == b"GNU\0" {
                    build_id = Some(
                        notes[desc_at..desc_at + descsz]
                            .iter()
                            .map(|b| format!("{b:02x}"))
                            .collect(),
                    );
                }
                k = end;
            }
        }
    }
    Ok(build_id)
}

/// An error and its sources, `: `-separated: libloading's "dlopen failed" keeps the loader's
/// own message (dlerror's text: which file, which symbol) in its source.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

unsafe fn s(p: *const std::ffi::c_char) -> String {
    if p.is_null() {
        String::new()
    } else {
        CStr::from_ptr(p).to_string_lossy().into_owned()
    }
}

/// Load one library. `Ok(None)` when it is not a tomoflow plugin at all.
pub fn load_library(path: &Path) -> Result<Option<(PluginLib, Vec<NodeType>)>, String> {
    let elf_build_id = check_elf(path)?;
    let lib = unsafe { libloading::Library::new(path) }
        .map_err(|e| format!("cannot load the library: {}", error_chain(&e)))?;
    // Never unloaded: dlclose with thread-locals is unsound on Linux.
    let lib: &'static libloading::Library = Box::leak(Box::new(lib));
    let Some(d) = descriptor(lib)? else {
        return Ok(None);
    };
    let build = unsafe { s(d.build_id) };
    let lib_meta = PluginLib {
        name: unsafe { s(d.name) },
        version: unsafe { s(d.version) },
        build_id: if !build.is_empty() {
            build
        } else if let Some(id) = elf_build_id {
            id
        } else {
            crate::graph::key::hash_path(path).map_err(|e| format!("cannot read: {e}"))?[..16]
                .to_string()
        },
        description: unsafe { s(d.description) },
        path: path.to_path_buf(),
        abi: (d.abi_major, d.abi_minor),
    };
    let placeholder = Arc::new(PluginLib {
        name: String::new(),
        version: String::new(),
        build_id: String::new(),
        description: String::new(),
        path: PathBuf::new(),
        abi: (0, 0),
    });
    let types = raw_node_types(d)?
        .into_iter()
        .map(|t| node_type(t, &placeholder))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some((lib_meta, types)))
}

/// The plugin descriptor of a loaded library, checked (magic, ABI version, size); `Ok(None)`
/// when the library has no tomoflow entry point.
fn descriptor(
    lib: &'static libloading::Library,
) -> Result<Option<&'static TfPluginDescriptor>, String> {
    let entry: libloading::Symbol<TfEntryFn> = match unsafe { lib.get(TF_ENTRY_SYMBOL.as_bytes()) }
    {
        Ok(s) => s,
        Err(_) => return Ok(None),
    };
    let d = guarded(|| unsafe { entry() }).ok_or("the plugin crashed while describing itself")?;
    if d.is_null() {
        return Err("the plugin returned no descriptor".into());
    }
    let d: &'static TfPluginDescriptor = unsafe { &*d };
    if d.magic != TF_MAGIC {
        return Err(format!(
            "bad magic {:#x}: not a tomoflow plugin descriptor",
            d.magic
        ));
    }
    if d.abi_major != TF_ABI_MAJOR || d.abi_minor > TF_ABI_MINOR {
        return Err(format!(
            "built for plugin ABI {}.{}, but this tomoflow speaks ABI {TF_ABI_MAJOR}.{TF_ABI_MINOR}; rebuild the plugin against tomoflow-sdk {} (or include/tomoflow.h)",
            d.abi_major,
            d.abi_minor,
            env!("CARGO_PKG_VERSION")
        ));
    }
    if (d.struct_size as usize) < std::mem::size_of::<TfPluginDescriptor>() {
        return Err(format!(
            "descriptor is {} bytes, expected at least {}",
            d.struct_size,
            std::mem::size_of::<TfPluginDescriptor>()
        ));
    }
    Ok(Some(d))
}

/// The node type descriptors of a plugin, read with the plugin's stride: later minor
/// versions may append fields.
fn raw_node_types(d: &'static TfPluginDescriptor) -> Result<Vec<&'static TfNodeType>, String> {
    if d.n_node_types > 0 && d.node_types.is_null() {
        return Err("descriptor lists node types but gives no array".into());
    }
    let stride = match d.node_type_size as usize {
        0 => std::mem::size_of::<TfNodeType>(),
        s if s < std::mem::size_of::<TfNodeType>() => {
            return Err(format!(
                "node_type_size {s} is smaller than the ABI's {}",
                std::mem::size_of::<TfNodeType>()
            ))
        }
        s => s,
    };
    Ok((0..d.n_node_types as usize)
        .map(|i| unsafe { &*((d.node_types as *const u8).add(i * stride) as *const TfNodeType) })
        .collect())
}

/// The ports of a node type descriptor (`n` entries at `p`).
fn ports(p: *const TfPort, n: u32) -> Vec<PortInfo> {
    if n == 0 || p.is_null() {
        return Vec::new();
    }
    unsafe { std::slice::from_raw_parts(p, n as usize) }
        .iter()
        .map(|p| unsafe {
            PortInfo {
                name: s(p.name),
                kind: s(p.kind),
                doc: s(p.doc),
            }
        })
        .collect()
}

/// A node type from its descriptor, with `plugin` as a placeholder until the registry shares
/// the library.
fn node_type(t: &'static TfNodeType, plugin: &Arc<PluginLib>) -> Result<NodeType, String> {
    let name = unsafe { s(t.name) };
    if t.check.is_none()
        || t.create.is_none()
        || t.process.is_none()
        || t.finish.is_none()
        || t.destroy.is_none()
    {
        return Err(format!(
            "node type `{name}` leaves a required function pointer NULL"
        ));
    }
    let schema_text = unsafe { s(t.params_schema) };
    let schema: Value = if schema_text.is_empty() {
        serde_json::json!({"type": "object"})
    } else {
        serde_json::from_str(&schema_text)
            .map_err(|e| format!("node type `{name}` has an invalid parameter schema: {e}"))?
    };
    let exts = unsafe { s(t.export_extensions) };
    Ok(NodeType {
        doc: unsafe { s(t.doc) },
        inputs: ports(t.inputs, t.n_inputs),
        outputs: ports(t.outputs, t.n_outputs),
        schema,
        export_extensions: if t.flags & TF_NODE_EXPORTER != 0 {
            exts.split(',')
                .map(|e| e.trim().trim_start_matches('.').to_string())
                .filter(|e| !e.is_empty())
                .collect()
        } else {
            Vec::new()
        },
        plugin: plugin.clone(),
        raw: t,
        name,
    })
}
