//! Training, resume, reload and tiling tests at toy size.

use crate::data::{Class, Sampling, TrainingVolume};
use crate::infer::{infer, Blend, Tiling};
use crate::model::{Model, ModelInfo};
use crate::net::Arch;
use crate::train::{module_bytes, predict, train, HistoryRow, Hooks, Schedule, TrainConfig};
use burn::tensor::Device;
use tomoflow_cryo::rng::Rng;

/// Spheres of radius 2.5 (label 1) and 5 (label 2) voxels, amplitude 1, in Gaussian noise of
/// standard deviation `noise`.
fn phantom(shape: [usize; 3], seed: u64, noise: f64) -> (Vec<f32>, Vec<u32>) {
    let [nz, ny, nx] = shape;
    let mut rng = Rng::new(seed);
    let mut data = vec![0f32; nz * ny * nx];
    let mut lab = vec![0u32; nz * ny * nx];
    let mut centres: Vec<([f64; 3], f64)> = Vec::new();
    let mut tries = 0;
    while centres.len() < 14 && tries < 10_000 {
        tries += 1;
        let (r, _) = if centres.len().is_multiple_of(2) {
            (2.5, 1)
        } else {
            (5.0, 2)
        };
        let c = [
            rng.range(r + 1.0, nz as f64 - r - 2.0),
            rng.range(r + 1.0, ny as f64 - r - 2.0),
            rng.range(r + 1.0, nx as f64 - r - 2.0),
        ];
        if centres.iter().all(|(o, ro)| {
            let d2: f64 = (0..3).map(|a| (o[a] - c[a]).powi(2)).sum();
            d2.sqrt() > r + ro + 2.0
        }) {
            centres.push((c, r));
        }
    }
    for z in 0..nz {
        for y in 0..ny {
            for x in 0..nx {
                let i = (z * ny + y) * nx + x;
                for (c, r) in &centres {
                    let d2 = (z as f64 - c[0]).powi(2)
                        + (y as f64 - c[1]).powi(2)
                        + (x as f64 - c[2]).powi(2);
                    if d2 <= r * r {
                        data[i] = 1.0;
                        lab[i] = if *r < 3.0 { 1 } else { 2 };
                    }
                }
                data[i] += (noise * rng.normal()) as f32;
            }
        }
    }
    (data, lab)
}

fn table() -> Vec<Class> {
    vec![
        Class {
            id: 1,
            name: "small".into(),
            radius_a: 25.0,
        },
        Class {
            id: 2,
            name: "large".into(),
            radius_a: 50.0,
        },
    ]
}

fn volume(seed: u64, shape: [usize; 3]) -> TrainingVolume {
    let (d, l) = phantom(shape, seed, 0.4);
    TrainingVolume::new(
        &format!("v{seed}"),
        "",
        d,
        &l,
        shape,
        10.0,
        &table(),
        crate::data::Normalisation::Zscore,
    )
    .unwrap()
}

fn config(steps: u64) -> TrainConfig {
    TrainConfig {
        arch: Arch {
            widths: vec![8, 16],
            classes: 3,
        },
        sampling: Sampling {
            patch: [24; 3],
            centred: 0.7,
            augment: true,
            intensity: false,
        },
        batch: 2,
        steps,
        lr: 5e-3,
        lr_min: 5e-4,
        schedule: Schedule::Cosine,
        dice_weight: 1.0,
        class_weights: vec![1.0, 3.0, 2.0],
        val_every: 0,
        val_patches: 4,
        patience: 0,
        checkpoint_every: 0,
        seed: 7,
        volume_weights: vec![1.0],
    }
}

struct Quiet {
    stop_at: Option<u64>,
    step: u64,
}

impl Hooks for Quiet {
    fn step(&mut self, step: u64, _total: u64, _row: &HistoryRow) {
        self.step = step;
    }
    fn cancelled(&self) -> bool {
        self.stop_at.is_some_and(|s| self.step >= s)
    }
    fn info(&mut self, _msg: &str) {}
}

fn quiet() -> Quiet {
    Quiet {
        stop_at: None,
        step: 0,
    }
}

#[test]
fn toy_training_reaches_dice_0_8_on_a_held_out_volume() {
    let dev = Device::default();
    let train_v = vec![volume(1, [32, 48, 48])];
    let mut cfg = config(240);
    cfg.val_every = 0;
    let t = train(&cfg, &train_v, &[], &dev, None, "toy", &mut quiet()).unwrap();
    let first: f64 = t.history[..10].iter().map(|r| r.loss).sum::<f64>() / 10.0;
    let last: f64 = t.history[230..].iter().map(|r| r.loss).sum::<f64>() / 10.0;
    assert!(last < 0.5 * first, "loss {first} -> {last}");
    let test = volume(99, [32, 48, 48]);
    let tiling = Tiling {
        tile: 32,
        stride: 16,
        tile_depth: None,
        stride_depth: None,
        margin: 0,
        blend: Blend::Gaussian,
        tta: false,
        batch: 2,
    };
    let p = infer(
        &t.model,
        &cfg.arch,
        &test.data,
        test.shape,
        &tiling,
        &dev,
        &mut |_, _| {},
        &|| false,
    )
    .unwrap();
    let nv = test.data.len();
    let pred: Vec<u8> = (0..nv)
        .map(|i| {
            let (a, b) = (p[i], p[nv + i]);
            let bg = 1.0 - a - b;
            if a > b && a > bg {
                1
            } else if b > a && b > bg {
                2
            } else {
                0
            }
        })
        .collect();
    let d = crate::data::dice(&pred, &test.classes, 3);
    eprintln!("held-out Dice per class: {d:?}");
    assert!(d.iter().all(|x| x.unwrap() >= 0.8), "Dice {d:?}");
}

#[test]
fn interrupted_training_resumes_to_identical_weights() {
    let dev = Device::default();
    let v = vec![volume(3, [24, 32, 32])];
    let mut cfg = config(12);
    cfg.sampling.patch = [16; 3];
    cfg.checkpoint_every = 4;
    cfg.val_every = 4;
    cfg.val_patches = 2;
    let dir_a = tempfile::tempdir().unwrap();
    let dir_b = tempfile::tempdir().unwrap();
    let whole = train(&cfg, &v, &v, &dev, Some(dir_a.path()), "f", &mut quiet()).unwrap();
    // Stopped after step 6: the last checkpoint is step 4; steps 5-6 are redone.
    let mut stopper = Quiet {
        stop_at: Some(6),
        step: 0,
    };
    let e = train(&cfg, &v, &v, &dev, Some(dir_b.path()), "f", &mut stopper)
        .err()
        .unwrap();
    assert!(e.to_string().contains("cancelled"), "{e}");
    let resumed = train(&cfg, &v, &v, &dev, Some(dir_b.path()), "f", &mut quiet()).unwrap();
    assert_eq!(resumed.resumed_from, 6);
    if crate::flex_ops::on_flex(&dev) {
        assert_eq!(
            resumed.history, whole.history,
            "same losses and validation at every step"
        );
        let w = |m: &crate::net::UNet| {
            crate::model::weights_fingerprint(&module_bytes(m).unwrap()).unwrap()
        };
        assert_eq!(w(&resumed.model), w(&whole.model), "identical weights");
    } else {
        // GPU backends do not fix the order of their parallel sums, so two identical runs differ
        // in the last bits (seen on wgpu: 2.0694680 vs 2.0694683): equal within 1e-5.
        assert_eq!(resumed.history.len(), whole.history.len());
        for (a, b) in resumed.history.iter().zip(&whole.history) {
            assert_eq!(a.step, b.step);
            assert!(
                (a.loss - b.loss).abs() <= 1e-5 * b.loss.abs(),
                "{a:?} vs {b:?}"
            );
        }
        let x: Vec<f32> = v[0].data[..16 * 16 * 16].to_vec();
        let p = |m: &crate::net::UNet| predict(m, x.clone(), [1, 1, 16, 16, 16], &dev);
        let (pa, pb) = (p(&resumed.model), p(&whole.model));
        let worst = pa
            .iter()
            .zip(&pb)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(worst <= 1e-4, "predictions differ by {worst}");
    }
    // A checkpoint of another configuration is ignored, not loaded.
    let other = train(&cfg, &v, &v, &dev, Some(dir_b.path()), "g", &mut quiet()).unwrap();
    assert_eq!(other.resumed_from, 0);
}

#[test]
fn saved_model_reloads_with_identical_predictions() {
    let dev = Device::default();
    let v = vec![volume(4, [16, 16, 16])];
    let mut cfg = config(3);
    cfg.sampling.patch = [16; 3];
    let t = train(&cfg, &v, &[], &dev, None, "f", &mut quiet()).unwrap();
    let info = ModelInfo {
        format: "tomoflow-unet".into(),
        version: 1,
        arch: cfg.arch.clone(),
        classes: table(),
        voxel_size: 10.0,
        patch: [16; 3],
        normalisation: "zscore-per-tomogram".into(),
        training: serde_json::json!({}),
        thresholds: None,
        calibration: None,
    };
    let m = Model::new(info.clone(), &module_bytes(&t.model).unwrap()).unwrap();
    let back = Model::from_file_bytes(m.file.clone(), "test").unwrap();
    assert_eq!(back.info, info);
    let net = back.network(&dev).unwrap();
    let x = v[0].data.clone();
    assert_eq!(
        predict(&t.model, x.clone(), [1, 1, 16, 16, 16], &dev),
        predict(&net, x.clone(), [1, 1, 16, 16, 16], &dev)
    );
    // Thresholds written into the description keep the weights and survive a reload; a model
    // without them has the same file as before they existed.
    assert!(!String::from_utf8_lossy(&m.file).contains("thresholds"));
    // A damaged description is refused on read, naming what is wrong.
    for (edit, want) in [
        (
            Box::new(|i: &mut ModelInfo| i.voxel_size = -1.0) as Box<dyn Fn(&mut ModelInfo)>,
            "voxel size -1",
        ),
        (
            Box::new(|i: &mut ModelInfo| i.voxel_size = 1e99),
            "voxel size 1e99",
        ),
        (
            Box::new(|i: &mut ModelInfo| i.classes[0].radius_a = 1e99),
            "radius 1e99",
        ),
        (
            Box::new(|i: &mut ModelInfo| i.patch = [0, 16, 16]),
            "patch [0, 16, 16]",
        ),
        (
            Box::new(|i: &mut ModelInfo| i.thresholds = Some([("a".to_string(), 2.0)].into())),
            "threshold 2.0 of class a",
        ),
    ] {
        let mut bad = info.clone();
        edit(&mut bad);
        let damaged = Model::new(bad, &module_bytes(&t.model).unwrap()).unwrap();
        let e = Model::from_file_bytes(damaged.file, "bad.bpk")
            .unwrap_err()
            .to_string();
        assert!(e.contains(want) && e.contains("damaged"), "{e}");
    }
    let mut calibrated = info.clone();
    calibrated.thresholds = Some([("a".to_string(), 0.4)].into_iter().collect());
    let c = back.with_info(calibrated.clone()).unwrap();
    let c = Model::from_file_bytes(c.file, "calibrated").unwrap();
    assert_eq!(c.info, calibrated);
    assert_eq!(
        predict(
            &c.network(&dev).unwrap(),
            x.clone(),
            [1, 1, 16, 16, 16],
            &dev
        ),
        predict(&net, x, [1, 1, 16, 16, 16], &dev)
    );
    // Not a model: clear errors.
    let e = Model::from_file_bytes(b"hello".to_vec(), "x.bpk")
        .unwrap_err()
        .to_string();
    assert!(e.contains("x.bpk is not a burnpack"), "{e}");
    let plain = module_bytes(&t.model).unwrap();
    let e = Model::from_file_bytes(plain, "w.bpk")
        .unwrap_err()
        .to_string();
    assert!(e.contains("not a tomoflow model"), "{e}");
}

#[test]
fn tiled_inference_equals_whole_volume_away_from_borders() {
    let dev = Device::default();
    let arch = Arch {
        widths: vec![4, 8],
        classes: 3,
    };
    let net = crate::net::UNet::seeded(&arch, 5, &dev);
    let shape = [40, 40, 40];
    let (data, _) = phantom(shape, 8, 0.5);
    let r = arch.receptive_radius();
    let whole = Tiling {
        tile: 40,
        stride: 40,
        tile_depth: None,
        stride_depth: None,
        margin: 0,
        blend: Blend::None,
        tta: false,
        batch: 1,
    };
    let a = infer(
        &net,
        &arch,
        &data,
        shape,
        &whole,
        &dev,
        &mut |_, _| {},
        &|| false,
    )
    .unwrap();
    // Tiles of 32 every 8 with a margin of 12 (>= the receptive radius of 10).
    assert!(r <= 12);
    // Also shallow tiles: whole planes, 32 deep every 8 along z.
    for (blend, tile, stride, depth) in [
        (Blend::Gaussian, 32, 8, None),
        (Blend::Cosine, 32, 8, None),
        (Blend::Gaussian, 40, 16, Some((32, 8))),
    ] {
        let tiled = Tiling {
            tile,
            stride,
            tile_depth: depth.map(|d| d.0),
            stride_depth: depth.map(|d| d.1),
            margin: 12,
            blend,
            tta: false,
            batch: 3,
        };
        let b = infer(
            &net,
            &arch,
            &data,
            shape,
            &tiled,
            &dev,
            &mut |_, _| {},
            &|| false,
        )
        .unwrap();
        let mut worst = 0f32;
        for k in 0..2 {
            for z in r..40 - r {
                for y in r..40 - r {
                    for x in r..40 - r {
                        let i = k * 64000 + (z * 40 + y) * 40 + x;
                        worst = worst.max((a[i] - b[i]).abs());
                    }
                }
            }
        }
        assert!(worst < 1e-5, "{blend:?} {depth:?}: max difference {worst}");
    }
}

#[test]
fn blended_tiles_leave_no_seams() {
    // With default settings (no margin), tile borders must not show as steps: the jump across
    // a tile boundary plane is no larger than between neighbouring planes elsewhere.
    let dev = Device::default();
    let arch = Arch {
        widths: vec![4, 8],
        classes: 3,
    };
    let net = crate::net::UNet::seeded(&arch, 6, &dev);
    let shape = [16, 16, 64];
    let (data, _) = phantom(shape, 9, 0.5);
    let whole = Tiling {
        tile: 64,
        stride: 64,
        tile_depth: None,
        stride_depth: None,
        margin: 0,
        blend: Blend::None,
        tta: false,
        batch: 1,
    };
    let a = infer(
        &net,
        &arch,
        &data,
        shape,
        &whole,
        &dev,
        &mut |_, _| {},
        &|| false,
    )
    .unwrap();
    let tiled = Tiling {
        tile: 16,
        stride: 8,
        tile_depth: None,
        stride_depth: None,
        margin: 0,
        blend: Blend::Gaussian,
        tta: false,
        batch: 4,
    };
    let b = infer(
        &net,
        &arch,
        &data,
        shape,
        &tiled,
        &dev,
        &mut |_, _| {},
        &|| false,
    )
    .unwrap();
    let hard = Tiling {
        tile: 16,
        stride: 16,
        tile_depth: None,
        stride_depth: None,
        margin: 0,
        blend: Blend::None,
        tta: false,
        batch: 4,
    };
    let c = infer(
        &net,
        &arch,
        &data,
        shape,
        &hard,
        &dev,
        &mut |_, _| {},
        &|| false,
    )
    .unwrap();
    // Mean |error| against the whole-volume result, at tile-boundary columns vs elsewhere.
    let err = |p: &[f32], xs: &dyn Fn(usize) -> bool| {
        let (mut s, mut n) = (0f64, 0usize);
        for z in 0..16 {
            for y in 0..16 {
                for x in 1..63 {
                    if xs(x) {
                        let i = (z * 16 + y) * 64 + x;
                        s += (p[i] - a[i]).abs() as f64;
                        n += 1;
                    }
                }
            }
        }
        s / n as f64
    };
    let boundary = |x: usize| x.is_multiple_of(16) || x % 16 == 15;
    let blended = err(&b, &boundary);
    let cropped = err(&c, &boundary);
    assert!(
        blended < 0.5 * cropped,
        "blended {blended} vs hard tiles {cropped}"
    );
}

#[test]
fn a_damaged_checkpoint_is_reported_and_the_previous_one_loads() {
    use crate::train::Checkpoint;
    let dir = tempfile::tempdir().unwrap();
    let ck = |step: u64| Checkpoint {
        step,
        model: vec![step as u8; 64],
        optim: vec![7; 32],
        best: Some((step, 0.5, vec![1; 16])),
        bad_evals: 0,
        history: Vec::new(),
        fingerprint: "f".into(),
    };
    ck(4).save(dir.path()).unwrap();
    ck(8).save(dir.path()).unwrap();
    let mut warnings = Vec::new();
    let got = Checkpoint::load_good(dir.path(), &mut |m| warnings.push(m.to_string())).unwrap();
    assert_eq!((got.unwrap().step, warnings.len()), (8, 0));
    // Four flipped bytes in the weights: the checksum catches them; step 4 is used instead.
    let path = Checkpoint::path(dir.path());
    let mut b = std::fs::read(&path).unwrap();
    let n = b.len();
    for x in &mut b[n - 60..n - 56] {
        *x ^= 0x5a;
    }
    std::fs::write(&path, &b).unwrap();
    let got = Checkpoint::load_good(dir.path(), &mut |m| warnings.push(m.to_string())).unwrap();
    assert_eq!(got.unwrap().step, 4);
    assert!(
        warnings[0].contains("unet-checkpoint.bin is damaged (its checksum does not match)"),
        "{warnings:?}"
    );
    // Both damaged: training starts from step 0, never from garbage.
    std::fs::write(Checkpoint::previous(dir.path()), b"TFCKPT02 truncated").unwrap();
    warnings.clear();
    let got = Checkpoint::load_good(dir.path(), &mut |m| warnings.push(m.to_string())).unwrap();
    assert!(got.is_none());
    assert_eq!(warnings.len(), 2, "{warnings:?}");
}
