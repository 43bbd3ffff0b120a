//! `tomoflow run`: run (or resume) a workflow with threads on this machine or as Slurm jobs,
//! record the run in the journal, write the report and print a table of the node instances.

use super::load::Loaded;
use super::{human_bytes, journal_path, open_store, user_error, Cli, WorkflowArgs, EXIT_FAILED};
use crate::exec::{self, Outcome, RunOptions};
use crate::graph::RunGraph;
use crate::store::journal::{now, Journal, LastPlanned, RunRecord};
use crate::store::Store;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

/// Options of a local run from the `run` flags (defaults: every core).
pub(super) fn local_options(
    cli: &Cli,
    jobs: Option<usize>,
    threads: Option<usize>,
    capacity: usize,
) -> RunOptions {
    let n = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    RunOptions {
        jobs: jobs.unwrap_or(n).max(1),
        threads: threads.unwrap_or(n).max(1),
        capacity: capacity.max(1),
        progress: !cli.quiet && std::io::stderr().is_terminal(),
        base_dir: std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
        only: None,
    }
}

/// Options of a Slurm run from the `run` flags; paths are made absolute for the jobs.
pub(super) fn slurm_options(
    cli: &Cli,
    wf: &WorkflowArgs,
    partition: Option<&str>,
    account: Option<&str>,
    slurm_opts: &[String],
    poll: f64,
    threads: Option<usize>,
) -> exec::slurm::SlurmOptions {
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("tomoflow"));
    exec::slurm::SlurmOptions {
        partition: partition.map(str::to_string),
        account: account.map(str::to_string),
        extra: slurm_opts.to_vec(),
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
    }
}

/// On a cluster nothing streams between jobs: every instance keeps its outputs.
pub(super) fn store_everything(g: &mut RunGraph) {
    for n in &mut g.nodes {
        n.cache = true;
    }
}

/// Run on this machine.
pub(super) fn run(cli: &Cli, l: &Loaded, opts: &RunOptions) -> i32 {
    let (store, mut record) = match start(cli, l) {
        Ok(s) => s,
        Err(code) => return code,
    };
    super::interrupt::exit_with_resume_hint(&cli.store);
    clean_leftovers(l);
    let report = exec::execute(&l.graph, &store, opts);
    write_report(l, &report, &record);
    finish_run(&journal_path(&store), &mut record, &report)
}

/// Run as Slurm jobs (every instance stores its outputs).
pub(super) fn run_slurm(cli: &Cli, l: &mut Loaded, mut so: exec::slurm::SlurmOptions) -> i32 {
    store_everything(&mut l.graph);
    let (store, mut record) = match start(cli, l) {
        Ok(s) => s,
        Err(code) => return code,
    };
    so.run_id = record.id;
    clean_leftovers(l);
    let mut stdout = std::io::stdout();
    let report = exec::slurm::execute(&l.graph, &store, &so, &mut stdout);
    write_report(l, &report, &record);
    finish_run(&journal_path(&store), &mut record, &report)
}

/// Open and lock the store and record the run's start; the exit code of a user error if that
/// fails.
fn start(cli: &Cli, l: &Loaded) -> Result<(Store, RunRecord), i32> {
    let mut store = open_store(cli).map_err(user_error)?;
    store.lock().map_err(user_error)?;
    let record = begin_run(&store, l).map_err(user_error)?;
    Ok((store, record))
}

/// Record the plan (what `plan` and `gc` look at) and the start of the run in the journal.
fn begin_run(store: &Store, l: &Loaded) -> Result<RunRecord, String> {
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

/// Print the table, record the end of the run, and choose the exit code.
fn finish_run(jpath: &Path, record: &mut RunRecord, report: &exec::RunReport) -> i32 {
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

/// Remove what killed runs left beside the export targets, saying so.
fn clean_leftovers(l: &Loaded) {
    for p in exec::leftovers::remove_stale_temporaries(&l.graph) {
        tracing::info!("removed {}, left by an interrupted run", p.display());
    }
}

/// `report.md` / `report.html` next to the exports (a failure to write it is only a warning).
fn write_report(l: &Loaded, report: &exec::RunReport, record: &RunRecord) {
    let prov = crate::report::Provenance {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        started: super::runs::utc(record.started),
        host: crate::report::Provenance::host_name(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        commit: crate::report::Provenance::git_commit(&l.wf.path),
        workflow_path: l.wf.path.clone(),
        workflow_text: std::fs::read_to_string(&l.wf.path).unwrap_or_default(),
        description: l.wf.spec.description.clone(),
        sets: l.sets.clone(),
        plugins: l
            .reg
            .libs
            .iter()
            .map(|p| {
                [
                    p.name.clone(),
                    p.version.clone(),
                    p.build_id.clone(),
                    p.path.display().to_string(),
                ]
            })
            .collect(),
        docs: l
            .wf
            .spec
            .nodes
            .iter()
            .filter_map(|(name, n)| n.doc.clone().map(|d| (name.clone(), d)))
            .collect(),
    };
    match crate::report::write(&l.graph, report, Some(record.id), &prov) {
        Ok(Some((p, false))) => eprintln!("report: {}", p.display()),
        Ok(Some((p, true))) => eprintln!(
            "report: {} (kept: nothing ran, every result came from the cache)",
            p.display()
        ),
        Ok(None) => {}
        Err(e) => tracing::warn!("cannot write the run report: {e}"),
    }
}

/// One row per node instance; past 40 instances, only the first 40 not taken from the cache.
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
