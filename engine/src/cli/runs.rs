//! `tomoflow runs`: the history of runs recorded in the store's journal.

use super::{journal_path, open_store, user_error, Cli};
use crate::store::journal::Journal;

/// Print the last `limit` runs, newest first.
pub(super) fn runs(cli: &Cli, limit: usize) -> i32 {
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
