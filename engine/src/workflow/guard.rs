//! Checks against hostile workflow input, made before the work they guard: NUL bytes in strings
//! that become paths, thread names or labels; the number of instances a sweep and `repeat:`
//! would make, counted before anything is expanded; and how deeply the YAML nests, measured
//! before the YAML parser (whose time grows with the square of the depth) sees it.
//! docs/reliability.md lists these limits.

use super::spec::Workflow;
use super::subst::walk_strings;
use crate::error::UserError;
use std::sync::atomic::{AtomicU64, Ordering};

/// Deepest nesting of YAML collections (block or flow, together) a workflow may have.
pub const MAX_DEPTH: usize = 64;

/// Default most node instances a workflow may expand to (`--max-instances`,
/// `TOMOFLOW_MAX_INSTANCES` change it).
pub const DEFAULT_MAX_INSTANCES: u64 = 100_000;

/// The limit set by `--max-instances` (0: not set).
static MAX_INSTANCES: AtomicU64 = AtomicU64::new(0);

/// Set the instance limit for this process (what `--max-instances` does).
pub fn set_max_instances(n: u64) {
    MAX_INSTANCES.store(n, Ordering::Relaxed);
}

/// The instance limit: `--max-instances`, else `TOMOFLOW_MAX_INSTANCES`, else
/// [`DEFAULT_MAX_INSTANCES`].
pub fn max_instances() -> u64 {
    match MAX_INSTANCES.load(Ordering::Relaxed) {
        0 => std::env::var("TOMOFLOW_MAX_INSTANCES")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .filter(|&n| n > 0)
            .unwrap_or(DEFAULT_MAX_INSTANCES),
        n => n,
    }
}

/// `s` with a NUL byte shown, for messages.
fn shown(s: &str) -> String {
    s.replace('\0', "\\0")
}

/// Errors for the NUL bytes in every string of the workflow that becomes a file path, a thread
/// name, an instance id or a label: the workflow's name, sweep axes and values, the sweep's
/// `name` template and export targets. (Operating systems refuse NUL in paths and names.)
pub fn nul_bytes(wf: &Workflow) -> Vec<UserError> {
    let spec = &wf.spec;
    let mut errors = Vec::new();
    let mut check = |path: &str, what: &str, s: &str| {
        if s.contains('\0') {
            errors.push(wf.error_at(
                path,
                format!(
                    "{what} `{}` contains a NUL byte (\\0), which no file name, thread name or \
                     label may hold; remove it",
                    shown(s)
                ),
            ));
        }
    };
    check("name", "the workflow name", &spec.name);
    if let Some(sweep) = &spec.sweep {
        if let Some(n) = &sweep.name {
            check("sweep.name", "the sweep name", n);
        }
        for (axis, values) in &sweep.matrix {
            let here = format!("sweep.matrix.{axis}");
            check(&here, "the sweep axis", axis);
            for v in values {
                walk_strings(v, &mut |s| check(&here, "the sweep value", s));
            }
        }
        for (i, inc) in sweep.include.iter().enumerate() {
            let here = format!("sweep.include.{i}");
            for v in inc.values() {
                walk_strings(v, &mut |s| check(&here, "the sweep value", s));
            }
        }
    }
    for (i, e) in spec.exports.iter().enumerate() {
        check(&format!("exports.{i}.to"), "the export path", &e.to);
    }
    errors
}

/// A NUL byte in an export path once its placeholders are filled (a `--set` value, a
/// `${params...}`): the message, or `None` when the path is clean.
pub fn nul_in_path(path: &str) -> Option<String> {
    path.contains('\0').then(|| {
        format!(
            "the export path `{}` contains a NUL byte (\\0), which no file name may hold",
            shown(path)
        )
    })
}

/// The most sweep combinations `sweep` can make (its matrix, plus what each `include` adds),
/// counted without making them; saturates instead of overflowing.
pub fn combination_bound(sweep: &super::spec::SweepSpec) -> u128 {
    let product = |skip: &dyn Fn(&str) -> bool| -> u128 {
        sweep
            .matrix
            .iter()
            .filter(|(a, _)| !skip(a))
            .fold(1u128, |n, (_, v)| n.saturating_mul(v.len() as u128))
    };
    let mut n = if sweep.matrix.is_empty() {
        1
    } else {
        product(&|_| false)
    };
    for inc in &sweep.include {
        n = n.saturating_add(product(&|a| inc.contains_key(a)));
    }
    n
}

/// An error when the sweep could make more combinations than [`max_instances`] allows, with
/// the count and the axes that make it. Checked before the combinations are made.
pub fn check_combinations(wf: &Workflow) -> Option<UserError> {
    let sweep = wf.spec.sweep.as_ref()?;
    let n = combination_bound(sweep);
    let limit = max_instances();
    if n <= limit as u128 {
        return None;
    }
    let axes: Vec<String> = sweep
        .matrix
        .iter()
        .map(|(a, v)| format!("{a}: {}", v.len()))
        .collect();
    let extra = if sweep.include.is_empty() {
        String::new()
    } else {
        format!(" plus {} include entries", sweep.include.len())
    };
    Some(wf.error_at(
        "sweep.matrix",
        format!(
            "the sweep makes up to {n} combinations ({}{extra}), more than the limit of {limit} \
             instances; sweep fewer values, or raise the limit with --max-instances N (or \
             TOMOFLOW_MAX_INSTANCES=N)",
            axes.join(" × ")
        ),
    ))
}

/// An error when the nodes would have more instances in all than [`max_instances`] allows.
/// `per_node` gives each node's count and what makes it (e.g. `bg: 3 × repeat: 1000`), largest
/// first in the message; `at` is the key to locate the error at (the largest node's).
pub fn check_instances(
    wf: &Workflow,
    mut per_node: Vec<(String, u128, String)>,
) -> Option<UserError> {
    let total = per_node
        .iter()
        .fold(0u128, |n, (_, c, _)| n.saturating_add(*c));
    let limit = max_instances();
    if total <= limit as u128 {
        return None;
    }
    per_node.sort_by_key(|n| std::cmp::Reverse(n.1));
    let (node, _, _) = &per_node[0];
    let at = if wf.spec.nodes.get(node).is_some_and(|n| n.repeat.is_some()) {
        format!("nodes.{node}.repeat")
    } else {
        format!("nodes.{node}")
    };
    let top: Vec<String> = per_node
        .iter()
        .take(5)
        .map(|(n, c, why)| format!("`{n}`: {c} ({why})"))
        .collect();
    Some(wf.error_at(
        &at,
        format!(
            "the workflow makes {total} node instances, more than the limit of {limit}: {}; \
             sweep or repeat less, or raise the limit with --max-instances N (or \
             TOMOFLOW_MAX_INSTANCES=N)",
            top.join(", ")
        ),
    ))
}

/// Each node's instance count (at most), with what makes it: its sweep axes (bounded by the
/// `combos` made) times its replicate axes. Counted before any instance is made.
pub fn instance_counts(
    spec: &super::spec::WorkflowSpec,
    node_axes: &std::collections::HashMap<&str, Vec<String>>,
    combos: usize,
) -> Vec<(String, u128, String)> {
    let sweep = spec.sweep.clone().unwrap_or_default();
    let mut out = Vec::new();
    for id in spec.nodes.keys() {
        let Some(axes) = node_axes.get(id.as_str()) else {
            continue;
        };
        let (mut sweep_n, mut reps, mut why) = (1u128, 1u128, Vec::new());
        for a in axes {
            if let Some(r) = a.strip_prefix("repeat.") {
                let k = spec.nodes.get(r).and_then(|n| n.repeat).unwrap_or(1);
                reps = reps.saturating_mul(k as u128);
                why.push(format!("repeat of {r}: {k}"));
            } else {
                let extra = sweep.include.iter().filter(|i| i.contains_key(a)).count();
                let k = sweep.matrix.get(a).map_or(0, |v| v.len()) + extra;
                sweep_n = sweep_n.saturating_mul(k as u128);
                why.push(format!("{a}: {k}"));
            }
        }
        let n = sweep_n.min(combos.max(1) as u128).saturating_mul(reps);
        let why = if why.is_empty() {
            "not swept".into()
        } else {
            why.join(" × ")
        };
        out.push((id.clone(), n, why));
    }
    out
}
