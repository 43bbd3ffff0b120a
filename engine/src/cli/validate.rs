//! `tomoflow validate`: check a workflow (syntax, node types, ports, parameters) without
//! running anything.

use super::load::Loaded;
use super::WorkflowArgs;
use std::collections::HashSet;

/// Report the loaded workflow as valid, with its size. (Loading did every check.)
pub(super) fn validate(wf: &WorkflowArgs, l: &Loaded) -> i32 {
    let exports = l.graph.nodes.iter().filter(|n| n.export.is_some()).count();
    println!(
        "{}: valid — {} node instances ({} exports), {} node types from {} plugins",
        wf.workflow.display(),
        l.graph.nodes.len(),
        exports,
        l.graph
            .nodes
            .iter()
            .map(|n| &n.ty.name)
            .collect::<HashSet<_>>()
            .len(),
        l.reg.libs.len()
    );
    0
}
