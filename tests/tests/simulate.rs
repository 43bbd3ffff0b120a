//! End-to-end: phantom -> tilt series -> tomogram through the real `tomoflow` binary and the
//! `io`, `tilt` and `recon` plugins, plus the physics-swapping sweep.
//!
//! Needs `cargo build --workspace` first.

mod common;

use std::path::Path;

fn run(dir: &Path, args: &[&str]) -> String {
    let o = common::tomoflow()
        .current_dir(dir)
        .args(args)
        .env("TOMOFLOW_LOG", "warn")
        .env_remove("TOMOFLOW_PLUGIN_PATH")
        .output()
        .expect("tomoflow runs");
    let t = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(o.status.code(), Some(0), "tomoflow {args:?}:\n{t}");
    assert!(!t.contains("panicked"), "{t}");
    t
}

const WF: &str = r#"version: 1
name: sim-test
params: {seed: 3}
nodes:
  sample:
    plugin: phantom
    params:
      shape: [24, 48, 48]
      voxel_size: 10
      background: 4.5
      objects:
        - {kind: sphere, center: [0, 0, 0], radius: 80, density: 3.0}
        - {kind: sphere, center: [40, 120, -110], radius: 60, density: 3.0}
  tilt:
    plugin: tilt-projection
    inputs: {potential: sample.volume}
    params: {tilt_min: -60, tilt_max: 60, tilt_step: 6, total_dose: 120, defocus: 2.0, NOISE}
  recon:
    plugin: recon-wbp
    inputs: {tilts: tilt.tilt_series}
    params: {cutoff: 0.5}
exports:
  - {from: sample.volume, to: out/phantom.mrc}
  - {from: tilt.tilt_series, to: out/ts.st}
  - {from: recon.tomogram, to: out/tomogram.mrc}
  - {from: recon.tomogram, to: out/tomogram.png}
"#;

#[test]
fn simulate_and_reconstruct_with_exports() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::write(p.join("wf.yaml"), WF.replace("NOISE", "noise: false")).unwrap();
    run(p, &["run", "wf.yaml"]);
    let out = p.join("out");
    // Tilt stack sorted by angle with its sidecars.
    let (dims, px, _) = common::read_mrc_f32(&out.join("ts.st"));
    assert_eq!(dims, [48, 48, 21]);
    assert!((px - 10.0).abs() < 1e-4);
    let tlt = std::fs::read_to_string(out.join("ts.tlt")).unwrap();
    let angles: Vec<f64> = tlt.lines().map(|l| l.trim().parse().unwrap()).collect();
    assert_eq!(angles.len(), 21);
    assert!(angles.windows(2).all(|w| w[0] < w[1]) && angles[0] == -60.0);
    let star = std::fs::read_to_string(out.join("ts.star")).unwrap();
    assert!(star.contains("data_ts") && star.contains("_rlnTomoNominalStageTiltAngle"));
    assert_eq!(star.lines().filter(|l| l.contains("@ts.st")).count(), 21);
    let mdoc = std::fs::read_to_string(out.join("ts.st.mdoc")).unwrap();
    assert_eq!(mdoc.matches("[ZValue").count(), 21);
    // The tomogram: standard orientation, voxel size, and it resembles the phantom.
    let (dims, vs, rec) = common::read_mrc_f32(&out.join("tomogram.mrc"));
    assert_eq!(dims, [48, 48, 24]);
    assert!((vs - 10.0).abs() < 1e-4);
    let (_, _, truth) = common::read_mrc_f32(&out.join("phantom.mrc"));
    let r = common::pearson(&rec, &truth);
    assert!(r > 0.5, "tomogram vs phantom Pearson r = {r}");
    assert!(out.join("tomogram.png").exists());
    // Rerun: everything cached.
    let t = run(p, &["run", "wf.yaml"]);
    assert!(t.contains("0 ran"), "{t}");
    // The exported RELION 5 .star and SerialEM .mdoc drive a new simulation: the same angles
    // (stack order) and the same acquisition order (prior doses) come back.
    let prior = |mdoc: &str| -> Vec<f64> {
        mdoc.lines()
            .filter_map(|l| l.strip_prefix("PriorRecordDose = "))
            .map(|v| v.trim().parse().unwrap())
            .collect()
    };
    for file in ["out/ts.star", "out/ts.st.mdoc"] {
        let wf = WF
            .replace("NOISE", "noise: false")
            .replace("out/", "again/")
            .replace(
                "tilt_min: -60, tilt_max: 60, tilt_step: 6",
                &format!("tilt_file: {file}"),
            );
        std::fs::write(p.join("again.yaml"), wf).unwrap();
        run(p, &["run", "again.yaml"]);
        let again = p.join("again");
        assert_eq!(
            std::fs::read_to_string(again.join("ts.tlt")).unwrap(),
            tlt,
            "{file}"
        );
        let (a, b) = (
            prior(&std::fs::read_to_string(again.join("ts.st.mdoc")).unwrap()),
            prior(&mdoc),
        );
        assert_eq!(a.len(), 21, "{file}");
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() < 1e-3, "{file}: prior dose {x} vs {y}");
        }
        std::fs::remove_dir_all(&again).unwrap();
    }
}

/// `tilt-series-read` → `recon-wbp` on an exported series reconstructs exactly what the
/// simulation's own reconstruction gave, whichever tilt file describes the stack; mismatched
/// or incomplete metadata gives a clear error.
#[test]
fn exported_series_read_back_reconstructs_identically() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::write(p.join("wf.yaml"), WF.replace("NOISE", "noise: false")).unwrap();
    run(p, &["run", "wf.yaml"]);
    let (_, _, direct) = common::read_mrc_f32(&p.join("out/tomogram.mrc"));
    let read_wf = |tilt_file: &str, extra: &str| {
        format!(
            "version: 1\nname: read-test\nnodes:\n  ts:\n    plugin: tilt-series-read\n    \
             params: {{path: out/ts.st, tilt_file: {tilt_file}{extra}}}\n  recon:\n    plugin: recon-wbp\n    \
             inputs: {{tilts: ts.tilt_series}}\n    params: {{cutoff: 0.5, thickness: 240}}\n\
             exports:\n  - {{from: recon.tomogram, to: back/tomogram.mrc}}\n"
        )
    };
    for (file, extra) in [
        ("out/ts.star", ""),
        ("out/ts.st.mdoc", ""),
        ("out/ts.tlt", ", defocus: 2.0"),
    ] {
        std::fs::write(p.join("read.yaml"), read_wf(file, extra)).unwrap();
        run(p, &["run", "read.yaml"]);
        let (dims, vs, back) = common::read_mrc_f32(&p.join("back/tomogram.mrc"));
        assert_eq!(dims, [48, 48, 24], "{file}");
        assert!((vs - 10.0).abs() < 1e-4, "{file}");
        let worst = direct
            .iter()
            .zip(&back)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert_eq!(worst, 0.0, "{file}: largest difference {worst}");
        std::fs::remove_dir_all(p.join("back")).unwrap();
    }
    // Bad metadata: a .tlt without a defocus, a tilt file of another length, a missing stack.
    let fail = |yaml: String, want: &[&str]| {
        std::fs::write(p.join("bad.yaml"), yaml).unwrap();
        let o = common::tomoflow()
            .current_dir(p)
            .args(["run", "bad.yaml"])
            .env("TOMOFLOW_LOG", "warn")
            .env_remove("TOMOFLOW_PLUGIN_PATH")
            .output()
            .unwrap();
        let t = String::from_utf8_lossy(&o.stderr).into_owned();
        assert_ne!(o.status.code(), Some(0), "{t}");
        assert!(!t.contains("panicked"), "{t}");
        for w in want {
            assert!(t.contains(w), "expected {w:?} in:\n{t}");
        }
    };
    fail(
        read_wf("out/ts.tlt", ""),
        &["records no defocus", "`defocus`"],
    );
    std::fs::write(p.join("short.tlt"), "-6\n0\n6\n").unwrap();
    fail(
        read_wf("short.tlt", ", defocus: 2.0"),
        &["lists 3 tilts", "has 21 images"],
    );
    fail(
        read_wf("out/ts.tlt", ", defocus: 2.0").replace("out/ts.st", "out/missing.st"),
        &["missing.st"],
    );
    // A NaN pixel in the stack (image 5, the 10th pixel of its 3rd row) is named, not passed on.
    let mut bytes = std::fs::read(p.join("out/ts.st")).unwrap();
    let at = 1024 + 4 * (5 * 48 * 48 + 2 * 48 + 9);
    bytes[at..at + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    std::fs::write(p.join("nan.st"), bytes).unwrap();
    fail(
        read_wf("out/ts.tlt", ", defocus: 2.0").replace("out/ts.st", "nan.st"),
        &["nan.st", "image 5", "NaN", "(y 2, x 9)"],
    );
}

#[test]
fn noise_is_seeded_and_swap_sweep_runs() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let wf = WF
        .replace("NOISE", "noise: true")
        .replace("plugin: tilt-projection", "plugin: \"${sweep.tilt}\"")
        .replace("plugin: recon-wbp", "plugin: \"${sweep.recon}\"")
        .replace(
            "nodes:",
            "sweep:\n  matrix: {tilt: [tilt-projection, tilt-multislice], recon: [recon-wbp, recon-sirt]}\n  name: \"{tilt}-{recon}\"\nnodes:",
        )
        .replace("out/ts.st", "\"out/{tilt}/ts.st\"")
        .replace("out/tomogram.mrc", "\"out/{instance}/tomogram.mrc\"")
        .replace("out/tomogram.png", "\"out/{instance}/tomogram.png\"");
    std::fs::write(p.join("wf.yaml"), wf).unwrap();
    run(p, &["run", "wf.yaml"]);
    for inst in [
        "tilt-projection-recon-wbp",
        "tilt-projection-recon-sirt",
        "tilt-multislice-recon-wbp",
        "tilt-multislice-recon-sirt",
    ] {
        let (dims, _, rec) = common::read_mrc_f32(&p.join("out").join(inst).join("tomogram.mrc"));
        assert_eq!(dims, [48, 48, 24], "{inst}");
        assert!(rec.iter().all(|v| v.is_finite()), "{inst}");
    }
    // Shot noise at the real electron count: variance ≈ mean in the flat corners of a tilt image.
    let (_, _, st) = common::read_mrc_f32(&p.join("out/tilt-projection/ts.st"));
    let img = &st[10 * 48 * 48..11 * 48 * 48]; // the 0° image
    let corner: Vec<f64> = (0..8)
        .flat_map(|y| (0..8).map(move |x| (y, x)))
        .map(|(y, x)| img[y * 48 + x] as f64)
        .collect();
    let m = corner.iter().sum::<f64>() / corner.len() as f64;
    assert!(
        m > 100.0,
        "about dose x pixel area x zero-loss fraction electrons, got {m}"
    );
}
