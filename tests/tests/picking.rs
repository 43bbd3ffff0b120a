//! End to end: placement -> labels-to-probabilities -> pick-nms -> evaluate through the real
//! `tomoflow` binary; picks exported as STAR (checked with `starfile` when a Python with it is
//! available: `TOMOFLOW_TEST_PYTHON`; under CI a missing package fails), CZII CSV, IMOD .mod
//! (read back with a small parser here) and metrics JSON/CSV/PNG.

mod common;

use std::path::Path;
use std::process::Command;

fn workflow(templates: &Path) -> String {
    format!(
        r#"version: 1
name: picking-e2e
params: {{seed: 11}}
nodes:
  templates:
    plugin: templates
    params:
      voxel_size: 10
      classes:
        - {{name: apo-ferritin, path: {t}/6pxm.mrc, label: 1, radius: 60, mass_kda: 474}}
        - {{name: ribosome, path: {t}/6qzp.mrc, label: 4, radius: 150, mass_kda: 4300}}
        - {{name: thyroglobulin, path: {t}/7n4y.mrc, label: 5, radius: 130, mass_kda: 660}}
  sample:
    plugin: place
    inputs: {{templates: templates.templates}}
    params:
      shape: [48, 128, 128]
      voxel_size: 10
      ice_thickness: 440
      counts: {{apo-ferritin: 14, ribosome: 3, thyroglobulin: 6}}
      name: TS_e2e
      slab: 7
  probs:
    plugin: labels-to-probabilities
    inputs: {{particles: sample.particles, labels: sample.labels}}
    params: {{sigma_fraction: 0.25, peak: 0.8, noise: 0.1}}
  picks:
    plugin: pick-nms
    inputs: {{probabilities: probs.probabilities}}
    params: {{threshold: 0.5, min_voxels: 3, smooth_A: 5}}
  score:
    plugin: evaluate
    inputs: {{picks: picks.particles, truth: sample.particles}}
  matched:
    plugin: evaluate
    inputs: {{picks: picks.particles, truth: sample.particles}}
    params: {{mode: matched}}
  shrec:
    plugin: evaluate-shrec
    inputs: {{picks: picks.particles, truth: sample.particles, instances: sample.instances}}
    # apo-ferritin is a hollow shell: its centre lies 4-5 voxels from its mask
    params: {{dilation: 5}}
  tuned:
    plugin: pick-nms-tuned
    inputs: {{probabilities: probs.probabilities, thresholds: score.thresholds}}
    params: {{threshold: 0.3}}
  comps:
    plugin: pick-components
    inputs: {{probabilities: probs.probabilities}}
    params: {{threshold: 0.5, min_voxels: 3}}
  score_comps:
    plugin: evaluate
    inputs: {{picks: comps.particles, truth: sample.particles}}
exports:
  - {{from: picks.particles, to: out/picks.star}}
  - {{from: picks.particles, to: out/picks4.star, params: {{flavour: relion4}}}}
  - {{from: picks.particles, to: out/submission.csv, params: {{layout: czii}}}}
  - {{from: picks.particles, to: out/picks.mod}}
  - {{from: score.metrics, to: out/metrics.json}}
  - {{from: score.metrics, to: out/metrics.csv}}
  - {{from: score.metrics, to: out/pr.png}}
  - {{from: matched.metrics, to: out/matched.json}}
  - {{from: shrec.metrics, to: out/shrec.json}}
  - {{from: tuned.particles, to: out/tuned.csv}}
  - {{from: score_comps.metrics, to: out/components.json}}
  - {{from: probs.probabilities, to: out/probs.mrc}}
"#,
        t = templates.display()
    )
}

/// Minimal IMOD .mod reader: (object names, points per object, header max).
fn read_mod(b: &[u8]) -> (Vec<String>, Vec<Vec<[f32; 3]>>, [i32; 3]) {
    assert_eq!(&b[..8], b"IMODV1.2");
    let i32at = |o: usize| i32::from_be_bytes(b[o..o + 4].try_into().unwrap());
    let f32at = |o: usize| f32::from_be_bytes(b[o..o + 4].try_into().unwrap());
    let max = [i32at(136), i32at(140), i32at(144)];
    let nobj = i32at(148) as usize;
    let mut at = 8 + 232;
    let (mut names, mut pts) = (Vec::new(), Vec::<Vec<[f32; 3]>>::new());
    loop {
        let id = &b[at..at + 4];
        at += 4;
        match id {
            b"OBJT" => {
                let n = &b[at..at + 64];
                let end = n.iter().position(|&c| c == 0).unwrap_or(64);
                names.push(String::from_utf8_lossy(&n[..end]).into_owned());
                let flags = u32::from_be_bytes(b[at + 132..at + 136].try_into().unwrap());
                assert_eq!(flags & (1 << 9), 1 << 9, "scattered-point flag");
                pts.push(Vec::new());
                at += 176;
            }
            b"CONT" => {
                let n = i32at(at) as usize;
                at += 16;
                for _ in 0..n {
                    pts.last_mut()
                        .unwrap()
                        .push([f32at(at), f32at(at + 4), f32at(at + 8)]);
                    at += 12;
                }
            }
            b"IEOF" => break,
            other => panic!("unexpected chunk {other:?}"),
        }
    }
    assert_eq!(names.len(), nobj);
    assert_eq!(at, b.len());
    (names, pts, max)
}

#[test]
fn placement_to_picks_scores_and_exports() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("wf.yaml"),
        workflow(&common::workspace().join("data/templates")),
    )
    .unwrap();
    let o = common::run(
        common::tomoflow()
            .current_dir(dir.path())
            .args(["run", "wf.yaml"])
            .env("TOMOFLOW_LOG", "warn"),
    );
    assert!(o.status.success(), "{}", common::text(&o));
    let out = dir.path().join("out");
    // The probability maps as MRC: the most probable class's map and one per class, 48 x 128 x
    // 128 float32 (mode 2) at 10 Å, with values in [0, 1].
    for f in [
        "probs.mrc",
        "probs.apo-ferritin.mrc",
        "probs.ribosome.mrc",
        "probs.thyroglobulin.mrc",
    ] {
        let b = std::fs::read(out.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        let i32at = |o: usize| i32::from_le_bytes(b[o..o + 4].try_into().unwrap());
        let f32at = |o: usize| f32::from_le_bytes(b[o..o + 4].try_into().unwrap());
        assert_eq!(
            [i32at(0), i32at(4), i32at(8), i32at(12)],
            [128, 128, 48, 2],
            "{f}"
        );
        assert_eq!(
            b.len(),
            1024 + i32at(92) as usize + 48 * 128 * 128 * 4,
            "{f}"
        );
        assert!((f32at(40) / 128.0 - 10.0).abs() < 1e-4, "{f}: voxel size");
        assert!(
            f32at(80) > 0.5 && f32at(80) <= 1.0 && f32at(76) >= 0.0,
            "{f}: range {} .. {}",
            f32at(76),
            f32at(80)
        );
    }
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    let classes = m["classes"].as_array().unwrap();
    assert_eq!(classes.len(), 3, "{m}");
    for c in classes {
        assert!(
            c["f1"].as_f64().unwrap() >= 0.95,
            "class {}: {c}",
            c["name"]
        );
    }
    assert!(m["overall"]["f1"].as_f64().unwrap() >= 0.95);
    let n_picks = m["overall"]["tp"].as_i64().unwrap() + m["overall"]["fp"].as_i64().unwrap();
    for f in ["matched.json", "shrec.json"] {
        let m: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join(f)).unwrap()).unwrap();
        assert!(
            m["overall"]["f1"].as_f64().unwrap() >= 0.95,
            "{f}: {}",
            m["overall"]
        );
    }
    let comps: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("components.json")).unwrap())
            .unwrap();
    assert!(
        comps["overall"]["recall"].as_f64().unwrap() >= 0.9,
        "components: {}",
        comps["overall"]
    );
    // the picker with thresholds tuned by evaluate runs and picks
    let tuned = std::fs::read_to_string(out.join("tuned.csv")).unwrap();
    assert!(tuned.lines().count() > 1);
    // metrics CSV and PNG
    let csv = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    assert!(
        csv.starts_with("class,picks,truth,tp,fp,fn,precision,recall,f1,fbeta"),
        "{csv}"
    );
    assert_eq!(csv.lines().count(), 5);
    assert_eq!(&std::fs::read(out.join("pr.png")).unwrap()[1..4], b"PNG");
    // CZII submission CSV
    let sub = std::fs::read_to_string(out.join("submission.csv")).unwrap();
    assert!(sub.starts_with("id,experiment,particle_type,x,y,z\n0,TS_e2e,"));
    assert_eq!(sub.lines().count() as i64, n_picks + 1);
    // IMOD model: one object per class, points = RELION 4 pixels + (0.5, 0.5, 0)
    let (names, pts, max) = read_mod(&std::fs::read(out.join("picks.mod")).unwrap());
    assert_eq!(max, [128, 128, 48]);
    assert_eq!(names, ["apo-ferritin", "ribosome", "thyroglobulin"]);
    assert_eq!(pts.iter().map(Vec::len).sum::<usize>() as i64, n_picks);
    let star4 = std::fs::read_to_string(out.join("picks4.star")).unwrap();
    let first = star4.lines().find(|l| l.starts_with("TS_e2e")).unwrap();
    let v: Vec<f32> = first
        .split_whitespace()
        .skip(1)
        .take(3)
        .map(|x| x.parse().unwrap())
        .collect();
    let class: usize = first.split_whitespace().nth(7).unwrap().parse().unwrap();
    let obj = [1, 4, 5].iter().position(|&c| c == class).unwrap();
    assert!(pts[obj].iter().any(|p| (p[0] - v[0] - 0.5).abs() < 1e-3
        && (p[1] - v[1] - 0.5).abs() < 1e-3
        && (p[2] - v[2]).abs() < 1e-3));
    if let Some(py) = common::python(&["starfile"]) {
        let o = Command::new(py)
            .args(["-c", "import starfile, sys; d = starfile.read(sys.argv[1], always_dict=True); p = d['particles']; print(len(p), sorted(set(int(c) for c in p['rlnClassNumber'])), 'rlnAutopickFigureOfMerit' in p.columns)"])
            .arg(out.join("picks.star"))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", common::text(&o));
        assert_eq!(
            String::from_utf8_lossy(&o.stdout).trim(),
            format!("{n_picks} [1, 4, 5] True")
        );
    }
}

/// The second stage end to end: a shape classifier trained on three simulated samples
/// re-decides the β-galactosidase / thyroglobulin picks of a fourth, recentres them, and the
/// tuned thresholds filter them; every node of it through the real binary.
#[test]
fn shape_classifier_reclassifies_picks_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let t = common::workspace().join("data/templates");
    let wf = format!(
        r#"version: 1
name: reclassify-e2e
params: {{seed: 5}}
sweep:
  matrix:
    rep: [0, 1, 2]
nodes:
  templates:
    plugin: templates
    params:
      voxel_size: 10
      classes:
        - {{name: apo-ferritin, path: {t}/6pxm.mrc, label: 1, radius: 60, mass_kda: 474}}
        - {{name: beta-galactosidase, path: {t}/1f4a.mrc, label: 3, radius: 90, mass_kda: 465}}
        - {{name: thyroglobulin, path: {t}/7n4y.mrc, label: 5, radius: 130, mass_kda: 660}}
  sample:
    plugin: place
    inputs: {{templates: templates.templates}}
    params:
      shape: [40, 80, 80]
      voxel_size: 10
      ice_thickness: 380
      counts: {{apo-ferritin: 3, beta-galactosidase: 4, thyroglobulin: 4}}
      name: "TS_train_${{sweep.rep}}"
  shape:
    plugin: shape-classifier-train
    inputs: {{tomograms: "sample.potential[*]", particles: "sample.particles[*]", templates: templates.templates}}
    params: {{copies: 2, matched: [beta-galactosidase, thyroglobulin], orientations: 40, match_search_A: 30, rims: 10}}
  test:
    plugin: place
    inputs: {{templates: templates.templates}}
    params:
      shape: [40, 80, 80]
      voxel_size: 10
      ice_thickness: 380
      counts: {{apo-ferritin: 3, beta-galactosidase: 4, thyroglobulin: 4}}
      name: TS_test
  probs:
    plugin: labels-to-probabilities
    inputs: {{particles: test.particles, labels: test.labels}}
    params: {{sigma_fraction: 0.25, peak: 0.8, noise: 0.1}}
  picks:
    plugin: pick-nms
    inputs: {{probabilities: probs.probabilities}}
    params: {{threshold: 0.3, min_voxels: 3}}
  reclass:
    plugin: pick-reclassify
    inputs: {{picks: picks.particles, tomogram: test.potential, classifier: shape.classifier}}
    params: {{classes: [beta-galactosidase, thyroglobulin], template_score: true}}
  score:
    plugin: evaluate
    inputs: {{picks: reclass.particles, truth: test.particles}}
  kept:
    plugin: picks-threshold
    inputs: {{picks: reclass.particles, thresholds: score.thresholds}}
exports:
  - {{from: score.metrics, to: out/metrics.json}}
  - {{from: reclass.particles, to: out/reclass.csv}}
  - {{from: kept.particles, to: out/kept.star}}
  - {{from: shape.classifier, to: out/shape.json}}
"#,
        t = t.display()
    );
    std::fs::write(dir.path().join("wf.yaml"), wf).unwrap();
    let o = common::run(
        common::tomoflow()
            .current_dir(dir.path())
            .args(["run", "wf.yaml"])
            .env("TOMOFLOW_LOG", "info"),
    );
    let log = common::text(&o);
    assert!(o.status.success(), "{log}");
    // The classifier reports its cross-validated accuracy per class.
    // (3 samples x particles per sample x 2 copies)
    for (c, n) in [
        ("apo-ferritin", 18),
        ("beta-galactosidase", 24),
        ("thyroglobulin", 24),
    ] {
        let line =
            format!("shape-classifier-train: {c}: {n} samples, leave-one-tomogram-out accuracy");
        assert!(log.contains(&line), "no `{line}` in\n{log}");
    }
    for line in [
        "shape-classifier-train: rim: 30 samples",
        "shape-classifier-train: the matched classes told apart by the best-correlating template alone: accuracy",
    ] {
        assert!(log.contains(line), "no `{line}` in\n{log}");
    }
    let out = dir.path().join("out");
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    for c in m["classes"].as_array().unwrap() {
        assert!(
            c["f1"].as_f64().unwrap() >= 0.85,
            "class {}: {c}",
            c["name"]
        );
    }
    let csv = std::fs::read_to_string(out.join("reclass.csv")).unwrap();
    assert!(
        csv.contains("beta-galactosidase") && csv.contains("thyroglobulin"),
        "{csv}"
    );
    let star = std::fs::read_to_string(out.join("kept.star")).unwrap();
    assert!(star.contains("rlnClassNumber"), "{star}");
    // The exported classifier, read back in another workflow, re-decides the same picks.
    let wf = std::fs::read_to_string(dir.path().join("wf.yaml")).unwrap();
    let reread = wf
        .replace(
            "  shape:\n    plugin: shape-classifier-train\n    inputs: {tomograms: \"sample.potential[*]\", particles: \"sample.particles[*]\", templates: templates.templates}\n    params: {copies: 2, matched: [beta-galactosidase, thyroglobulin], orientations: 40, match_search_A: 30, rims: 10}",
            "  shape:\n    plugin: shape-classifier-read\n    params: {path: out/shape.json}",
        )
        .replace("out/reclass.csv", "again/reclass.csv")
        .replace("  - {from: shape.classifier, to: out/shape.json}\n", "");
    assert_ne!(reread, wf);
    std::fs::write(dir.path().join("again.yaml"), reread).unwrap();
    let o = common::run(
        common::tomoflow()
            .current_dir(dir.path())
            .args(["run", "again.yaml"])
            .env("TOMOFLOW_LOG", "warn"),
    );
    assert!(o.status.success(), "{}", common::text(&o));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("again/reclass.csv")).unwrap(),
        csv
    );
    std::fs::write(out.join("shape.json"), "{\"voxel_size\": 10}").unwrap();
    let o = common::run(
        common::tomoflow()
            .current_dir(dir.path())
            .args(["run", "again.yaml"])
            .env("TOMOFLOW_LOG", "warn"),
    );
    let e = common::text(&o);
    assert!(
        !o.status.success() && e.contains("is not a shape classifier"),
        "{e}"
    );
}
