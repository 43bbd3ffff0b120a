//! `tomoflow plan`: per node instance, whether `run` would take it from the store, skip it or
//! run it, and why.

use super::load::Loaded;
use super::{journal_path, open_store, user_error, Cli};
use crate::exec;
use crate::store::journal::Journal;

/// Print one line per instance (status and reason) and how many will run.
pub(super) fn plan(cli: &Cli, l: &Loaded) -> i32 {
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
