//! The Slurm executor: every node instance that must run becomes a Slurm job running
//! `tomoflow run-node` on the same binary against the same (shared) store.
//!
//! - The instances of one workflow node that must run form one **job array** (one task each).
//! - A job depends on the jobs of its inputs' producers with `afterok`, submitted with
//!   `--kill-on-invalid-dep=yes` so that the dependents of a failed job are cancelled rather than
//!   pending forever.
//! - Streaming edges cannot cross jobs: on a cluster every instance stores its outputs, and its
//!   consumers read them back (the store is on a shared filesystem).
//! - Progress is followed through the store's manifests (a task is done when its manifest is);
//!   `squeue` is only a liveness check (no accounting database is needed). A task that left the
//!   queue without a manifest failed; its log is under `<store>/slurm/run-<id>/`.
//! - Ctrl-C (SIGINT) or SIGTERM cancels every submitted job with `scancel`.
//! - A rerun submits only what is not complete.

use super::{NodeReport, Outcome, RunReport};
use crate::graph::RunGraph;
use crate::store::Store;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How to submit.
#[derive(Debug, Clone)]
pub struct SlurmOptions {
    /// Default partition (`--partition`).
    pub partition: Option<String>,
    /// Account (`--account`).
    pub account: Option<String>,
    /// Extra `sbatch` options as `key=value` (become `--key=value`).
    pub extra: Vec<String>,
    /// How often to look at the store and the queue.
    pub poll: Duration,
    /// The `tomoflow` executable the jobs run (absolute).
    pub exe: PathBuf,
    /// The workflow file (absolute).
    pub workflow: PathBuf,
    /// `--set` overrides, passed on unchanged.
    pub sets: Vec<String>,
    /// `--plugin-path` entries (absolute).
    pub plugin_paths: Vec<PathBuf>,
    /// Default CPUs per task when the node gives none.
    pub cpus: u32,
    /// Run id (names the log directory).
    pub run_id: u64,
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_sig: i32) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

fn install_signal_handlers() {
    #[cfg(unix)]
    {
        extern "C" {
            fn signal(signum: i32, handler: extern "C" fn(i32)) -> usize;
        }
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            signal(2, on_signal); // SIGINT
            signal(15, on_signal); // SIGTERM
        }
    }
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Where a task of an instance runs.
#[derive(Debug, Clone)]
struct Task {
    job: String,
    index: Option<usize>,
    log: PathBuf,
}

/// Submit every instance that must run and follow them to the end.
pub fn execute(
    g: &RunGraph,
    store: &Store,
    so: &SlurmOptions,
    out: &mut dyn std::io::Write,
) -> RunReport {
    let t0 = Instant::now();
    install_signal_handlers();
    let manifests: Vec<_> = g.nodes.iter().map(|n| store.is_complete(&n.key)).collect();
    let complete: Vec<bool> = manifests.iter().map(Option::is_some).collect();
    let run: Vec<bool> = complete.iter().map(|c| !c).collect();
    let mut reports = super::initial_reports(g, &manifests, &run);
    let (order, groups) = group_by_node(g, &complete);
    let store_abs = std::fs::canonicalize(&store.root).unwrap_or(store.root.clone());
    let logdir = store_abs.join("slurm").join(format!("run-{}", so.run_id));
    if let Err(e) = std::fs::create_dir_all(&logdir) {
        return fail_all(
            reports,
            format!("cannot create {}: {e}", logdir.display()),
            t0,
        );
    }
    let mut sub = Submission {
        g,
        so,
        cwd: std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
        store_abs,
        logdir,
        tasks: HashMap::new(),
        jobs: Vec::new(),
    };
    for node in &order {
        if let Err(msg) = sub.submit(node, &groups[node], out) {
            return fail_all(reports, msg, t0);
        }
    }
    let first_error = sub.follow(store, &mut reports);
    RunReport {
        nodes: reports,
        first_error,
        wall_s: t0.elapsed().as_secs_f64(),
    }
}

/// The instances that are not complete, grouped by workflow node, in graph order.
fn group_by_node(g: &RunGraph, complete: &[bool]) -> (Vec<String>, HashMap<String, Vec<usize>>) {
    let mut order: Vec<String> = Vec::new();
    let mut groups: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, n) in g.nodes.iter().enumerate() {
        if complete[i] {
            continue;
        }
        if !groups.contains_key(&n.node) {
            order.push(n.node.clone());
        }
        groups.entry(n.node.clone()).or_default().push(i);
    }
    (order, groups)
}

/// The jobs of one run: submitted one workflow node at a time, then followed to the end.
struct Submission<'a> {
    g: &'a RunGraph,
    so: &'a SlurmOptions,
    /// The jobs' working directory.
    cwd: PathBuf,
    /// The store, as an absolute path.
    store_abs: PathBuf,
    /// Where the instance lists and job logs go.
    logdir: PathBuf,
    /// The task of each submitted instance.
    tasks: HashMap<usize, Task>,
    /// Submitted job ids.
    jobs: Vec<String>,
}

impl Submission<'_> {
    /// Submit the instances `members` of workflow node `node` as one job (an array when
    /// there are several). On failure, every job submitted so far is cancelled.
    fn submit(
        &mut self,
        node: &str,
        members: &[usize],
        out: &mut dyn std::io::Write,
    ) -> Result<(), String> {
        let ids_file = self.logdir.join(format!("{}.ids", sanitize(node)));
        let ids: String = members
            .iter()
            .map(|&i| format!("{}\n", self.g.nodes[i].id))
            .collect();
        std::fs::write(&ids_file, ids)
            .map_err(|e| format!("cannot write {}: {e}", ids_file.display()))?;
        let array = members.len() > 1;
        let dependency = self.dependency(members);
        let args = self.sbatch_args(node, members, &dependency, &ids_file);
        let job = sbatch(&args, node).inspect_err(|_| cancel(&self.jobs))?;
        let _ = writeln!(
            out,
            "submitted {node}: job {job}{}{}",
            if array {
                format!(" (array of {})", members.len())
            } else {
                String::new()
            },
            if dependency.is_empty() {
                String::new()
            } else {
                format!(", {}", dependency.join(","))
            }
        );
        self.jobs.push(job.clone());
        for (k, &i) in members.iter().enumerate() {
            let log = if array {
                self.logdir
                    .join(format!("{}-{}_{}.log", sanitize(node), job, k))
            } else {
                self.logdir.join(format!("{}-{}.log", sanitize(node), job))
            };
            self.tasks.insert(
                i,
                Task {
                    job: job.clone(),
                    index: array.then_some(k),
                    log,
                },
            );
        }
        Ok(())
    }

    /// The `--dependency` entries of a job running `members`: one per upstream job.
    fn dependency(&self, members: &[usize]) -> Vec<String> {
        let (g, tasks) = (self.g, &self.tasks);
        let mut deps: Vec<String> = Vec::new();
        for &i in members {
            for inp in &g.nodes[i].inputs {
                if let Some(t) = tasks.get(&inp.from) {
                    if !deps.contains(&t.job) {
                        deps.push(t.job.clone());
                    }
                }
            }
        }
        let array = members.len() > 1;
        // Per-index dependencies where both sides are arrays of the same partitioning: task k
        // of this array reads only task k of that one. Then `aftercorr` lets each task start as
        // soon as its own input is done, instead of waiting for the whole upstream array.
        let corr: Vec<bool> = deps
            .iter()
            .map(|job| {
                array
                    && members.iter().enumerate().all(|(k, &i)| {
                        let from: Vec<&Task> = g.nodes[i]
                            .inputs
                            .iter()
                            .filter_map(|inp| tasks.get(&inp.from))
                            .filter(|t| &t.job == job)
                            .collect();
                        !from.is_empty() && from.iter().all(|t| t.index == Some(k))
                    })
                    && tasks.values().filter(|t| &t.job == job).count() == members.len()
            })
            .collect();
        deps.iter()
            .zip(&corr)
            .map(|(j, c)| {
                if *c {
                    format!("aftercorr:{j}")
                } else {
                    format!("afterok:{j}")
                }
            })
            .collect()
    }

    /// `sbatch` arguments for the job running `members` of workflow node `node`.
    fn sbatch_args(
        &self,
        node: &str,
        members: &[usize],
        dependency: &[String],
        ids_file: &Path,
    ) -> Vec<String> {
        let so = self.so;
        let first = &self.g.nodes[members[0]];
        let array = members.len() > 1;
        let log_pattern = self.logdir.join(format!(
            "{}-{}.log",
            sanitize(node),
            if array { "%A_%a" } else { "%j" }
        ));
        let mut args: Vec<String> = vec![
            "--parsable".into(),
            format!("--job-name=tf-{}", sanitize(node)),
            format!("--chdir={}", self.cwd.display()),
            format!("--output={}", log_pattern.display()),
            "--kill-on-invalid-dep=yes".into(),
            format!(
                "--cpus-per-task={}",
                first.resources.cpus.unwrap_or(so.cpus)
            ),
        ];
        if array {
            args.push(format!("--array=0-{}", members.len() - 1));
        }
        if !dependency.is_empty() {
            args.push(format!("--dependency={}", dependency.join(",")));
        }
        if let Some(m) = &first.resources.mem {
            args.push(format!("--mem={m}"));
        }
        if let Some(t) = &first.resources.time {
            args.push(format!("--time={t}"));
        }
        if let Some(gr) = &first.resources.gres {
            args.push(format!("--gres={gr}"));
        }
        if let Some(p) = first.resources.partition.as_ref().or(so.partition.as_ref()) {
            args.push(format!("--partition={p}"));
        }
        if let Some(a) = &so.account {
            args.push(format!("--account={a}"));
        }
        for kv in &so.extra {
            let kv = kv.trim_start_matches('-');
            args.push(format!("--{kv}"));
        }
        args.push(format!("--wrap=exec {}", self.run_node_command(ids_file)));
        args
    }

    /// The `tomoflow run-node` command line a job runs, for the instances listed in `ids_file`.
    fn run_node_command(&self, ids_file: &Path) -> String {
        let so = self.so;
        let mut cmd = vec![
            quote(&so.exe.to_string_lossy()),
            "--store".into(),
            quote(&self.store_abs.to_string_lossy()),
            "-q".into(),
        ];
        for p in &so.plugin_paths {
            cmd.push("--plugin-path".into());
            cmd.push(quote(&p.to_string_lossy()));
        }
        cmd.push("run-node".into());
        cmd.push(quote(&so.workflow.to_string_lossy()));
        for s in &so.sets {
            cmd.push("--set".into());
            cmd.push(quote(s));
        }
        // The jobs expand the workflow again, under the limit this run used.
        cmd.push("--max-instances".into());
        cmd.push(crate::workflow::guard::max_instances().to_string());
        cmd.push("--instances".into());
        cmd.push(quote(&ids_file.to_string_lossy()));
        cmd.join(" ")
    }

    /// Follow the submitted tasks until each is done (its manifest is complete) or gone from
    /// the queue, filling in `reports`; returns the first error.
    fn follow(self, store: &Store, reports: &mut [NodeReport]) -> Option<(String, String)> {
        let mut first_error: Option<(String, String)> = None;
        let mut pending: BTreeMap<usize, Task> = self.tasks.into_iter().collect();
        let mut failed: HashSet<usize> = HashSet::new();
        while !pending.is_empty() {
            if INTERRUPTED.load(Ordering::SeqCst) {
                cancel(&self.jobs);
                for &i in pending.keys() {
                    reports[i].outcome = Outcome::Cancelled;
                }
                first_error.get_or_insert((
                    "run".into(),
                    "interrupted: every submitted job was cancelled (scancel)".into(),
                ));
                break;
            }
            let alive = match queue(&self.jobs) {
                Ok(a) => a,
                Err(e) => {
                    std::thread::sleep(self.so.poll);
                    tracing::warn!("squeue failed ({e}); retrying");
                    continue;
                }
            };
            let mut resolved = Vec::new();
            for (&i, t) in &pending {
                let n = &self.g.nodes[i];
                if let Some(m) = store.is_complete(&n.key) {
                    reports[i].outcome = Outcome::Ran;
                    reports[i].wall_s = m.wall_s;
                    reports[i].bytes_out = m.bytes();
                    resolved.push(i);
                    continue;
                }
                let is_alive = alive.contains(&(t.job.clone(), t.index))
                    || alive.contains(&(t.job.clone(), None));
                if !is_alive {
                    let upstream_failed = n.inputs.iter().any(|inp| failed.contains(&inp.from));
                    if upstream_failed {
                        reports[i].outcome = Outcome::Cancelled;
                    } else {
                        let tail = log_tail(&t.log);
                        let msg = format!(
                            "Slurm job {} ended without completing it; log: {}{tail}",
                            task_name(t),
                            t.log.display()
                        );
                        first_error.get_or_insert((n.id.clone(), msg.clone()));
                        reports[i].outcome = Outcome::Failed(msg);
                    }
                    failed.insert(i);
                    resolved.push(i);
                }
            }
            for i in resolved {
                pending.remove(&i);
            }
            if !pending.is_empty() {
                std::thread::sleep(self.so.poll);
            }
        }
        first_error
    }
}

/// Run `sbatch`; the job id, or why it was not submitted.
fn sbatch(args: &[String], node: &str) -> Result<String, String> {
    match Command::new("sbatch").args(args).output() {
        Ok(o) if o.status.success() => Ok(String::from_utf8_lossy(&o.stdout)
            .trim()
            .split(';')
            .next()
            .unwrap_or("")
            .to_string()),
        Ok(o) => Err(format!(
            "sbatch refused node {node}: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Err(format!(
            "cannot run sbatch ({e}); is Slurm installed and SLURM_CONF set?"
        )),
    }
}

fn task_name(t: &Task) -> String {
    match t.index {
        Some(k) => format!("{}_{k}", t.job),
        None => t.job.clone(),
    }
}

fn log_tail(p: &Path) -> String {
    let text = std::fs::read_to_string(p).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail: Vec<&str> = lines.iter().rev().take(3).rev().copied().collect();
    if tail.is_empty() {
        String::new()
    } else {
        format!("\n  | {}", tail.join("\n  | "))
    }
}

/// Tasks still known to the queue: (job id, array index or None).
fn queue(jobs: &[String]) -> Result<HashSet<(String, Option<usize>)>, String> {
    let mut out = HashSet::new();
    if jobs.is_empty() {
        return Ok(out);
    }
    let o = Command::new("squeue")
        .args(["-h", "-r", "-o", "%F %K %T", "-j", &jobs.join(",")])
        .output()
        .map_err(|e| e.to_string())?;
    if !o.status.success() {
        let err = String::from_utf8_lossy(&o.stderr);
        // squeue exits non-zero when none of the jobs is known any more.
        if err.contains("Invalid job id") {
            return Ok(out);
        }
        return Err(err.trim().to_string());
    }
    for line in String::from_utf8_lossy(&o.stdout).lines() {
        let mut parts = line.split_whitespace();
        let (Some(job), Some(idx)) = (parts.next(), parts.next()) else {
            continue;
        };
        let state = parts.next().unwrap_or("");
        if matches!(
            state,
            "COMPLETED"
                | "FAILED"
                | "CANCELLED"
                | "TIMEOUT"
                | "OUT_OF_MEMORY"
                | "NODE_FAIL"
                | "BOOT_FAIL"
                | "DEADLINE"
                | "PREEMPTED"
        ) {
            continue;
        }
        out.insert((job.to_string(), idx.parse::<usize>().ok()));
    }
    Ok(out)
}

fn cancel(jobs: &[String]) {
    if !jobs.is_empty() {
        let _ = Command::new("scancel").args(jobs).status();
    }
}

fn fail_all(mut reports: Vec<NodeReport>, msg: String, t0: Instant) -> RunReport {
    for r in &mut reports {
        if r.outcome == Outcome::Skipped {
            r.outcome = Outcome::Cancelled;
        }
    }
    RunReport {
        nodes: reports,
        first_error: Some(("submit".into(), msg)),
        wall_s: t0.elapsed().as_secs_f64(),
    }
}
