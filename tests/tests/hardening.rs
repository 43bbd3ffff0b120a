//! Hostile conditions: a full disk under the store, broken plugin libraries on the search path,
//! non-finite voxels, hostile parameters, kills at any moment. Each must end in a clear message,
//! a consistent store and, once the cause is gone, a successful rerun. docs/reliability.md.

mod common;

use std::path::Path;
use std::process::{Command, Output};

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn tomoflow(dir: &Path, args: &[&str]) -> Output {
    common::tomoflow()
        .current_dir(dir)
        .args(args)
        .env("TOMOFLOW_LOG", "warn")
        .output()
        .unwrap()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

const BIG: &str = r#"version: 1
name: big
nodes:
  ph:
    plugin: phantom
    params: {shape: [64, 64, 64], slab: 4, objects: [{kind: sphere, center: [0, 0, 0], radius: 200, density: 1.0}]}
  norm:
    plugin: normalize
    inputs: {volume: ph.volume}
exports:
  - {from: norm.volume, to: out/norm.mrc}
"#;

/// A tmpfs of a few MiB as the store: the run fails with "no space" naming the store, the store
/// stays consistent, and after space is made the rerun completes.
#[test]
fn disk_full_under_the_store() {
    if !is_root() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs as root and must run this test"
        );
        eprintln!("skipping: mounting a small tmpfs needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    std::fs::create_dir_all(&store).unwrap();
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&store)
        .status()
        .unwrap();
    assert!(st.success(), "mount tmpfs");
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(self.0).status();
        }
    }
    let _guard = Unmount(&store);
    std::fs::write(dir.path().join("wf.yaml"), BIG).unwrap();
    let s = store.to_str().unwrap();
    let o = tomoflow(dir.path(), &["--store", s, "run", "wf.yaml"]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(
        t.contains("No space left on device") && t.contains(s),
        "names the cause and the store: {t}"
    );
    assert!(!t.contains("panicked"), "{t}");
    let v = tomoflow(dir.path(), &["--store", s, "verify"]);
    assert!(
        v.status.success(),
        "store consistent after ENOSPC: {}",
        text(&v)
    );
    let st = Command::new("mount")
        .args(["-o", "remount,size=64m"])
        .arg(&store)
        .status()
        .unwrap();
    assert!(st.success(), "remount");
    let o = tomoflow(dir.path(), &["--store", s, "run", "wf.yaml"]);
    assert!(
        o.status.success(),
        "rerun after freeing space: {}",
        text(&o)
    );
    assert!(dir.path().join("out/norm.mrc").exists());
}

/// Libraries that are not tomoflow plugins, truncated ones and symlink loops on the plugin path
/// are refused or skipped with a reason, never a crash; the good plugins still load.
#[test]
fn broken_plugin_libraries_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    // A truncated copy of a real plugin library.
    let real = common::profile_dir().join("libtomoflow_testkit.so");
    let bytes = std::fs::read(&real).expect("testkit plugin is built");
    std::fs::write(plugins.join("libtruncated.so"), &bytes[..bytes.len() / 3]).unwrap();
    // Not a library at all.
    std::fs::write(plugins.join("libnotes.so"), "just text").unwrap();
    // A symlink loop.
    std::os::unix::fs::symlink(plugins.join("libloop.so"), plugins.join("libloop.so")).unwrap();
    std::os::unix::fs::symlink(&plugins, plugins.join("again")).unwrap();
    let p = plugins.to_str().unwrap();
    let o = tomoflow(dir.path(), &["--plugin-path", p, "plugins"]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(
        t.contains("refused:") && t.contains("libtruncated.so"),
        "{t}"
    );
    assert!(t.contains("libnotes.so"), "{t}");
    assert!(
        t.contains("noop-source"),
        "the good plugins still load: {t}"
    );
    // A truncated library given explicitly as a file.
    let o = tomoflow(
        dir.path(),
        &["--plugin-path", &format!("{p}/libtruncated.so"), "plugins"],
    );
    assert!(text(&o).contains("truncated library"), "{}", text(&o));
}

/// NaN voxels in an input MRC: a clear error by default, a documented replacement when allowed.
#[test]
fn non_finite_voxels_in_an_mrc() {
    let dir = tempfile::tempdir().unwrap();
    // Make an MRC with tomoflow, then poke NaNs into its data block.
    std::fs::write(
        dir.path().join("make.yaml"),
        "version: 1\nname: make\nnodes:\n  ph:\n    plugin: phantom\n    params: {shape: [4, 8, 8]}\nexports:\n  - {from: ph.volume, to: clean.mrc}\n",
    )
    .unwrap();
    assert!(tomoflow(dir.path(), &["run", "make.yaml"]).status.success());
    let mut b = std::fs::read(dir.path().join("clean.mrc")).unwrap();
    let nan = f32::NAN.to_le_bytes();
    let n = b.len();
    b[n - 8..n - 4].copy_from_slice(&nan);
    std::fs::write(dir.path().join("nan.mrc"), &b).unwrap();
    let wf = "version: 1\nname: read\nparams: {allow: false}\nnodes:\n  r:\n    plugin: mrc-read\n    params: {path: nan.mrc, allow_non_finite: \"${params.allow}\"}\n  s:\n    plugin: volume-stats\n    inputs: {volume: r.volume}\nexports:\n  - {from: s.metrics, to: stats.json}\n";
    std::fs::write(dir.path().join("read.yaml"), wf).unwrap();
    let o = tomoflow(dir.path(), &["run", "read.yaml"]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(
        t.contains("nan.mrc") && (t.contains("NaN") || t.contains("non-finite")),
        "{t}"
    );
    let o = tomoflow(dir.path(), &["run", "read.yaml", "--set", "allow=true"]);
    assert!(o.status.success(), "{}", text(&o));
    let stats: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("stats.json")).unwrap()).unwrap();
    assert_eq!(stats["non_finite"], 0, "replaced: {stats}");
}

/// SIGKILL of the full quickstart at 20 seeded moments, rerunning after each: the final exports
/// equal an uninterrupted run's bit for bit, no completed node ever runs again (its manifest is
/// never rewritten), and `verify` finds no manifest pointing at missing or corrupt data.
#[test]
fn quickstart_survives_twenty_kills() {
    let ws = common::workspace();
    let wf = std::fs::read_to_string(ws.join("workflows/quickstart.yaml"))
        .unwrap()
        .replace("data/", &format!("{}/data/", ws.display()))
        // Toy training and a smaller foreign tomogram so that the debug build's run stays
        // short; every node still runs.
        .replace("steps: 200 ", "steps: 30 ")
        .replace("shape: [64, 160, 160]", "shape: [48, 96, 96]");
    let exports = |dir: &Path| -> Vec<(String, Vec<u8>)> {
        let mut v = Vec::new();
        let root = dir.join("results/quickstart");
        let mut stack = vec![root.clone()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap().filter_map(|e| e.ok()) {
                let name = e.file_name().to_string_lossy().to_string();
                if e.path().is_dir() {
                    stack.push(e.path());
                } else if name == "report.md" || name == "report.html" {
                    // The run report describes each run (timings, cache hits): not an export.
                } else {
                    let rel = e.path().strip_prefix(&root).unwrap().display().to_string();
                    v.push((rel, std::fs::read(e.path()).unwrap()));
                }
            }
        }
        v.sort();
        v
    };
    let reference = tempfile::tempdir().unwrap();
    std::fs::write(reference.path().join("wf.yaml"), &wf).unwrap();
    assert!(tomoflow(reference.path(), &["run", "wf.yaml", "-q"])
        .status
        .success());
    let want = exports(reference.path());
    assert!(
        want.len() >= 8,
        "{:?}",
        want.iter().map(|w| &w.0).collect::<Vec<_>>()
    );

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("wf.yaml"), &wf).unwrap();
    // Manifests seen so far: key -> bytes. A completed node must never be redone.
    let mut done: std::collections::BTreeMap<String, Vec<u8>> = Default::default();
    let manifests = |d: &Path| -> std::collections::BTreeMap<String, Vec<u8>> {
        std::fs::read_dir(d.join(".tomoflow/store"))
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .filter_map(|e| {
                        let m = std::fs::read(e.path().join("manifest.json")).ok()?;
                        Some((e.file_name().to_string_lossy().into_owned(), m))
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut state = 0x2545F4914F6CDD1Du64;
    for round in 0..20 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        // Spread over the run (seconds in a debug build): placement, tilt series, training.
        let ms = state % 4000;
        let mut child = common::tomoflow()
            .current_dir(dir.path())
            .args(["run", "wf.yaml", "-q"])
            .env("TOMOFLOW_LOG", "error")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(ms));
        let _ = child.kill();
        let _ = child.wait();
        let now = manifests(dir.path());
        for (k, m) in &done {
            assert_eq!(
                now.get(k),
                Some(m),
                "round {round}: completed entry {k} was redone or lost"
            );
        }
        done = now;
        let v = tomoflow(dir.path(), &["verify"]);
        assert!(v.status.success(), "round {round}: {}", text(&v));
    }
    assert!(tomoflow(dir.path(), &["run", "wf.yaml", "-q"])
        .status
        .success());
    for (k, m) in &done {
        assert_eq!(
            manifests(dir.path()).get(k),
            Some(m),
            "completed entry {k} was redone"
        );
    }
    assert_eq!(
        exports(dir.path()),
        want,
        "exports after 20 kills equal the uninterrupted run's"
    );
}

/// Every numeric parameter of every node of the shipped workflows, set in turn to 0, -1, 10^12
/// and NaN: `validate` answers within seconds with "valid" or an error that names the
/// parameter, never a panic. Source nodes (no inputs) whose hostile value validates are then
/// run alone under a 4 GiB address-space limit: they finish or fail cleanly, never abort on an
/// allocation or run away (no unbounded allocation: declared sizes are checked first).
#[test]
fn hostile_parameters_give_clear_errors() {
    use serde_yaml::Value;
    let root = common::workspace();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let hostile: [(&str, Value); 4] = [
        ("0", Value::from(0)),
        ("-1", Value::from(-1)),
        ("1e12", Value::from(1_000_000_000_000i64)),
        ("nan", Value::from(f64::NAN)),
    ];
    let run_limited = |wf: &Path, cmd: &str| -> (Option<i32>, String) {
        let o = Command::new("bash")
            .current_dir(&root)
            .env("TOMOFLOW_LOG", "warn")
            .arg("-c")
            .arg(format!(
                "ulimit -v 4194304; exec timeout 60 {} --store {} -q {cmd} {}",
                common::tomoflow_exe().display(),
                store.display(),
                wf.display()
            ))
            .output()
            .unwrap();
        (o.status.code(), text(&o))
    };
    let (mut checked, mut ran, mut problems) = (0, 0, Vec::new());
    for name in [
        "quickstart.yaml",
        "simulate.yaml",
        "backgrounds.yaml",
        "swap-physics.yaml",
        "sample.yaml",
    ] {
        let base: Value = serde_yaml::from_str(
            &std::fs::read_to_string(root.join("workflows").join(name)).unwrap(),
        )
        .unwrap();
        let nodes = base["nodes"].as_mapping().unwrap().clone();
        for (id, node) in &nodes {
            let id = id.as_str().unwrap();
            let Some(params) = node.get("params").and_then(|p| p.as_mapping()) else {
                continue;
            };
            for (key, v) in params {
                let key = key.as_str().unwrap();
                let numeric = |v: &Value| v.is_number();
                let is_list = v
                    .as_sequence()
                    .is_some_and(|s| !s.is_empty() && s.iter().all(numeric));
                if !numeric(v) && !is_list {
                    continue;
                }
                for (label, h) in &hostile {
                    let value = if is_list {
                        Value::Sequence(vec![h.clone(); v.as_sequence().unwrap().len()])
                    } else {
                        h.clone()
                    };
                    let mut wf = base.clone();
                    wf["nodes"][id]["params"][key] = value;
                    let path = dir.path().join("wf.yaml");
                    std::fs::write(&path, serde_yaml::to_string(&wf).unwrap()).unwrap();
                    let what = format!("{name}: {id}.{key} = {label}");
                    let (code, out) = run_limited(&path, "validate");
                    checked += 1;
                    if out.contains("panicked") || !matches!(code, Some(0) | Some(2)) {
                        problems.push(format!("{what}: validate exit {code:?}\n{out}"));
                        continue;
                    }
                    if code == Some(2) && !out.contains(key) {
                        problems.push(format!("{what}: the error does not name `{key}`:\n{out}"));
                    }
                    // A source node whose hostile value is accepted: run it alone.
                    if code == Some(0) && node.get("inputs").is_none() {
                        let mut alone = base.clone();
                        let mut n = serde_yaml::Mapping::new();
                        n.insert(id.into(), wf["nodes"][id].clone());
                        alone["nodes"] = Value::Mapping(n);
                        alone.as_mapping_mut().unwrap().remove("exports");
                        alone.as_mapping_mut().unwrap().remove("sweep");
                        let path = dir.path().join("alone.yaml");
                        std::fs::write(&path, serde_yaml::to_string(&alone).unwrap()).unwrap();
                        let (code, out) = run_limited(&path, "run");
                        ran += 1;
                        if out.contains("panicked") || !matches!(code, Some(0) | Some(1) | Some(2))
                        {
                            problems.push(format!("{what}: run alone exit {code:?}\n{out}"));
                        }
                    }
                }
            }
        }
    }
    assert!(
        checked > 100,
        "only {checked} hostile variants were checked"
    );
    assert!(
        problems.is_empty(),
        "{} of {checked} hostile variants ({ran} run) misbehaved:\n\n{}",
        problems.len(),
        problems.join("\n\n")
    );
}

/// `tomoflow` with a deadline: a run that hangs fails the test instead of the test run.
fn tomoflow_within(dir: &Path, args: &[&str], secs: u64) -> Output {
    let mut child = common::tomoflow()
        .current_dir(dir)
        .args(args)
        .env("TOMOFLOW_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t0.elapsed().as_secs() > secs {
            let _ = child.kill();
            let o = child.wait_with_output().unwrap();
            panic!("tomoflow {args:?} still ran after {secs} s:\n{}", text(&o));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// A NUL byte in an export path or a sweep value (which becomes an instance id, a label and a
/// thread name) is a located validation error; `run` ends at once with the same error and
/// leaves the store unlocked. (It used to panic naming a thread, then hang holding the lock.)
#[test]
fn nul_bytes_are_located_errors_not_hangs() {
    let dir = tempfile::tempdir().unwrap();
    let export = "version: 1\nname: nul\nnodes:\n  ph:\n    plugin: phantom\n    params: {shape: [4, 4, 4]}\n  st:\n    plugin: volume-stats\n    inputs: {volume: ph.volume}\nexports:\n  - {from: st.metrics, to: \"out/a\\0b.json\"}\n";
    let sweep = "version: 1\nname: nul\nsweep:\n  matrix:\n    v: [\"a\\0b\"]\nnodes:\n  src:\n    plugin: noop-source\n    params: {tag: \"${sweep.v}\"}\n";
    for (name, wf, at) in [
        ("export", export, "wf.yaml:11:"),
        ("sweep", sweep, "wf.yaml:5:"),
    ] {
        std::fs::write(dir.path().join("wf.yaml"), wf).unwrap();
        for cmd in ["validate", "run"] {
            let o = tomoflow_within(dir.path(), &[cmd, "wf.yaml"], 60);
            let t = text(&o);
            assert_eq!(o.status.code(), Some(2), "{name} {cmd}: {t}");
            assert!(t.contains(at) && t.contains("NUL"), "{name} {cmd}: {t}");
            assert!(!t.contains("panicked"), "{name} {cmd}: {t}");
        }
    }
    // The store is not left locked: a clean workflow runs.
    std::fs::write(dir.path().join("wf.yaml"), sweep.replace("a\\0b", "ab")).unwrap();
    let o = tomoflow_within(dir.path(), &["run", "wf.yaml"], 60);
    assert!(o.status.success(), "{}", text(&o));
}

/// A sweep of 10 axes × 10 values, or `repeat: 1000000`, is refused before anything is
/// expanded (it ate all memory), with the count and what makes it; the limit can be raised.
#[test]
fn instance_counts_are_capped_before_expansion() {
    let dir = tempfile::tempdir().unwrap();
    let axes: String = (0..10)
        .map(|a| format!("    a{a}: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]\n"))
        .collect();
    let uses: String = (0..10).map(|a| format!("a{a}=${{sweep.a{a}}} ")).collect();
    let matrix = format!(
        "version: 1\nname: big\nsweep:\n  matrix:\n{axes}nodes:\n  src:\n    plugin: noop-source\n    params: {{tag: \"{uses}\"}}\n"
    );
    let repeat =
        "version: 1\nname: big\nnodes:\n  src:\n    plugin: noop-source\n    repeat: 1000000\n";
    for (name, wf, want) in [
        (
            "matrix",
            matrix.as_str(),
            ["wf.yaml:4:", "10000000000 combinations", "a9: 10"],
        ),
        (
            "repeat",
            repeat,
            [
                "wf.yaml:6:",
                "1000000 node instances",
                "repeat of src: 1000000",
            ],
        ),
    ] {
        std::fs::write(dir.path().join("wf.yaml"), wf).unwrap();
        let o = Command::new("bash")
            .current_dir(dir.path())
            .arg("-c")
            .arg(format!(
                "ulimit -v 2097152; exec {} validate wf.yaml",
                common::tomoflow_exe().display()
            ))
            .env_remove("TOMOFLOW_PLUGIN_PATH")
            .output()
            .unwrap();
        let t = text(&o);
        assert_eq!(o.status.code(), Some(2), "{name}: {t}");
        for w in want {
            assert!(
                t.contains(w) && t.contains("--max-instances"),
                "{name}: `{w}` in {t}"
            );
        }
    }
    // Raising the limit lets a large count through (the flag and the environment variable).
    let few = repeat.replace("1000000", "20");
    std::fs::write(dir.path().join("wf.yaml"), &few).unwrap();
    let o = tomoflow(
        dir.path(),
        &["validate", "wf.yaml", "--max-instances", "10"],
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let o = tomoflow(
        dir.path(),
        &["validate", "wf.yaml", "--max-instances", "20"],
    );
    assert!(o.status.success(), "{}", text(&o));
    let o = common::tomoflow()
        .current_dir(dir.path())
        .args(["validate", "wf.yaml"])
        .env("TOMOFLOW_MAX_INSTANCES", "10")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}

/// Deeply nested YAML (80 KB of nested `- `, 100,000 nested `[`) is refused at once with the
/// place where it goes past the nesting limit.
#[test]
fn deep_nesting_is_refused_quickly() {
    let dir = tempfile::tempdir().unwrap();
    for (name, wf) in [
        ("block", format!("version: 1\nname: deep\nnodes:\n  a:\n    plugin: noop-source\n    params:\n      tag:\n        {}x\n", "- ".repeat(40_000))),
        ("flow", format!("version: 1\nname: deep\nnodes:\n  a:\n    plugin: noop-source\n    params: {{tag: {}}}\n", "[".repeat(100_000))),
    ] {
        std::fs::write(dir.path().join("wf.yaml"), wf).unwrap();
        let t0 = std::time::Instant::now();
        let o = tomoflow_within(dir.path(), &["validate", "wf.yaml"], 30);
        let t = text(&o);
        assert_eq!(o.status.code(), Some(2), "{name}: {t}");
        assert!(t.contains("wf.yaml:") && t.contains("nests"), "{name}: {t}");
        assert!(t0.elapsed().as_secs() < 5, "{name}: {:?}", t0.elapsed());
    }
}

/// A library the loader refuses (here: a dependency is missing) is reported with the loader's
/// own words, not only "dlopen failed".
#[test]
fn dlopen_errors_carry_the_loaders_message() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let src = dir.path().join("x.c");
    std::fs::write(&src, "int tf_dep(void) { return 1; }\n").unwrap();
    let dep = dir.path().join("libtfgone.so");
    common::cc(&["-shared", "-fPIC", "-o", dep.to_str().unwrap()], &[&src]);
    let user = dir.path().join("y.c");
    std::fs::write(
        &user,
        "int tf_dep(void);\nint tf_use(void) { return tf_dep(); }\n",
    )
    .unwrap();
    let lib = plugins.join("libneedsgone.so");
    let l = format!("-L{}", dir.path().display());
    common::cc(
        &[
            "-shared",
            "-fPIC",
            "-o",
            lib.to_str().unwrap(),
            &l,
            "-Wl,--no-as-needed",
            "-ltfgone",
        ],
        &[&user],
    );
    std::fs::remove_file(&dep).unwrap();
    let o = tomoflow(
        dir.path(),
        &["--plugin-path", plugins.to_str().unwrap(), "plugins"],
    );
    let t = text(&o);
    assert!(t.contains("libneedsgone.so"), "{t}");
    assert!(
        t.contains("libtfgone.so"),
        "names the missing dependency: {t}"
    );
}

/// A size inside the schema's range but beyond the machine's memory is a node error naming the
/// parameter and the bytes, recorded in the journal; the engine does not abort.
#[test]
fn impossible_allocations_are_node_errors() {
    let dir = tempfile::tempdir().unwrap();
    let templates = common::workspace().join("data/templates");
    std::fs::write(dir.path().join("none.json"), "{}").unwrap();
    let place = format!(
        r#"  t:
    plugin: templates
    params: {{voxel_size: 10.0, classes: [{{name: apo-ferritin, path: {}/6pxm.mrc, label: 1, radius: 60}}]}}
  s:
    plugin: place
    inputs: {{templates: t.templates}}
    params: {{shape: [4096, 4096, 4096], voxel_size: 10.0, counts: {{apo-ferritin: 1}}}}
"#,
        templates.display()
    );
    let noise = "  n:\n    plugin: noise-spectral\n    params: {model: none.json, shape: [4096, 4096, 4096]}\n";
    for (nodes, want) in [
        (place.as_str(), "place: `shape` [4096, 4096, 4096]: the potential, label, instance and occupancy volumes need 704.0 GiB"),
        (noise, "noise-spectral: `shape` [4096, 4096, 4096]: the noise volume and its spectrum need 1.2 TiB"),
    ] {
        std::fs::write(dir.path().join("wf.yaml"), format!("version: 1\nname: huge\nnodes:\n{nodes}")).unwrap();
        let o = tomoflow_within(dir.path(), &["run", "wf.yaml"], 120);
        let t = text(&o);
        assert_eq!(o.status.code(), Some(1), "{t}");
        assert!(t.contains(want), "{t}");
        assert!(!t.contains("memory allocation of"), "{t}");
    }
    let runs = tomoflow_within(dir.path(), &["runs"], 30);
    assert_eq!(
        text(&runs).matches("   failed ").count(),
        2,
        "{}",
        text(&runs)
    );
}

/// A sweep value substituted into an export path cannot leave the directory the template names,
/// and two spellings of one file are one target (refused as a duplicate).
#[test]
fn export_paths_stay_where_the_template_points() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::write(
        work.join("wf.yaml"),
        r#"version: 1
name: escape
sweep:
  matrix:
    bg: ["../../x/a", ".."]
nodes:
  p:
    plugin: phantom
    vary: [bg]
    params: {shape: [4, 4, 4]}
  st:
    plugin: volume-stats
    inputs: {volume: p.volume}
exports:
  - {from: st.metrics, to: "out/{bg}.json"}
"#,
    )
    .unwrap();
    let o = tomoflow_within(&work, &["run", "wf.yaml"], 60);
    assert!(o.status.success(), "{}", text(&o));
    assert!(work.join("out/.._.._x_a.json").is_file());
    assert!(work.join("out/_.json").is_file());
    assert!(
        !dir.path().join("x").exists(),
        "a file was written outside out/"
    );
    std::fs::write(
        work.join("dup.yaml"),
        r#"version: 1
name: dup
nodes:
  p:
    plugin: phantom
    params: {shape: [4, 4, 4]}
exports:
  - {from: p.volume, to: out/dup/./x.mrc}
  - {from: p.volume, to: out/dup/../dup/x.mrc}
"#,
    )
    .unwrap();
    let o = tomoflow_within(&work, &["validate", "dup.yaml"], 60);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("two exports write"), "{}", text(&o));
}

/// Temporary export files a killed run left (`<target>.tmp-<pid>`, the process gone) are
/// removed when the next run starts; those of a live process and other files are kept.
#[test]
fn leftover_temporaries_of_dead_runs_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("out")).unwrap();
    let dead = dir.path().join("out/p.mrc.tmp-999999999");
    let live = dir
        .path()
        .join(format!("out/p.mrc.tmp-{}", std::process::id()));
    let other = dir.path().join("out/notes.tmp-1");
    for f in [&dead, &live, &other] {
        std::fs::write(f, vec![0u8; 4096]).unwrap();
    }
    std::fs::write(
        dir.path().join("wf.yaml"),
        "version: 1\nname: left\nnodes:\n  p:\n    plugin: phantom\n    params: {shape: [4, 4, 4]}\nexports:\n  - {from: p.volume, to: out/p.mrc}\n",
    )
    .unwrap();
    let o = tomoflow_within(dir.path(), &["run", "wf.yaml"], 60);
    assert!(o.status.success(), "{}", text(&o));
    assert!(!dead.exists(), "the dead run's temporary stays");
    assert!(live.exists() && other.exists());
    assert!(dir.path().join("out/p.mrc").is_file());
}
