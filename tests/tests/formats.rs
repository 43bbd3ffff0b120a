//! What tomoflow writes must open in the tools biologists use: `mrcfile` (the reference MRC
//! reader, with its validator) and `zarr` (what napari's OME-Zarr reader is built on).
//!
//! The Python interpreter comes from `TOMOFLOW_TEST_PYTHON` (`.ci/run` makes a venv with mrcfile,
//! numpy and zarr), else `python3` if it has them. Under CI a missing interpreter is a failure.

use std::process::Command;

mod common;

const WF: &str = r#"version: 1
name: formats
params: {seed: 3}
nodes:
  ph:
    plugin: phantom
    params:
      shape: [20, 30, 40]
      voxel_size: 7.5
      slab: 3
      objects: [{kind: ellipsoid, center: [0, 10, -20], radii: [40, 60, 80], density: 2.0, label: 3}]
  norm:
    plugin: normalize
    inputs: {volume: ph.volume}
exports:
  - {from: norm.volume, to: out/vol.mrc}
  - {from: ph.labels, to: out/labels.mrc}
  - {from: norm.volume, to: out/vol.ome.zarr, params: {chunk: 16}}
"#;

const CHECK: &str = r#"
import json, sys
import mrcfile, numpy as np, zarr
out = sys.argv[1]
res = {}
assert mrcfile.validate(out + "/vol.mrc", print_file=sys.stderr), "mrcfile.validate failed"
with mrcfile.open(out + "/vol.mrc", permissive=False) as m:
    d = m.data
    res["shape"] = list(d.shape)
    res["voxel"] = [float(m.voxel_size.x), float(m.voxel_size.y), float(m.voxel_size.z)]
    res["mean"] = float(d.mean())
    res["std"] = float(d.std())
    res["hdr"] = [float(m.header.dmin), float(m.header.dmax), float(m.header.dmean), float(m.header.rms)]
    res["minmax"] = [float(d.min()), float(d.max())]
with mrcfile.open(out + "/labels.mrc") as m:
    res["labels_dtype"] = str(m.data.dtype)
    res["labels_values"] = sorted(int(v) for v in np.unique(m.data))
g = zarr.open_group(out + "/vol.ome.zarr", mode="r")
ms = g.attrs["multiscales"][0]
a = g[ms["datasets"][0]["path"]]
res["zarr_shape"] = list(a.shape)
res["zarr_scale"] = ms["datasets"][0]["coordinateTransformations"][0]["scale"]
res["axes"] = [ax["name"] for ax in ms["axes"]]
with mrcfile.open(out + "/vol.mrc") as m:
    res["zarr_equals_mrc"] = bool(np.array_equal(np.asarray(a[:]), m.data))
print(json.dumps(res))
"#;

#[test]
fn mrc_and_ome_zarr_open_in_mrcfile_and_zarr() {
    let Some(py) = common::python(&["mrcfile", "zarr", "numpy"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("wf.yaml"), WF).unwrap();
    let o = common::tomoflow()
        .current_dir(dir.path())
        .args(["run", "wf.yaml", "-q"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = Command::new(&py)
        .args(["-c", CHECK])
        .arg(dir.path().join("out"))
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "python check failed:\n{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["shape"], serde_json::json!([20, 30, 40]));
    for v in r["voxel"].as_array().unwrap() {
        assert!((v.as_f64().unwrap() - 7.5).abs() < 1e-4, "{r}");
    }
    assert!(r["mean"].as_f64().unwrap().abs() < 1e-5, "normalised: {r}");
    assert!(
        (r["std"].as_f64().unwrap() - 1.0).abs() < 1e-4,
        "normalised: {r}"
    );
    let hdr = r["hdr"].as_array().unwrap();
    let mm = r["minmax"].as_array().unwrap();
    assert!(
        (hdr[0].as_f64().unwrap() - mm[0].as_f64().unwrap()).abs() < 1e-5,
        "header min: {r}"
    );
    assert!(
        (hdr[1].as_f64().unwrap() - mm[1].as_f64().unwrap()).abs() < 1e-5,
        "header max: {r}"
    );
    assert!(
        (hdr[3].as_f64().unwrap() - 1.0).abs() < 1e-3,
        "header rms = std: {r}"
    );
    assert_eq!(r["labels_dtype"], "uint16");
    assert_eq!(r["labels_values"], serde_json::json!([0, 3]));
    assert_eq!(r["zarr_shape"], serde_json::json!([20, 30, 40]));
    assert_eq!(r["zarr_scale"], serde_json::json!([7.5, 7.5, 7.5]));
    assert_eq!(r["axes"], serde_json::json!(["z", "y", "x"]));
    assert_eq!(r["zarr_equals_mrc"], true, "{r}");
}

/// `mrc-read` with `region` reads one box of a file: the same voxels as the whole file's, with
/// the origin moved to the box's first voxel; a box past the edge is refused.
#[test]
fn mrc_read_region_is_the_box_of_the_whole() {
    let dir = tempfile::tempdir().unwrap();
    let run = |wf: &str| {
        std::fs::write(dir.path().join("wf.yaml"), wf).unwrap();
        common::run(
            common::tomoflow()
                .current_dir(dir.path())
                .args(["run", "wf.yaml"])
                .env("TOMOFLOW_LOG", "warn"),
        )
    };
    let o = run(WF);
    assert!(o.status.success(), "{}", common::text(&o));
    let o = run(r#"version: 1
name: region
nodes:
  r:
    plugin: mrc-read
    params: {path: out/vol.mrc, region: {start: [3, 4, 5], shape: [10, 11, 12]}, slab: 4}
exports:
  - {from: r.volume, to: box/box.mrc}
"#);
    assert!(o.status.success(), "{}", common::text(&o));
    let (dims, vs, whole) = common::read_mrc_f32(&dir.path().join("out/vol.mrc"));
    assert_eq!(dims, [40, 30, 20]);
    let (bdims, bvs, part) = common::read_mrc_f32(&dir.path().join("box/box.mrc"));
    assert_eq!((bdims, bvs), ([12, 11, 10], vs));
    for z in 0..10 {
        for y in 0..11 {
            for x in 0..12 {
                assert_eq!(
                    part[(z * 11 + y) * 12 + x],
                    whole[((z + 3) * 30 + y + 4) * 40 + x + 5]
                );
            }
        }
    }
    // The header's origin (words 49-51, Å) moved by start x voxel size.
    let b = std::fs::read(dir.path().join("box/box.mrc")).unwrap();
    let f = |w: usize| f32::from_le_bytes(b[w * 4..w * 4 + 4].try_into().unwrap());
    assert_eq!([f(49), f(50), f(51)], [5.0 * vs, 4.0 * vs, 3.0 * vs]);
    let o = run(r#"version: 1
name: region
nodes:
  r:
    plugin: mrc-read
    params: {path: out/vol.mrc, region: {start: [15, 0, 0], shape: [10, 30, 40]}}
exports:
  - {from: r.volume, to: box/bad.mrc}
"#);
    assert!(!o.status.success());
    assert!(
        common::text(&o).contains("`region` z 15..25 does not fit the volume's 20 voxels along z"),
        "{}",
        common::text(&o)
    );
}
