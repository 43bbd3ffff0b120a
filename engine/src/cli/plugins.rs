//! `tomoflow plugins`: the plugin libraries and their node types, or one node type in full.

use super::load::registry;
use super::{user_error, Cli};
use crate::plugin::{NodeType, PluginLib, PortInfo, Registry};
use std::sync::Arc;

/// List the libraries and node types, or describe node type `name`; `json` for machines.
pub(super) fn plugins(cli: &Cli, name: Option<&str>, json: bool) -> i32 {
    let reg = registry(cli);
    if let Some(name) = name {
        return match reg.get(name) {
            Ok(t) => {
                describe(t, json);
                0
            }
            Err(e) => user_error(e),
        };
    }
    if json {
        list_json(&reg);
    } else {
        list(cli, &reg);
    }
    0
}

/// The node types of library `lib`.
fn types_of<'a>(
    reg: &'a Registry,
    lib: &'a Arc<PluginLib>,
) -> impl Iterator<Item = &'a Arc<NodeType>> {
    reg.types.values().filter(|t| Arc::ptr_eq(&t.plugin, lib))
}

/// One node type in full: ports, exported formats, parameters and their JSON Schema.
fn describe(t: &NodeType, json: bool) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&type_json(t)).unwrap_or_default()
        );
        return;
    }
    println!(
        "{}  (plugin {} {}, build {}, {})",
        t.name,
        t.plugin.name,
        t.plugin.version,
        t.plugin.build_id,
        t.plugin.path.display()
    );
    println!();
    println!("{}", t.doc.trim());
    println!();
    let ports = |title: &str, ps: &[PortInfo]| {
        println!("{title}:");
        if ps.is_empty() {
            println!("  (none)");
        }
        for p in ps {
            println!("  {:<14} {:<12} {}", p.name, p.kind, p.doc);
        }
    };
    ports("inputs", &t.inputs);
    ports("outputs", &t.outputs);
    if !t.export_extensions.is_empty() {
        println!(
            "exporter for: {}",
            t.export_extensions
                .iter()
                .map(|e| format!(".{e}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    println!("parameters:");
    print_params(&t.schema);
    println!();
    println!("parameter schema (JSON Schema):");
    println!(
        "{}",
        serde_json::to_string_pretty(&t.schema).unwrap_or_default()
    );
}

/// Every library with its node types, as JSON.
fn list_json(reg: &Registry) {
    let v: Vec<serde_json::Value> = reg
        .libs
        .iter()
        .map(|lib| {
            serde_json::json!({
                "name": lib.name, "version": lib.version, "build_id": lib.build_id,
                "path": lib.path, "abi": format!("{}.{}", lib.abi.0, lib.abi.1),
                "node_types": types_of(reg, lib).map(|t| type_json(t)).collect::<Vec<_>>(),
            })
        })
        .collect();
    println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
}

/// Every library with one line per node type, then shadowed and refused libraries.
fn list(cli: &Cli, reg: &Registry) {
    if reg.libs.is_empty() {
        println!(
            "no plugin library found. Searched: {}",
            Registry::search_path(&cli.plugin_path)
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    for lib in &reg.libs {
        println!(
            "{} {}  (build {}, ABI {}.{})  {}",
            lib.name,
            lib.version,
            lib.build_id,
            lib.abi.0,
            lib.abi.1,
            lib.path.display()
        );
        if !lib.description.is_empty() {
            println!("  {}", lib.description);
        }
        for t in types_of(reg, lib) {
            let ins: Vec<String> = t
                .inputs
                .iter()
                .map(|p| format!("{}:{}", p.name, p.kind))
                .collect();
            let outs: Vec<String> = t
                .outputs
                .iter()
                .map(|p| format!("{}:{}", p.name, p.kind))
                .collect();
            println!(
                "  {:<20} ({}) -> ({})  {}",
                t.name,
                ins.join(", "),
                outs.join(", "),
                t.summary()
            );
        }
        println!();
    }
    for (n, p) in &reg.shadowed {
        println!(
            "note: node type `{n}` in {} is shadowed by an earlier library",
            p.display()
        );
    }
    for (p, why) in &reg.rejected {
        println!("refused: {}: {why}", p.display());
    }
    println!("`tomoflow plugins NAME` describes one node type with its parameters.");
}

/// A node type as JSON (`plugins --json`).
fn type_json(t: &NodeType) -> serde_json::Value {
    let ports = |ps: &[PortInfo]| -> Vec<serde_json::Value> {
        ps.iter()
            .map(|p| serde_json::json!({"name": p.name, "kind": p.kind, "doc": p.doc}))
            .collect()
    };
    serde_json::json!({
        "name": t.name, "doc": t.doc, "plugin": t.plugin.name, "version": t.plugin.version,
        "build_id": t.plugin.build_id, "inputs": ports(&t.inputs), "outputs": ports(&t.outputs),
        "export_extensions": t.export_extensions, "params_schema": t.schema,
    })
}

/// The parameters of a schema: name, type, default, whether required, description.
fn print_params(schema: &serde_json::Value) {
    let required: Vec<&str> = schema
        .get("required")
        .and_then(|r| r.as_array())
        .map(|a| a.iter().filter_map(|x| x.as_str()).collect())
        .unwrap_or_default();
    let Some(props) = schema.get("properties").and_then(|p| p.as_object()) else {
        println!("  (none)");
        return;
    };
    for (k, s) in props {
        let ty = s
            .get("type")
            .map(|t| t.to_string().replace('"', ""))
            .or_else(|| s.get("enum").map(|e| format!("one of {e}")))
            .unwrap_or_else(|| "any".into());
        let def = s
            .get("default")
            .map(|d| format!(" = {d}"))
            .unwrap_or_default();
        let req = if required.contains(&k.as_str()) {
            " (required)"
        } else {
            ""
        };
        let desc = s
            .get("description")
            .and_then(|d| d.as_str())
            .unwrap_or("")
            .replace('\n', " ");
        println!("  {k:<16} {ty}{def}{req}\n  {:<16} {desc}", "");
    }
}
