//! The run graph: expanded instances bound to node types, with port kinds checked, parameters
//! validated and completed with defaults, exports turned into exporter nodes, and a cache key
//! per instance.

pub mod key;

use crate::error::{did_you_mean, UserError, UserErrors};
use crate::plugin::{schema, NodeType, Registry};
use crate::workflow::expand::{split_ref, value_text, Coord};
use crate::workflow::{Expanded, ExportSpec, Instance, Workflow};
use key::KeyComponents;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// An edge into a node: which upstream node and output port feed which input port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    /// Input port index on this node.
    pub port: usize,
    /// Upstream node index in [`RunGraph::nodes`].
    pub from: usize,
    /// Output port index on the upstream node.
    pub from_port: usize,
    /// Part of a gather (`node.port[*]`): messages arrive tagged with their instance.
    pub gather: bool,
}

/// One node instance, ready to run.
#[derive(Debug, Clone)]
pub struct RunNode {
    /// Unique instance id.
    pub id: String,
    /// Node id in the workflow (`export:<node>.<port>` for exports).
    pub node: String,
    /// `{instance}` label.
    pub label: String,
    /// Axis values.
    pub coords: Vec<Coord>,
    /// Node type.
    pub ty: Arc<NodeType>,
    /// Parameters with defaults, as passed to the plugin.
    pub params: Map<String, Value>,
    /// Derived seed.
    pub seed: u64,
    /// Inputs sorted by port.
    pub inputs: Vec<Input>,
    /// Keep outputs in the store.
    pub cache: bool,
    /// Cluster resources.
    pub resources: crate::workflow::Resources,
    /// Target file for exporter nodes.
    pub export: Option<PathBuf>,
    /// What the key is made of.
    pub components: KeyComponents,
    /// Cache key (hex).
    pub key: String,
}

/// The whole instance graph in topological order.
#[derive(Debug, Clone)]
pub struct RunGraph {
    /// Workflow name.
    pub workflow: String,
    /// Instances; every input refers to an earlier index.
    pub nodes: Vec<RunNode>,
}

impl RunGraph {
    /// Downstream edges of each node: (consumer index, consumer input port, producer output port).
    pub fn consumers(&self) -> Vec<Vec<(usize, usize, usize)>> {
        let mut out = vec![Vec::new(); self.nodes.len()];
        for (i, n) in self.nodes.iter().enumerate() {
            for inp in &n.inputs {
                out[inp.from].push((i, inp.port, inp.from_port));
            }
        }
        out
    }
}

/// Parameters whose schema marks them as input files (`"x-tomoflow": "input-file"`).
fn input_file_params(schema: &Value) -> Vec<String> {
    schema
        .get("properties")
        .and_then(Value::as_object)
        .map(|p| {
            p.iter()
                .filter(|(_, s)| s.get("x-tomoflow").and_then(Value::as_str) == Some("input-file"))
                .map(|(k, _)| k.clone())
                .collect()
        })
        .unwrap_or_default()
}

/// File extension used to pick an exporter (`a.ome.zarr` -> `zarr`).
pub fn export_extension(path: &str) -> String {
    let p = path.trim_end_matches('/');
    let name = p.rsplit('/').next().unwrap_or(p);
    name.rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default()
}

/// Build and check the run graph. `base` is the directory relative paths resolve against.
pub fn build(
    wf: &Workflow,
    ex: &Expanded,
    reg: &Registry,
    base: &Path,
) -> Result<RunGraph, UserErrors> {
    let mut b = Binder {
        wf,
        ex,
        reg,
        base,
        errors: Vec::new(),
        nodes: Vec::new(),
        file_hashes: HashMap::new(),
        targets: HashMap::new(),
        index: HashMap::new(),
    };
    for inst in &ex.instances {
        b.bind(inst);
    }
    b.bail()?;
    // Exports become exporter nodes.
    for (i, e) in wf.spec.exports.iter().enumerate() {
        b.export(i, e);
    }
    b.bail()?;
    let mut nodes = b.nodes;
    assign_keys(&mut nodes);
    Ok(RunGraph {
        workflow: wf.spec.name.clone(),
        nodes,
    })
}

/// The phases of [`build`], which collect every error they find before giving up.
struct Binder<'a> {
    wf: &'a Workflow,
    ex: &'a Expanded,
    reg: &'a Registry,
    base: &'a Path,
    errors: Vec<UserError>,
    /// The graph so far.
    nodes: Vec<RunNode>,
    /// Content hashes of the input files read so far.
    file_hashes: HashMap<PathBuf, String>,
    /// Export target files, with the instance that writes each.
    targets: HashMap<PathBuf, String>,
    /// Index in `nodes` of each instance id.
    index: HashMap<String, usize>,
}

impl Binder<'_> {
    /// Everything found so far, as the error of the build.
    fn bail(&mut self) -> Result<(), UserErrors> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(UserErrors(std::mem::take(&mut self.errors)))
        }
    }

    /// Bind one instance to its node type: ports, parameters (with defaults), input files.
    fn bind(&mut self, inst: &Instance) {
        let wf = self.wf;
        let here = format!("nodes.{}", inst.node);
        let ty = match self.reg.get(&inst.node_type) {
            Ok(t) => t.clone(),
            Err(e) => {
                self.errors.push(wf.error_at(&format!("{here}.plugin"), e));
                return;
            }
        };
        let mut inputs: Vec<Input> = inst
            .inputs
            .iter()
            .filter_map(|input| self.bind_input(&here, &ty, input))
            .collect();
        for p in &ty.inputs {
            if !inst.inputs.iter().any(|(n, _, _, _)| n == &p.name) {
                self.errors.push(wf.error_at(
                    &here,
                    format!("input port `{}` (kind `{}`) of node type `{}` is not connected; add `inputs: {{{}: NODE.PORT}}`", p.name, p.kind, ty.name, p.name),
                ));
            }
        }
        inputs.sort_by_key(|i| i.port);
        let errors = &mut self.errors;
        let Some(params) = check_params(&ty, &inst.params, |path, msg| {
            errors.push(wf.error_at(
                &format!("{here}.params.{path}"),
                format!("{}: {msg}", inst.id),
            ))
        }) else {
            return;
        };
        let files = hash_input_files(
            &ty,
            &params,
            self.base,
            &mut self.file_hashes,
            |path, msg| errors.push(wf.error_at(&format!("{here}.params.{path}"), msg)),
        );
        self.index.insert(inst.id.clone(), self.nodes.len());
        self.nodes.push(RunNode {
            id: inst.id.clone(),
            node: inst.node.clone(),
            label: inst.label.clone(),
            coords: inst.coords.clone(),
            ty,
            params,
            seed: inst.seed,
            inputs,
            cache: inst.cache,
            resources: inst.resources.clone(),
            export: None,
            components: KeyComponents {
                files,
                ..Default::default()
            },
            key: String::new(),
        });
    }

    /// One input of an instance of node type `ty` as an edge, when its port exists, its
    /// upstream instance is bound, has the output port, and the kinds match.
    fn bind_input(
        &mut self,
        here: &str,
        ty: &NodeType,
        (port, up_idx, up_port, gather): &(String, usize, String, bool),
    ) -> Option<Input> {
        let wf = self.wf;
        let Some((pi, pinfo)) = ty.input(port) else {
            let names: Vec<&str> = ty.inputs.iter().map(|p| p.name.as_str()).collect();
            self.errors.push(wf.error_at(
                &format!("{here}.inputs.{port}"),
                format!(
                    "node type `{}` has no input port `{port}`{}; its inputs: {}",
                    ty.name,
                    did_you_mean(port, names.iter().copied()),
                    if names.is_empty() {
                        "none".to_string()
                    } else {
                        names.join(", ")
                    }
                ),
            ));
            return None;
        };
        let up_id = &self.ex.instances[*up_idx].id;
        // An upstream instance that failed to bind has its error reported already.
        let up = *self.index.get(up_id)?;
        let up_ty = &self.nodes[up].ty;
        let Some((upi, upinfo)) = up_ty.output(up_port) else {
            let names: Vec<&str> = up_ty.outputs.iter().map(|p| p.name.as_str()).collect();
            self.errors.push(wf.error_at(
                &format!("{here}.inputs.{port}"),
                format!(
                    "node `{}` ({}) has no output port `{up_port}`{}; its outputs: {}",
                    self.nodes[up].node,
                    up_ty.name,
                    did_you_mean(up_port, names.iter().copied()),
                    if names.is_empty() {
                        "none".to_string()
                    } else {
                        names.join(", ")
                    }
                ),
            ));
            return None;
        };
        if upinfo.kind != pinfo.kind {
            self.errors.push(wf.error_at(
                &format!("{here}.inputs.{port}"),
                format!(
                    "port kind mismatch: `{}.{up_port}` produces `{}` but input `{port}` of `{}` takes `{}`",
                    self.nodes[up].node, upinfo.kind, ty.name, pinfo.kind
                ),
            ));
            return None;
        }
        Some(Input {
            port: pi,
            from: up,
            from_port: upi,
            gather: *gather,
        })
    }

    /// Export `i` (`e`): one exporter node per instance of the node it exports from.
    fn export(&mut self, i: usize, e: &ExportSpec) {
        let wf = self.wf;
        let here = format!("exports.{i}");
        // `to:` with `${params.…}` and `${workflow.…}` already filled in by the expansion.
        let to_template = self.ex.export_paths.get(i).unwrap_or(&e.to);
        let Some((node, port)) = split_ref(&e.from) else {
            self.errors
                .push(wf.error_at(&here, format!("`from: {}` must name `node.port`", e.from)));
            return;
        };
        let producers: Vec<usize> = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.node == node)
            .map(|(i, _)| i)
            .collect();
        if producers.is_empty() {
            let ids: Vec<&str> = wf.spec.nodes.keys().map(|s| s.as_str()).collect();
            self.errors.push(wf.error_at(
                &here,
                format!(
                    "export from unknown node `{node}`{}",
                    did_you_mean(node, ids.iter().copied())
                ),
            ));
            return;
        }
        if producers.len() > 1 && !to_template.contains('{') {
            self.errors.push(wf.error_at(
                &here,
                format!("node `{node}` has {} instances; put `{{instance}}` in `to:` so each gets its own file", producers.len()),
            ));
            return;
        }
        for p in producers {
            if self
                .export_instance(&here, e, to_template, (node, port), p)
                .is_break()
            {
                break;
            }
        }
    }

    /// The exporter node writing output `port` of instance `p` (of workflow node `node`) to
    /// `to_template` filled for it. `Break` when the export fails for every instance alike.
    fn export_instance(
        &mut self,
        here: &str,
        e: &ExportSpec,
        to_template: &str,
        (node, port): (&str, &str),
        p: usize,
    ) -> ControlFlow<()> {
        let (wf, reg) = (self.wf, self.reg);
        let up = &self.nodes[p];
        let Some((upi, upinfo)) = up.ty.output(port) else {
            let names: Vec<&str> = up.ty.outputs.iter().map(|p| p.name.as_str()).collect();
            self.errors.push(wf.error_at(
                here,
                format!(
                    "node `{node}` has no output port `{port}`{}; its outputs: {}",
                    did_you_mean(port, names.iter().copied()),
                    names.join(", ")
                ),
            ));
            return ControlFlow::Break(());
        };
        // Sweep values fill in as one path component each: a value like `../../x/a` cannot
        // lead the file out of the directory the template names.
        let mut to = to_template
            .replace("{instance}", &path_component(&up.label))
            .replace("{node}", node);
        for (a, v) in &up.coords {
            to = to.replace(&format!("{{{a}}}"), &path_component(&value_text(v)));
        }
        if to.contains('{') {
            self.errors.push(wf.error_at(&format!("{here}.to"), format!("`{}` has a placeholder that instance `{}` cannot fill; use {{instance}}, {{node}}, a sweep axis it uses, or ${{params.NAME}}", e.to, up.id)));
            return ControlFlow::Break(());
        }
        if let Some(msg) = crate::workflow::guard::nul_in_path(&to) {
            self.errors.push(wf.error_at(&format!("{here}.to"), msg));
            return ControlFlow::Break(());
        }
        let ext = export_extension(&to);
        let Some(exporter) = reg.exporter(&upinfo.kind, &ext) else {
            let msg = no_exporter(reg, &upinfo.kind, &ext);
            self.errors.push(wf.error_at(&format!("{here}.to"), msg));
            return ControlFlow::Break(());
        };
        // Spelled differently, one file is one target (`out/./x.json` = `out/y/../x.json`).
        let target = normalise(&self.base.join(&to));
        if let Some(other) = self.targets.insert(target.clone(), up.id.clone()) {
            self.errors.push(wf.error_at(
                here,
                format!(
                    "two exports write {} ({other} and {})",
                    target.display(),
                    up.id
                ),
            ));
            return ControlFlow::Continue(());
        }
        let mut raw = Map::new();
        for (k, v) in &e.params {
            raw.insert(k.clone(), v.clone());
        }
        raw.insert(
            "path".into(),
            Value::String(target.to_string_lossy().into_owned()),
        );
        let errors = &mut self.errors;
        let Some(params) = check_params(exporter, &raw, |path, msg| {
            errors.push(wf.error_at(&format!("{here}.params.{path}"), msg))
        }) else {
            return ControlFlow::Continue(());
        };
        let coords = up.coords.clone();
        let id = format!("export:{to}");
        self.nodes.push(RunNode {
            id,
            node: format!("export:{node}.{port}"),
            label: up.label.clone(),
            seed: up.seed,
            coords,
            ty: exporter.clone(),
            params,
            inputs: vec![Input {
                port: 0,
                from: p,
                from_port: upi,
                gather: false,
            }],
            cache: true,
            resources: crate::workflow::Resources::default(),
            export: Some(target),
            components: KeyComponents::default(),
            key: String::new(),
        });
        ControlFlow::Continue(())
    }
}

/// A sweep value or instance label made safe as one path component: `/` and `\\` become `_`,
/// and `.` or `..` alone become `_`.
fn path_component(s: &str) -> String {
    let c = s.replace(['/', '\\'], "_");
    if c == "." || c == ".." {
        "_".into()
    } else {
        c
    }
}

/// `p` with `.` dropped and `..` folded into its parent, without touching the file system.
fn normalise(p: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    out
}

/// Why data of `kind` cannot be exported to a `.ext` file, with the formats it can go to.
fn no_exporter(reg: &Registry, kind: &str, ext: &str) -> String {
    let exts = reg.export_extensions(kind);
    format!(
        "cannot export `{kind}` data to `.{ext}`; formats for `{kind}`: {}",
        if exts.is_empty() {
            "none".into()
        } else {
            exts.iter()
                .map(|e| format!(".{e}"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    )
}

/// Fill in every node's key components and cache key, in topological order (inputs always
/// point to earlier nodes, whose keys are then known).
fn assign_keys(nodes: &mut [RunNode]) {
    for i in 0..nodes.len() {
        let mut inputs = BTreeMap::new();
        for inp in &nodes[i].inputs {
            let up = &nodes[inp.from];
            let port = &nodes[i].ty.inputs[inp.port].name;
            // A gathered port has one entry per upstream instance, named after it.
            let name = if inp.gather {
                format!("{port}[{}]", up.id)
            } else {
                port.clone()
            };
            inputs.insert(
                name,
                format!("{}:{}", up.key, up.ty.outputs[inp.from_port].name),
            );
        }
        let n = &nodes[i];
        let comps = KeyComponents {
            plugin: format!("{} {}", n.ty.plugin.name, n.ty.plugin.version),
            build: n.ty.plugin.build_id.clone(),
            node_type: n.ty.name.clone(),
            params: key::canonical(&Value::Object(n.params.clone())),
            seed: n.seed,
            inputs,
            files: n.components.files.clone(),
        };
        let k = comps.key();
        nodes[i].components = comps;
        nodes[i].key = k;
    }
}

/// Validate parameters against the schema and the plugin's own check; add defaults.
fn check_params(
    ty: &NodeType,
    raw: &Map<String, Value>,
    mut report: impl FnMut(&str, String),
) -> Option<Map<String, Value>> {
    let errs = schema::validate(&ty.schema, &Value::Object(raw.clone()));
    if !errs.is_empty() {
        for (path, msg) in errs {
            report(&path, msg);
        }
        return None;
    }
    let params = schema::with_defaults(&ty.schema, raw);
    if let Err(e) = ty.check(&Value::Object(params.clone()).to_string()) {
        report(
            "",
            format!("node type `{}` rejects its parameters: {e}", ty.name),
        );
        return None;
    }
    Some(params)
}

fn hash_input_files(
    ty: &NodeType,
    params: &Map<String, Value>,
    base: &Path,
    cache: &mut HashMap<PathBuf, String>,
    mut report: impl FnMut(&str, String),
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for k in input_file_params(&ty.schema) {
        // A single path, or a list of paths (each hashed, keyed `name.i`).
        let paths: Vec<(String, &str)> = match params.get(&k) {
            Some(Value::String(p)) => vec![(k.clone(), p.as_str())],
            Some(Value::Array(a)) => a
                .iter()
                .enumerate()
                .filter_map(|(i, v)| v.as_str().map(|p| (format!("{k}.{i}"), p)))
                .collect(),
            _ => continue,
        };
        for (name, p) in paths {
            let path = base.join(p);
            if let Some(h) = cache.get(&path) {
                out.insert(name, h.clone());
                continue;
            }
            match key::hash_path(&path) {
                Ok(h) => {
                    cache.insert(path, h.clone());
                    out.insert(name, h);
                }
                Err(e) => report(
                    &name,
                    format!("input file {} cannot be read: {e}", path.display()),
                ),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweep_values_stay_one_path_component_and_paths_normalise() {
        assert_eq!(path_component("../../x/a"), ".._.._x_a");
        assert_eq!(path_component(".."), "_");
        assert_eq!(path_component("bg=mixed"), "bg=mixed");
        assert_eq!(
            normalise(Path::new("/w/out/dup/../dup/./x.mrc")),
            PathBuf::from("/w/out/dup/x.mrc")
        );
        assert_eq!(
            normalise(Path::new("/w/out/./x.mrc")),
            PathBuf::from("/w/out/x.mrc")
        );
    }

    #[test]
    fn extensions() {
        assert_eq!(export_extension("results/a/tomo.MRC"), "mrc");
        assert_eq!(export_extension("x/t.ome.zarr/"), "zarr");
        assert_eq!(export_extension("noext"), "");
    }
}
