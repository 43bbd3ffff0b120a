//! End-to-end tests of the engine through the real `tomoflow` binary and plugin libraries:
//! validation errors, failures, caching, sweeps, resume after SIGKILL, locking.
//!
//! Needs `cargo build --workspace` first (the README's test command does it).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;

/// A scratch project directory with its own store.
struct Project {
    dir: tempfile::TempDir,
}

impl Project {
    fn new() -> Project {
        Project {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path().join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = common::tomoflow();
        c.current_dir(self.path())
            .args(args)
            .env("TOMOFLOW_LOG", "warn");
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("tomoflow runs")
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Run and expect exit code `code`; return stdout+stderr.
fn expect(p: &Project, args: &[&str], code: i32) -> String {
    let o = p.run(args);
    let t = text(&o);
    assert_eq!(
        o.status.code(),
        Some(code),
        "tomoflow {args:?} exited {:?}:\n{t}",
        o.status.code()
    );
    assert!(
        !t.contains("panicked at") && !t.contains("RUST_BACKTRACE"),
        "no panic may reach the user:\n{t}"
    );
    t
}

const PIPE: &str = r#"version: 1
name: pipe
params:
  seed: 5
  size: 16
nodes:
  ph:
    plugin: phantom
    params:
      shape: ["${params.size}", 24, 24]
      voxel_size: 10
      objects: [{kind: sphere, center: [0, 0, 0], radius: 50, density: 1.0}]
  norm:
    plugin: normalize
    inputs: {volume: ph.volume}
  stats:
    plugin: volume-stats
    inputs: {volume: norm.volume}
exports:
  - {from: norm.volume, to: out/norm.mrc}
  - {from: stats.metrics, to: out/stats.json}
"#;

fn validate_error(yaml: &str) -> String {
    let p = Project::new();
    p.write("wf.yaml", yaml);
    let t = expect(&p, &["validate", "wf.yaml"], 2);
    assert!(
        !p.path().join(".tomoflow/store").exists()
            || std::fs::read_dir(p.path().join(".tomoflow/store"))
                .unwrap()
                .count()
                == 0
    );
    t
}

#[test]
fn valid_workflow_validates() {
    let p = Project::new();
    p.write("wf.yaml", PIPE);
    let t = expect(&p, &["validate", "wf.yaml"], 0);
    assert!(t.contains("valid — 5 node instances (2 exports)"), "{t}");
}

/// Every workflow shipped in workflows/ validates from the repository root (where the README
/// runs them). `apply.yaml` once failed here: `${params.out}` in export paths was not filled.
#[test]
fn every_shipped_workflow_validates() {
    let root = common::workspace();
    let mut n = 0;
    for e in std::fs::read_dir(root.join("workflows")).unwrap() {
        let path = e.unwrap().path();
        if path.extension().is_some_and(|x| x == "yaml") {
            let o = common::tomoflow()
                .current_dir(&root)
                .args(["validate", &path.display().to_string()])
                .output()
                .unwrap();
            // apply.yaml reads what train.yaml writes under results/: on a fresh clone only
            // those input files may be missing.
            let t = text(&o);
            let only_missing_results = t.lines().filter(|l| l.starts_with("error")).all(|l| {
                l.contains("cannot be read") && l.contains(&format!("{}/results/", root.display()))
            });
            assert!(
                o.status.success() || only_missing_results,
                "{}:\n{t}",
                path.display()
            );
            n += 1;
        }
    }
    assert!(n >= 8, "only {n} workflows found");
}

/// `${params.NAME}` and `${workflow.name}` in export paths are filled before the per-instance
/// placeholders; a misspelt parameter is located at the export.
#[test]
fn export_paths_take_workflow_params() {
    let p = Project::new();
    p.write(
        "wf.yaml",
        "version: 1\nname: ex\nparams: {out: res}\nnodes:\n  ph:\n    plugin: phantom\n    params: {shape: [4, 4, 4]}\nexports:\n  - {from: ph.volume, to: \"${params.out}/${workflow.name}.mrc\"}\n",
    );
    expect(&p, &["run", "wf.yaml", "--set", "out=elsewhere"], 0);
    assert!(p.path().join("elsewhere/ex.mrc").is_file());
    p.write(
        "bad.yaml",
        "version: 1\nname: ex\nparams: {out: res}\nnodes:\n  ph:\n    plugin: phantom\n    params: {shape: [4, 4, 4]}\nexports:\n  - {from: ph.volume, to: \"${params.uot}/a.mrc\"}\n",
    );
    let t = expect(&p, &["validate", "bad.yaml"], 2);
    assert!(
        t.contains("bad.yaml:9:") && t.contains("refers to no parameter"),
        "{t}"
    );
}

#[test]
fn malformed_yaml_is_located() {
    let t = validate_error("version: 1\nname: x\nnodes:\n  a: {plugin: phantom\n");
    assert!(t.contains("wf.yaml:"), "{t}");
    assert!(t.contains("invalid workflow"), "{t}");
}

#[test]
fn unknown_keys_suggest() {
    let t = validate_error(&PIPE.replace("exports:", "exprts:"));
    assert!(
        t.contains("wf.yaml:19:1: unknown top-level key `exprts` (did you mean `exports`?)"),
        "{t}"
    );
    let t = validate_error(&PIPE.replace(
        "    inputs: {volume: ph.volume}",
        "    input: {volume: ph.volume}",
    ));
    assert!(
        t.contains("unknown node key `input` (did you mean `inputs`?)"),
        "{t}"
    );
}

#[test]
fn unknown_node_type_lists_available() {
    let t = validate_error(&PIPE.replace("plugin: normalize", "plugin: normalise"));
    assert!(
        t.contains("wf.yaml:14:5: unknown node type `normalise` (did you mean `normalize`?)"),
        "{t}"
    );
    assert!(t.contains("available: ") && t.contains("phantom"), "{t}");
}

#[test]
fn unknown_port_and_kind_mismatch() {
    let t = validate_error(&PIPE.replace("{volume: ph.volume}", "{volume: ph.volumes}"));
    assert!(
        t.contains("has no output port `volumes` (did you mean `volume`?)"),
        "{t}"
    );
    let t = validate_error(&PIPE.replace("{volume: ph.volume}", "{volum: ph.volume}"));
    assert!(t.contains("has no input port `volum`"), "{t}");
    let t = validate_error(&PIPE.replace("{volume: ph.volume}", "{volume: ph.labels}"));
    assert!(t.contains("port kind mismatch: `ph.labels` produces `labels` but input `volume` of `normalize` takes `volume`"), "{t}");
}

#[test]
fn cycle_and_duplicates() {
    let t = validate_error(&PIPE.replace(
        "    plugin: phantom\n",
        "    plugin: phantom\n    inputs: {x: stats.metrics}\n",
    ));
    assert!(
        t.contains("cycle") && t.contains("ph") && t.contains("norm") && t.contains("stats"),
        "{t}"
    );
    let t = validate_error(&PIPE.replace("  stats:\n", "  norm:\n"));
    assert!(t.contains("`nodes.norm` is defined twice"), "{t}");
}

#[test]
fn parameter_errors() {
    // Missing required parameter.
    let t = validate_error(&PIPE.replace("      shape: [\"${params.size}\", 24, 24]\n", ""));
    assert!(t.contains("missing required parameter `shape`"), "{t}");
    // Wrong type.
    let t = validate_error(&PIPE.replace("voxel_size: 10", "voxel_size: ten"));
    assert!(t.contains("`voxel_size` must be number"), "{t}");
    // Out of range, located at the parameter.
    let t = validate_error(&PIPE.replace("voxel_size: 10", "voxel_size: -1"));
    assert!(
        t.contains("voxel_size") && (t.contains("minimum") || t.contains("greater than")),
        "{t}"
    );
    // Unknown parameter.
    let t = validate_error(&PIPE.replace("voxel_size: 10", "voxelsize: 10"));
    assert!(
        t.contains("unknown parameter `voxelsize` (did you mean `voxel_size`?)"),
        "{t}"
    );
    // Dangling substitution.
    let t = validate_error(&PIPE.replace("${params.size}", "${params.sise}"));
    assert!(
        t.contains("`${params.sise}` refers to no parameter (did you mean `size`?)"),
        "{t}"
    );
}

#[test]
fn sweep_errors() {
    let t = validate_error(&PIPE.replace(
        "nodes:",
        "sweep:\n  matrix:\n    unused: [1, 2]\n    empty: []\nnodes:",
    ));
    assert!(t.contains("sweep axis `unused` is used by no node"), "{t}");
    assert!(t.contains("sweep axis `empty` has no values"), "{t}");
}

#[test]
fn missing_and_bad_input_files() {
    let wf = "version: 1\nname: r\nnodes:\n  r:\n    plugin: mrc-read\n    params: {path: data/x.mrc}\n  s:\n    plugin: volume-stats\n    inputs: {volume: r.volume}\n";
    let t = validate_error(wf);
    assert!(t.contains("input file") && t.contains("data/x.mrc"), "{t}");

    // Not an MRC at all: fails at run time with the file named, nothing left incomplete.
    let p = Project::new();
    p.write("wf.yaml", wf);
    p.write(
        "data/x.mrc",
        "this is not an MRC file, just text that is long enough to be read as a header maybe",
    );
    let t = expect(&p, &["run", "wf.yaml"], 1);
    assert!(t.contains("x.mrc"), "{t}");

    // A truncated MRC: the header promises more data than the file holds.
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/data/real-tomograms/13pf_MT.derived_float32.mrc");
    let bytes = std::fs::read(&src).expect("../shared/data is beside the repository");
    p.write("data/x.mrc", "");
    std::fs::write(p.path().join("data/x.mrc"), &bytes[..bytes.len() / 2]).unwrap();
    let t = expect(&p, &["run", "wf.yaml"], 1);
    assert!(
        t.contains("x.mrc")
            && (t.contains("truncated") || t.contains("holds only") || t.contains("bytes")),
        "{t}"
    );
    expect(&p, &["verify"], 0);
}

const FAULTY: &str = r#"version: 1
name: faulty
nodes:
  a:
    plugin: noop-source
  ok1:
    plugin: noop
    inputs: {token: a.token}
  bad:
    plugin: KIND
    params: {message: "the detector caught fire", delay_ms: 100}
    inputs: {token: a.token}
  after:
    plugin: noop
    inputs: {token: bad.token}
"#;

#[test]
fn plugin_error_and_panic_stop_cleanly_and_keep_completed_work() {
    for kind in ["fail", "panic"] {
        let p = Project::new();
        p.write("wf.yaml", &FAULTY.replace("KIND", kind));
        let t = expect(&p, &["run", "wf.yaml"], 1);
        assert!(
            t.contains("node bad failed") && t.contains("the detector caught fire"),
            "{kind}: {t}"
        );
        if kind == "panic" {
            assert!(t.contains("plugin panicked"), "{t}");
        }
        assert!(t.contains("resume"), "{t}");
        // Completed nodes are cached on the rerun; the failing one fails again.
        let t = expect(&p, &["run", "wf.yaml"], 1);
        let row = |id: &str| {
            t.lines()
                .find(|l| l.starts_with(&format!("{id} ")))
                .unwrap_or("")
                .to_string()
        };
        assert!(row("a").contains("cached"), "{t}");
        assert!(row("ok1").contains("cached"), "{t}");
        assert!(
            row("after").contains("skipped") || row("after").contains("cancelled"),
            "{t}"
        );
        expect(&p, &["verify"], 0);
        let runs = expect(&p, &["runs"], 0);
        assert!(runs.contains("failed"), "{runs}");
    }
}

#[test]
fn cached_rerun_plan_and_explain() {
    let p = Project::new();
    p.write("wf.yaml", PIPE);
    expect(&p, &["run", "wf.yaml"], 0);
    let first = std::fs::read(p.path().join("out/norm.mrc")).unwrap();
    let t = expect(&p, &["run", "wf.yaml"], 0);
    assert!(t.contains("0 ran, 5 cached"), "{t}");
    let t = expect(&p, &["plan", "wf.yaml", "--set", "size=20"], 0);
    assert!(t.contains("param shape: [16,24,24] -> [20,24,24]"), "{t}");
    assert!(t.contains("upstream of input `volume` changed"), "{t}");
    assert!(t.contains("5 of 5 node instances will run"), "{t}");
    let t = expect(&p, &["explain", "wf.yaml", "ph"], 0);
    assert!(t.contains("key:") && t.contains("cached"), "{t}");
    // Another parameter value and back: the first result comes back from the store.
    expect(&p, &["run", "wf.yaml", "--set", "size=20"], 0);
    assert_ne!(std::fs::read(p.path().join("out/norm.mrc")).unwrap(), first);
    let t = expect(&p, &["run", "wf.yaml"], 0);
    assert!(t.contains("3 cached"), "only the exports rerun: {t}");
    assert_eq!(std::fs::read(p.path().join("out/norm.mrc")).unwrap(), first);
    let g = expect(&p, &["graph", "wf.yaml", "--format", "mermaid"], 0);
    assert!(
        g.starts_with("flowchart LR") && g.contains("-- volume -->"),
        "{g}"
    );
    let g = expect(&p, &["graph", "wf.yaml"], 0);
    assert!(g.starts_with("digraph"), "{g}");
}

const SWEEP: &str = r#"version: 1
name: sweep
params: {seed: 1}
sweep:
  matrix:
    size: [8, 12]
    inv: [false, true]
  name: "s{size}-inv{inv}"
nodes:
  ph:
    plugin: phantom
    params: {shape: ["${sweep.size}", 16, 16], objects: [{kind: sphere, center: [0, 0, 0], radius: 30, density: 1.0}]}
  norm:
    plugin: normalize
    params: {invert: "${sweep.inv}"}
    inputs: {volume: ph.volume}
  stats:
    plugin: volume-stats
    inputs: {volume: norm.volume}
exports:
  - {from: stats.metrics, to: "out/{instance}/stats.json"}
"#;

#[test]
fn sweep_shares_upstream_and_reruns_only_what_changed() {
    let p = Project::new();
    p.write("wf.yaml", SWEEP);
    let t = expect(&p, &["run", "wf.yaml", "--jobs", "2"], 0);
    // 2 phantoms (size axis only), 4 normalize, 4 stats, 4 exports.
    assert!(t.contains("14 ran, 0 cached"), "{t}");
    assert!(p.path().join("out/s12-invtrue/stats.json").exists());
    // Change the second value of the `size` axis: its instances rerun, size 8 stays cached.
    p.write("wf.yaml", &SWEEP.replace("size: [8, 12]", "size: [8, 10]"));
    let t = expect(&p, &["run", "wf.yaml"], 0);
    assert!(t.contains("7 ran, 7 cached"), "{t}");
}

#[test]
fn second_concurrent_run_is_refused() {
    let p = Project::new();
    p.write(
        "wf.yaml",
        "version: 1\nname: slow\nnodes:\n  ph:\n    plugin: phantom\n    params: {shape: [8, 8, 8], slab: 1}\n  p:\n    plugin: pass\n    params: {sleep_ms: 200}\n    inputs: {volume: ph.volume}\n",
    );
    let mut first = p.cmd(&["run", "wf.yaml", "-q"]).spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(400));
    let t = expect(&p, &["run", "wf.yaml"], 2);
    assert!(t.contains("in use by another tomoflow run"), "{t}");
    assert!(first.wait().unwrap().success());
    // Nothing was corrupted, and the work of the first run is reused, not recomputed: by the
    // same workflow and by another one that shares its source node.
    let t = expect(&p, &["verify"], 0);
    assert!(t.contains("all manifests match their data"), "{t}");
    let t = expect(&p, &["run", "wf.yaml"], 0);
    assert!(t.contains("0 ran, 2 cached"), "{t}");
    p.write(
        "other.yaml",
        "version: 1\nname: other\nnodes:\n  ph:\n    plugin: phantom\n    params: {shape: [8, 8, 8], slab: 1}\n  s:\n    plugin: volume-stats\n    inputs: {volume: ph.volume}\n",
    );
    let t = expect(&p, &["run", "other.yaml"], 0);
    assert!(t.contains("1 ran, 1 cached"), "{t}");
}

const SLOW: &str = r#"version: 1
name: slow
params: {seed: 9}
nodes:
  ph:
    plugin: phantom
    params:
      shape: [24, 32, 32]
      slab: 2
      random_spheres: {count: 6, radius_min: 20, radius_max: 40, density: 1.0, label: 1}
  p1:
    plugin: pass
    params: {sleep_ms: 40}
    inputs: {volume: ph.volume}
  norm:
    plugin: normalize
    inputs: {volume: p1.volume}
  p2:
    plugin: pass
    params: {sleep_ms: 40}
    inputs: {volume: norm.volume}
  stats:
    plugin: volume-stats
    inputs: {volume: p2.volume}
exports:
  - {from: p2.volume, to: out/vol.mrc}
  - {from: ph.labels, to: out/labels.mrc}
  - {from: stats.metrics, to: out/stats.json}
"#;

fn outputs(dir: &Path) -> Vec<(String, Vec<u8>)> {
    ["out/vol.mrc", "out/labels.mrc", "out/stats.json"]
        .iter()
        .map(|f| {
            (
                f.to_string(),
                std::fs::read(dir.join(f)).unwrap_or_default(),
            )
        })
        .collect()
}

#[test]
fn sigkill_at_any_moment_then_rerun_gives_identical_exports() {
    let reference = Project::new();
    reference.write("wf.yaml", SLOW);
    expect(&reference, &["run", "wf.yaml"], 0);
    let want = outputs(reference.path());
    assert!(want.iter().all(|(_, b)| !b.is_empty()));

    let p = Project::new();
    p.write("wf.yaml", SLOW);
    // Deterministic "random" kill moments spread over the run (~1 s uninterrupted).
    let mut state = 0x9e3779b97f4a7c15u64;
    for round in 0..4 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let ms = 100 + state % 900;
        let mut child = p.cmd(&["run", "wf.yaml", "-q"]).spawn().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(ms));
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        let v = expect(&p, &["verify"], 0);
        assert!(v.contains("all manifests match"), "round {round}: {v}");
    }
    expect(&p, &["run", "wf.yaml"], 0);
    assert_eq!(
        outputs(p.path()),
        want,
        "exports after kills and a rerun equal the uninterrupted run"
    );
    let t = expect(&p, &["run", "wf.yaml"], 0);
    assert!(t.contains("0 ran"), "{t}");
    let t = expect(&p, &["runs"], 0);
    assert!(t.contains("interrupted") || t.contains("ok"), "{t}");
}

#[test]
fn gc_removes_only_unreferenced_entries() {
    let p = Project::new();
    p.write("wf.yaml", PIPE);
    expect(&p, &["run", "wf.yaml", "--set", "size=8"], 0);
    expect(&p, &["run", "wf.yaml"], 0);
    let t = expect(&p, &["gc", "--dry-run"], 0);
    assert!(t.contains("would free 5 entries"), "{t}");
    // Each entry is named by the node instance that made it, with its size.
    let lines: Vec<&str> = t
        .lines()
        .filter(|l| l.starts_with("would remove store/"))
        .collect();
    assert_eq!(lines.len(), 5, "{t}");
    assert!(
        lines
            .iter()
            .all(|l| l.contains(": output of ") && l.ends_with('B')),
        "{t}"
    );
    let t = expect(&p, &["gc"], 0);
    assert!(t.contains("freed 5 entries"), "{t}");
    // `runs` lists date, status and command; `runs N` one run with its parameters.
    let t = expect(&p, &["runs"], 0);
    assert!(t.contains("started (UTC)"), "{t}");
    assert!(t.contains("tomoflow run wf.yaml --set size=8"), "{t}");
    let t = expect(&p, &["runs", "1"], 0);
    assert!(
        t.contains("run 1\n") && t.contains("params    size=8"),
        "{t}"
    );
    assert!(t.contains("status    ok") && t.contains(" UTC ("), "{t}");
    let t = expect(&p, &["runs", "99"], 2);
    assert!(t.contains("no run 99") && t.contains("runs: 1, 2"), "{t}");
    let t = expect(&p, &["run", "wf.yaml"], 0);
    assert!(t.contains("0 ran, 5 cached"), "{t}");
}

#[test]
fn help_teaches_with_examples() {
    let p = Project::new();
    let t = expect(&p, &["--help"], 0);
    assert!(
        t.contains("Examples:") && t.contains("tomoflow run workflows/quickstart.yaml"),
        "{t}"
    );
    let t = expect(&p, &["plugins", "phantom"], 0);
    assert!(
        t.contains("outputs:") && t.contains("labels") && t.contains("voxel_size"),
        "{t}"
    );
}

/// Input files named in parameters are part of the cache key by content, lists of them too.
#[test]
fn input_files_are_keyed_by_content_also_in_lists() {
    let p = Project::new();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/real-tomograms/13pf_MT.tif");
    std::fs::copy(&src, p.path().join("a.tif")).unwrap();
    std::fs::copy(&src, p.path().join("b.tif")).unwrap();
    p.write(
        "wf.yaml",
        "version: 1\nname: files\nparams: {seed: 1}\nnodes:\n  bg:\n    plugin: noise-empirical\n    params: {path: a.tif, more_paths: [b.tif], shape: [8, 16, 16]}\n",
    );
    expect(&p, &["run", "wf.yaml"], 0);
    let t = expect(&p, &["plan", "wf.yaml"], 0);
    assert!(t.contains("0 of 1 node instances will run"), "{t}");
    // Same path, new content: the list entry's hash changes and the node reruns.
    let mut b = std::fs::read(p.path().join("b.tif")).unwrap();
    let n = b.len();
    b[n - 100] ^= 0x55;
    std::fs::write(p.path().join("b.tif"), b).unwrap();
    let t = expect(&p, &["plan", "wf.yaml"], 0);
    assert!(t.contains("input file `more_paths.0` changed"), "{t}");
}

/// `node.port[*]` gathers every instance of a swept node into one input port, each message
/// tagged with the instance it came from; the gathering node is not swept itself.
#[test]
fn gather_collects_every_sweep_instance_on_one_port() {
    let p = Project::new();
    p.write(
        "wf.yaml",
        &SWEEP.replace(
            "exports:",
            "  summary:\n    plugin: json-write\n    params: {path: out/summary.json}\n    inputs: {metrics: \"stats.metrics[*]\"}\nexports:",
        ),
    );
    let t = expect(&p, &["run", "wf.yaml"], 0);
    assert!(
        t.lines().any(|l| l.starts_with("summary ")),
        "one summary instance, not swept: {t}"
    );
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(p.path().join("out/summary.json")).unwrap()).unwrap();
    let items = v.as_array().expect("an array of the gathered messages");
    assert_eq!(items.len(), 4, "{v}");
    let mut labels: Vec<&str> = items
        .iter()
        .map(|m| m["gather"]["instance"].as_str().unwrap())
        .collect();
    labels.sort();
    assert_eq!(
        labels,
        ["s12-invfalse", "s12-invtrue", "s8-invfalse", "s8-invtrue"]
    );
    assert!(
        items.iter().all(|m| m["mean"].is_number()),
        "the metrics themselves are kept: {v}"
    );
    // Changing one swept value reruns the summary (its key lists every gathered input).
    p.write(
        "wf.yaml",
        &std::fs::read_to_string(p.path().join("wf.yaml"))
            .unwrap()
            .replace("size: [8, 12]", "size: [8, 10]"),
    );
    let t = expect(&p, &["plan", "wf.yaml"], 0);
    let row = t.lines().find(|l| l.starts_with("summary ")).unwrap_or("");
    assert!(row.contains("run"), "{t}");
}

/// A shared source feeding replicates that a node with the source's own (empty) coordinates
/// gathers, next to the source: the gatherer must not share the source's pipeline (it would wait
/// on itself). Regression test: this once ended "ok" with nothing run.
#[test]
fn gathering_next_to_a_shared_source_runs_everything() {
    let p = Project::new();
    p.write(
        "wf.yaml",
        r#"version: 1
name: gather-shared
nodes:
  source: {plugin: noop-source}
  rep:
    plugin: noop
    repeat: 3
    inputs: {token: source.token}
  join:
    plugin: noop-join
    inputs: {a: source.token, b: "rep.token[*]"}
  after:
    plugin: noop
    inputs: {token: join.token}
"#,
    );
    let t = expect(&p, &["run", "wf.yaml"], 0);
    assert!(t.contains("6 ran"), "{t}");
    for n in ["source", "rep[rep=0]", "rep[rep=2]", "join", "after"] {
        let row = t
            .lines()
            .find(|l| l.starts_with(&format!("{n} ")))
            .unwrap_or("");
        assert!(row.contains(" ran "), "{n}: {t}");
    }
}

/// In-tree plugins carry a build id hashed from their sources (`tomoflow-build-id`), not the
/// library file's: relinking the same code (as `cargo build -p` and `cargo test` do, with other
/// feature sets) must not discard cached results.
#[test]
fn in_tree_plugins_have_source_build_ids() {
    let p = Project::new();
    let t = expect(&p, &["plugins", "--json"], 0);
    let v: serde_json::Value = serde_json::from_str(&t).unwrap();
    let in_tree = [
        "io",
        "noise",
        "picking",
        "placement",
        "recon",
        "testkit",
        "tilt",
        "unet",
    ];
    let libs: Vec<&serde_json::Value> = v
        .as_array()
        .expect("a list of libraries")
        .iter()
        .filter(|l| in_tree.contains(&l["name"].as_str().unwrap_or("")))
        .collect();
    let mut ids = std::collections::BTreeSet::new();
    for l in &libs {
        let id = l["build_id"].as_str().unwrap();
        assert!(
            id.len() == 36
                && id.starts_with("src-")
                && id[4..].bytes().all(|b| b.is_ascii_hexdigit()),
            "{}: build id {id}",
            l["name"]
        );
        ids.insert(id.to_string());
    }
    assert_eq!(libs.len(), in_tree.len(), "{t}");
    assert_eq!(ids.len(), libs.len(), "one id per plugin");
}

/// A damaged store entry: `verify` names it and says how to repair; `verify --repair` removes
/// it; the rerun redoes it and everything verifies again. Incomplete entries are counted apart.
#[test]
fn verify_repair_removes_damaged_entries_so_they_are_redone() {
    let p = Project::new();
    p.write(
        "wf.yaml",
        "version: 1\nname: rep\nnodes:\n  ph:\n    plugin: phantom\n    params: {shape: [64, 64, 64]}\n  s:\n    plugin: volume-stats\n    inputs: {volume: ph.volume}\n",
    );
    expect(&p, &["run", "wf.yaml"], 0);
    // Flip bytes in the phantom's stored chunk, and leave an incomplete entry behind.
    let store = p.path().join(".tomoflow/store");
    let msg = walk(&store)
        .into_iter()
        .find(|f| f.extension().is_some_and(|e| e == "msg"))
        .expect("a stored message file");
    let mut b = std::fs::read(&msg).unwrap();
    let n = b.len();
    b[n / 2] ^= 0xff;
    std::fs::write(&msg, b).unwrap();
    std::fs::create_dir_all(store.join("0000incomplete")).unwrap();
    let t = expect(&p, &["verify"], 1);
    assert!(
        t.contains("corrupt: ") && t.contains("verify --repair"),
        "{t}"
    );
    assert!(
        t.contains("in 1 of 2 complete entries; 1 incomplete"),
        "{t}"
    );
    let t = expect(&p, &["verify", "--repair"], 0);
    assert!(t.contains("removed "), "{t}");
    let t = expect(&p, &["run", "wf.yaml"], 0);
    assert!(t.contains("1 ran, 1 cached") || t.contains("2 ran"), "{t}");
    let t = expect(&p, &["verify"], 0);
    assert!(t.contains("2 complete store entries checked"), "{t}");
}

fn walk(d: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(d).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
