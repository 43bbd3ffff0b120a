//! End to end: a small placement workflow through the real `tomoflow` binary and plugins, with
//! the particle tables checked by the tools users load them with: `starfile` (RELION 4 and 5
//! columns) and `copick` (picks JSON), plus `mrcfile` for the volumes.
//!
//! The Python interpreter comes from `TOMOFLOW_TEST_PYTHON` (`.ci/run` installs starfile and
//! copick into its venv), else `python3`. Under CI a missing package fails the test; locally the
//! Python part is skipped with a message.

mod common;

use std::path::Path;
use std::process::Command;

fn workflow(templates: &Path) -> String {
    format!(
        r#"version: 1
name: placement-e2e
params: {{seed: 7}}
nodes:
  templates:
    plugin: templates
    params:
      voxel_size: 10
      classes:
        - {{name: apo-ferritin, path: {t}/6pxm.mrc, label: 1, mass_kda: 474}}
        - {{name: thyroglobulin, path: {t}/7n4y.mrc, label: 5, mass_kda: 660}}
  sample:
    plugin: place
    inputs: {{templates: templates.templates}}
    params:
      shape: [40, 96, 128]
      voxel_size: 10
      ice_thickness: 360
      counts: {{apo-ferritin: 10, thyroglobulin: 4}}
      vesicles: {{count: 1, radius: [120, 140]}}
      name: TS_e2e
      slab: 7
exports:
  - {{from: sample.potential, to: out/potential.mrc}}
  - {{from: sample.labels, to: out/labels.mrc}}
  - {{from: sample.instances, to: out/instances.mrc}}
  - {{from: sample.particles, to: out/p5.star}}
  - {{from: sample.particles, to: out/p4.star, params: {{flavour: relion4}}}}
  - {{from: sample.particles, to: out/p.csv}}
  - {{from: sample.particles, to: out/p.tbl}}
  - {{from: sample.particles, to: out/Picks/tomoflow_0_apo-ferritin.json, params: {{object: apo-ferritin}}}}
"#,
        t = templates.display()
    )
}

const CHECK: &str = r#"
import json, sys
import numpy as np, starfile, mrcfile
from copick.models import CopickPicksFile
out = sys.argv[1]
res = {}
p5 = starfile.read(out + "/p5.star", always_dict=True)
part = p5["particles"]
for c in ["rlnTomoName", "rlnCenteredCoordinateXAngst", "rlnCenteredCoordinateYAngst", "rlnCenteredCoordinateZAngst", "rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi", "rlnClassNumber"]:
    assert c in part.columns, c
g = p5["global"]
res["size"] = [int(g["rlnTomoSizeX"][0]), int(g["rlnTomoSizeY"][0]), int(g["rlnTomoSizeZ"][0])]
p4 = starfile.read(out + "/p4.star", always_dict=True)["particles"]
for c in ["rlnTomoName", "rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ", "rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"]:
    assert c in p4.columns, c
assert "rlnCenteredCoordinateXAngst" not in p4.columns
res["n"] = len(part)
res["tomo"] = str(part["rlnTomoName"][0])
# RELION 5 centred Å == (RELION 4 px - size/2) * pixel size
res["centred_ok"] = bool(np.allclose(part["rlnCenteredCoordinateXAngst"], (p4["rlnCoordinateX"] - 128 / 2) * 10, atol=1e-3)
    and np.allclose(part["rlnCenteredCoordinateZAngst"], (p4["rlnCoordinateZ"] - 40 / 2) * 10, atol=1e-3))
res["classes"] = sorted(set(int(c) for c in part["rlnClassNumber"]))
with open(out + "/Picks/tomoflow_0_apo-ferritin.json") as f:
    picks = CopickPicksFile.model_validate(json.load(f))
res["copick_object"] = picks.pickable_object_name
res["copick_n"] = len(picks.points)
res["copick_first"] = [picks.points[0].location.x, picks.points[0].location.y, picks.points[0].location.z]
with mrcfile.open(out + "/instances.mrc", permissive=False) as m:
    ins = np.asarray(m.data)
    res["instances"] = int(len(np.unique(ins)) - 1)
    # the instance map and the table agree: apo-ferritin is a hollow shell, so look for the
    # instance within 5 voxels (50 Å, inside its 60 Å radius) of the pick
    x, y, z = [int(round(v / 10)) for v in res["copick_first"]]
    near = ins[max(z - 5, 0):z + 6, max(y - 5, 0):y + 6, max(x - 5, 0):x + 6]
    ids = np.unique(near[near > 0])
    res["instance_at_first_pick"] = int(ids[0]) if len(ids) == 1 else -len(ids)
with mrcfile.open(out + "/potential.mrc") as m:
    res["voxel"] = float(m.voxel_size.x)
print(json.dumps(res))
"#;

#[test]
fn placement_workflow_exports_load_in_starfile_and_copick() {
    let dir = tempfile::tempdir().unwrap();
    let wf = dir.path().join("wf.yaml");
    std::fs::write(&wf, workflow(&common::workspace().join("data/templates"))).unwrap();
    let o = common::tomoflow()
        .current_dir(dir.path())
        .args(["run", "wf.yaml"])
        .env("TOMOFLOW_LOG", "warn")
        .env_remove("TOMOFLOW_PLUGIN_PATH")
        .output()
        .unwrap();
    let t = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "tomoflow run failed:\n{t}");
    let out = dir.path().join("out");
    // Rust-side checks of the files
    let csv = std::fs::read_to_string(out.join("p.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 14, "{csv}");
    let tbl = std::fs::read_to_string(out.join("p.tbl")).unwrap();
    assert!(tbl.lines().all(|l| l.split_whitespace().count() == 35));
    // the same run again is fully cached and byte-identical
    let before = std::fs::read(out.join("potential.mrc")).unwrap();
    let o = common::tomoflow()
        .current_dir(dir.path())
        .args(["run", "wf.yaml"])
        .env_remove("TOMOFLOW_PLUGIN_PATH")
        .output()
        .unwrap();
    assert!(o.status.success());
    assert_eq!(before, std::fs::read(out.join("potential.mrc")).unwrap());

    let Some(py) = common::python(&["starfile", "copick", "mrcfile", "numpy"]) else {
        return;
    };
    let o = Command::new(py)
        .args(["-c", CHECK, out.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "python check failed:\n{stderr}");
    let r: serde_json::Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stdout)));
    assert_eq!(r["n"], 14, "{r}");
    assert_eq!(r["tomo"], "TS_e2e");
    assert_eq!(r["size"], serde_json::json!([128, 96, 40]));
    assert_eq!(r["centred_ok"], true, "{r}");
    assert_eq!(r["classes"], serde_json::json!([1, 5]));
    assert_eq!(r["copick_object"], "apo-ferritin");
    assert_eq!(r["copick_n"], 10);
    assert_eq!(r["instances"], 15, "14 particles + 1 vesicle: {r}");
    assert!(
        r["instance_at_first_pick"].as_u64().unwrap() > 0,
        "the first pick must fall inside its particle: {r}"
    );
    assert_eq!(r["voxel"], 10.0);
}
