//! Temporary files a killed run left next to its export targets (`<target>.tmp-<pid>`, what
//! exporters write before their atomic rename): removed when the next run starts, unless the
//! process that owns them is still alive.

use crate::graph::RunGraph;
use std::path::Path;

/// Remove every `<target>.tmp-<pid>` beside an export target of `g` whose process is gone.
/// Returns the paths removed.
pub fn remove_stale_temporaries(g: &RunGraph) -> Vec<std::path::PathBuf> {
    let mut removed = Vec::new();
    let mut seen_dirs = std::collections::HashSet::new();
    let targets: std::collections::HashSet<&std::ffi::OsStr> = g
        .nodes
        .iter()
        .filter_map(|n| n.export.as_deref()?.file_name())
        .collect();
    for n in &g.nodes {
        let Some(dir) = n.export.as_deref().and_then(Path::parent) else {
            continue;
        };
        if !seen_dirs.insert(dir.to_path_buf()) {
            continue;
        }
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            let Some(s) = name.to_str() else { continue };
            let Some((base, pid)) = s.rsplit_once(".tmp-") else {
                continue;
            };
            let Ok(pid) = pid.parse::<u32>() else {
                continue;
            };
            if !targets.contains(std::ffi::OsStr::new(base)) || alive(pid) {
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
