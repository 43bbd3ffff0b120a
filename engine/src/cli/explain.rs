//! `tomoflow explain`: one workflow node's instances with their cache keys part by part,
//! parameters, inputs, input files, export target and store status.

use super::load::Loaded;
use super::{human_bytes, open_store, user_error, Cli};
use crate::graph;

/// Print every instance of workflow node `node`.
pub(super) fn explain(cli: &Cli, l: &Loaded, node: &str) -> i32 {
    let insts: Vec<&graph::RunNode> = l.graph.nodes.iter().filter(|n| n.node == node).collect();
    if insts.is_empty() {
        let ids: Vec<&str> = l.wf.spec.nodes.keys().map(|s| s.as_str()).collect();
        return user_error(format!(
            "no node `{node}` in {}{}; nodes: {}",
            l.wf.path.display(),
            crate::error::did_you_mean(node, ids.iter().copied()),
            ids.join(", ")
        ));
    }
    let store = open_store(cli).ok();
    for n in insts {
        println!(
            "{}  ({} from plugin {} at {})",
            n.id,
            n.ty.name,
            n.components.plugin,
            n.ty.plugin.path.display()
        );
        println!("  key:      {}", n.key);
        println!("  build:    {}", n.components.build);
        println!("  seed:     {}", n.seed);
        println!(
            "  params:   {}",
            serde_json::to_string(&n.components.params).unwrap_or_default()
        );
        for (port, up) in &n.components.inputs {
            let from = n
                .inputs
                .iter()
                .find(|i| n.ty.inputs[i.port].name == *port)
                .map(|i| l.graph.nodes[i.from].id.as_str())
                .unwrap_or("?");
            println!("  input:    {port} <- {from} ({up})");
        }
        for (p, h) in &n.components.files {
            println!(
                "  file:     {p} = {}  (content hash {h})",
                n.params.get(p).and_then(|v| v.as_str()).unwrap_or("?")
            );
        }
        if let Some(e) = &n.export {
            println!("  export:   {}", e.display());
        }
        let status = match store.as_ref().and_then(|s| s.is_complete(&n.key)) {
            Some(m) => format!(
                "cached ({} in {} files, ran {:.2} s)",
                human_bytes(m.bytes()),
                m.outputs.values().map(|v| v.len()).sum::<usize>(),
                m.wall_s
            ),
            None => "will run".into(),
        };
        println!("  status:   {status}");
        if let Some(s) = &store {
            println!("  store:    {}", s.entry_dir(&n.key).display());
        }
    }
    0
}
