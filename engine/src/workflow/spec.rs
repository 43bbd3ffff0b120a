//! The workflow file as written: serde types and loading with located errors.

use super::locate::KeyIndex;
use crate::error::{did_you_mean, Location, UserError, UserErrors};
use indexmap::IndexMap;
use serde::Deserialize;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Top-level keys a workflow may have.
pub const TOP_KEYS: &[&str] = &[
    "version",
    "name",
    "description",
    "params",
    "sweep",
    "nodes",
    "exports",
];
/// Keys a node may have.
pub const NODE_KEYS: &[&str] = &[
    "plugin",
    "params",
    "inputs",
    "repeat",
    "vary",
    "cache",
    "resources",
    "doc",
];
/// Keys a sweep may have.
pub const SWEEP_KEYS: &[&str] = &["matrix", "include", "exclude", "name"];
/// Keys an export may have.
pub const EXPORT_KEYS: &[&str] = &["from", "to", "params"];

/// A workflow file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkflowSpec {
    /// Format version; only 1 exists.
    pub version: u32,
    /// Workflow name (the journal keys run history by it).
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// Default parameters, overridable with `--set key=value`.
    #[serde(default)]
    pub params: IndexMap<String, Value>,
    /// Parameter sweep expanded at plan time.
    #[serde(default)]
    pub sweep: Option<SweepSpec>,
    /// Nodes by id.
    pub nodes: IndexMap<String, NodeSpec>,
    /// User-facing output files.
    #[serde(default)]
    pub exports: Vec<ExportSpec>,
}

/// `sweep:` section.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SweepSpec {
    /// Axis name -> values; the cartesian product is the set of instances.
    #[serde(default)]
    pub matrix: IndexMap<String, Vec<Value>>,
    /// Extra combinations (each must give a value for every axis).
    #[serde(default)]
    pub include: Vec<IndexMap<String, Value>>,
    /// Combinations to drop: each entry drops every combination that matches all its keys.
    #[serde(default)]
    pub exclude: Vec<IndexMap<String, Value>>,
    /// Instance label template, e.g. `"bg={background}"`.
    #[serde(default)]
    pub name: Option<String>,
}

/// One node.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    /// Node type (provided by some plugin); may use `${...}`.
    pub plugin: String,
    /// Parameters passed to the node type.
    #[serde(default)]
    pub params: IndexMap<String, Value>,
    /// Input port -> `node.port`.
    #[serde(default)]
    pub inputs: IndexMap<String, String>,
    /// Number of replicates, each with its own derived seed.
    #[serde(default)]
    pub repeat: Option<u32>,
    /// Sweep axes the node is instantiated over although no parameter mentions them: one
    /// instance (with its own derived seed) per value, e.g. an independent draw per replicate.
    #[serde(default)]
    pub vary: Vec<String>,
    /// Keep outputs in the store (default true). `false` streams only: nothing to resume from.
    #[serde(default)]
    pub cache: Option<bool>,
    /// Cluster resources per instance (used by `--executor slurm`).
    #[serde(default)]
    pub resources: Resources,
    /// Free text.
    #[serde(default)]
    pub doc: Option<String>,
}

/// Resources one instance asks a cluster scheduler for.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// CPU cores (`--cpus-per-task`).
    #[serde(default)]
    pub cpus: Option<u32>,
    /// Memory, Slurm syntax (`--mem`, e.g. `8G`).
    #[serde(default)]
    pub mem: Option<String>,
    /// Wall-time limit, Slurm syntax (`--time`, e.g. `02:00:00`).
    #[serde(default)]
    pub time: Option<String>,
    /// Generic resources (`--gres`, e.g. `gpu:1`).
    #[serde(default)]
    pub gres: Option<String>,
    /// Partition for this node only (overrides `--partition`).
    #[serde(default)]
    pub partition: Option<String>,
}
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportSpec {
    /// `node.port` to export.
    pub from: String,
    /// Target path; the extension picks the format; may use `{instance}` and `{axis}`.
    pub to: String,
    /// Extra parameters for the exporter node type.
    #[serde(default)]
    pub params: IndexMap<String, Value>,
}

/// A loaded workflow: the spec, its source text and key positions.
#[derive(Debug, Clone)]
pub struct Workflow {
    /// The parsed spec.
    pub spec: WorkflowSpec,
    /// Path of the file.
    pub path: PathBuf,
    /// Positions of keys.
    pub keys: KeyIndex,
}

impl Workflow {
    /// Load and parse a workflow file; checks structure and unknown keys.
    pub fn load(path: &Path) -> Result<Workflow, UserErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            UserErrors(vec![UserError::new(format!(
                "cannot read workflow {}: {e}",
                path.display()
            ))])
        })?;
        Self::parse(&text, path)
    }

    /// Parse workflow text (the path is used for messages).
    pub fn parse(text: &str, path: &Path) -> Result<Workflow, UserErrors> {
        let keys = KeyIndex::scan(text);
        let mut errors = Vec::new();
        let loc = |line: usize, column: usize| {
            Some(Location {
                file: path.to_path_buf(),
                line,
                column,
            })
        };
        if let Some((line, col, depth)) = keys.too_deep {
            return Err(UserErrors(vec![UserError::at(
                loc(line, col),
                format!(
                    "the YAML nests {depth} levels deep here; a workflow may nest at most {} \
                     (lists and mappings, block or flow)",
                    super::guard::MAX_DEPTH
                ),
            )]));
        }
        for (p, first, line, col) in &keys.duplicates {
            errors.push(UserError::at(
                loc(*line, *col),
                format!("`{p}` is defined twice (first at line {first}); node ids and keys must be unique"),
            ));
        }
        let check_keys =
            |errors: &mut Vec<UserError>, parent: &str, allowed: &[&str], what: &str| {
                let mut found = keys.children(parent);
                found.sort_by_key(|k| keys.find(&join(parent, k)));
                for k in found {
                    if !allowed.contains(&k.as_str()) {
                        let (l, c) = keys.find(&join(parent, &k)).unwrap_or((1, 1));
                        errors.push(UserError::at(
                            loc(l, c),
                            format!(
                                "unknown {what} key `{k}`{}; allowed: {}",
                                did_you_mean(&k, allowed.iter().copied()),
                                allowed.join(", ")
                            ),
                        ));
                    }
                }
            };
        check_keys(&mut errors, "", TOP_KEYS, "top-level");
        check_keys(&mut errors, "sweep", SWEEP_KEYS, "sweep");
        for n in keys.children("nodes") {
            check_keys(&mut errors, &format!("nodes.{n}"), NODE_KEYS, "node");
        }
        for e in keys.children("exports") {
            check_keys(&mut errors, &format!("exports.{e}"), EXPORT_KEYS, "export");
        }
        if !errors.is_empty() {
            return Err(UserErrors(errors));
        }
        let spec: WorkflowSpec = serde_yaml::from_str(text).map_err(|e| {
            let mut location = e.location().map(|l| Location {
                file: path.to_path_buf(),
                line: l.line(),
                column: l.column(),
            });
            let mut msg = e.to_string();
            // serde_yaml appends " at line L column C"; we print the location in front instead.
            if let Some(i) = msg.find(" at line ") {
                msg.truncate(i);
            }
            if msg.contains("repetition limit exceeded") {
                // An alias bomb: anchors whose aliases expand to billions of nodes.
                let (line, column) = first_alias(text).unwrap_or((1, 1));
                location = Some(Location {
                    file: path.to_path_buf(),
                    line,
                    column,
                });
                msg = "repetition limit exceeded: its aliases (`*name`) expand to too many values \
                       (an alias bomb); write the values out or use fewer nested aliases"
                    .into();
            }
            UserErrors(vec![UserError::at(
                location,
                format!("invalid workflow: {msg}"),
            )])
        })?;
        // serde_json has no NaN or infinity: it would read `.nan` as null ("got null").
        let mut non_finite = Vec::new();
        if let Ok(raw) = serde_yaml::from_str::<serde_yaml::Value>(text) {
            find_non_finite(&raw, String::new(), &mut non_finite);
        }
        if !non_finite.is_empty() {
            return Err(UserErrors(
                non_finite
                    .into_iter()
                    .map(|(p, v)| {
                        let (l, c) = keys.find(&p).unwrap_or((1, 1));
                        UserError::at(
                            loc(l, c),
                            format!("`{p}` is {v}; values must be finite numbers (plugins receive JSON, which has no NaN or infinity)"),
                        )
                    })
                    .collect(),
            ));
        }
        if spec.version != 1 {
            let (l, c) = keys.find("version").unwrap_or((1, 1));
            return Err(UserErrors(vec![UserError::at(
                loc(l, c),
                format!(
                    "unsupported workflow version {}; this tomoflow reads version 1",
                    spec.version
                ),
            )]));
        }
        if spec.nodes.is_empty() {
            let (l, c) = keys.find("nodes").unwrap_or((1, 1));
            return Err(UserErrors(vec![UserError::at(
                loc(l, c),
                "the workflow has no nodes",
            )]));
        }
        Ok(Workflow {
            spec,
            path: path.to_path_buf(),
            keys,
        })
    }

    /// Location of a dotted key path (or its closest ancestor).
    pub fn locate(&self, path: &str) -> Option<Location> {
        self.keys.find(path).map(|(line, column)| Location {
            file: self.path.clone(),
            line,
            column,
        })
    }

    /// A user error located at `path`.
    pub fn error_at(&self, path: &str, message: impl Into<String>) -> UserError {
        UserError::at(self.locate(path), message)
    }
}

/// The dotted paths of the first 20 NaN or infinite numbers in `v`, with how each is shown.
fn find_non_finite(v: &serde_yaml::Value, path: String, out: &mut Vec<(String, &'static str)>) {
    use serde_yaml::Value as Y;
    if out.len() >= 20 {
        return;
    }
    match v {
        Y::Number(n) => match n.as_f64() {
            Some(f) if f.is_nan() => out.push((path, "NaN")),
            Some(f) if f.is_infinite() => {
                out.push((path, if f > 0.0 { "infinity" } else { "-infinity" }))
            }
            _ => {}
        },
        Y::Sequence(s) => {
            for (i, x) in s.iter().enumerate() {
                find_non_finite(x, join(&path, &i.to_string()), out);
            }
        }
        Y::Mapping(m) => {
            for (k, x) in m {
                let k = match k {
                    Y::String(s) => s.clone(),
                    other => serde_yaml::to_string(other)
                        .unwrap_or_default()
                        .trim()
                        .to_string(),
                };
                find_non_finite(x, join(&path, &k), out);
            }
        }
        Y::Tagged(t) => find_non_finite(&t.value, path, out),
        _ => {}
    }
}

/// Line and column (1-based) of the first alias (`*name`) in a YAML text.
fn first_alias(text: &str) -> Option<(usize, usize)> {
    text.lines().enumerate().find_map(|(l, line)| {
        let b = line.as_bytes();
        (0..b.len())
            .find(|&i| {
                b[i] == b'*'
                    && (i == 0 || matches!(b[i - 1], b' ' | b'[' | b',' | b'{' | b'\t'))
                    && b.get(i + 1)
                        .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_')
            })
            .map(|i| (l + 1, i + 1))
    })
}

fn join(parent: &str, k: &str) -> String {
    if parent.is_empty() {
        k.to_string()
    } else {
        format!("{parent}.{k}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Workflow, UserErrors> {
        Workflow::parse(s, Path::new("wf.yaml"))
    }

    #[test]
    fn unknown_node_key_is_located_with_suggestion() {
        let e = parse("version: 1\nname: t\nnodes:\n  a:\n    plugn: phantom\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("wf.yaml:5:5: unknown node key `plugn` (did you mean `plugin`?)"),
            "{e}"
        );
    }

    #[test]
    fn malformed_yaml_is_located() {
        let e = parse("version: 1\nname: t\nnodes:\n  a: [1, 2\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("wf.yaml:"), "{e}");
        assert!(e.contains("invalid workflow"), "{e}");
    }

    #[test]
    fn duplicate_node_ids_are_reported() {
        let e = parse("version: 1\nname: t\nnodes:\n  a:\n    plugin: x\n  a:\n    plugin: y\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("wf.yaml:6:3: `nodes.a` is defined twice (first at line 4)"),
            "{e}"
        );
    }

    /// NaN in a numeric parameter was reported as "got null".
    #[test]
    fn nan_and_infinity_are_named() {
        let e = parse("version: 1\nname: t\nnodes:\n  a:\n    plugin: x\n    params:\n      sigma: .nan\n      shape: [1, -.inf]\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("wf.yaml:7:7: `nodes.a.params.sigma` is NaN"),
            "{e}"
        );
        assert!(
            e.contains("wf.yaml:8:7: `nodes.a.params.shape.1` is -infinity"),
            "{e}"
        );
    }

    /// An alias bomb got `repetition limit exceeded` with no place and no explanation.
    #[test]
    fn alias_bomb_is_located_and_named() {
        let mut t =
            String::from("version: 1\nname: t\nparams:\n  a: &a [x, x, x, x, x, x, x, x, x]\n");
        for (p, c) in ('a'..='h').zip('b'..='i') {
            t.push_str(&format!(
                "  {c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
            ));
        }
        t.push_str("nodes:\n  n:\n    plugin: x\n");
        let e = parse(&t).unwrap_err().to_string();
        assert!(e.starts_with("wf.yaml:5:10: "), "{e}");
        assert!(e.contains("alias bomb"), "{e}");
    }

    #[test]
    fn wrong_type_is_located() {
        let e = parse("version: 1\nname: t\nnodes:\n  a:\n    plugin: x\n    repeat: many\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("wf.yaml:6:"), "{e}");
    }
}
