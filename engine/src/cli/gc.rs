//! `tomoflow gc`: remove store entries that no workflow's last plan refers to.

use super::{human_bytes, journal_path, open_store, user_error, Cli};
use crate::store::journal::Journal;

/// Remove (or with `dry_run` only list) unreferenced or incomplete entries and scratch space.
pub(super) fn gc(cli: &Cli, dry_run: bool) -> i32 {
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
            // What the entry holds: the node instance that made it (none while incomplete).
            let manifest = (dir == "store").then(|| store.manifest(&name)).flatten();
            let complete = dir == "scratch" || manifest.is_some();
            if keep.contains(&name) && complete {
                continue;
            }
            let size = crate::store::disk_usage(&e.path());
            let what = match (dir, manifest) {
                ("scratch", _) => "scratch space".to_string(),
                (_, Some(m)) => format!("output of {}", m.instance),
                (_, None) => "incomplete entry".to_string(),
            };
            println!(
                "{} {dir}/{name}: {what}, {}",
                if dry_run { "would remove" } else { "removing" },
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
