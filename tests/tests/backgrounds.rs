//! End-to-end: a reduced `workflows/backgrounds.yaml` through the real binary and the `noise`,
//! `placement`, `tilt` and `recon` plugins: clean signal + synthetic / empirical / spectral /
//! mixed backgrounds at one SNR, labels passed through untouched.
//!
//! Needs `cargo build --workspace` first.

mod common;

#[test]
fn backgrounds_workflow_produces_all_backgrounds_at_one_snr() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let ws = common::workspace();
    let wf = std::fs::read_to_string(ws.join("workflows/backgrounds.yaml")).unwrap();
    // Reduced: a smaller box and fewer tilts; paths into the workspace.
    let wf = wf
        .replace("shape: [64, 128, 128]", "shape: [32, 64, 64]")
        .replace("ice_thickness: 500.0", "ice_thickness: 300.0")
        .replace(
            "counts: {apo-ferritin: 12, ribosome: 4, thyroglobulin: 4}",
            "counts: {apo-ferritin: 4}",
        )
        .replace("tilt_step: 3", "tilt_step: 6")
        .replace("snr: 0.5 ", "snr: 0.3 ")
        .replace("data/", &format!("{}/data/", ws.display()));
    std::fs::write(p.join("wf.yaml"), wf).unwrap();
    let out = common::run(common::tomoflow().current_dir(p).args(["run", "wf.yaml"]));
    let t = common::text(&out);
    assert!(out.status.success(), "{t}");
    assert!(!t.contains("panicked"), "{t}");
    let r = p.join("results/backgrounds");
    let mut vols = std::collections::BTreeMap::new();
    for bg in ["synthetic", "empirical", "spectral", "mixed"] {
        for rep in 0..2 {
            let d = r.join(format!("background={bg},rep{rep}"));
            let (dims, vs, data) = common::read_mrc_f32(&d.join("tomogram.mrc"));
            assert_eq!(dims, [64, 64, 32], "{bg}");
            assert!((vs - 10.0).abs() < 1e-4);
            assert!(data.iter().all(|v| v.is_finite()));
            assert!(d.join("tomogram.png").is_file());
            vols.insert((bg, rep), data);
        }
    }
    // Labels and the particle table come from `place`, untouched by the backgrounds.
    let (ldims, _, _) = common::read_mrc_f32(&r.join("labels.mrc"));
    assert_eq!(ldims, [64, 64, 32]);
    let star = std::fs::read_to_string(r.join("particles.star")).unwrap();
    assert!(
        star.contains("_rlnCenteredCoordinateXAngst") && star.contains("_rlnTomoName"),
        "{star}"
    );
    // The side-by-side comparison gathers all eight training tomograms, one row each.
    assert!(r.join("compare.png").is_file());
    let rows = std::fs::read_to_string(r.join("compare.png.rows.txt")).unwrap();
    assert_eq!(rows.lines().count(), 8, "{rows}");
    assert!(
        rows.lines()
            .next()
            .unwrap()
            .starts_with("background=empirical"),
        "{rows}"
    );
    // The fitted model is saved as JSON.
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(r.join("noise_model.json")).unwrap())
            .unwrap();
    assert_eq!(m["noise_model"]["model"], "anisotropic-power-spectrum");
    assert!((m["noise_model"]["voxel_size"].as_f64().unwrap() - 10.0).abs() < 1e-9);
    // Same signal, independent backgrounds: SNR = ρ/(1 − ρ) (two-realisation estimate).
    let (_, _, signal) = common::read_mrc_f32(&r.join("signal.mrc"));
    for (a, b) in [("empirical", "spectral"), ("synthetic", "spectral")] {
        let rho = common::pearson(&vols[&(a, 0)], &vols[&(b, 0)]);
        let snr = rho / (1.0 - rho);
        assert!(
            (snr / 0.3 - 1.0).abs() < 0.15,
            "{a} vs {b}: measured SNR {snr}, requested 0.3"
        );
    }
    // And directly from the known signal.
    for bg in ["synthetic", "empirical", "spectral"] {
        let v = &vols[&(bg, 0)];
        let n = v.len() as f64;
        let var = |x: &mut dyn Iterator<Item = f64>| {
            let xs: Vec<f64> = x.collect();
            let m = xs.iter().sum::<f64>() / n;
            xs.iter().map(|a| (a - m).powi(2)).sum::<f64>() / n
        };
        let vs = var(&mut signal.iter().map(|&a| a as f64));
        let vn = var(&mut v.iter().zip(&signal).map(|(a, b)| (a - b) as f64));
        assert!((vs / vn / 0.3 - 1.0).abs() < 0.01, "{bg}: {}", vs / vn);
    }
    // `mixed` over two replicates: one synthetic and one empirical background.
    let same = |a: (&str, usize), b: (&str, usize)| vols[&a] == vols[&b];
    let m0 = if same(("mixed", 0), ("synthetic", 0)) {
        "synthetic"
    } else {
        "empirical"
    };
    let m1 = if same(("mixed", 1), ("synthetic", 1)) {
        "synthetic"
    } else {
        "empirical"
    };
    assert_ne!(m0, m1, "mixed replicates should split 50/50");
    assert!(same(("mixed", 0), (m0, 0)) && same(("mixed", 1), (m1, 1)));
}
