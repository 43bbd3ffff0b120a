//! `picks-read` end to end: real expert annotations (EMPIAR-10164, ../shared/data) read in two
//! layouts agree pick for pick, and pick files written by the reference Python tools (`starfile`,
//! `copick`, a Dynamo-style table from numpy) read back where they were put.

use std::path::Path;

mod common;

fn run_workflow(dir: &Path, wf: &str) -> std::process::Output {
    std::fs::write(dir.join("wf.yaml"), wf).unwrap();
    common::run(
        common::tomoflow()
            .current_dir(dir)
            .args(["run", "wf.yaml"])
            .env("TOMOFLOW_LOG", "warn"),
    )
}

fn metrics(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn real_annotations_in_copick_and_csv_agree() {
    let hiv = common::workspace().join("../shared/data/real-annotated/hiv_vlp_empiar10164");
    if !hiv.exists() {
        eprintln!("skipped: {} is missing", hiv.display());
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let wf = format!(
        r#"version: 1
name: real-annotations
params:
  hiv: {hiv}
  centre: [{{name: hiv-vlp-center, label: 1, radius: 470}}]
  gag: [{{name: hiv-gag-hexamer, label: 2, radius: 40}}]
  geometry: {{voxel_size: 40.0, shape: [101, 135, 135]}}
nodes:
  centres_copick:
    plugin: picks-read
    params: {{path: "${{params.hiv}}/picks_hiv-vlp-center.copick.derived.json", classes: "${{params.centre}}", voxel_size: 40.0, shape: [101, 135, 135]}}
  centres_csv:
    plugin: picks-read
    params: {{path: "${{params.hiv}}/vlp_centers.derived.csv", columns: [x_A, y_A, z_A], unit: angstrom, classes: "${{params.centre}}",
              voxel_size: 40.0, shape: [101, 135, 135], tomogram: EMPIAR-10164_TS_01}}
  gag_copick:
    plugin: picks-read
    params: {{path: "${{params.hiv}}/picks_hiv-gag.copick.derived.json", classes: "${{params.gag}}", voxel_size: 40.0, shape: [101, 135, 135]}}
  gag_csv:
    plugin: picks-read
    params: {{path: "${{params.hiv}}/gag_positions.derived.csv", columns: [x_vox40, y_vox40, z_vox40], unit: voxel, classes: "${{params.gag}}",
              voxel_size: 40.0, shape: [101, 135, 135], tomogram: EMPIAR-10164_TS_01}}
  centres:
    plugin: evaluate
    inputs: {{picks: centres_csv.particles, truth: centres_copick.particles}}
  gag:
    plugin: evaluate
    inputs: {{picks: gag_csv.particles, truth: gag_copick.particles}}
exports:
  - {{from: centres.metrics, to: out/centres.json}}
  - {{from: gag.metrics, to: out/gag.json}}
  - {{from: gag_copick.particles, to: out/gag.star}}
  - {{from: gag_copick.particles, to: out/gag.csv, params: {{layout: czii}}}}
"#,
        hiv = hiv.display()
    );
    let o = run_workflow(dir.path(), &wf);
    assert!(o.status.success(), "{}", common::text(&o));
    for (f, n) in [("centres.json", 9), ("gag.json", 5377)] {
        let m = metrics(&dir.path().join("out").join(f));
        let c = &m["classes"][0];
        assert_eq!(
            (c["tp"].as_i64(), c["fp"].as_i64(), c["fn"].as_i64()),
            (Some(n), Some(0), Some(0)),
            "{f}: {m}"
        );
    }
    // The RELION 5 export of the real picks names the run and the tomogram's size.
    let star = std::fs::read_to_string(dir.path().join("out/gag.star")).unwrap();
    assert!(
        star.contains("EMPIAR-10164_TS_01 135 135 101 40.000000"),
        "{}",
        &star[..600]
    );
    assert_eq!(
        star.lines()
            .filter(|l| l.starts_with("EMPIAR-10164_TS_01 "))
            .count(),
        5377 + 1
    );
    // evaluate.yaml gives the same scores whichever format holds the same picks.
    let wf = common::workspace().join("workflows/evaluate.yaml");
    for (picks, out) in [("out/gag.star", "e1"), ("out/gag.csv", "e2")] {
        let o = common::run(
            common::tomoflow()
                .current_dir(dir.path())
                .arg("run")
                .arg(&wf)
                .args([
                    "--set",
                    &format!("picks={picks}"),
                    "--set",
                    "truth=out/gag.star",
                ])
                .args(["--set", "voxel_size=40", "--set", &format!("out={out}")])
                .args([
                    "--set",
                    "classes=[{name: hiv-gag-hexamer, label: 2, radius: 40}]",
                ])
                .env("TOMOFLOW_LOG", "warn"),
        );
        assert!(o.status.success(), "{}", common::text(&o));
        let m = metrics(&dir.path().join(out).join("metrics.json"));
        assert_eq!(
            m["overall"]["tp"].as_i64(),
            Some(5377),
            "{picks}: {}",
            m["overall"]
        );
        assert_eq!(m["overall"]["fp"].as_i64(), Some(0), "{picks}");
    }
}

#[test]
fn a_pick_outside_the_tomogram_is_refused_with_its_row() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("p.csv"),
        "x,y,z,class\n10,10,10,ribosome\n10,90,10,ribosome\n",
    )
    .unwrap();
    let o = run_workflow(
        dir.path(),
        r#"version: 1
name: outside
nodes:
  p:
    plugin: picks-read
    params: {path: p.csv, unit: voxel, voxel_size: 10.0, shape: [20, 80, 80], classes: [{name: ribosome, label: 4, radius: 150}]}
exports:
  - {from: p.particles, to: out/p.star}
"#,
    );
    assert!(!o.status.success());
    let t = common::text(&o);
    assert!(
        t.contains("p.csv: row 2: y lies at voxel 90.00, outside tomogram \"p\""),
        "{t}"
    );
    assert!(!dir.path().join("out/p.star").exists());
}

const PY_WRITERS: &str = r#"
import sys, os, json
import numpy as np, pandas as pd, starfile
out = sys.argv[1]
# Three picks in a 40 x 60 x 80 (z, y, x) tomogram at 10 Å, voxel coordinates (x, y, z).
v = np.array([[10.0, 20.0, 5.0], [40.5, 30.25, 20.0], [70.0, 50.0, 35.0]])
cls = [1, 4, 4]
shape_xyz = np.array([80, 60, 40])
# RELION 5: centred Å coordinates and a data_global block.
c = (v - shape_xyz / 2) * 10.0
p5 = pd.DataFrame({"rlnTomoName": ["TS_py"] * 3,
                   "rlnCenteredCoordinateXAngst": c[:, 0], "rlnCenteredCoordinateYAngst": c[:, 1],
                   "rlnCenteredCoordinateZAngst": c[:, 2], "rlnAngleRot": [0.0, 30.0, 60.0],
                   "rlnAngleTilt": [0.0, 45.0, 90.0], "rlnAnglePsi": [0.0, 10.0, 20.0], "rlnClassNumber": cls})
g = pd.DataFrame({"rlnTomoName": ["TS_py"], "rlnTomoSizeX": [80], "rlnTomoSizeY": [60], "rlnTomoSizeZ": [40],
                  "rlnTomoTiltSeriesPixelSize": [2.5], "rlnTomoTomogramBinning": [4.0]})
starfile.write({"global": g, "particles": p5}, out + "/r5.star", overwrite=True)
# RELION 4: pixel coordinates.
p4 = pd.DataFrame({"rlnTomoName": ["TS_py"] * 3, "rlnCoordinateX": v[:, 0], "rlnCoordinateY": v[:, 1],
                   "rlnCoordinateZ": v[:, 2], "rlnClassNumber": cls})
starfile.write({"particles": p4}, out + "/r4.star", overwrite=True)
# Dynamo-style table: 35 columns, 1-based pixels in 24-26, class in 22, tomogram in 20.
t = np.zeros((3, 35))
t[:, 0] = np.arange(1, 4); t[:, 1] = 1; t[:, 2] = 1; t[:, 9] = 0.5; t[:, 19] = 1
t[:, 21] = cls; t[:, 23:26] = v + 1
np.savetxt(out + "/picks.tbl", t, fmt="%.4f")
# copick: a project written by the copick package itself.
import copick
from copick.impl.filesystem import CopickRootFSSpec
cfg = {"name": "t", "description": "", "version": "0.5.0", "pickable_objects": [
         {"name": "apo-ferritin", "is_particle": True, "label": 1, "radius": 60},
         {"name": "ribosome", "is_particle": True, "label": 4, "radius": 150}],
       "config_type": "filesystem", "overlay_root": "local://" + out + "/overlay",
       "static_root": "local://" + out + "/static", "overlay_fs_args": {"auto_mkdir": True}}
os.makedirs(out + "/static/ExperimentRuns", exist_ok=True)
with open(out + "/copick.json", "w") as f:
    json.dump(cfg, f)
root = copick.from_file(out + "/copick.json")
run = root.new_run("TS_py")
for name, rows in (("apo-ferritin", [0]), ("ribosome", [1, 2])):
    picks = run.new_picks(object_name=name, session_id="0", user_id="pytest")
    picks.from_numpy(v[rows] * 10.0, np.tile(np.eye(4), (len(rows), 1, 1)))
    picks.store()
print(out)
"#;

#[test]
fn files_written_by_the_python_tools_read_back() {
    let Some(py) = common::python(&["starfile", "copick", "numpy", "pandas"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let o = common::run(
        std::process::Command::new(&py)
            .args(["-c", PY_WRITERS])
            .arg(dir.path()),
    );
    assert!(
        o.status.success(),
        "python writers failed:\n{}",
        common::text(&o)
    );
    let picks_dir = walk_for(dir.path().join("overlay"), "Picks");
    let wf = format!(
        r#"version: 1
name: python-writers
params:
  classes: [{{name: apo-ferritin, label: 1, radius: 60}}, {{name: ribosome, label: 4, radius: 150}}]
nodes:
  r5: {{plugin: picks-read, params: {{path: r5.star, classes: "${{params.classes}}"}}}}
  r4: {{plugin: picks-read, params: {{path: r4.star, classes: "${{params.classes}}", voxel_size: 10.0, shape: [40, 60, 80]}}}}
  tbl: {{plugin: picks-read, params: {{path: picks.tbl, classes: "${{params.classes}}", voxel_size: 10.0, shape: [40, 60, 80], tomogram: TS_py}}}}
  cp: {{plugin: picks-read, params: {{path: "{picks}", classes: "${{params.classes}}", voxel_size: 10.0, shape: [40, 60, 80], user: pytest}}}}
exports:
  - {{from: r5.particles, to: out/r5.csv}}
  - {{from: r4.particles, to: out/r4.csv}}
  - {{from: tbl.particles, to: out/tbl.csv}}
  - {{from: cp.particles, to: out/cp.csv}}
"#,
        picks = picks_dir.display()
    );
    let o = run_workflow(dir.path(), &wf);
    assert!(o.status.success(), "{}", common::text(&o));
    let want = [
        (10.0, 20.0, 5.0, "apo-ferritin"),
        (40.5, 30.25, 20.0, "ribosome"),
        (70.0, 50.0, 35.0, "ribosome"),
    ];
    for f in ["r5", "r4", "tbl", "cp"] {
        let csv = std::fs::read_to_string(dir.path().join(format!("out/{f}.csv"))).unwrap();
        let mut got: Vec<(f64, f64, f64, String)> = csv
            .lines()
            .skip(1)
            .map(|l| {
                let c: Vec<&str> = l.split(',').collect();
                assert_eq!(c[0], "TS_py", "{f}: {l}");
                (
                    c[7].parse().unwrap(),
                    c[8].parse().unwrap(),
                    c[9].parse().unwrap(),
                    c[1].to_string(),
                )
            })
            .collect();
        got.sort_by(|a, b| a.0.total_cmp(&b.0));
        assert_eq!(got.len(), 3, "{f}: {csv}");
        for (g, w) in got.iter().zip(want) {
            assert!(
                (g.0 - w.0).abs() < 1e-3 && (g.1 - w.1).abs() < 1e-3 && (g.2 - w.2).abs() < 1e-3,
                "{f}: {g:?} vs {w:?}"
            );
            assert_eq!(g.3, w.3, "{f}");
        }
    }
}

/// The first directory named `name` under `root`.
fn walk_for(root: std::path::PathBuf, name: &str) -> std::path::PathBuf {
    let mut stack = vec![root];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                if p.file_name().is_some_and(|n| n == name) {
                    return p;
                }
                stack.push(p);
            }
        }
    }
    panic!("no {name} directory under the copick overlay");
}
