//! A plugin written in C against `include/tomoflow.h` (tests/c-plugin/scale.c) runs in a real
//! workflow, and a library built for another ABI major is refused with a useful message.
//!
//! Needs `cargo build --workspace` first (the real `tomoflow` binary and the `io` plugin next
//! to it) and a C compiler (`cc`, or `$CC`): without one the tests fail, they never skip.

mod common;

use std::path::{Path, PathBuf};

/// Compile a C plugin source from tests/c-plugin into `dir/lib<name>.so`.
fn build_plugin(source: &str, dir: &Path, name: &str) -> PathBuf {
    let out = dir.join(format!("lib{name}.so"));
    let src = common::workspace().join("tests/c-plugin").join(source);
    common::cc(
        &[
            "-shared",
            "-fPIC",
            "-O2",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-o",
            out.to_str().expect("utf-8 path"),
        ],
        &[&src],
    );
    out
}

fn read_json(p: &Path) -> serde_json::Value {
    let text =
        std::fs::read_to_string(p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", p.display()))
}

const FACTOR: f64 = 3.5;

fn workflow(factor: f64) -> String {
    format!(
        r#"version: 1
name: c-plugin
description: phantom -> c-scale -> volume-stats, next to the unscaled statistics
nodes:
  phantom:
    plugin: phantom
    params:
      shape: [20, 24, 28]
      slab: 6
      background: 0.5
      random_spheres: {{count: 5, radius_min: 20, radius_max: 40}}
  scale:
    plugin: c-scale
    params: {{factor: {factor}}}
    inputs: {{volume: phantom.volume}}
  plain_stats:
    plugin: volume-stats
    inputs: {{volume: phantom.volume}}
  scaled_stats:
    plugin: volume-stats
    inputs: {{volume: scale.volume}}
exports:
  - {{from: plain_stats.metrics, to: out/plain.json}}
  - {{from: scaled_stats.metrics, to: out/scaled.json}}
"#
    )
}

#[test]
fn c_plugin_runs_in_a_workflow() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path();
    let lib = build_plugin("scale.c", dir, "scale");
    std::fs::write(dir.join("wf.yaml"), workflow(FACTOR)).unwrap();

    let out = common::run(
        common::tomoflow()
            .current_dir(dir)
            .arg("-q")
            .arg("--plugin-path")
            .arg(dir)
            .arg("--store")
            .arg(dir.join(".tomoflow"))
            .args(["run", "wf.yaml"]),
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "run failed\n{}",
        common::text(&out)
    );

    let plain = read_json(&dir.join("out/plain.json"));
    let scaled = read_json(&dir.join("out/scaled.json"));
    let m0 = plain["mean"].as_f64().expect("plain mean");
    let m1 = scaled["mean"].as_f64().expect("scaled mean");
    assert!(m0 > 0.5, "the phantom should not be empty: mean {m0}");
    let rel = (m1 - FACTOR * m0).abs() / (FACTOR * m0).abs();
    assert!(
        rel <= 1e-5,
        "scaled mean {m1} != {FACTOR} x {m0} (relative error {rel})"
    );
    // The chunk metadata went through unchanged.
    assert_eq!(plain["shape"], scaled["shape"]);
    assert_eq!(plain["voxel_size"], scaled["voxel_size"]);
    assert_eq!(plain["count"], scaled["count"]);
    let rel_max = (scaled["max"].as_f64().unwrap() - FACTOR * plain["max"].as_f64().unwrap()).abs();
    assert!(rel_max <= 1e-5 * FACTOR * plain["max"].as_f64().unwrap());

    // The same library path given as a file works too, and the run is then fully cached
    // (the build id, a hash of the library file, is unchanged).
    let again = common::run(
        common::tomoflow()
            .current_dir(dir)
            .arg("--plugin-path")
            .arg(&lib)
            .arg("--store")
            .arg(dir.join(".tomoflow"))
            .args(["run", "wf.yaml"]),
    );
    assert_eq!(
        again.status.code(),
        Some(0),
        "rerun failed\n{}",
        common::text(&again)
    );
    let t = common::text(&again);
    assert!(t.contains("0 ran"), "rerun should reuse everything\n{t}");
}

#[test]
fn c_plugin_parameters_are_checked_against_its_schema() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path();
    build_plugin("scale.c", dir, "scale");
    std::fs::write(dir.join("wf.yaml"), workflow(-1.0)).unwrap();
    let out = common::run(
        common::tomoflow()
            .current_dir(dir)
            .arg("--plugin-path")
            .arg(dir)
            .arg("--store")
            .arg(dir.join(".tomoflow"))
            .args(["validate", "wf.yaml"]),
    );
    let t = common::text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(t.contains("factor") && t.contains("greater than 0"), "{t}");
}

#[test]
fn plugins_lists_the_c_node_type() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path();
    build_plugin("scale.c", dir, "scale");
    let out = common::run(
        common::tomoflow()
            .arg("--plugin-path")
            .arg(dir)
            .arg("plugins"),
    );
    let t = common::text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(t.contains("c-scale"), "c-scale not listed\n{t}");
    assert!(t.contains("(volume:volume) -> (volume:volume)"), "{t}");

    let out = common::run(
        common::tomoflow()
            .arg("--plugin-path")
            .arg(dir)
            .args(["plugins", "c-scale"]),
    );
    let t = common::text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(
        t.contains("factor") && t.contains("2.0"),
        "parameter and default shown\n{t}"
    );
    assert!(t.contains("exclusiveMinimum"), "schema shown\n{t}");
}

#[test]
fn wrong_abi_major_is_refused() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path();
    let bad = build_plugin("bad_abi.c", dir, "bad_abi");

    let out = common::run(
        common::tomoflow()
            .arg("--plugin-path")
            .arg(&bad)
            .arg("plugins"),
    );
    let t = common::text(&out);
    let line = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.starts_with("refused:"))
        .unwrap_or_else(|| panic!("no `refused:` line\n{t}"))
        .to_string();
    assert!(line.contains("libbad_abi.so"), "{line}");
    assert!(line.contains("ABI 99"), "{line}");
    assert!(line.contains("rebuild"), "{line}");

    // A workflow that needs a node type nobody provides mentions the refused library.
    std::fs::write(dir.join("wf.yaml"), workflow(FACTOR)).unwrap();
    let out = common::run(
        common::tomoflow()
            .current_dir(dir)
            .arg("--plugin-path")
            .arg(&bad)
            .arg("--store")
            .arg(dir.join(".tomoflow"))
            .args(["run", "wf.yaml"]),
    );
    let t = common::text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(t.contains("unknown node type `c-scale`"), "{t}");
    assert!(t.contains("libbad_abi.so was refused"), "{t}");
    assert!(t.contains("ABI 99") && t.contains("rebuild"), "{t}");
}
