//! The `tomoflow` command line: the arguments (here), one module per subcommand, and
//! `load`, the one way the workflow commands load their workflow.

mod explain;
mod gc;
mod graph;
mod interrupt;
mod load;
mod plan;
mod plugins;
mod run;
mod run_node;
mod runs;
mod validate;
mod verify;

use crate::exec;
use crate::store::Store;
use clap::{Args, Parser, Subcommand, ValueEnum};
use load::with_workflow;
use std::io::IsTerminal;
use std::path::PathBuf;

const ABOUT: &str =
    "tomoflow: cryo-ET workflows of dynamically loaded plugins, streamed and resumable.

A workflow is a YAML file whose nodes are plugin node types (see `tomoflow plugins`). `run`
executes it: finished work is kept in a content-addressed store (.tomoflow/) and reused, so a run
that was interrupted continues where it stopped when you run the same command again.";

const EXAMPLES: &str = "Examples:
  tomoflow run workflows/quickstart.yaml                 run (or resume) a workflow
  tomoflow run wf.yaml --set seed=7 --set steps=200      override workflow params
  tomoflow plan wf.yaml                                  what would run, what is cached, and why
  tomoflow explain wf.yaml recon                         the cache key of node `recon`, part by part
  tomoflow graph wf.yaml --format mermaid                the instance graph
  tomoflow plugins phantom                               ports and parameters of a node type
  tomoflow runs                                          history of runs in this store
  tomoflow runs 3                                        run 3 in detail: command, parameters, times
  tomoflow gc --dry-run                                  what unreferenced store entries would go

Exit status: 0 success, 1 a node failed, 2 invalid input (the message says file:line:column).";

/// Top-level command line.
#[derive(Debug, Parser)]
#[command(name = "tomoflow", version, about = ABOUT, after_help = EXAMPLES, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// More log output (-v debug, -vv trace).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Only warnings and errors; no progress bars.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Extra plugin libraries or directories (repeatable, or ':'-separated). Searched before
    /// TOMOFLOW_PLUGIN_PATH and the executable's directory.
    #[arg(long = "plugin-path", global = true, value_name = "PATH")]
    pub plugin_path: Vec<PathBuf>,
    /// Store directory (content-addressed outputs, run journal).
    #[arg(long, global = true, default_value = ".tomoflow", value_name = "DIR")]
    pub store: PathBuf,
}

/// A workflow file plus overrides.
#[derive(Debug, Args, Clone)]
pub struct WorkflowArgs {
    /// The workflow YAML file.
    pub workflow: PathBuf,
    /// Override a workflow parameter: `--set name=value` (value read as YAML). Repeatable.
    #[arg(long = "set", value_name = "NAME=VALUE")]
    pub sets: Vec<String>,
    /// Most node instances the sweep and `repeat:` may make (counted before they are made).
    /// Default: TOMOFLOW_MAX_INSTANCES, else 100000.
    #[arg(long = "max-instances", value_name = "N")]
    pub max_instances: Option<u64>,
}

/// Graph output formats.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum GraphFormat {
    /// Graphviz dot.
    Dot,
    /// Mermaid flowchart (renders on GitHub).
    Mermaid,
}

/// Executors.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Executor {
    /// Threads on this machine.
    Local,
    /// One Slurm job per node instance (job arrays for sweeps); see docs/cluster.md.
    Slurm,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run (or resume) a workflow.
    #[command(
        after_help = "Example:\n  tomoflow run workflows/quickstart.yaml --set seed=3 --jobs 2"
    )]
    Run {
        #[command(flatten)]
        wf: WorkflowArgs,
        /// Pipelines (groups of streaming nodes) active at once. Default: number of cores.
        #[arg(long, short = 'j')]
        jobs: Option<usize>,
        /// Threads shared by all plugins for data-parallel work. Default: number of cores.
        #[arg(long)]
        threads: Option<usize>,
        /// Capacity of each edge's channel, in chunks (bounds memory).
        #[arg(long, default_value_t = 4)]
        capacity: usize,
        /// Where node instances run.
        #[arg(long, value_enum, default_value = "local")]
        executor: Executor,
        /// Slurm partition (with --executor slurm; a node's `resources.partition` wins).
        #[arg(long)]
        partition: Option<String>,
        /// Slurm account (with --executor slurm).
        #[arg(long)]
        account: Option<String>,
        /// Extra sbatch option `KEY=VALUE`, passed as `--KEY=VALUE` (repeatable).
        #[arg(long = "slurm-opt", value_name = "KEY=VALUE")]
        slurm_opts: Vec<String>,
        /// Seconds between looks at the store and the queue (with --executor slurm).
        #[arg(long, default_value_t = 2.0)]
        poll: f64,
        /// Run nothing: show what would run and what is cached, as `tomoflow plan` does.
        #[arg(long, short = 'n')]
        dry_run: bool,
    },
    /// Run one node instance whose inputs are in the store (what cluster jobs execute).
    #[command(hide = true)]
    RunNode {
        #[command(flatten)]
        wf: WorkflowArgs,
        /// File with one instance id per line; the line is picked by --index or
        /// SLURM_ARRAY_TASK_ID (default 0).
        #[arg(long)]
        instances: Option<PathBuf>,
        /// The instance id (instead of --instances).
        #[arg(long)]
        instance: Option<String>,
        /// Line of --instances to run.
        #[arg(long)]
        index: Option<usize>,
        /// Threads for the node's data-parallel work. Default: SLURM_CPUS_PER_TASK or all cores.
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Check a workflow (syntax, node types, ports, parameters) without running anything.
    Validate {
        #[command(flatten)]
        wf: WorkflowArgs,
    },
    /// Show what `run` would do: per node instance, cached or will run, and why.
    Plan {
        #[command(flatten)]
        wf: WorkflowArgs,
    },
    /// Explain one node: its instances, cache keys part by part, parameters and status.
    Explain {
        #[command(flatten)]
        wf: WorkflowArgs,
        /// Node id (as in the workflow).
        node: String,
    },
    /// Print the instance graph.
    Graph {
        #[command(flatten)]
        wf: WorkflowArgs,
        /// Output format.
        #[arg(long, value_enum, default_value = "dot")]
        format: GraphFormat,
    },
    /// List plugin libraries and node types, or describe one node type.
    Plugins {
        /// A node type to describe in full (ports, parameter schema).
        name: Option<String>,
        /// Machine-readable JSON.
        #[arg(long)]
        json: bool,
    },
    /// History of runs in this store (`runs ID`: one run in detail).
    Runs {
        /// Show this run in detail: command, parameters, times, status, error.
        id: Option<u64>,
        /// How many runs to show.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Remove store entries that no workflow's last plan refers to.
    Gc {
        /// Only list what would be removed.
        #[arg(long)]
        dry_run: bool,
    },
    /// Check every store entry against its manifest's checksums.
    Verify {
        /// Remove the damaged entries, so that the next run redoes them.
        #[arg(long)]
        repair: bool,
    },
}

/// Parse arguments, run, and return the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    init_logging(cli.verbose, cli.quiet);
    dispatch(cli)
}

/// Exit code for invalid input.
const EXIT_INPUT: i32 = 2;
/// Exit code for a failed run.
const EXIT_FAILED: i32 = 1;

/// Set up `tracing` on stderr.
fn init_logging(verbose: u8, quiet: bool) {
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

/// Run the chosen subcommand; returns the exit code.
fn dispatch(cli: Cli) -> i32 {
    match &cli.command {
        Command::Plugins { name, json } => plugins::plugins(&cli, name.as_deref(), *json),
        Command::Runs { limit, id } => runs::runs(&cli, *limit, *id),
        Command::Gc { dry_run } => gc::gc(&cli, *dry_run),
        Command::Verify { repair } => verify::verify(&cli, *repair),
        Command::Validate { wf } => with_workflow(&cli, wf, |l| validate::validate(wf, l)),
        Command::Plan { wf } => with_workflow(&cli, wf, |l| plan::plan(&cli, l)),
        Command::Explain { wf, node } => {
            with_workflow(&cli, wf, |l| explain::explain(&cli, l, node))
        }
        Command::Graph { wf, format } => with_workflow(&cli, wf, |l| graph::graph(l, *format)),
        Command::RunNode {
            wf,
            instances,
            instance,
            index,
            threads,
        } => with_workflow(&cli, wf, |l| {
            run_node::run_node(
                &cli,
                l,
                instances.as_deref(),
                instance.as_deref(),
                *index,
                *threads,
            )
        }),
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
            dry_run,
        } => with_workflow(&cli, wf, |l| match executor {
            _ if *dry_run => plan::plan(&cli, l),
            Executor::Slurm => {
                let (partition, account) = (partition.as_deref(), account.as_deref());
                let so =
                    run::slurm_options(&cli, wf, partition, account, slurm_opts, *poll, *threads);
                run::run_slurm(&cli, l, so)
            }
            Executor::Local => {
                let opts = run::local_options(&cli, *jobs, *threads, *capacity);
                run::run(&cli, l, &opts)
            }
        }),
    }
}

/// Print a user error and return the exit code for invalid input.
fn user_error(e: impl std::fmt::Display) -> i32 {
    eprintln!("error: {e}");
    EXIT_INPUT
}

/// Open the store named by `--store`.
fn open_store(cli: &Cli) -> Result<Store, String> {
    Store::open(&cli.store)
        .map_err(|e| format!("cannot open the store {}: {e}", cli.store.display()))
}

/// The run journal of a store.
fn journal_path(store: &Store) -> PathBuf {
    store.root.join("journal.redb")
}

/// A byte count for people: `512 B`, `1.5 KiB`, … up to TiB.
fn human_bytes(b: u64) -> String {
    tomoflow_sdk::memory::human(b.into())
}
