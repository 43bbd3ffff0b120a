//! From a workflow spec to concrete node instances: `--set` overrides, `${...}` substitution,
//! sweep expansion (matrix, include, exclude) and `repeat:` replicates.
//!
//! A node is instantiated once per distinct combination of the sweep axes it *uses*, directly
//! (a `${sweep.axis}` in its plugin or params) or through an upstream node. Work that does not
//! depend on an axis is therefore shared by every sweep instance.

use super::guard;
use super::spec::{NodeSpec, SweepSpec, Workflow, WorkflowSpec};
use super::subst::{list, walk_strings, Scope};
pub use super::subst::{references, value_text};
use crate::error::{did_you_mean, UserError, UserErrors};
use indexmap::{IndexMap, IndexSet};
use serde_json::Value;
use std::collections::HashMap;

/// One coordinate of an instance: a sweep axis (or `repeat.<node>`) and its value.
pub type Coord = (String, Value);

/// A concrete node instance.
#[derive(Debug, Clone)]
pub struct Instance {
    /// Unique id, e.g. `recon[bg=mixed,rep=1]`, or the node id when not swept.
    pub id: String,
    /// Node id in the workflow.
    pub node: String,
    /// Human label used for `{instance}` (`main` when not swept).
    pub label: String,
    /// Axis values this instance is specific to.
    pub coords: Vec<Coord>,
    /// Node type after substitution.
    pub node_type: String,
    /// Parameters after substitution (before plugin defaults).
    pub params: serde_json::Map<String, Value>,
    /// Inputs: (input port, upstream instance index, upstream output port, gathered). A
    /// gathered input (`node.port[*]`) lists every matching upstream instance on one port.
    pub inputs: Vec<(String, usize, String, bool)>,
    /// Seed derived from the workflow seed and this instance's identity.
    pub seed: u64,
    /// Whether outputs are kept in the store.
    pub cache: bool,
    /// Cluster resources.
    pub resources: super::spec::Resources,
}

/// The expanded workflow.
#[derive(Debug, Clone)]
pub struct Expanded {
    /// Workflow parameters after `--set`.
    pub params: IndexMap<String, Value>,
    /// Workflow seed (`params.seed`, default 0).
    pub seed: u64,
    /// Sweep combinations (axis -> value).
    pub combos: Vec<IndexMap<String, Value>>,
    /// Node instances in topological order.
    pub instances: Vec<Instance>,
    /// Each export's `to:` with workflow-level `${...}` references filled (same order as the
    /// workflow's `exports`).
    pub export_paths: Vec<String>,
}

/// Parse a `--set key=value` override; the value is read as YAML (so `7` is a number).
pub fn parse_set(s: &str) -> Result<(String, Value), UserError> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| UserError::new(format!("--set expects key=value, got `{s}`")))?;
    let k = k.trim().trim_start_matches("params.").to_string();
    let v: Value = serde_yaml::from_str(v).unwrap_or(Value::String(v.to_string()));
    let v = if v.is_null() {
        Value::String(String::new())
    } else {
        v
    };
    Ok((k, v))
}

/// Derive the seed of one instance from the workflow seed and the instance's identity.
pub fn derive_seed(workflow_seed: u64, node: &str, coords: &[Coord]) -> u64 {
    let mut h = blake3::Hasher::new();
    h.update(b"tomoflow.seed.v1\0");
    h.update(&workflow_seed.to_le_bytes());
    h.update(node.as_bytes());
    for (a, v) in coords {
        h.update(b"\0");
        h.update(a.as_bytes());
        h.update(b"=");
        h.update(v.to_string().as_bytes());
    }
    u64::from_le_bytes(h.finalize().as_bytes()[..8].try_into().expect("8 bytes"))
}

/// True for a gathering reference, `node.port[*]`: every instance of a swept node feeds the
/// same input port (each message tagged with its instance in `meta.gather`).
pub fn is_gather(r: &str) -> bool {
    r.trim_end().ends_with("[*]")
}

/// Split `node.port` (or `node.port[*]`) into its parts.
pub fn split_ref(r: &str) -> Option<(&str, &str)> {
    let r = r.trim_end();
    let r = r.strip_suffix("[*]").unwrap_or(r);
    let (n, p) = r.split_once('.')?;
    if n.is_empty() || p.is_empty() {
        None
    } else {
        Some((n, p))
    }
}

/// Expand a workflow into instances. `sets` are `--set` overrides.
pub fn expand(wf: &Workflow, sets: &[(String, Value)]) -> Result<Expanded, UserErrors> {
    let spec = &wf.spec;
    let mut x = Expansion {
        wf,
        spec,
        errors: guard::nul_bytes(wf),
    };
    let (params, seed) = x.params(sets);
    let order = x.node_order()?;
    let sweep = spec.sweep.clone().unwrap_or_default();
    let axes: Vec<String> = sweep.matrix.keys().cloned().collect();
    // Counted before anything is made: a hostile sweep or `repeat:` must not eat all memory.
    x.errors.extend(guard::check_combinations(wf));
    x.bail()?;
    let combos = x.combinations(&sweep, &axes);
    let used_direct = x.axes_used(&sweep, &axes);
    x.bail()?;
    let node_axes = node_axes(spec, &order, &axes, &used_direct);
    let counts = guard::instance_counts(spec, &node_axes, combos.len());
    x.errors.extend(guard::check_instances(wf, counts));
    x.bail()?;
    let workflow_dir = workflow_dir(&wf.path);
    let frame = Frame {
        params: &params,
        seed,
        sweep_name: sweep.name.as_deref(),
        workflow_name: &spec.name,
        workflow_dir: &workflow_dir,
        node_axes: &node_axes,
    };
    let instances = x.instances(&order, &combos, &frame);
    let export_paths = x.export_paths(&frame);
    x.bail()?;
    Ok(Expanded {
        params,
        seed,
        combos,
        instances,
        export_paths,
    })
}

/// The phases of [`expand`], which collect every error they find before giving up.
struct Expansion<'a> {
    wf: &'a Workflow,
    spec: &'a WorkflowSpec,
    errors: Vec<UserError>,
}

/// What the instances of a workflow are made with.
struct Frame<'a> {
    /// Workflow parameters after `--set`.
    params: &'a IndexMap<String, Value>,
    /// Workflow seed.
    seed: u64,
    /// The sweep's `name` template.
    sweep_name: Option<&'a str>,
    workflow_name: &'a str,
    workflow_dir: &'a str,
    /// The axes of each node (see [`node_axes`]).
    node_axes: &'a HashMap<&'a str, Vec<String>>,
}

impl Frame<'_> {
    /// The `${...}` scope of one instance.
    fn scope<'s>(&'s self, node: &'s str, label: &'s str, coords: &'s [Coord]) -> Scope<'s> {
        Scope {
            params: self.params,
            coords,
            node,
            label,
            workflow_name: self.workflow_name,
            workflow_dir: self.workflow_dir,
            workflow_seed: self.seed,
        }
    }
}

/// The instances made so far, and which of them belong to each workflow node.
#[derive(Default)]
struct Made<'a> {
    list: Vec<Instance>,
    by_node: HashMap<&'a str, Vec<usize>>,
    /// Instance index by node and coordinates (as JSON): finding an input is one lookup.
    by_coords: HashMap<(&'a str, String), usize>,
}

/// The coordinates as a map key.
fn coords_key<C: serde::Serialize>(coords: &[C]) -> String {
    serde_json::to_string(coords).unwrap_or_default()
}

impl<'a> Expansion<'a> {
    /// Everything found so far, as the error of the expansion.
    fn bail(&mut self) -> Result<(), UserErrors> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(UserErrors(std::mem::take(&mut self.errors)))
        }
    }

    /// Workflow parameters with the `--set` overrides, and the workflow seed.
    fn params(&mut self, sets: &[(String, Value)]) -> (IndexMap<String, Value>, u64) {
        let mut params = self.spec.params.clone();
        for (k, v) in sets {
            if !params.contains_key(k) {
                self.errors.push(UserError::new(format!(
                    "--set {k}: the workflow has no parameter `{k}`{}; its params: {}",
                    did_you_mean(k, params.keys().map(|s| s.as_str())),
                    list(params.keys())
                )));
                continue;
            }
            params.insert(k.clone(), v.clone());
        }
        let seed = match params.get("seed") {
            None => 0,
            Some(v) => match v.as_u64() {
                Some(s) => s,
                None => {
                    self.errors.push(self.wf.error_at(
                        "params.seed",
                        format!("params.seed must be a non-negative integer, got {v}"),
                    ));
                    0
                }
            },
        };
        (params, seed)
    }

    /// Check node ids and input references, then order the nodes topologically.
    fn node_order(&mut self) -> Result<Vec<&'a str>, UserErrors> {
        let (wf, spec) = (self.wf, self.spec);
        for id in spec.nodes.keys() {
            if id.is_empty()
                || !id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                self.errors.push(wf.error_at(
                    &format!("nodes.{id}"),
                    format!("node id `{id}` may only contain letters, digits, `_` and `-`"),
                ));
            }
        }
        let node_ids: Vec<&str> = spec.nodes.keys().map(|s| s.as_str()).collect();
        let mut deps: IndexMap<&str, Vec<&str>> = IndexMap::new();
        for (id, n) in &spec.nodes {
            let mut d = Vec::new();
            for (port, r) in &n.inputs {
                let here = format!("nodes.{id}.inputs.{port}");
                match split_ref(r) {
                    None => self.errors.push(
                        wf.error_at(&here, format!("input `{port}: {r}` must name `node.port`")),
                    ),
                    Some((up, _)) if !spec.nodes.contains_key(up) => self.errors.push(wf.error_at(
                        &here,
                        format!(
                            "input `{port}` refers to unknown node `{up}`{}; nodes: {}",
                            did_you_mean(up, node_ids.iter().copied()),
                            node_ids.join(", ")
                        ),
                    )),
                    Some((up, _)) => {
                        d.push(spec.nodes.get_key_value(up).expect("checked").0.as_str())
                    }
                }
            }
            deps.insert(id.as_str(), d);
        }
        self.bail()?;
        topo_order(&deps).map_err(|cycle| {
            let first = cycle[0];
            UserErrors(vec![wf.error_at(
                &format!("nodes.{first}"),
                format!(
                    "the workflow has a cycle: {} -> {first}; a node cannot depend on its own output",
                    cycle.join(" -> ")
                ),
            )])
        })
    }

    /// The sweep combinations: the matrix, less `exclude`, plus `include`.
    fn combinations(&mut self, sweep: &SweepSpec, axes: &[String]) -> Vec<IndexMap<String, Value>> {
        let wf = self.wf;
        for (a, vals) in &sweep.matrix {
            if vals.is_empty() {
                self.errors.push(wf.error_at(
                    &format!("sweep.matrix.{a}"),
                    format!("sweep axis `{a}` has no values"),
                ));
            }
        }
        let mut combos: Vec<IndexMap<String, Value>> = vec![IndexMap::new()];
        for (a, vals) in &sweep.matrix {
            let mut next = Vec::new();
            for c in &combos {
                for v in vals {
                    let mut c2 = c.clone();
                    c2.insert(a.clone(), v.clone());
                    next.push(c2);
                }
            }
            combos = next;
        }
        for (i, ex) in sweep.exclude.iter().enumerate() {
            for k in ex.keys() {
                if !sweep.matrix.contains_key(k) {
                    self.errors.push(wf.error_at(
                        &format!("sweep.exclude.{i}"),
                        format!("exclude names unknown axis `{k}`"),
                    ));
                }
            }
            combos.retain(|c| !ex.iter().all(|(k, v)| c.get(k) == Some(v)));
        }
        for (i, inc) in sweep.include.iter().enumerate() {
            if let Some(k) = inc.keys().find(|k| !sweep.matrix.contains_key(*k)) {
                self.errors.push(wf.error_at(
                    &format!("sweep.include.{i}"),
                    format!(
                        "include names unknown axis `{k}`; axes: {}",
                        axes.join(", ")
                    ),
                ));
                continue;
            }
            for c in included(sweep, axes, inc) {
                if !combos.contains(&c) {
                    combos.push(c);
                }
            }
        }
        if !axes.is_empty() && combos.is_empty() {
            self.errors.push(wf.error_at(
                "sweep",
                "the sweep excludes every combination: nothing would run",
            ));
        }
        combos
    }

    /// The axes each node uses directly: `${sweep.AXIS}` in its plugin or params, and `vary`.
    fn axes_used(
        &mut self,
        sweep: &SweepSpec,
        axes: &[String],
    ) -> HashMap<&'a str, IndexSet<String>> {
        let (wf, spec) = (self.wf, self.spec);
        let mut used_direct: HashMap<&str, IndexSet<String>> = HashMap::new();
        for (id, n) in &spec.nodes {
            let mut set = IndexSet::new();
            let mut note = |s: &str| {
                for r in references(s) {
                    if let Some(a) = r.strip_prefix("sweep.") {
                        set.insert(a.to_string());
                    }
                }
            };
            note(&n.plugin);
            for v in n.params.values() {
                walk_strings(v, &mut note);
            }
            set.extend(n.vary.iter().cloned());
            for a in &set {
                let replicate_axis = a
                    .strip_prefix("repeat.")
                    .and_then(|r| spec.nodes.get(r))
                    .is_some_and(|r| r.repeat.unwrap_or(1) > 1);
                if !sweep.matrix.contains_key(a) && !replicate_axis {
                    self.errors.push(wf.error_at(
                        &format!("nodes.{id}"),
                        format!(
                            "`${{sweep.{a}}}` refers to no sweep axis{}; axes: {}",
                            did_you_mean(a, axes.iter().map(|s| s.as_str())),
                            list(axes.iter())
                        ),
                    ));
                }
            }
            used_direct.insert(id.as_str(), set);
        }
        let all_used: IndexSet<&String> = used_direct.values().flatten().collect();
        for a in axes {
            if !all_used.contains(a) {
                self.errors.push(wf.error_at(
                    &format!("sweep.matrix.{a}"),
                    format!("sweep axis `{a}` is used by no node; reference it as `${{sweep.{a}}}` or remove it"),
                ));
            }
        }
        used_direct
    }

    /// Every node, in topological order, once per combination of its axes.
    fn instances(
        &mut self,
        order: &[&'a str],
        combos: &[IndexMap<String, Value>],
        f: &Frame,
    ) -> Vec<Instance> {
        let mut made = Made::default();
        for &id in order {
            for coords in coord_sets(self.spec, &f.node_axes[id], combos) {
                if let Some(inst) = self.instance(id, coords, f, &made) {
                    made.by_node.entry(id).or_default().push(made.list.len());
                    made.by_coords
                        .insert((id, coords_key(&inst.coords)), made.list.len());
                    made.list.push(inst);
                }
            }
        }
        made.list
    }

    /// Node `id` at `coords`, with `${...}` filled in and inputs resolved to earlier
    /// instances; `None` when its node type cannot be substituted.
    fn instance(
        &mut self,
        id: &str,
        coords: Vec<Coord>,
        f: &Frame,
        made: &Made,
    ) -> Option<Instance> {
        let (wf, spec) = (self.wf, self.spec);
        let n = &spec.nodes[id];
        let label = instance_label(f.sweep_name, &coords);
        let scope = f.scope(id, &label, &coords);
        let here = format!("nodes.{id}");
        let node_type = match scope.subst(&Value::String(n.plugin.clone())) {
            Ok(v) => value_text(&v),
            Err(e) => {
                self.errors.push(wf.error_at(&format!("{here}.plugin"), e));
                return None;
            }
        };
        let mut p = serde_json::Map::new();
        for (k, v) in &n.params {
            match scope.subst(v) {
                Ok(v) => {
                    p.insert(k.clone(), v);
                }
                Err(e) => self
                    .errors
                    .push(wf.error_at(&format!("{here}.params.{k}"), e)),
            }
        }
        let inputs = self.inputs(&here, n, &coords, f.node_axes, made);
        Some(Instance {
            id: instance_id(id, &coords),
            node: id.to_string(),
            label,
            seed: derive_seed(f.seed, id, &coords),
            coords,
            node_type,
            params: p,
            inputs,
            cache: n.cache.unwrap_or(true),
            resources: n.resources.clone(),
        })
    }

    /// The upstream instances feeding node `n` at `coords`: for a plain input, the one that
    /// agrees on the upstream node's axes; for a gather, every one that agrees on the shared axes.
    fn inputs(
        &mut self,
        here: &str,
        n: &NodeSpec,
        coords: &[Coord],
        node_axes: &HashMap<&str, Vec<String>>,
        made: &Made,
    ) -> Vec<(String, usize, String, bool)> {
        let mut inputs = Vec::new();
        for (port, r) in &n.inputs {
            let (up, up_port) = split_ref(r).expect("checked above");
            // An upstream node without instances already reported its own errors.
            let Some(ups) = made.by_node.get(up) else {
                continue;
            };
            if is_gather(r) {
                // Every upstream instance that agrees with this one on the axes both have.
                for &ui in ups {
                    let agrees = made.list[ui]
                        .coords
                        .iter()
                        .all(|(a, v)| coords.iter().all(|(b, w)| b != a || w == v));
                    if agrees {
                        inputs.push((port.clone(), ui, up_port.to_string(), true));
                    }
                }
                continue;
            }
            let up_axes = &node_axes[up];
            let want: Vec<&Coord> = coords.iter().filter(|(a, _)| up_axes.contains(a)).collect();
            let found = made.by_coords.get(&(up, coords_key(&want))).copied();
            match found {
                Some(ui) => inputs.push((port.clone(), ui, up_port.to_string(), false)),
                None => self.errors.push(self.wf.error_at(
                    &format!("{here}.inputs.{port}"),
                    "internal: no upstream instance",
                )),
            }
        }
        inputs
    }

    /// Export paths: `${params.NAME}`, `${workflow.name}` and `${workflow.dir}` are filled here;
    /// the per-instance placeholders `{instance}`, `{node}` and `{AXIS}` when exports are built.
    fn export_paths(&mut self, f: &Frame) -> Vec<String> {
        let mut export_paths = Vec::with_capacity(self.spec.exports.len());
        let scope = f.scope("", "", &[]);
        for (i, e) in self.spec.exports.iter().enumerate() {
            match scope.subst(&Value::String(e.to.clone())) {
                Ok(v) => export_paths.push(value_text(&v)),
                Err(msg) => self
                    .errors
                    .push(self.wf.error_at(&format!("exports.{i}.to"), msg)),
            }
        }
        export_paths
    }
}

/// The combinations an `include` entry adds: axes it leaves out take every value of the matrix.
fn included(
    sweep: &SweepSpec,
    axes: &[String],
    inc: &IndexMap<String, Value>,
) -> Vec<IndexMap<String, Value>> {
    let mut added: Vec<IndexMap<String, Value>> = vec![IndexMap::new()];
    for a in axes {
        let vals: Vec<Value> = match inc.get(a) {
            Some(v) => vec![v.clone()],
            None => sweep.matrix[a].clone(),
        };
        added = added
            .into_iter()
            .flat_map(|c| {
                vals.iter().map(move |v| {
                    let mut c2 = c.clone();
                    c2.insert(a.clone(), v.clone());
                    c2
                })
            })
            .collect();
    }
    added
}

/// Axes per node, in topological order: own + upstream; repeat adds `repeat.<node>`.
fn node_axes<'a>(
    spec: &WorkflowSpec,
    order: &[&'a str],
    axes: &[String],
    used_direct: &HashMap<&str, IndexSet<String>>,
) -> HashMap<&'a str, Vec<String>> {
    let mut node_axes: HashMap<&str, Vec<String>> = HashMap::new();
    for &id in order {
        let mut set: IndexSet<String> = IndexSet::new();
        // A gathered input does not pass its axes on: the consumer sees all their values at once.
        for (_, r) in spec.nodes[id].inputs.iter().filter(|(_, r)| !is_gather(r)) {
            if let Some((up, _)) = split_ref(r) {
                set.extend(node_axes[up].iter().cloned());
            }
        }
        set.extend(used_direct[id].iter().cloned());
        if spec.nodes[id].repeat.unwrap_or(1) > 1 {
            set.insert(format!("repeat.{id}"));
        }
        // Sweep axes first in matrix order, then repeat axes in insertion order.
        let mut v: Vec<String> = axes.iter().filter(|a| set.contains(*a)).cloned().collect();
        v.extend(set.iter().filter(|a| a.starts_with("repeat.")).cloned());
        node_axes.insert(id, v);
    }
    node_axes
}

/// The directory of the workflow file, for `${workflow.dir}` (`.` when it has none).
fn workflow_dir(path: &std::path::Path) -> String {
    path.parent()
        .map(|p| {
            if p.as_os_str().is_empty() {
                std::path::Path::new(".")
            } else {
                p
            }
        })
        .unwrap_or(std::path::Path::new("."))
        .to_string_lossy()
        .into_owned()
}

/// The coordinates of a node's instances: its sweep axes' distinct values among `combos`
/// (one empty set when it has none), times each replicate axis.
fn coord_sets(
    spec: &WorkflowSpec,
    my_axes: &[String],
    combos: &[IndexMap<String, Value>],
) -> Vec<Vec<Coord>> {
    let sweep_axes: Vec<&String> = my_axes
        .iter()
        .filter(|a| !a.starts_with("repeat."))
        .collect();
    let mut coord_sets: Vec<Vec<Coord>> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for c in combos {
        let proj: Vec<Coord> = sweep_axes
            .iter()
            .map(|a| ((*a).clone(), c[*a].clone()))
            .collect();
        if seen.insert(coords_key(&proj)) {
            coord_sets.push(proj);
        }
    }
    if coord_sets.is_empty() {
        coord_sets.push(Vec::new());
    }
    for ra in my_axes.iter().filter(|a| a.starts_with("repeat.")) {
        let rnode = &ra["repeat.".len()..];
        let r = spec.nodes[rnode].repeat.unwrap_or(1);
        let mut next = Vec::new();
        for cs in &coord_sets {
            for i in 0..r {
                let mut c2 = cs.clone();
                c2.push((ra.clone(), Value::from(i)));
                next.push(c2);
            }
        }
        coord_sets = next;
    }
    coord_sets
}

/// `node[a=1,rep=0]`, or `node` when there are no coordinates.
pub fn instance_id(node: &str, coords: &[Coord]) -> String {
    if coords.is_empty() {
        return node.to_string();
    }
    let parts: Vec<String> = coords
        .iter()
        .map(|(a, v)| {
            let a = if a.starts_with("repeat.") {
                "rep"
            } else {
                a.as_str()
            };
            format!("{a}={}", value_text(v))
        })
        .collect();
    format!("{node}[{}]", parts.join(","))
}

/// The `{instance}` label: the sweep's `name` template when the instance has every axis it
/// names, else `axis=value` pairs; replicates add `rep<i>`; `main` when not swept.
pub fn instance_label(template: Option<&str>, coords: &[Coord]) -> String {
    let sweep: Vec<&Coord> = coords
        .iter()
        .filter(|(a, _)| !a.starts_with("repeat."))
        .collect();
    let reps: Vec<String> = coords
        .iter()
        .filter(|(a, _)| a.starts_with("repeat."))
        .map(|(_, v)| format!("rep{}", value_text(v)))
        .collect();
    let mut parts = Vec::new();
    if !sweep.is_empty() {
        let rendered = template.and_then(|t| {
            let mut out = t.to_string();
            let mut extra = Vec::new();
            for (a, v) in &sweep {
                let slot = format!("{{{a}}}");
                if out.contains(&slot) {
                    out = out.replace(&slot, &value_text(v));
                } else {
                    extra.push(format!("{a}={}", value_text(v)));
                }
            }
            if out.contains('{') {
                None
            } else if extra.is_empty() {
                Some(out)
            } else {
                Some(format!("{out},{}", extra.join(",")))
            }
        });
        parts.push(rendered.unwrap_or_else(|| {
            sweep
                .iter()
                .map(|(a, v)| format!("{a}={}", value_text(v)))
                .collect::<Vec<_>>()
                .join(",")
        }));
    }
    parts.extend(reps);
    if parts.is_empty() {
        "main".to_string()
    } else {
        parts.join(",")
    }
}

/// Topological order of a node-level graph, or one cycle as a list of node ids.
fn topo_order<'a>(deps: &IndexMap<&'a str, Vec<&'a str>>) -> Result<Vec<&'a str>, Vec<&'a str>> {
    use petgraph::graph::DiGraph;
    let mut g = DiGraph::<&str, ()>::new();
    let idx: HashMap<&str, _> = deps.keys().map(|k| (*k, g.add_node(*k))).collect();
    for (k, ds) in deps {
        for d in ds {
            g.add_edge(idx[d], idx[k], ());
        }
    }
    match petgraph::algo::toposort(&g, None) {
        Ok(o) => Ok(o.into_iter().map(|i| g[i]).collect()),
        Err(_) => {
            let sccs = petgraph::algo::tarjan_scc(&g);
            let cyc = sccs
                .into_iter()
                .find(|c| c.len() > 1 || g.contains_edge(c[0], c[0]))
                .unwrap_or_default();
            // Order the cycle along its edges for a readable message.
            let mut ordered = vec![cyc[0]];
            while ordered.len() < cyc.len() {
                let last = *ordered.last().expect("non-empty");
                match g
                    .neighbors(last)
                    .find(|n| cyc.contains(n) && !ordered.contains(n))
                {
                    Some(n) => ordered.push(n),
                    None => break,
                }
            }
            Err(ordered.into_iter().map(|i| g[i]).collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn wf(s: &str) -> Workflow {
        Workflow::parse(s, Path::new("wf.yaml")).unwrap()
    }

    const SWEPT: &str = r#"
version: 1
name: t
params: {seed: 3, size: 8}
sweep:
  matrix:
    bg: [a, b, c]
    k: [1, 2]
  exclude: [{bg: c, k: 2}]
  name: "bg={bg}"
nodes:
  src:
    plugin: phantom
    params: {shape: ["${params.size}", 4, 4]}
  mid:
    plugin: "${sweep.bg}"
    inputs: {volume: src.volume}
  leaf:
    plugin: volume-stats
    params: {k: "${sweep.k}", tag: "x-${instance}"}
    inputs: {volume: mid.volume}
    repeat: 2
"#;

    #[test]
    fn shares_upstream_work_and_expands_axes() {
        let e = expand(&wf(SWEPT), &[]).unwrap();
        let count = |n: &str| e.instances.iter().filter(|i| i.node == n).count();
        assert_eq!(e.combos.len(), 5);
        assert_eq!(count("src"), 1, "src uses no axis: one shared instance");
        assert_eq!(count("mid"), 3);
        assert_eq!(count("leaf"), 5 * 2);
        let src = &e.instances[0];
        assert_eq!(
            src.params["shape"],
            serde_json::json!([8, 4, 4]),
            "whole-string substitution keeps the type"
        );
        let mid_b = e.instances.iter().find(|i| i.id == "mid[bg=b]").unwrap();
        assert_eq!(mid_b.node_type, "b");
        assert_eq!(mid_b.label, "bg=b");
        let leaf = e
            .instances
            .iter()
            .find(|i| i.id == "leaf[bg=c,k=1,rep=1]")
            .unwrap();
        assert_eq!(leaf.params["tag"], "x-bg=c,k=1,rep1");
        assert_eq!(e.instances[leaf.inputs[0].1].id, "mid[bg=c]");
        let seeds: std::collections::HashSet<u64> = e.instances.iter().map(|i| i.seed).collect();
        assert_eq!(
            seeds.len(),
            e.instances.len(),
            "every instance gets its own seed"
        );
    }

    /// Found by fuzzing (fuzz target `workflow`): an upstream node whose plugin name
    /// cannot be substituted has no instances; its consumers must report, not panic.
    #[test]
    fn consumer_of_a_failed_node_is_an_error_not_a_panic() {
        let text = format!(
            "{SWEPT}  bad:\n    plugin: \"${{sweep: {{k}}\"\n    inputs: {{volume: src.volume}}\n  \
             use:\n    plugin: volume-stats\n    inputs: {{volume: bad.volume}}\n"
        );
        let errs = expand(&wf(&text), &[]).unwrap_err();
        assert!(errs.to_string().contains("refers to nothing"), "{errs}");
    }

    #[test]
    fn set_overrides_and_unknown_set() {
        let e = expand(&wf(SWEPT), &[parse_set("size=16").unwrap()]).unwrap();
        assert_eq!(e.instances[0].params["shape"][0], 16);
        let err = expand(&wf(SWEPT), &[parse_set("sise=16").unwrap()])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("no parameter `sise` (did you mean `size`?)"),
            "{err}"
        );
    }

    #[test]
    fn repeat_index_is_inherited_from_a_replicated_upstream_node() {
        let e = expand(
            &wf(r#"
version: 1
name: t
nodes:
  sample:
    plugin: phantom
    repeat: 3
  pick:
    plugin: volume-stats
    params: {index: "${repeat}", named: "${repeat.sample}"}
    inputs: {volume: sample.volume}
"#),
            &[],
        )
        .unwrap();
        let picks: Vec<_> = e.instances.iter().filter(|i| i.node == "pick").collect();
        assert_eq!(picks.len(), 3);
        for (r, p) in picks.iter().enumerate() {
            assert_eq!(p.params["index"], serde_json::json!(r));
            assert_eq!(p.params["named"], serde_json::json!(r));
        }
        let err = expand(
            &wf(r#"
version: 1
name: t
nodes:
  a:
    plugin: phantom
    params: {i: "${repeat.b}"}
"#),
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("does not descend from a replicated node `b`"),
            "{err}"
        );
    }

    #[test]
    fn partial_include_takes_every_value_of_the_missing_axes() {
        let e = expand(
            &wf(r#"
version: 1
name: t
sweep:
  matrix:
    tilt: [proj]
    recon: [wbp]
    rep: [0, 1]
  include:
    - {tilt: multi}
    - {recon: sirt, rep: 1}
nodes:
  a:
    plugin: phantom
    params: {t: "${sweep.tilt}", r: "${sweep.recon}", i: "${sweep.rep}"}
"#),
            &[],
        )
        .unwrap();
        let ids: Vec<&str> = e.instances.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "a[tilt=proj,recon=wbp,rep=0]",
                "a[tilt=proj,recon=wbp,rep=1]",
                "a[tilt=multi,recon=wbp,rep=0]",
                "a[tilt=multi,recon=wbp,rep=1]",
                "a[tilt=proj,recon=sirt,rep=1]"
            ]
        );
    }

    #[test]
    fn cycle_is_named() {
        let err = expand(
            &wf("version: 1\nname: t\nnodes:\n  a:\n    plugin: x\n    inputs: {i: b.o}\n  b:\n    plugin: x\n    inputs: {i: a.o}\n"),
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("cycle: a -> b -> a") || err.contains("cycle: b -> a -> b"),
            "{err}"
        );
    }

    #[test]
    fn dangling_reference_and_unused_axis() {
        let err = expand(&wf("version: 1\nname: t\nparams: {size: 1}\nnodes:\n  a:\n    plugin: x\n    params: {s: \"${params.sise}\"}\n"), &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("wf.yaml:7:5") && err.contains("did you mean `size`"),
            "{err}"
        );
        let err = expand(&wf("version: 1\nname: t\nsweep:\n  matrix:\n    q: [1]\n    e: []\nnodes:\n  a:\n    plugin: x\n"), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("sweep axis `q` is used by no node"), "{err}");
        assert!(err.contains("sweep axis `e` has no values"), "{err}");
    }

    #[test]
    fn seeds_are_stable() {
        assert_eq!(derive_seed(1, "a", &[]), derive_seed(1, "a", &[]));
        assert_ne!(derive_seed(1, "a", &[]), derive_seed(2, "a", &[]));
    }
}
