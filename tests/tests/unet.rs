//! End to end through the real binary: simulated tomograms -> unet-train -> model export ->
//! unet-infer -> picks. Training killed with SIGKILL after its first checkpoint and rerun ends
//! with byte-identical exports (model file and loss history); the exported model, loaded by
//! `model-read` in another workflow, reproduces the picks of the training workflow; bad inputs
//! give clear errors.

mod common;

use common::{run, text, tomoflow, workspace};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn templates() -> PathBuf {
    workspace().join("data/templates")
}

/// Training workflow at toy size; `extra_train` is appended to unet-train's params.
fn train_workflow(extra_train: &str, sample_extra: &str) -> String {
    format!(
        r#"version: 1
name: unet-e2e
params: {{seed: 5}}
nodes:
  templates:
    plugin: templates
    params:
      voxel_size: 10
      classes:
        - {{name: apo-ferritin, path: {t}/6pxm.mrc, label: 1, radius: 60, mass_kda: 474}}
        - {{name: ribosome, path: {t}/6qzp.mrc, label: 4, radius: 150, mass_kda: 4300}}
  sample:
    plugin: place
    inputs: {{templates: templates.templates}}
    repeat: 2
    params: {{shape: [32, 64, 64], voxel_size: 10, ice_thickness: 310, counts: {{apo-ferritin: 6, ribosome: 2}}{sample_extra}}}
  tilt:
    plugin: tilt-projection
    inputs: {{potential: sample.potential}}
    params: {{tilt_min: -60, tilt_max: 60, tilt_step: 4, total_dose: 120, defocus: 3.0}}
  recon:
    plugin: recon-wbp
    inputs: {{tilts: tilt.tilt_series}}
    params: {{cutoff: 0.5}}
  train:
    plugin: unet-train
    inputs: {{tomograms: "recon.tomogram[*]", labels: "sample.labels[*]", particles: "sample.particles[*]"}}
    params: {{architecture: {{widths: [4, 8]}}, patch: 16, batch: 2, steps: 30, lr: 0.003, val_every: 10, val_patches: 2, checkpoint_every: 5{extra_train}}}
  test_sample:
    plugin: place
    inputs: {{templates: templates.templates}}
    params: {{shape: [32, 64, 64], voxel_size: 10, ice_thickness: 310, counts: {{apo-ferritin: 6, ribosome: 2}}, name: TS_test}}
  test_tilt:
    plugin: tilt-projection
    inputs: {{potential: test_sample.potential}}
    params: {{tilt_min: -60, tilt_max: 60, tilt_step: 4, total_dose: 120, defocus: 3.0}}
  test_recon:
    plugin: recon-wbp
    inputs: {{tilts: test_tilt.tilt_series}}
    params: {{cutoff: 0.5}}
  segment:
    plugin: unet-infer
    inputs: {{model: train.model, tomogram: test_recon.tomogram}}
    params: {{tile: 32, stride: 16}}
  picks:
    plugin: pick-nms
    inputs: {{probabilities: segment.probabilities}}
    params: {{threshold: 0.2, min_voxels: 2}}
exports:
  - {{from: train.model, to: out/model.bpk}}
  - {{from: train.history, to: out/history.csv}}
  - {{from: train.history, to: out/history.png}}
  - {{from: test_recon.tomogram, to: out/test.mrc}}
  - {{from: picks.particles, to: out/picks.star}}
"#,
        t = templates().display()
    )
}

/// A workflow that applies `model` to `tomogram` and exports the picks to `out/picks.star`;
/// `infer_extra` and `pick_extra` are appended to unet-infer's and pick-nms's params.
fn apply_workflow(model: &Path, tomogram: &Path, infer_extra: &str, pick_extra: &str) -> String {
    format!(
        r#"version: 1
name: apply
nodes:
  model: {{plugin: model-read, params: {{path: {m}}}}}
  tomogram: {{plugin: mrc-read, params: {{path: {t}}}}}
  segment:
    plugin: unet-infer
    inputs: {{model: model.model, tomogram: tomogram.volume}}
    params: {{tile: 32, stride: 16{infer_extra}}}
  picks:
    plugin: pick-nms
    inputs: {{probabilities: segment.probabilities}}
    params: {{threshold: 0.2, min_voxels: 2{pick_extra}}}
exports:
  - {{from: picks.particles, to: out/picks.star}}
"#,
        m = model.display(),
        t = tomogram.display()
    )
}

fn setup(dir: &Path, wf: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let p = dir.join("wf.yaml");
    std::fs::write(&p, wf).unwrap();
    p
}

fn checkpoints(dir: &Path) -> Vec<PathBuf> {
    let scratch = dir.join(".tomoflow/scratch");
    let Ok(rd) = std::fs::read_dir(scratch) else {
        return vec![];
    };
    rd.flatten()
        .map(|e| e.path().join("unet-checkpoint.bin"))
        .filter(|p| p.exists())
        .collect()
}

#[test]
fn training_killed_and_resumed_equals_uninterrupted_and_the_model_reloads() {
    let tmp = tempfile::tempdir().unwrap();
    let wf = train_workflow("", "");
    // A: uninterrupted.
    let a = tmp.path().join("a");
    let wa = setup(&a, &wf);
    let out = run(tomoflow().current_dir(&a).args(["run", "-q"]).arg(&wa));
    assert!(out.status.success(), "{}", text(&out));
    let hist = std::fs::read_to_string(a.join("out/history.csv")).unwrap();
    assert_eq!(hist.lines().count(), 31, "header + 30 steps:\n{hist}");
    assert!(hist.starts_with("step,loss,lr,val_dice,val_dice_apo-ferritin,val_dice_ribosome"));
    let png = std::fs::read(a.join("out/history.png")).unwrap();
    assert_eq!(&png[1..4], b"PNG");
    // The run report next to the exports: every node, images embedded, long tables shortened.
    let html = std::fs::read_to_string(a.join("out/report.html")).unwrap();
    assert!(
        html.contains("<td>train</td><td>unet-train</td><td class=\"ran\">ran</td>"),
        "{html}"
    );
    assert!(html.contains("<img alt=\"history.png\" src=\"data:image/png;base64,iVBORw0KGgo"));
    let md = std::fs::read_to_string(a.join("out/report.md")).unwrap();
    assert!(
        md.contains("| … 9 more rows in [history.csv](history.csv) |"),
        "{md}"
    );

    // B: killed once a checkpoint exists (mid-training), then rerun.
    let b = tmp.path().join("b");
    let wb = setup(&b, &wf);
    let mut child = tomoflow()
        .current_dir(&b)
        .args(["run", "-q"])
        .arg(&wb)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while checkpoints(&b).is_empty() {
        assert!(
            t0.elapsed() < Duration::from_secs(600),
            "no checkpoint appeared"
        );
        if child.try_wait().unwrap().is_some() {
            panic!("the run ended before it could be killed");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !b.join("out/model.bpk").exists(),
        "killed before the model was exported"
    );
    let out = run(tomoflow().current_dir(&b).args(["run"]).arg(&wb));
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains("resuming from the checkpoint at step"),
        "{log}"
    );
    for f in ["model.bpk", "history.csv", "picks.star"] {
        assert_eq!(
            std::fs::read(a.join("out").join(f)).unwrap(),
            std::fs::read(b.join("out").join(f)).unwrap(),
            "{f} differs between the uninterrupted and the resumed run"
        );
    }

    // The exported model, read back in another workflow, reproduces the picks.
    let c = tmp.path().join("c");
    let apply = apply_workflow(&a.join("out/model.bpk"), &a.join("out/test.mrc"), "", "");
    let wc = setup(&c, &apply);
    let out = run(tomoflow().current_dir(&c).args(["run", "-q"]).arg(&wc));
    assert!(out.status.success(), "{}", text(&out));
    let picks_a = std::fs::read_to_string(a.join("out/picks.star")).unwrap();
    let picks_c = std::fs::read_to_string(c.join("out/picks.star")).unwrap();
    // Same rows (the tomogram name differs: the MRC file's stem).
    let rows = |s: &str| -> Vec<String> {
        s.lines()
            .filter(|l| l.split_whitespace().count() > 5)
            .map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>().join(" "))
            .collect()
    };
    assert_eq!(rows(&picks_a), rows(&picks_c));

    // The same model at another voxel size: resampled, or refused with rescale: false.
    let bad = apply.replace(
        "params: {tile: 32, stride: 16}",
        "params: {tile: 32, stride: 16, rescale: false}",
    );
    let bad = bad.replace(
        &format!(
            "{{plugin: mrc-read, params: {{path: {}}}}}",
            a.join("out/test.mrc").display()
        ),
        "{plugin: phantom, params: {shape: [16, 32, 32], voxel_size: 5}}",
    );
    let wd = setup(&tmp.path().join("d"), &bad);
    let out = run(tomoflow()
        .current_dir(tmp.path().join("d"))
        .args(["run", "-q"])
        .arg(&wd));
    let log = text(&out);
    assert!(!out.status.success());
    assert!(
        log.contains("5 Å voxels but the model was trained at 10 Å"),
        "{log}"
    );
}

#[test]
fn bad_training_inputs_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "patch",
            train_workflow("", "").replace("patch: 16", "patch: 64"),
            "patch = 64 is larger than tomogram",
        ),
        (
            "granularity",
            train_workflow("", "").replace("patch: 16", "patch: 17"),
            "patch = 17 must be a multiple of 2",
        ),
        (
            "label",
            train_workflow("", "")
                .replace(
                    r#"tomograms: "recon.tomogram[*]", labels: "sample.labels[*]", particles: "sample.particles[*]""#,
                    r#"tomograms: test_recon.tomogram, labels: other.labels, particles: test_sample.particles"#,
                )
                .replace(
                    "  train:\n",
                    "  other:\n    plugin: phantom\n    params: {shape: [32, 64, 64], voxel_size: 10, random_spheres: {count: 3, radius_min: 40, radius_max: 60, density: 1.0, label: 9}}\n  train:\n",
                ),
            "label 9 is not in the class table",
        ),
        (
            "shape",
            train_workflow("", "").replacen(
                "params: {cutoff: 0.5}",
                "params: {cutoff: 0.5, binning: 2}",
                1,
            ),
            "but its label map",
        ),
        (
            "weights",
            train_workflow(", class_weights: [1, 2]", ""),
            "class_weights lists 2 values but there are 3 classes",
        ),
    ];
    for (name, wf, want) in cases {
        let dir = tmp.path().join(name);
        let w = setup(&dir, &wf);
        let out = run(tomoflow().current_dir(&dir).args(["run", "-q"]).arg(&w));
        let log = text(&out);
        assert!(!out.status.success(), "{name}: should fail\n{log}");
        assert!(log.contains(want), "{name}: want `{want}` in\n{log}");
        assert!(!log.contains("panicked"), "{name}: {log}");
    }
}

/// `model-calibrate` stores evaluate's tuned thresholds in the model; `pick-nms` then picks with
/// them by default, exactly as with the same thresholds given by hand.
#[test]
fn a_calibrated_model_picks_with_its_thresholds() {
    let tmp = tempfile::tempdir().unwrap();
    let wf = train_workflow("", "")
        .replace(
            "params: {tile: 32, stride: 16}\n  picks:",
            "params: {tile: 32, stride: 16, name: TS_test}\n  picks:",
        )
        .replace(
            "exports:\n",
            r#"  tune:
    plugin: evaluate
    inputs: {picks: picks.particles, truth: test_sample.particles}
    params: {tune_beta: 1}
  calibrate:
    plugin: model-calibrate
    inputs: {model: train.model, thresholds: tune.thresholds}
  segment_c:
    plugin: unet-infer
    inputs: {model: calibrate.model, tomogram: test_recon.tomogram}
    params: {tile: 32, stride: 16, name: TS_test}
  picks_c:
    plugin: pick-nms
    inputs: {probabilities: segment_c.probabilities}
    params: {threshold: 0.2, min_voxels: 2}
exports:
  - {from: tune.thresholds, to: out/thresholds.json}
  - {from: calibrate.model, to: out/calibrated.bpk}
  - {from: picks_c.particles, to: out/calibrated.star}
"#,
        );
    let a = tmp.path().join("a");
    let wa = setup(&a, &wf);
    let out = run(tomoflow().current_dir(&a).args(["run"]).arg(&wa));
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("pick-nms: the model's thresholds {"), "{log}");
    let tuned: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(a.join("out/thresholds.json")).unwrap())
            .unwrap();
    let tuned = tuned["thresholds"].as_object().unwrap().clone();
    let by_hand: serde_json::Map<String, serde_json::Value> =
        tuned.into_iter().filter(|(_, v)| !v.is_null()).collect();
    assert!(!by_hand.is_empty(), "nothing tuned: {log}");
    let bpk = std::fs::read(a.join("out/calibrated.bpk")).unwrap();
    assert!(String::from_utf8_lossy(&bpk).contains("\"thresholds\":{"));
    // The uncalibrated model with the same thresholds given by hand picks the same particles.
    let c = tmp.path().join("c");
    let apply = apply_workflow(
        &a.join("out/model.bpk"),
        &a.join("out/test.mrc"),
        ", name: TS_test",
        &format!(
            ", model_thresholds: false, thresholds: {}",
            serde_json::Value::Object(by_hand)
        ),
    );
    let wc = setup(&c, &apply);
    let out = run(tomoflow().current_dir(&c).args(["run", "-q"]).arg(&wc));
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        std::fs::read_to_string(a.join("out/calibrated.star")).unwrap(),
        std::fs::read_to_string(c.join("out/picks.star")).unwrap()
    );
}
