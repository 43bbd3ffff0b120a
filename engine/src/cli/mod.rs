//! The `tomoflow` command line.

mod commands;

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

const ABOUT: &str =
    "tomoflow: cryo-ET workflows of dynamically loaded plugins, streamed and resumable.

A workflow is a YAML file whose nodes are plugin node types (see `tomoflow plugins`). `run`
executes it: finished work is kept in a content-addressed store (.tomoflow/) and reused, so a run
that was interrupted continues where it stopped when you run the same command again.";

const EXAMPLES: &str = "Examples:
  tomoflow run workflows/quickstart.yaml                 run (or resume) a workflow
  tomoflow run wf.yaml --set seed=7 --set voxel_size=5   override workflow params
  tomoflow plan wf.yaml                                  what would run, what is cached, and why
  tomoflow explain wf.yaml recon                         the cache key of node `recon`, part by part
  tomoflow graph wf.yaml --format mermaid                the instance graph
  tomoflow plugins phantom                               ports and parameters of a node type
  tomoflow runs                                          history of runs in this store
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
    /// History of runs in this store.
    Runs {
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
    Verify,
}

/// Parse arguments, run, and return the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    commands::init_logging(cli.verbose, cli.quiet);
    commands::dispatch(cli)
}
