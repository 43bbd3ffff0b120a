//! Implementation of each subcommand.

use super::{Cli, Command, GraphFormat, WorkflowArgs};
use crate::error::UserErrors;
use crate::exec::{self, Outcome, RunOptions};
use crate::graph::{self, RunGraph};
use crate::plugin::Registry;
use crate::store::journal::{now, Journal, LastPlanned};
use crate::store::Store;
use crate::workflow::{self, Workflow};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

/// Exit code for invalid input.
const EXIT_INPUT: i32 = 2;
/// Exit code for a failed run.
const EXIT_FAILED: i32 = 1;

/// Set up `tracing` on stderr.
pub fn init_logging(verbose: u8, quiet: bool) {
    let default = match (quiet, verbose) {
        (true, _) => "warn",
        (false, 0) => "info",
        (false, 1) => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("TOMOFLOW_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| exec::LogWriter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .without_time()
        .try_init();
}

fn user_error(e: impl std::fmt::Display) -> i32 {
    eprintln!("error: {e}");
    EXIT_INPUT
}

/// Everything needed to act on a workflow.
struct Loaded {
    wf: Workflow,
    graph: RunGraph,
    sets: Vec<String>,
}

fn load(args: &WorkflowArgs, reg: &Registry) -> Result<Loaded, UserErrors> {
    let wf = Workflow::load(&args.workflow)?;
    let mut sets = Vec::new();
    for s in &args.sets {
        sets.push(workflow::parse_set(s).map_err(|e| UserErrors(vec![e]))?);
    }
    let ex = workflow::expand(&wf, &sets)?;
    let base = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let graph = graph::build(&wf, &ex, reg, &base)?;
    Ok(Loaded {
        wf,
        graph,
        sets: args.sets.clone(),
    })
}

fn registry(cli: &Cli) -> Registry {
    let reg = Registry::discover(&cli.plugin_path);
    for (p, why) in &reg.rejected {
        tracing::warn!("plugin {} refused: {why}", p.display());
    }
    reg
}

/// Run the chosen subcommand; returns the exit code.
pub fn dispatch(cli: Cli) -> i32 {
    match &cli.command {
        Command::Plugins { name, json } => plugins(&cli, name.as_deref(), *json),
        Command::Runs { limit } => runs(&cli, *limit),
        Command::Gc { dry_run } => gc(&cli, *dry_run),
        Command::Verify => verify(&cli),
        Command::Validate { wf } => {
            let reg = registry(&cli);
            match load(wf, &reg) {
                Ok(l) => {
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
                            .collect::<std::collections::HashSet<_>>()
                            .len(),
                        reg.libs.len()
                    );
                    0
                }
                Err(e) => user_error(e),
            }
        }
        Command::Plan { wf } => {
            let reg = registry(&cli);
            match load(wf, &reg) {
                Ok(l) => plan(&cli, &l),
                Err(e) => user_error(e),
            }
        }
        Command::Explain { wf, node } => {
            let reg = registry(&cli);
            match load(wf, &reg) {
                Ok(l) => explain(&cli, &l, node),
                Err(e) => user_error(e),
            }
        }
        Command::Graph { wf, format } => {
            let reg = registry(&cli);
            match load(wf, &reg) {
                Ok(l) => {
                    print!("{}", render_graph(&l.graph, *format));
                    0
                }
                Err(e) => user_error(e),
            }
        }
        Command::RunNode {
            wf,
            instances,
            instance,
            index,
            threads,
        } => {
            let reg = registry(&cli);
            let mut l = match load(wf, &reg) {
                Ok(l) => l,
                Err(e) => return user_error(e),
            };
            run_node(
                &cli,
                &mut l,
                instances.as_deref(),
                instance.as_deref(),
                *index,
                *threads,
            )
        }
        Command::Run {
            wf,
            jobs,
            threads,
            capacity,
            executor,
            partition,
            account,
            slurm_opts,
            poll,
        } => {
            let reg = registry(&cli);
            let mut l = match load(wf, &reg) {
                Ok(l) => l,
                Err(e) => return user_error(e),
            };
            if *executor == super::Executor::Slurm {
                let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("tomoflow"));
                let so = exec::slurm::SlurmOptions {
                    partition: partition.clone(),
                    account: account.clone(),
                    extra: slurm_opts.clone(),
                    poll: std::time::Duration::from_secs_f64(poll.max(0.1)),
                    exe,
                    workflow: std::fs::canonicalize(&wf.workflow).unwrap_or(wf.workflow.clone()),
                    sets: wf.sets.clone(),
                    plugin_paths: cli
                        .plugin_path
                        .iter()
                        .map(|p| std::fs::canonicalize(p).unwrap_or(p.clone()))
                        .collect(),
                    cpus: threads.unwrap_or(1).max(1) as u32,
                    run_id: 0,
                };
                return run_slurm(&cli, &mut l, so);
            }
            let n = std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1);
            let opts = RunOptions {
                jobs: jobs.unwrap_or(n).max(1),
                threads: threads.unwrap_or(n).max(1),
                capacity: (*capacity).max(1),
                progress: !cli.quiet && std::io::stderr().is_terminal(),
                base_dir: std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
                only: None,
            };
            run(&cli, &l, &opts)
        }
    }
}

/// On a cluster nothing streams between jobs: every instance keeps its outputs.
fn store_everything(g: &mut RunGraph) {
    for n in &mut g.nodes {
        n.cache = true;
    }
}

fn begin_run(store: &Store, l: &Loaded) -> Result<crate::store::journal::RunRecord, String> {
    let j = Journal::open(&journal_path(store))?;
    let last: Vec<(String, LastPlanned)> = l
        .graph
        .nodes
        .iter()
        .map(|n| {
            (
                n.id.clone(),
                LastPlanned {
                    key: n.key.clone(),
                    components: n.components.clone(),
                },
            )
        })
        .collect();
    j.set_last(&l.graph.workflow, &last)?;
    j.begin(&l.graph.workflow, &l.wf.path.to_string_lossy(), &l.sets)
}

fn run_slurm(cli: &Cli, l: &mut Loaded, mut so: exec::slurm::SlurmOptions) -> i32 {
    store_everything(&mut l.graph);
    let mut store = match open_store(cli) {
        Ok(s) => s,
        Err(e) => return user_error(e),
    };
    if let Err(e) = store.lock() {
        return user_error(e);
    }
    let mut record = match begin_run(&store, l) {
        Ok(r) => r,
        Err(e) => return user_error(e),
    };
    so.run_id = record.id;
    let mut stdout = std::io::stdout();
    let report = exec::slurm::execute(&l.graph, &store, &so, &mut stdout);
    write_report(l, &report, record.id);
    finish_run(&journal_path(&store), &mut record, &report)
}

fn run_node(
    cli: &Cli,
    l: &mut Loaded,
    instances: Option<&Path>,
    instance: Option<&str>,
    index: Option<usize>,
    threads: Option<usize>,
) -> i32 {
    store_everything(&mut l.graph);
    let id = match (instance, instances) {
        (Some(id), _) => id.to_string(),
        (None, Some(file)) => {
            let text = match std::fs::read_to_string(file) {
                Ok(t) => t,
                Err(e) => return user_error(format!("cannot read {}: {e}", file.display())),
            };
            let k = index
                .or_else(|| {
                    std::env::var("SLURM_ARRAY_TASK_ID")
                        .ok()
                        .and_then(|v| v.parse().ok())
                })
                .unwrap_or(0);
            match text.lines().nth(k) {
                Some(line) => line.trim().to_string(),
                None => return user_error(format!("{} has no line {k}", file.display())),
            }
        }
        (None, None) => return user_error("run-node needs --instance ID or --instances FILE"),
    };
    let Some(i) = l.graph.nodes.iter().position(|n| n.id == id) else {
        return user_error(format!("no instance `{id}` in {}", l.wf.path.display()));
    };
    let store = match open_store(cli) {
        Ok(s) => s,
        Err(e) => return user_error(e),
    };
    let n = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let threads = threads
        .or_else(|| {
            std::env::var("SLURM_CPUS_PER_TASK")
                .ok()
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(n)
        .max(1);
    let opts = RunOptions {
        jobs: 1,
        threads,
        capacity: 4,
        progress: false,
        base_dir: std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
        only: Some(vec![i]),
    };
    let report = exec::execute(&l.graph, &store, &opts);
    let r = &report.nodes[i];
    match &report.first_error {
        None => {
            println!("{}: {} in {:.2} s", r.id, r.outcome.word(), r.wall_s);
            0
        }
        Some((id, msg)) => {
            eprintln!("error: node {id} failed: {msg}");
            EXIT_FAILED
        }
    }
}

/// Print the table, record the end of the run, and choose the exit code.
fn finish_run(
    jpath: &Path,
    record: &mut crate::store::journal::RunRecord,
    report: &exec::RunReport,
) -> i32 {
    print_table(report);
    record.ended = Some(now());
    record.ran = report
        .nodes
        .iter()
        .filter(|n| n.outcome == Outcome::Ran)
        .count();
    record.cached = report
        .nodes
        .iter()
        .filter(|n| n.outcome == Outcome::Cached)
        .count();
    record.failed = report
        .nodes
        .iter()
        .filter(|n| matches!(n.outcome, Outcome::Failed(_)))
        .count();
    record.status = if report.ok() {
        "ok".into()
    } else {
        "failed".into()
    };
    record.error = report
        .first_error
        .as_ref()
        .map(|(id, m)| format!("{id}: {m}"));
    if let Err(e) = Journal::open(jpath).and_then(|j| j.end(record)) {
        tracing::warn!("{e}");
    }
    match &report.first_error {
        None => {
            println!(
                "run {} ok: {} ran, {} cached, {:.2} s",
                record.id, record.ran, record.cached, report.wall_s
            );
            0
        }
        Some((id, msg)) => {
            eprintln!("error: node {id} failed: {msg}");
            eprintln!("Completed nodes are kept in the store; fix the cause and run the same command again to resume.");
            EXIT_FAILED
        }
    }
}

fn open_store(cli: &Cli) -> Result<Store, String> {
    Store::open(&cli.store)
        .map_err(|e| format!("cannot open the store {}: {e}", cli.store.display()))
}

fn journal_path(store: &Store) -> PathBuf {
    store.root.join("journal.redb")
}

fn run(cli: &Cli, l: &Loaded, opts: &RunOptions) -> i32 {
    let mut store = match open_store(cli) {
        Ok(s) => s,
        Err(e) => return user_error(e),
    };
    if let Err(e) = store.lock() {
        return user_error(e);
    }
    let mut record = match begin_run(&store, l) {
        Ok(r) => r,
        Err(e) => return user_error(e),
    };
    let report = exec::execute(&l.graph, &store, opts);
    write_report(l, &report, record.id);
    finish_run(&journal_path(&store), &mut record, &report)
}

/// `report.md` / `report.html` next to the exports (a failure to write it is only a warning).
fn write_report(l: &Loaded, report: &exec::RunReport, run_id: u64) {
    match crate::report::write(&l.graph, report, Some(run_id)) {
        Ok(Some(p)) => eprintln!("report: {}", p.display()),
        Ok(None) => {}
        Err(e) => tracing::warn!("cannot write the run report: {e}"),
    }
}

fn human_bytes(b: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < units.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

fn print_table(r: &exec::RunReport) {
    let w = r
        .nodes
        .iter()
        .map(|n| n.id.chars().count())
        .max()
        .unwrap_or(4)
        .clamp(4, 48);
    let tw = r
        .nodes
        .iter()
        .map(|n| n.node_type.len())
        .max()
        .unwrap_or(4)
        .clamp(4, 24);
    println!(
        "{:<w$}  {:<tw$}  {:<9}  {:>9}  {:>10}",
        "node", "type", "status", "wall", "out"
    );
    let interesting: Vec<&exec::NodeReport> = r
        .nodes
        .iter()
        .filter(|n| n.outcome != Outcome::Cached)
        .collect();
    let show: Vec<&exec::NodeReport> = if r.nodes.len() <= 40 {
        r.nodes.iter().collect()
    } else {
        interesting.iter().take(40).copied().collect()
    };
    for n in &show {
        let id: String = if n.id.chars().count() > w {
            format!("…{}", &n.id[n.id.len() - (w - 1)..])
        } else {
            n.id.clone()
        };
        println!(
            "{:<w$}  {:<tw$}  {:<9}  {:>8.2}s  {:>10}",
            id,
            n.node_type,
            n.outcome.word(),
            n.wall_s,
            human_bytes(n.bytes_out)
        );
    }
    if show.len() < r.nodes.len() {
        println!(
            "… {} more rows not shown (cached or beyond the first 40)",
            r.nodes.len() - show.len()
        );
    }
}

fn plan(cli: &Cli, l: &Loaded) -> i32 {
    let store = match open_store(cli) {
        Ok(s) => s,
        Err(e) => return user_error(e),
    };
    let journal = Journal::open(&journal_path(&store)).ok();
    let complete: Vec<bool> = l
        .graph
        .nodes
        .iter()
        .map(|n| store.is_complete(&n.key).is_some())
        .collect();
    let run = exec::to_run(&l.graph, &complete);
    let w = l
        .graph
        .nodes
        .iter()
        .map(|n| n.id.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let mut n_run = 0;
    for (i, n) in l.graph.nodes.iter().enumerate() {
        let (status, why) = if complete[i] {
            (
                "cached",
                format!("complete in the store ({})", &n.key[..12]),
            )
        } else if !run[i] {
            (
                "skip",
                "cache: false and nothing downstream needs it".to_string(),
            )
        } else {
            n_run += 1;
            let last = journal
                .as_ref()
                .and_then(|j| j.last(&l.graph.workflow, &n.id).ok().flatten());
            let why = match last {
                None => "never ran".to_string(),
                Some(lp) if lp.key == n.key => {
                    if store.entry_dir(&n.key).exists() {
                        "interrupted: a previous run stopped before this node completed".into()
                    } else if n.export.is_some() {
                        "export target missing or changed".into()
                    } else {
                        "output not in the store (removed by gc, or never completed)".into()
                    }
                }
                Some(lp) => n.components.diff(&lp.components).join("; "),
            };
            ("run", why)
        };
        println!("{:<w$}  {:<6}  {}", n.id, status, why);
    }
    println!(
        "{} of {} node instances will run",
        n_run,
        l.graph.nodes.len()
    );
    0
}

fn explain(cli: &Cli, l: &Loaded, node: &str) -> i32 {
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

fn plugins(cli: &Cli, name: Option<&str>, json: bool) -> i32 {
    let reg = registry(cli);
    if let Some(name) = name {
        let t = match reg.get(name) {
            Ok(t) => t,
            Err(e) => return user_error(e),
        };
        if json {
            println!(
                "{}",
                serde_json::to_string_pretty(&type_json(t)).unwrap_or_default()
            );
            return 0;
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
        let ports = |title: &str, ps: &[crate::plugin::PortInfo]| {
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
        return 0;
    }
    if json {
        let v: Vec<serde_json::Value> = reg
            .libs
            .iter()
            .map(|lib| {
                serde_json::json!({
                    "name": lib.name, "version": lib.version, "build_id": lib.build_id,
                    "path": lib.path, "abi": format!("{}.{}", lib.abi.0, lib.abi.1),
                    "node_types": reg.types.values().filter(|t| std::sync::Arc::ptr_eq(&t.plugin, lib)).map(|t| type_json(t)).collect::<Vec<_>>(),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return 0;
    }
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
        for t in reg
            .types
            .values()
            .filter(|t| std::sync::Arc::ptr_eq(&t.plugin, lib))
        {
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
    0
}

fn type_json(t: &crate::plugin::NodeType) -> serde_json::Value {
    let ports = |ps: &[crate::plugin::PortInfo]| -> Vec<serde_json::Value> {
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

fn runs(cli: &Cli, limit: usize) -> i32 {
    let store = match open_store(cli) {
        Ok(s) => s,
        Err(e) => return user_error(e),
    };
    let j = match Journal::open(&journal_path(&store)) {
        Ok(j) => j,
        Err(e) => return user_error(e),
    };
    let runs = match j.runs(limit) {
        Ok(r) => r,
        Err(e) => return user_error(e),
    };
    if runs.is_empty() {
        println!("no runs recorded in {}", store.root.display());
        return 0;
    }
    let idle = store.is_idle();
    println!(
        "{:>4}  {:<24}  {:<11}  {:>8}  {:>5}  {:>6}  {:>6}  error",
        "id", "workflow", "status", "wall", "ran", "cached", "failed"
    );
    for r in runs {
        let status = if r.status == "running" && idle {
            "interrupted".to_string()
        } else {
            r.status.clone()
        };
        let wall = r
            .ended
            .map(|e| format!("{:.1}s", e - r.started))
            .unwrap_or_else(|| "-".into());
        println!(
            "{:>4}  {:<24}  {:<11}  {:>8}  {:>5}  {:>6}  {:>6}  {}",
            r.id,
            r.workflow,
            status,
            wall,
            r.ran,
            r.cached,
            r.failed,
            r.error.unwrap_or_default().lines().next().unwrap_or("")
        );
    }
    0
}

fn gc(cli: &Cli, dry_run: bool) -> i32 {
    let mut store = match open_store(cli) {
        Ok(s) => s,
        Err(e) => return user_error(e),
    };
    if let Err(e) = store.lock() {
        return user_error(e);
    }
    let keep = match Journal::open(&journal_path(&store)).and_then(|j| j.referenced_keys()) {
        Ok(k) => k,
        Err(e) => return user_error(e),
    };
    let mut removed = 0usize;
    let mut bytes = 0u64;
    for dir in ["store", "scratch"] {
        let Ok(rd) = std::fs::read_dir(store.root.join(dir)) else {
            continue;
        };
        for e in rd.filter_map(|e| e.ok()) {
            let name = e.file_name().to_string_lossy().into_owned();
            let complete = dir == "scratch" || store.manifest(&name).is_some();
            if keep.contains(&name) && complete {
                continue;
            }
            let size = crate::store::disk_usage(&e.path());
            println!(
                "{} {}/{name} ({})",
                if dry_run { "would remove" } else { "removing" },
                dir,
                human_bytes(size)
            );
            if !dry_run {
                if let Err(err) = std::fs::remove_dir_all(e.path()) {
                    eprintln!("warning: {}: {err}", e.path().display());
                    continue;
                }
            }
            removed += 1;
            bytes += size;
        }
    }
    println!(
        "{} {removed} entries, {}",
        if dry_run { "would free" } else { "freed" },
        human_bytes(bytes)
    );
    0
}

fn verify(cli: &Cli) -> i32 {
    let store = match open_store(cli) {
        Ok(s) => s,
        Err(e) => return user_error(e),
    };
    let problems = store.verify();
    let n = store.keys().len();
    if problems.is_empty() {
        println!("{n} store entries checked: all manifests match their data");
        0
    } else {
        for p in &problems {
            println!("corrupt: {p}");
        }
        println!("{} problems in {n} entries; remove the affected entries (or run `tomoflow gc`) and rerun", problems.len());
        EXIT_FAILED
    }
}
