//! The one way every workflow command loads its input: discover the plugins, then parse the
//! workflow, apply `--set`, expand sweeps and bind the instances to node types.

use super::{user_error, Cli, WorkflowArgs};
use crate::error::UserErrors;
use crate::graph::{self, RunGraph};
use crate::plugin::Registry;
use crate::workflow::{self, Workflow};
use std::path::PathBuf;

/// Everything needed to act on a workflow.
pub(super) struct Loaded {
    /// The parsed workflow file.
    pub wf: Workflow,
    /// The bound instance graph.
    pub graph: RunGraph,
    /// The `--set` overrides as given (recorded in the journal).
    pub sets: Vec<String>,
    /// The plugins the graph was bound against.
    pub reg: Registry,
}

/// The plugin registry for `--plugin-path`; refused libraries are logged as warnings.
pub(super) fn registry(cli: &Cli) -> Registry {
    let reg = Registry::discover(&cli.plugin_path);
    for (p, why) in &reg.rejected {
        tracing::warn!("plugin {} refused: {why}", p.display());
    }
    reg
}

/// Parse, override, expand and bind the workflow of `args` against `reg`.
fn load(args: &WorkflowArgs, reg: Registry) -> Result<Loaded, UserErrors> {
    if let Some(n) = args.max_instances {
        workflow::guard::set_max_instances(n.max(1));
    }
    let wf = Workflow::load(&args.workflow)?;
    let mut sets = Vec::new();
    for s in &args.sets {
        sets.push(workflow::parse_set(s).map_err(|e| UserErrors(vec![e]))?);
    }
    let ex = workflow::expand(&wf, &sets)?;
    let base = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let graph = graph::build(&wf, &ex, &reg, &base)?;
    Ok(Loaded {
        wf,
        graph,
        sets: args.sets.clone(),
        reg,
    })
}

/// Discover the plugins, load the workflow of `args` and hand it to `command`, whose exit code
/// is returned; invalid input is printed instead and ends with exit code 2.
pub(super) fn with_workflow(
    cli: &Cli,
    args: &WorkflowArgs,
    command: impl FnOnce(&mut Loaded) -> i32,
) -> i32 {
    match load(args, registry(cli)) {
        Ok(mut l) => command(&mut l),
        Err(e) => user_error(e),
    }
}
