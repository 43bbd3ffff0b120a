//! The local executor.
//!
//! - Instances whose store entry is complete are *cached* and do not run.
//! - The rest are split into **pipelines**: instances joined by an edge stream to each other
//!   when they belong to the same sweep instance (same axis values) or when the producer keeps
//!   nothing in the store (`cache: false`). Edges between pipelines are materialised: the
//!   consumer's pipeline starts once the producer's pipeline completed, and reads the stored
//!   messages back. `--jobs N` bounds the pipelines running at once; inside one pipeline every
//!   instance runs at the same time, so a streaming chain never waits on a job slot (no deadlock).
//! - Inside a pipeline, one thread per instance; one bounded crossbeam channel per edge; a packet
//!   fanned out to several consumers is shared (`Arc`), never copied.
//! - Data-parallel work inside plugins runs on one shared rayon pool (`--threads`).
//! - The first failure cancels the run cooperatively; completed instances stay cached.

pub mod leftovers;
mod progress;
pub mod slurm;

use crate::graph::RunGraph;
use crate::plugin::host::{EmitError, Emitter, NodeCtx, Packet};
use crate::plugin::{CallError, NodeInfoOwned};
use crate::store::{EntryWriter, ExportRecord, Manifest, Store};
use crossbeam_channel::{bounded, Receiver, Select, SendTimeoutError, Sender};
use std::collections::{HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use progress::{Bars, LogWriter};

/// How to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Pipelines active at once.
    pub jobs: usize,
    /// Threads in the shared compute pool.
    pub threads: usize,
    /// Capacity of each channel, in messages.
    pub capacity: usize,
    /// Draw progress bars.
    pub progress: bool,
    /// Base directory for relative paths.
    pub base_dir: PathBuf,
    /// Run only these instances (indices); their inputs must already be in the store.
    /// Used by `tomoflow run-node` on cluster nodes.
    pub only: Option<Vec<usize>>,
}

impl Default for RunOptions {
    fn default() -> Self {
        let n = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        RunOptions {
            jobs: n,
            threads: n,
            capacity: 4,
            progress: false,
            base_dir: PathBuf::from("."),
            only: None,
        }
    }
}

/// What happened to one instance.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Reused from the store.
    Cached,
    /// Ran to completion.
    Ran,
    /// Failed with this message.
    Failed(String),
    /// Stopped because another instance failed.
    Cancelled,
    /// Never started because the run stopped first.
    Skipped,
}

impl Outcome {
    /// One word for tables.
    pub fn word(&self) -> &'static str {
        match self {
            Outcome::Cached => "cached",
            Outcome::Ran => "ran",
            Outcome::Failed(_) => "FAILED",
            Outcome::Cancelled => "cancelled",
            Outcome::Skipped => "skipped",
        }
    }
}

/// Per-instance result.
#[derive(Debug, Clone)]
pub struct NodeReport {
    /// Instance id.
    pub id: String,
    /// Node type.
    pub node_type: String,
    /// Outcome.
    pub outcome: Outcome,
    /// Wall time in seconds (of the original run, for cached ones).
    pub wall_s: f64,
    /// Bytes emitted (stored bytes for cached ones).
    pub bytes_out: u64,
}

/// Result of a run.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// One per instance, in graph order.
    pub nodes: Vec<NodeReport>,
    /// The first failure: (instance id, message).
    pub first_error: Option<(String, String)>,
    /// Wall time of the whole run.
    pub wall_s: f64,
}

impl RunReport {
    /// True when nothing failed.
    pub fn ok(&self) -> bool {
        self.first_error.is_none()
    }
}

enum Item {
    Packet(Arc<Packet>),
    End,
}

struct Shared<'a> {
    g: &'a RunGraph,
    store: &'a Store,
    opts: &'a RunOptions,
    cancel: Arc<AtomicBool>,
    pool: Arc<rayon::ThreadPool>,
    first_error: Mutex<Option<(String, String)>>,
    reports: Mutex<Vec<NodeReport>>,
    bars: Bars,
}

impl Shared<'_> {
    fn fail(&self, id: &str, msg: String) {
        fail(&self.first_error, &self.cancel, id, msg);
    }

    fn report(&self, i: usize, outcome: Outcome, wall_s: f64, bytes_out: u64) {
        self.bars.node_done();
        let mut r = self.reports.lock().unwrap_or_else(|e| e.into_inner());
        r[i].outcome = outcome;
        r[i].wall_s = wall_s;
        r[i].bytes_out = bytes_out;
    }
}

/// The report before anything runs: `Skipped` for what will run, `Cached` (with the stored
/// wall time and size) for the rest. Shared by the local and the Slurm executor.
pub(crate) fn initial_reports(
    g: &RunGraph,
    manifests: &[Option<Manifest>],
    run: &[bool],
) -> Vec<NodeReport> {
    g.nodes
        .iter()
        .zip(manifests)
        .zip(run)
        .map(|((n, m), r)| NodeReport {
            id: n.id.clone(),
            node_type: n.ty.name.clone(),
            outcome: if *r {
                Outcome::Skipped
            } else {
                Outcome::Cached
            },
            wall_s: m.as_ref().map(|m| m.wall_s).unwrap_or(0.0),
            bytes_out: m.as_ref().map(|m| m.bytes()).unwrap_or(0),
        })
        .collect()
}

/// Which instances must run: incomplete ones, except `cache: false` ones nobody needs.
pub fn to_run(g: &RunGraph, complete: &[bool]) -> Vec<bool> {
    let consumers = g.consumers();
    let mut run: Vec<bool> = complete.iter().map(|c| !c).collect();
    for i in (0..g.nodes.len()).rev() {
        if !g.nodes[i].cache && run[i] {
            let needed = consumers[i].is_empty() || consumers[i].iter().any(|(c, _, _)| run[*c]);
            run[i] = needed;
        }
    }
    run
}

/// Split the instances that run into pipelines; returns the pipeline index of each (or None).
///
/// A pipeline is a group of instances that run at the same time, streaming to each other. An
/// instance joins the pipeline of an input it streams from (a `cache: false` producer, or one
/// with the same sweep coordinates) unless that would make the pipeline wait on itself: when
/// another of its inputs belongs to a pipeline that depends on that one (in `train.yaml`, the
/// trainer must not join the pipeline of the shared `templates` node that the replicates it
/// gathers depend on). Pipelines therefore form a DAG. Nodes are in topological order.
pub fn pipelines(g: &RunGraph, run: &[bool]) -> Vec<Option<usize>> {
    let n = g.nodes.len();
    let mut group: Vec<Option<usize>> = vec![None; n];
    // deps[G]: the pipelines G waits for (direct).
    let mut deps: Vec<HashSet<usize>> = Vec::new();
    // Does pipeline `from` (transitively) wait for `to`?
    fn waits_for(deps: &[HashSet<usize>], from: usize, to: usize) -> bool {
        let mut stack = vec![from];
        let mut seen = HashSet::new();
        while let Some(x) = stack.pop() {
            if x == to {
                return true;
            }
            if seen.insert(x) {
                stack.extend(deps[x].iter().copied());
            }
        }
        false
    }
    for (v, node) in g.nodes.iter().enumerate() {
        if !run[v] {
            continue;
        }
        let in_groups: Vec<usize> = node
            .inputs
            .iter()
            .filter_map(|inp| group[inp.from])
            .collect();
        // Streaming inputs first: a `cache: false` producer must be joined (it has no store).
        let mut candidates: Vec<(bool, usize)> = node
            .inputs
            .iter()
            .filter(|inp| run[inp.from])
            .filter(|inp| !g.nodes[inp.from].cache || g.nodes[inp.from].coords == node.coords)
            .filter_map(|inp| group[inp.from].map(|gid| (g.nodes[inp.from].cache, gid)))
            .collect();
        candidates.sort();
        candidates.dedup();
        let chosen = candidates.iter().map(|c| c.1).find(|&gid| {
            in_groups
                .iter()
                .all(|&x| x == gid || !waits_for(&deps, x, gid))
        });
        let gid = chosen.unwrap_or_else(|| {
            deps.push(HashSet::new());
            deps.len() - 1
        });
        group[v] = Some(gid);
        for x in in_groups {
            if x != gid {
                deps[gid].insert(x);
            }
        }
    }
    group
}

/// Run the graph against the store.
pub fn execute(g: &RunGraph, store: &Store, opts: &RunOptions) -> RunReport {
    let t0 = Instant::now();
    let manifests: Vec<Option<Manifest>> =
        g.nodes.iter().map(|n| store.is_complete(&n.key)).collect();
    let complete: Vec<bool> = manifests.iter().map(Option::is_some).collect();
    let mut run = to_run(g, &complete);
    if let Some(only) = &opts.only {
        for (i, r) in run.iter_mut().enumerate() {
            *r = *r && only.contains(&i);
        }
    }
    let group_of = pipelines(g, &run);
    let n_groups = group_of.iter().flatten().max().map(|m| m + 1).unwrap_or(0);
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); n_groups];
    for (v, gid) in group_of.iter().enumerate() {
        if let Some(gid) = gid {
            members[*gid].push(v);
        }
    }
    let mut deps: Vec<HashSet<usize>> = vec![HashSet::new(); n_groups];
    for (v, node) in g.nodes.iter().enumerate() {
        if let Some(gv) = group_of[v] {
            for inp in &node.inputs {
                if let Some(gu) = group_of[inp.from] {
                    if gu != gv {
                        deps[gv].insert(gu);
                    }
                }
            }
        }
    }

    let pool = Arc::new(
        rayon::ThreadPoolBuilder::new()
            .num_threads(opts.threads.max(1))
            .thread_name(|i| format!("tomoflow-pool-{i}"))
            .build()
            .expect("thread pool"),
    );
    let reports = initial_reports(g, &manifests, &run);
    let shared = Shared {
        g,
        store,
        opts,
        cancel: Arc::new(AtomicBool::new(false)),
        pool,
        first_error: Mutex::new(None),
        reports: Mutex::new(reports),
        bars: Bars::new(opts.progress, run.iter().filter(|r| **r).count() as u64),
    };

    schedule(
        &deps,
        opts.jobs,
        &shared.cancel,
        &shared.first_error,
        &|gid| run_pipeline(&shared, &members[gid]),
    );
    shared.bars.clear();
    RunReport {
        nodes: shared
            .reports
            .into_inner()
            .unwrap_or_else(|e| e.into_inner()),
        first_error: shared
            .first_error
            .into_inner()
            .unwrap_or_else(|e| e.into_inner()),
        wall_s: t0.elapsed().as_secs_f64(),
    }
}

/// Record the first failure and cancel the run.
fn fail(first_error: &Mutex<Option<(String, String)>>, cancel: &AtomicBool, id: &str, msg: String) {
    let mut fe = first_error.lock().unwrap_or_else(|e| e.into_inner());
    if fe.is_none() {
        *fe = Some((id.to_string(), msg));
    }
    cancel.store(true, Ordering::SeqCst);
}

/// The message of a panic payload.
fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

/// Start each pipeline once the pipelines it depends on (`deps`) finished, at most `jobs` at
/// once; `run_group` runs one and says whether it completed. A pipeline that panics counts as
/// failed: the run is cancelled and ends, it never waits for a pipeline that cannot report.
fn schedule(
    deps: &[HashSet<usize>],
    jobs: usize,
    cancel: &AtomicBool,
    first_error: &Mutex<Option<(String, String)>>,
    run_group: &(dyn Fn(usize) -> bool + Sync),
) {
    let n_groups = deps.len();
    let (done_tx, done_rx) = crossbeam_channel::unbounded::<(usize, bool)>();
    std::thread::scope(|s| {
        let mut started = vec![false; n_groups];
        let mut finished = vec![false; n_groups];
        let mut running = 0usize;
        loop {
            if !cancel.load(Ordering::SeqCst) {
                for gid in 0..n_groups {
                    if running >= jobs.max(1) {
                        break;
                    }
                    if !started[gid] && deps[gid].iter().all(|d| finished[*d]) {
                        started[gid] = true;
                        running += 1;
                        let tx = done_tx.clone();
                        let spawned = std::thread::Builder::new()
                            .name(format!("pipeline-{gid}"))
                            .spawn_scoped(s, move || {
                                let ok = std::panic::catch_unwind(AssertUnwindSafe(|| {
                                    run_group(gid)
                                }))
                                .unwrap_or_else(|p| {
                                    let msg = format!(
                                        "internal error: a pipeline thread panicked: {}; please report this workflow",
                                        panic_text(&*p)
                                    );
                                    fail(first_error, cancel, "(pipeline)", msg);
                                    false
                                });
                                let _ = tx.send((gid, ok));
                            });
                        if let Err(e) = spawned {
                            let msg = format!("cannot start a pipeline thread: {e}");
                            fail(first_error, cancel, "(scheduler)", msg);
                            running -= 1;
                        }
                    }
                }
            }
            if running == 0 {
                if !cancel.load(Ordering::SeqCst) && started.iter().any(|s| !s) {
                    // Never expected (pipelines form a DAG): fail loudly rather than report an
                    // empty success.
                    let msg = "internal error: some pipelines could not be scheduled (a dependency cycle between pipelines); please report this workflow";
                    fail(first_error, cancel, "(scheduler)", msg.to_string());
                }
                break;
            }
            let Ok((gid, ok)) = done_rx.recv() else {
                break;
            };
            running -= 1;
            finished[gid] = ok;
            if !ok {
                cancel.store(true, Ordering::SeqCst);
            }
        }
    });
}

/// A thread name the OS accepts: no NUL byte, at most 15 bytes (Linux's limit), cut on a
/// character boundary.
fn thread_name(id: &str) -> String {
    let mut name = String::new();
    for c in id.chars().map(|c| if c == '\0' { '?' } else { c }) {
        if name.len() + c.len_utf8() > 15 {
            break;
        }
        name.push(c);
    }
    name
}

/// Cancels the run when dropped during a panic, so that threads already started in a scope
/// stop waiting for ones that never will be, and the scope can end.
struct CancelOnPanic<'a, 'b>(&'a Shared<'b>);

impl Drop for CancelOnPanic<'_, '_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.fail(
                "(pipeline)",
                "internal error: a pipeline panicked while starting".into(),
            );
        }
    }
}

/// Run one pipeline; true when every member completed.
fn run_pipeline(sh: &Shared<'_>, members: &[usize]) -> bool {
    let g = sh.g;
    let set: HashSet<usize> = members.iter().copied().collect();
    let mut in_rx: HashMap<usize, Vec<(usize, Receiver<Item>)>> = HashMap::new();
    let mut out_tx: HashMap<usize, Vec<Vec<Edge>>> = HashMap::new();
    for &v in members {
        in_rx.insert(v, Vec::new());
        out_tx.insert(v, vec![Vec::new(); g.nodes[v].ty.outputs.len()]);
    }
    let mut replays: Vec<(usize, String, Edge)> = Vec::new();
    for &v in members {
        for inp in &g.nodes[v].inputs {
            let (tx, rx) = bounded(sh.opts.capacity.max(1));
            in_rx.get_mut(&v).expect("member").push((inp.port, rx));
            let tx = Edge {
                tx,
                tag: inp.gather.then(|| gather_tag(&g.nodes[inp.from])),
            };
            if set.contains(&inp.from) {
                out_tx.get_mut(&inp.from).expect("member")[inp.from_port].push(tx);
            } else {
                let port = g.nodes[inp.from].ty.outputs[inp.from_port].name.clone();
                replays.push((inp.from, port, tx));
            }
        }
    }
    let ok = AtomicBool::new(true);
    std::thread::scope(|s| {
        let _guard = CancelOnPanic(sh);
        for (from, port, tx) in replays {
            let ok = &ok;
            let name = thread_name(&format!("<{}", g.nodes[from].id));
            let spawned = std::thread::Builder::new()
                .name(name)
                .spawn_scoped(s, move || {
                    if !replay(sh, from, &port, tx) {
                        ok.store(false, Ordering::SeqCst);
                    }
                });
            if let Err(e) = spawned {
                sh.fail(&g.nodes[from].id, format!("cannot start a thread: {e}"));
                ok.store(false, Ordering::SeqCst);
            }
        }
        for &v in members {
            let inputs = in_rx.remove(&v).expect("member");
            let outputs = out_tx.remove(&v).expect("member");
            let ok = &ok;
            let spawned = std::thread::Builder::new()
                .name(thread_name(&g.nodes[v].id))
                .spawn_scoped(s, move || {
                    let done = std::panic::catch_unwind(AssertUnwindSafe(|| {
                        run_node(sh, v, inputs, outputs)
                    }));
                    let done = done.unwrap_or_else(|p| {
                        let msg = format!(
                            "internal error: the engine panicked running this node: {}",
                            panic_text(&*p)
                        );
                        sh.fail(&g.nodes[v].id, msg.clone());
                        sh.report(v, Outcome::Failed(msg), 0.0, 0);
                        false
                    });
                    if !done {
                        ok.store(false, Ordering::SeqCst);
                    }
                });
            if let Err(e) = spawned {
                let msg = format!("cannot start a thread: {e}");
                sh.fail(&g.nodes[v].id, msg.clone());
                sh.report(v, Outcome::Failed(msg), 0.0, 0);
                ok.store(false, Ordering::SeqCst);
                break;
            }
        }
    });
    ok.load(Ordering::SeqCst)
}

/// Feed the stored output of a completed instance into a channel.
/// One outgoing edge: the channel, and the tag added to messages of a gathered input.
#[derive(Clone)]
struct Edge {
    tx: Sender<Item>,
    tag: Option<Arc<str>>,
}

impl Edge {
    /// Send a packet (tagged for a gather), giving up when the run is cancelled.
    fn packet(&self, p: &Arc<Packet>, cancel: &AtomicBool) -> bool {
        let p = match &self.tag {
            None => p.clone(),
            Some(tag) => Arc::new(Packet {
                meta: with_gather(&p.meta, tag),
                tensors: p.tensors.clone(),
            }),
        };
        send(&self.tx, Item::Packet(p), cancel)
    }
}

/// `{"node", "instance", "id", "coords"}` of an upstream instance, for `meta.gather`.
fn gather_tag(n: &crate::graph::RunNode) -> Arc<str> {
    let coords: serde_json::Map<String, serde_json::Value> = n
        .coords
        .iter()
        .map(|(a, v)| (a.clone(), v.clone()))
        .collect();
    serde_json::json!({"node": n.node, "instance": n.label, "id": n.id, "coords": coords})
        .to_string()
        .into()
}

/// Add `"gather": tag` to a JSON object text (tensors stay shared; only the metadata is new).
fn with_gather(meta: &str, tag: &str) -> String {
    let body = meta.trim().strip_prefix('{').unwrap_or("}").trim_start();
    if body.starts_with('}') {
        format!("{{\"gather\":{tag}}}")
    } else {
        format!("{{\"gather\":{tag},{body}")
    }
}

fn replay(sh: &Shared<'_>, from: usize, port: &str, tx: Edge) -> bool {
    let node = &sh.g.nodes[from];
    let Some(m) = sh.store.manifest(&node.key) else {
        sh.fail(
            &node.id,
            format!(
                "the output of {} is not complete in the store {}",
                node.id,
                sh.store.root.display()
            ),
        );
        return false;
    };
    for p in sh.store.read_port(&m, port) {
        match p {
            Ok(p) => {
                if !tx.packet(&Arc::new(p), &sh.cancel) {
                    return false;
                }
            }
            Err(e) => {
                sh.fail(
                    &node.id,
                    format!("cannot read the stored output of {}: {e}; run `tomoflow verify --repair` (it removes damaged entries) and rerun", node.id),
                );
                return false;
            }
        }
    }
    send(&tx.tx, Item::End, &sh.cancel)
}

/// Send, giving up when the run is cancelled or the receiver is gone.
fn send(tx: &Sender<Item>, mut item: Item, cancel: &AtomicBool) -> bool {
    loop {
        match tx.send_timeout(item, Duration::from_millis(100)) {
            Ok(()) => return true,
            Err(SendTimeoutError::Disconnected(_)) => return false,
            Err(SendTimeoutError::Timeout(back)) => {
                if cancel.load(Ordering::Relaxed) {
                    return false;
                }
                item = back;
            }
        }
    }
}

struct OutState {
    senders: Vec<Vec<Edge>>,
    writer: Option<EntryWriter>,
    bytes: u64,
    messages: u64,
    cancel: Arc<AtomicBool>,
    store_root: PathBuf,
    bar: Arc<progress::Bar>,
    received: Arc<std::sync::atomic::AtomicU64>,
}

struct NodeEmitter(Arc<Mutex<OutState>>);

impl Emitter for NodeEmitter {
    fn emit(&mut self, port: usize, packet: Arc<Packet>) -> Result<(), EmitError> {
        let mut st = self
            .0
            .lock()
            .map_err(|_| EmitError::Failed("poisoned".into()))?;
        st.messages += 1;
        st.bar
            .messages(st.received.load(Ordering::Relaxed), st.messages);
        if st.writer.is_none() {
            st.bytes += packet.nbytes() + packet.meta.len() as u64;
        }
        if let Some(w) = st.writer.as_mut() {
            let written = w.write(port, &packet);
            if let Ok(n) = written {
                st.bytes += n;
            }
            if let Err(e) = written {
                let hint = if e.raw_os_error() == Some(28) {
                    " (no space left on the device holding the store; free space and rerun)"
                } else {
                    ""
                };
                return Err(EmitError::Failed(format!(
                    "cannot write to the store {}: {e}{hint}",
                    st.store_root.display()
                )));
            }
        }
        let cancel = st.cancel.clone();
        for edge in &st.senders[port] {
            if !edge.packet(&packet, &cancel) {
                return Err(EmitError::Cancelled);
            }
        }
        Ok(())
    }
}

/// Run one instance in the current thread; true on success.
fn run_node(
    sh: &Shared<'_>,
    v: usize,
    inputs: Vec<(usize, Receiver<Item>)>,
    outputs: Vec<Vec<Edge>>,
) -> bool {
    let node = &sh.g.nodes[v];
    let span = tracing::info_span!("node", id = %node.id);
    let _e = span.enter();
    let t0 = Instant::now();
    let ports: Vec<String> = node.ty.outputs.iter().map(|p| p.name.clone()).collect();
    let writer = if node.cache {
        match sh.store.writer(&node.key, &ports) {
            Ok(w) => Some(w),
            Err(e) => {
                let msg = format!("cannot create its store entry: {e}");
                sh.fail(&node.id, msg.clone());
                sh.report(v, Outcome::Failed(msg), 0.0, 0);
                return false;
            }
        }
    } else {
        None
    };
    let bar = sh.bars.add(&node.id);
    let received = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let state = Arc::new(Mutex::new(OutState {
        senders: outputs,
        writer,
        bytes: 0,
        messages: 0,
        cancel: sh.cancel.clone(),
        store_root: sh.store.root.clone(),
        bar: bar.clone(),
        received: received.clone(),
    }));
    let ctx = NodeCtx {
        label: node.id.clone(),
        error: Mutex::new(None),
        emit_error: Mutex::new(None),
        cancel: sh.cancel.clone(),
        emitter: Mutex::new(Some(Box::new(NodeEmitter(state.clone())))),
        n_outputs: node.ty.outputs.len(),
        progress: Some(bar.clone()),
        pool: Some(sh.pool.clone()),
    };
    let result = drive(sh, v, &ctx, &bar, &received, &state, inputs);
    let wall = t0.elapsed().as_secs_f64();
    // Release the emitter so that the state (writer, senders) can be finalised here.
    drop(ctx.emitter.lock().map(|mut e| e.take()));
    let mut st = match Arc::try_unwrap(state) {
        Ok(m) => m.into_inner().unwrap_or_else(|e| e.into_inner()),
        Err(_) => unreachable!("the emitter was dropped"),
    };
    bar.finish();
    match result {
        Ok(()) => {
            let export = match &node.export {
                None => None,
                Some(path) => match ExportRecord::of(path) {
                    Ok(r) => Some(r),
                    Err(e) => {
                        let msg = format!(
                            "exporter `{}` finished but {} is not readable: {e}",
                            node.ty.name,
                            path.display()
                        );
                        sh.fail(&node.id, msg.clone());
                        sh.report(v, Outcome::Failed(msg), wall, st.bytes);
                        return false;
                    }
                },
            };
            if let Some(w) = st.writer.take() {
                if let Err(e) = w.commit(&node.id, &node.components, export, wall) {
                    let msg = format!("cannot complete its store entry: {e}");
                    sh.fail(&node.id, msg.clone());
                    sh.report(v, Outcome::Failed(msg), wall, st.bytes);
                    return false;
                }
            }
            for edges in &st.senders {
                for edge in edges {
                    if !send(&edge.tx, Item::End, &sh.cancel) {
                        break;
                    }
                }
            }
            tracing::debug!(
                messages = st.messages,
                bytes = st.bytes,
                "done in {wall:.3} s"
            );
            sh.report(v, Outcome::Ran, wall, st.bytes);
            true
        }
        Err(CallError::Cancelled) if sh.cancel.load(Ordering::SeqCst) => {
            sh.report(v, Outcome::Cancelled, wall, st.bytes);
            false
        }
        Err(CallError::Cancelled) => {
            let msg =
                "the plugin returned TF_CANCELLED although the run was not cancelled".to_string();
            sh.fail(&node.id, msg.clone());
            sh.report(v, Outcome::Failed(msg), wall, st.bytes);
            false
        }
        Err(CallError::Failed(msg)) => {
            tracing::debug!("failed: {msg}");
            sh.fail(&node.id, msg.clone());
            sh.report(v, Outcome::Failed(msg), wall, st.bytes);
            false
        }
    }
}

/// Create the plugin instance, feed it every input, then finish it.
fn drive(
    sh: &Shared<'_>,
    v: usize,
    ctx: &NodeCtx,
    bar: &progress::Bar,
    received: &std::sync::atomic::AtomicU64,
    state: &Mutex<OutState>,
    inputs: Vec<(usize, Receiver<Item>)>,
) -> Result<(), CallError> {
    let node = &sh.g.nodes[v];
    let scratch = sh.store.scratch_dir(&node.key);
    let info = NodeInfoOwned {
        node_id: node.node.clone(),
        instance: node.label.clone(),
        seed: node.seed,
        scratch_dir: scratch,
        base_dir: sh.opts.base_dir.clone(),
        threads: sh.opts.threads,
    };
    let params = serde_json::Value::Object(node.params.clone()).to_string();
    let mut inst = node
        .ty
        .create(ctx, &info, &params)
        .map_err(CallError::Failed)?;
    let mut open: Vec<(usize, Receiver<Item>)> = inputs;
    while !open.is_empty() {
        let (slot, res) = {
            let mut sel = Select::new();
            for (_, r) in &open {
                sel.recv(r);
            }
            match sel.select_timeout(Duration::from_millis(100)) {
                Err(_) => {
                    if sh.cancel.load(Ordering::Relaxed) {
                        return Err(CallError::Cancelled);
                    }
                    continue;
                }
                Ok(op) => {
                    let i = op.index();
                    (i, op.recv(&open[i].1))
                }
            }
        };
        match res {
            Ok(Item::Packet(p)) => {
                if sh.cancel.load(Ordering::Relaxed) {
                    return Err(CallError::Cancelled);
                }
                let n = received.fetch_add(1, Ordering::Relaxed) + 1;
                let out = state.lock().map(|s| s.messages).unwrap_or(0);
                bar.messages(n, out);
                inst.process(ctx, open[slot].0, &p)?;
            }
            Ok(Item::End) => {
                open.remove(slot);
            }
            Err(_) => return Err(CallError::Cancelled),
        }
    }
    if sh.cancel.load(Ordering::Relaxed) {
        return Err(CallError::Cancelled);
    }
    inst.finish(ctx)
}

#[cfg(test)]
mod tests {
    use super::{schedule, thread_name, with_gather};
    use std::collections::HashSet;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Mutex;

    /// A NUL byte in an instance id made `Builder::name` panic while the store lock was held.
    #[test]
    fn thread_names_are_always_accepted() {
        for id in ["a\0b", "é".repeat(20).as_str(), "x[v=a\0b,rep=0]", ""] {
            let name = thread_name(id);
            assert!(name.len() <= 15 && !name.contains('\0'), "{name:?}");
            let t = std::thread::Builder::new().name(name).spawn(|| 1).unwrap();
            assert_eq!(t.join().unwrap(), 1);
        }
        assert_eq!(thread_name("a\0b"), "a?b");
    }

    /// A pipeline thread that panics ends the run with an error instead of leaving the
    /// scheduler waiting forever for its report.
    #[test]
    fn a_panicking_pipeline_ends_the_run() {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let deps: Vec<HashSet<usize>> =
                vec![HashSet::new(), HashSet::from([0]), HashSet::new()];
            let cancel = AtomicBool::new(false);
            let first_error = Mutex::new(None);
            schedule(&deps, 2, &cancel, &first_error, &|gid| {
                if gid == 0 {
                    panic!("boom in {gid}");
                }
                true
            });
            let _ = tx.send((
                cancel.load(Ordering::SeqCst),
                first_error.into_inner().unwrap(),
            ));
        });
        let (cancelled, err) = rx
            .recv_timeout(std::time::Duration::from_secs(20))
            .expect("the scheduler returns");
        assert!(cancelled);
        let (id, msg) = err.expect("the panic is the run's error");
        assert_eq!(id, "(pipeline)");
        assert!(msg.contains("boom in 0"), "{msg}");
    }

    #[test]
    fn gather_tag_is_added_to_any_object() {
        let tag = r#"{"instance":"a"}"#;
        let v: serde_json::Value = serde_json::from_str(&with_gather("{}", tag)).unwrap();
        assert_eq!(v["gather"]["instance"], "a");
        let v: serde_json::Value =
            serde_json::from_str(&with_gather(r#" { "x": [1, 2] } "#, tag)).unwrap();
        assert_eq!(v["gather"]["instance"], "a");
        assert_eq!(v["x"][1], 2);
    }
}
