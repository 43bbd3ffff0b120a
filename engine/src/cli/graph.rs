//! `tomoflow graph`: the instance graph as Graphviz dot or a Mermaid flowchart.

use super::load::Loaded;
use super::GraphFormat;
use crate::graph::RunGraph;

/// Print the instance graph of the loaded workflow.
pub(super) fn graph(l: &Loaded, format: GraphFormat) -> i32 {
    print!("{}", render_graph(&l.graph, format));
    0
}

/// The graph in `format`: one box per instance (exports as notes), one arrow per input.
fn render_graph(g: &RunGraph, format: GraphFormat) -> String {
    let mut out = String::new();
    match format {
        GraphFormat::Dot => {
            out.push_str(&format!(
                "digraph \"{}\" {{\n  rankdir=LR;\n  node [shape=box, fontname=\"Helvetica\"];\n",
                g.workflow
            ));
            for (i, n) in g.nodes.iter().enumerate() {
                let shape = if n.export.is_some() {
                    ", shape=note"
                } else {
                    ""
                };
                out.push_str(&format!(
                    "  n{i} [label=\"{}\\n{}\"{shape}];\n",
                    n.id.replace('"', "'"),
                    n.ty.name
                ));
            }
            for (i, n) in g.nodes.iter().enumerate() {
                for inp in &n.inputs {
                    let up = &g.nodes[inp.from];
                    out.push_str(&format!(
                        "  n{} -> n{i} [label=\"{}→{} ({})\"];\n",
                        inp.from,
                        up.ty.outputs[inp.from_port].name,
                        n.ty.inputs[inp.port].name,
                        n.ty.inputs[inp.port].kind
                    ));
                }
            }
            out.push_str("}\n");
        }
        GraphFormat::Mermaid => {
            out.push_str("flowchart LR\n");
            for (i, n) in g.nodes.iter().enumerate() {
                let label = format!("{}<br/><i>{}</i>", n.id.replace('"', "'"), n.ty.name);
                if n.export.is_some() {
                    out.push_str(&format!("  n{i}[/\"{label}\"/]\n"));
                } else {
                    out.push_str(&format!("  n{i}[\"{label}\"]\n"));
                }
            }
            for (i, n) in g.nodes.iter().enumerate() {
                for inp in &n.inputs {
                    out.push_str(&format!(
                        "  n{} -- {} --> n{i}\n",
                        inp.from, n.ty.inputs[inp.port].kind
                    ));
                }
            }
        }
    }
    out
}
