//! `tomoflow run-node` (hidden): run one node instance whose inputs are in the store; what a
//! Slurm job of `run --executor slurm` executes.

use super::load::Loaded;
use super::run::store_everything;
use super::{open_store, user_error, Cli, EXIT_FAILED};
use crate::exec::{self, RunOptions};
use std::path::{Path, PathBuf};

/// Run the instance given by `--instance`, or by line `--index` (else `SLURM_ARRAY_TASK_ID`)
/// of the `--instances` file.
pub(super) fn run_node(
    cli: &Cli,
    l: &mut Loaded,
    instances: Option<&Path>,
    instance: Option<&str>,
    index: Option<usize>,
    threads: Option<usize>,
) -> i32 {
    store_everything(&mut l.graph);
    let id = match instance_id(instances, instance, index) {
        Ok(id) => id,
        Err(e) => return user_error(e),
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

/// The id of the instance to run, from `--instance` or from the `--instances` file.
fn instance_id(
    instances: Option<&Path>,
    instance: Option<&str>,
    index: Option<usize>,
) -> Result<String, String> {
    match (instance, instances) {
        (Some(id), _) => Ok(id.to_string()),
        (None, Some(file)) => {
            let text = std::fs::read_to_string(file)
                .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
            let k = index
                .or_else(|| {
                    std::env::var("SLURM_ARRAY_TASK_ID")
                        .ok()
                        .and_then(|v| v.parse().ok())
                })
                .unwrap_or(0);
            match text.lines().nth(k) {
                Some(line) => Ok(line.trim().to_string()),
                None => Err(format!("{} has no line {k}", file.display())),
            }
        }
        (None, None) => Err("run-node needs --instance ID or --instances FILE".into()),
    }
}
