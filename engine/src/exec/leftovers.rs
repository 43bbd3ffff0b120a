//! Temporary files a killed run left next to its export targets (`<target>.tmp-<pid>`, what
//! exporters write before their atomic rename): removed when the next run starts, unless the
//! process that owns them is still alive.

use crate::graph::RunGraph;
use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};

/// Remove every `<target>.tmp-<pid>` beside an export target of `g` whose process is gone.
/// Returns the paths removed.
pub fn remove_stale_temporaries(g: &RunGraph) -> Vec<PathBuf> {
    let targets: HashSet<&Path> = g.nodes.iter().filter_map(|n| n.export.as_deref()).collect();
    let dirs: BTreeSet<&Path> = targets.iter().filter_map(|t| t.parent()).collect();
    let mut removed = Vec::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            let Some((base, pid)) = name.to_str().and_then(|s| s.rsplit_once(".tmp-")) else {
                continue;
            };
            let Ok(pid) = pid.parse::<u32>() else {
                continue;
            };
            if !targets.contains(dir.join(base).as_path()) || alive(pid) {
                continue;
            }
            let p = e.path();
            let ok = if p.is_dir() {
                std::fs::remove_dir_all(&p).is_ok()
            } else {
                std::fs::remove_file(&p).is_ok()
            };
            if ok {
                removed.push(p);
            }
        }
    }
    removed
}

/// Whether process `pid` still runs (Linux: `/proc/<pid>` exists; elsewhere assume it does).
fn alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    if cfg!(target_os = "linux") {
        Path::new(&format!("/proc/{pid}")).exists()
    } else {
        true
    }
}
