//! What the command line tells a person: how to resume an interrupted run, `run --dry-run`,
//! and readers that recognise a file of another format.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A workflow that takes a few seconds: 8 slabs through a node that sleeps 400 ms per slab.
const SLOW: &str = "version: 1\nname: slow\nnodes:\n  ph:\n    plugin: phantom\n    params: {shape: [8, 8, 8], slab: 1}\n  p:\n    plugin: pass\n    params: {sleep_ms: 400}\n    inputs: {volume: ph.volume}\nexports:\n  - {from: p.volume, to: out/p.mrc}\n";

fn project(wf: &str) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("wf.yaml"), wf).unwrap();
    d
}

fn tomoflow_in(dir: &std::path::Path) -> Command {
    let mut c = common::tomoflow();
    c.current_dir(dir);
    c
}

#[test]
fn an_interrupted_run_says_how_to_resume_and_resumes() {
    for (signal, code) in [("-INT", 130), ("-TERM", 143)] {
        let d = project(SLOW);
        let child = tomoflow_in(d.path())
            .args(["run", "wf.yaml"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Wait until the run holds the store, then interrupt it.
        let start = Instant::now();
        while !d.path().join(".tomoflow/lock.info").exists() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "the run never started"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(500));
        let kill = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .unwrap();
        assert!(kill.success());
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{err}");
        assert!(
            err.contains("run the same command again to resume:") && err.contains("run wf.yaml"),
            "{err}"
        );
        assert!(!d.path().join("out/p.mrc").exists());
        // The same command then finishes the run.
        let o = tomoflow_in(d.path())
            .args(["run", "wf.yaml"])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert!(d.path().join("out/p.mrc").is_file());
    }
}

#[test]
fn run_dry_run_plans_and_runs_nothing() {
    let d = project(SLOW);
    let o = tomoflow_in(d.path())
        .args(["run", "--dry-run", "wf.yaml"])
        .output()
        .unwrap();
    let t = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(t.contains("never ran"), "{t}");
    assert!(!d.path().join("out/p.mrc").exists());
    let o = tomoflow_in(d.path())
        .args(["plan", "wf.yaml"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout), t, "the same as `plan`");
}

#[test]
fn readers_say_what_a_file_of_another_format_is() {
    let tif = common::workspace().join("data/real-tomograms/13pf_MT.tif");
    let d = project(&format!(
        "version: 1\nname: w\nnodes:\n  t:\n    plugin: mrc-read\n    params: {{path: {}}}\n",
        tif.display()
    ));
    let o = tomoflow_in(d.path())
        .args(["run", "wf.yaml"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("is a TIFF image (read it with tiff-read), not an MRC file"),
        "{err}"
    );
    // And the other way round: an MRC file handed to tiff-read.
    let mrc = d.path().join("x.mrc");
    let mut header = vec![0u8; 1024 + 8];
    for (i, v) in [2i32, 2, 2, 0].iter().enumerate() {
        header[4 * i..4 * i + 4].copy_from_slice(&v.to_le_bytes());
    }
    header[208..212].copy_from_slice(b"MAP ");
    header[212] = 0x44;
    std::fs::write(&mrc, &header).unwrap();
    std::fs::write(
        d.path().join("wf.yaml"),
        "version: 1\nname: w\nnodes:\n  t:\n    plugin: tiff-read\n    params: {path: x.mrc, voxel_size: 10}\n",
    )
    .unwrap();
    let o = tomoflow_in(d.path())
        .args(["run", "wf.yaml"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("is an MRC file (read it with mrc-read), not a TIFF file"),
        "{err}"
    );
}

/// The run report: outcome and description first, then each export under its node's `doc:`,
/// numbers rounded, then the provenance (command, parameters, plugins with build ids, nodes,
/// the workflow text); a rerun that ran nothing keeps the report of the run that made the results.
#[test]
fn the_report_shows_results_then_provenance_and_survives_a_cached_rerun() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("wf.yaml"),
        r#"version: 1
name: report-check
description: a phantom and its statistics
params: {vs: 3.3333333}
nodes:
  p:
    doc: a small phantom, central slices
    plugin: phantom
    params: {shape: [16, 32, 32], voxel_size: "${params.vs}"}
  st:
    plugin: volume-stats
    inputs: {volume: p.volume}
exports:
  - {from: p.volume, to: out/p.png}
  - {from: st.metrics, to: out/st.json}
"#,
    )
    .unwrap();
    let run = |args: &[&str]| {
        let o = common::run(common::tomoflow().current_dir(dir.path()).args(args));
        assert!(o.status.success(), "{}", common::text(&o));
        common::text(&o)
    };
    run(&["run", "wf.yaml", "--set", "vs=2.5"]);
    let html = std::fs::read_to_string(dir.path().join("out/report.html")).unwrap();
    let at = |s: &str| {
        html.find(s)
            .unwrap_or_else(|| panic!("no {s:?} in the report"))
    };
    assert!(at("run 1, completed") < at("a phantom and its statistics"));
    assert!(at("a phantom and its statistics") < at("<h2>Results</h2>"));
    assert!(
        at("<h2>Results</h2>") < at("<p class=\"caption\">a small phantom, central slices</p>")
    );
    assert!(at("<h2>Results</h2>") < at("<h2>Provenance</h2>"));
    assert!(html.contains("<tr><th>parameters set</th><td>vs=2.5</td></tr>"));
    assert!(html.contains("<td>io</td><td>0.1.0</td><td>src-"));
    assert!(html.contains("<td>st</td><td>volume-stats</td><td class=\"ran\">ran</td>"));
    assert!(html.contains("<details><summary>Workflow file</summary><pre>version: 1"));
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "nothing fetched at view time"
    );
    // Everything cached: the report of run 1 stays.
    let t = run(&["run", "wf.yaml", "--set", "vs=2.5"]);
    assert!(t.contains("kept: nothing ran"), "{t}");
    let again = std::fs::read_to_string(dir.path().join("out/report.html")).unwrap();
    assert_eq!(again, html);
}

/// The report never overwrites a file tomoflow did not write.
#[test]
fn the_report_leaves_a_users_own_report_alone() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("out")).unwrap();
    std::fs::write(dir.path().join("out/report.md"), "# my own notes\n").unwrap();
    std::fs::write(
        dir.path().join("wf.yaml"),
        "version: 1\nname: mine\nnodes:\n  p:\n    plugin: phantom\n    params: {shape: [4, 4, 4]}\nexports:\n  - {from: p.volume, to: out/p.png}\n",
    )
    .unwrap();
    let o = common::run(
        common::tomoflow()
            .current_dir(dir.path())
            .args(["run", "wf.yaml"]),
    );
    assert!(o.status.success(), "{}", common::text(&o));
    assert!(
        common::text(&o).contains("was not written by tomoflow"),
        "{}",
        common::text(&o)
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("out/report.md")).unwrap(),
        "# my own notes\n"
    );
    assert!(!dir.path().join("out/report.html").exists());
    assert!(dir.path().join("out/p.png").is_file());
}
