//! Crate-level tests: descriptor, NMS streaming and suppression, blob maps.

use crate::nms::{greedy_nms, pick_whole, serial, Candidate, NmsOptions, Picker};
use crate::probmap::{self, BlobOptions, ProbClass, ProbHeader};
use tomoflow_cryo::particles::{ClassInfo, Particle, ParticleTable, TomogramInfo};
use tomoflow_sdk::plugin::params_schema;
use tomoflow_sdk::volume::{slabs, ChunkMeta};
use tomoflow_sdk::NodeDef;

fn check<T: NodeDef>(names: &mut Vec<&'static str>) {
    let schema = params_schema::<T::Params>();
    assert_eq!(schema["type"], "object", "{}", T::NAME);
    names.push(T::NAME);
}

#[test]
fn descriptor_lists_every_node_type() {
    assert!(!super::tomoflow_plugin_descriptor().is_null());
    let mut n = Vec::new();
    check::<crate::nodes::LabelsToProbabilitiesNode>(&mut n);
    check::<crate::nms_nodes::PickNmsNode>(&mut n);
    check::<crate::nms_nodes::PickNmsTunedNode>(&mut n);
    check::<crate::nodes::PickComponentsNode>(&mut n);
    check::<crate::nodes::EvaluateNode>(&mut n);
    check::<crate::nodes::EvaluateShrecNode>(&mut n);
    check::<crate::nodes::MetricsCsvWriteNode>(&mut n);
    check::<crate::nodes::PrPngWriteNode>(&mut n);
    check::<crate::probexport::ProbMrcWriteNode>(&mut n);
    check::<crate::classify::ShapeTrainNode>(&mut n);
    check::<crate::classify::ReclassifyNode>(&mut n);
    check::<crate::classify::PicksThresholdNode>(&mut n);
    check::<crate::classify::ShapeWriteNode>(&mut n);
    check::<crate::classify::ShapeReadNode>(&mut n);
    assert_eq!(n.len(), 14);
}

fn particle(class: &str, id: u32, x: f64, y: f64, z: f64) -> Particle {
    Particle {
        class: class.into(),
        class_id: id,
        x,
        y,
        z,
        rot: 0.0,
        tilt: 0.0,
        psi: 0.0,
        q: [1.0, 0.0, 0.0, 0.0],
        instance: 0,
        score: 1.0,
    }
}

/// A random crowded table and its noisy blob map.
fn scene(shape: [usize; 3], n: usize, seed: u64) -> (ParticleTable, Vec<ProbClass>, Vec<f32>) {
    let classes = vec![
        ProbClass {
            id: 1,
            name: "apo-ferritin".into(),
            radius_a: 60.0,
        },
        ProbClass {
            id: 4,
            name: "ribosome".into(),
            radius_a: 150.0,
        },
        ProbClass {
            id: 5,
            name: "thyroglobulin".into(),
            radius_a: 130.0,
        },
    ];
    let mut rng = tomoflow_cryo::rng::Rng::new(seed);
    let mut particles = Vec::new();
    for i in 0..n {
        let c = &classes[i % 3];
        particles.push(particle(
            &c.name,
            c.id,
            rng.range(0.0, shape[2] as f64 * 10.0),
            rng.range(0.0, shape[1] as f64 * 10.0),
            rng.range(0.0, shape[0] as f64 * 10.0),
        ));
    }
    let table = ParticleTable {
        tomogram: TomogramInfo {
            name: "T".into(),
            shape,
            voxel_size: [10.0; 3],
            origin: [0.0; 3],
        },
        classes: classes
            .iter()
            .map(|c| ClassInfo {
                id: c.id,
                name: c.name.clone(),
                radius_a: c.radius_a,
            })
            .collect(),
        particles,
    };
    let whole = ChunkMeta::whole(shape, [10.0; 3], [0.0; 3]);
    let data = probmap::render_blobs(
        &table,
        &classes,
        &whole,
        &BlobOptions {
            sigma_fraction: 0.3,
            peak: 0.9,
            noise: 0.15,
            seed,
        },
    );
    (table, classes, data)
}

/// Slab messages' headers and data of a `[K, z, y, x]` volume.
fn slab_chunks(
    shape: [usize; 3],
    classes: &[ProbClass],
    data: &[f32],
    slab: usize,
    halo: usize,
) -> Vec<(ProbHeader, Vec<f32>)> {
    let plane = shape[1] * shape[2];
    let n = shape[0] * plane;
    let parts = slabs(shape[0], slab, halo);
    let count = parts.len();
    parts
        .iter()
        .enumerate()
        .map(|(index, s)| {
            let chunk = ChunkMeta {
                full_shape: shape,
                offset: [s.z0, 0, 0],
                shape: [s.z1 - s.z0, shape[1], shape[2]],
                core_offset: [s.core0, 0, 0],
                core_shape: [s.core1 - s.core0, shape[1], shape[2]],
                voxel_size: [10.0; 3],
                origin: [0.0; 3],
                index,
                count,
            };
            let mut d = Vec::new();
            for k in 0..classes.len() {
                d.extend_from_slice(&data[k * n + s.z0 * plane..k * n + s.z1 * plane]);
            }
            (
                ProbHeader {
                    chunk,
                    classes: classes.to_vec(),
                    tomogram: "T".into(),
                },
                d,
            )
        })
        .collect()
}

fn opts(k: usize, smooth: Option<f64>) -> NmsOptions {
    NmsOptions {
        radius_fraction: 0.5,
        nms_fraction: 0.5,
        smooth_a: smooth,
        min_voxels: 3,
        floors: vec![0.45; k],
        centroid: false,
    }
}

#[test]
fn slab_streamed_picks_equal_whole_volume_picks() {
    let shape = [37, 40, 44];
    let (_, classes, data) = scene(shape, 30, 3);
    for smooth in [None, Some(12.0)] {
        let whole = ChunkMeta::whole(shape, [10.0; 3], [0.0; 3]);
        let h = ProbHeader {
            chunk: whole,
            classes: classes.clone(),
            tomogram: "T".into(),
        };
        let want = pick_whole(&h, &data, opts(3, smooth), &serial).unwrap();
        assert!(want.picks.len() >= 10, "{} picks", want.picks.len());
        for (slab, halo, reverse) in [
            (1, 0, false),
            (5, 2, true),
            (8, 0, true),
            (13, 4, false),
            (36, 1, true),
        ] {
            let mut chunks = slab_chunks(shape, &classes, &data, slab, halo);
            if reverse {
                chunks.reverse();
            }
            let mut p = Picker::new(&chunks[0].0, opts(3, smooth)).unwrap();
            let mut peak_buffer = 0;
            for (h, d) in &chunks {
                p.push(h, d, &serial).unwrap();
                peak_buffer = peak_buffer.max(p.buffered_planes());
            }
            if !reverse {
                // in-order streams keep only the halo plus one slab
                assert!(
                    peak_buffer <= 2 * (p.halo() + slab) + 2,
                    "buffered {peak_buffer} planes"
                );
            }
            let got = p.finish(None).unwrap();
            assert_eq!(
                got.picks, want.picks,
                "slab {slab} halo {halo} smooth {smooth:?}"
            );
        }
    }
    // an incomplete stream is an error
    let chunks = slab_chunks(shape, &classes, &data, 10, 0);
    let mut p = Picker::new(&chunks[0].0, opts(3, None)).unwrap();
    p.push(&chunks[0].0, &chunks[0].1, &serial).unwrap();
    assert!(p
        .finish(None)
        .unwrap_err()
        .to_string()
        .contains("incomplete"));
}

#[test]
fn clean_blobs_give_every_particle_once() {
    // particles on a grid, well separated, each class once per cell
    let shape = [30, 60, 60];
    let mut particles = Vec::new();
    let names = [("apo-ferritin", 1, 60.0), ("ribosome", 4, 150.0)];
    for (i, (zz, yy, xx)) in [
        (150.0, 150.0, 150.0),
        (150.0, 150.0, 450.0),
        (150.0, 450.0, 150.0),
        (150.0, 452.0, 447.0),
    ]
    .iter()
    .enumerate()
    {
        let (n, id, _) = names[i % 2];
        particles.push(particle(n, id, *xx, *yy, *zz));
    }
    let classes: Vec<ProbClass> = names
        .iter()
        .map(|(n, id, r)| ProbClass {
            id: *id,
            name: n.to_string(),
            radius_a: *r,
        })
        .collect();
    let table = ParticleTable {
        tomogram: TomogramInfo {
            name: "T".into(),
            shape,
            voxel_size: [10.0; 3],
            origin: [0.0; 3],
        },
        classes: vec![],
        particles,
    };
    let whole = ChunkMeta::whole(shape, [10.0; 3], [0.0; 3]);
    let data = probmap::render_blobs(
        &table,
        &classes,
        &whole,
        &BlobOptions {
            sigma_fraction: 0.25,
            peak: 1.0,
            noise: 0.0,
            seed: 0,
        },
    );
    let h = ProbHeader {
        chunk: whole,
        classes: classes.clone(),
        tomogram: "T".into(),
    };
    let got = pick_whole(&h, &data, opts(2, None), &serial).unwrap();
    let mut v: Vec<([usize; 3], usize)> = got.picks.iter().map(|c| (c.voxel, c.class)).collect();
    v.sort();
    // the fourth particle lies between voxels: its nearest voxel centre is picked
    assert_eq!(
        v,
        vec![
            ([15, 15, 15], 0),
            ([15, 15, 45], 1),
            ([15, 45, 15], 0),
            ([15, 45, 45], 1)
        ]
    );
    // thresholds: with a floor above every peak nothing is picked
    let mut o = opts(2, None);
    o.floors = vec![1.01, 1.01];
    assert!(pick_whole(&h, &data, o, &serial).unwrap().picks.is_empty());
    // final per-class thresholds at finish: drop class 1 only
    let mut p = Picker::new(&h, opts(2, None)).unwrap();
    p.push(&h, &data, &serial).unwrap();
    let r = p.finish(Some(&[0.5, 1.5])).unwrap();
    assert!(r.picks.iter().all(|c| c.class == 0) && r.picks.len() == 2);
}

#[test]
fn suppression_respects_the_sum_of_radius_fractions() {
    let c = |class: usize, x: usize, score: f32| Candidate {
        class,
        voxel: [0, 0, x],
        score,
        support: 1,
        centre: [0.0, 0.0, x as f64],
    };
    let radii = [60.0, 150.0];
    // f = 0.5: apo (60) vs ribosome (150) must be >= 105 Å apart; voxels are 10 Å
    let cands = [c(1, 0, 0.9), c(0, 10, 0.8), c(0, 11, 0.7), c(0, 17, 0.6)];
    // 0.8 at 100 Å from the ribosome: suppressed; 0.7 at 110 Å: kept; 0.6 at 60 Å from it
    // (apo-apo limit 60 Å, not closer): kept
    let keep = greedy_nms(&cands, &radii, [10.0; 3], 0.5);
    assert_eq!(keep, vec![0, 2, 3]);
    // apo-apo just closer than 60 Å: suppressed
    let cands = [c(0, 0, 0.9), c(0, 5, 0.8)];
    assert_eq!(greedy_nms(&cands, &radii, [10.0; 3], 0.5), vec![0]);
    assert_eq!(greedy_nms(&cands, &radii, [10.0; 3], 0.0), vec![0, 1]);
    // equal scores: ties broken by position, deterministic
    let cands = [c(0, 5, 0.5), c(0, 0, 0.5)];
    assert_eq!(greedy_nms(&cands, &radii, [10.0; 3], 0.5), vec![1]);
}

#[test]
fn min_voxels_removes_isolated_spikes() {
    let shape = [9, 9, 9];
    let mut data = vec![0f32; 729];
    data[4 * 81 + 4 * 9 + 4] = 0.9; // a lone spike
    let classes = vec![ProbClass {
        id: 1,
        name: "a".into(),
        radius_a: 40.0,
    }];
    let h = ProbHeader {
        chunk: ChunkMeta::whole(shape, [10.0; 3], [0.0; 3]),
        classes,
        tomogram: "T".into(),
    };
    let mut o = opts(1, None);
    o.min_voxels = 1;
    assert_eq!(
        pick_whole(&h, &data, o.clone(), &serial)
            .unwrap()
            .picks
            .len(),
        1
    );
    o.min_voxels = 2;
    assert_eq!(pick_whole(&h, &data, o, &serial).unwrap().picks.len(), 0);
}

#[test]
fn blob_noise_does_not_depend_on_chunking() {
    let shape = [12, 20, 20];
    let (table, classes, whole) = scene(shape, 6, 9);
    let n = shape.iter().product::<usize>();
    for s in slabs(shape[0], 5, 0) {
        let chunk = ChunkMeta {
            full_shape: shape,
            offset: [s.z0, 0, 0],
            shape: [s.z1 - s.z0, shape[1], shape[2]],
            core_offset: [s.core0, 0, 0],
            core_shape: [s.core1 - s.core0, shape[1], shape[2]],
            voxel_size: [10.0; 3],
            origin: [0.0; 3],
            index: 0,
            count: 1,
        };
        let d = probmap::render_blobs(
            &table,
            &classes,
            &chunk,
            &BlobOptions {
                sigma_fraction: 0.3,
                peak: 0.9,
                noise: 0.15,
                seed: 9,
            },
        );
        let m = d.len() / classes.len();
        for k in 0..classes.len() {
            assert_eq!(
                &d[k * m..(k + 1) * m],
                &whole[k * n + s.z0 * 400..k * n + s.z1 * 400]
            );
        }
    }
}

#[test]
fn metrics_exporters() {
    use crate::metrics::*;
    use std::collections::BTreeMap;
    let t = Tomo {
        name: "A".into(),
        truth: vec![Pt {
            class: "ribosome".into(),
            p: [0.0; 3],
            score: 1.0,
            instance: 1,
        }],
        picks: vec![
            Pt {
                class: "ribosome".into(),
                p: [10.0, 0.0, 0.0],
                score: 0.8,
                instance: 0,
            },
            Pt {
                class: "ribosome".into(),
                p: [900.0, 0.0, 0.0],
                score: 0.6,
                instance: 0,
            },
        ],
    };
    let cfg = EvalConfig {
        mode: Mode::Czii,
        beta: 4.0,
        tune_beta: 4.0,
        distance_multiplier: 0.5,
        radii: BTreeMap::new(),
        weights: BTreeMap::new(),
        normalise: Normalise::Evaluated,
    };
    let r = evaluate(
        &cfg,
        &[t],
        &BTreeMap::from([("ribosome".to_string(), 150.0)]),
        &BTreeMap::new(),
        0.0,
    )
    .unwrap();
    let mut v = serde_json::to_value(&r).unwrap();
    v["table"] = serde_json::json!([{"class": "ribosome", "tp": 1, "best_threshold": 0.8}, {"class": "overall", "tp": 1, "best_threshold": null}]);
    let meta = v.as_object().unwrap().clone();
    let csv = crate::nodes::metrics_csv(std::slice::from_ref(&meta)).unwrap();
    assert_eq!(csv, "class,tp,best_threshold\nribosome,1,0.8\noverall,1,\n");
    let curves = crate::nodes::curves_of(&meta).unwrap();
    assert_eq!(curves.len(), 1);
    // kept down to the 0.8 pick (point 0), threshold halfway to the dropped 0.6
    assert_eq!(curves[0].best, Some((0, 0.7)));
    let png = crate::plot::pr_png(&curves, 200).unwrap();
    // the curve, its tuned point and its legend entry are drawn in the first class colour
    let img = tomoflow_cryo::image::Rgb::from_png(&png).unwrap();
    let blue = img
        .px
        .chunks(3)
        .filter(|p| p == &crate::plot::COLOURS[0])
        .count();
    assert!(blue > 100, "{blue} pixels of the class colour");
}

#[test]
fn probability_maps_export_as_mrc_per_class_and_best() {
    use crate::probexport::{class_path, ProbMrcExport};
    let shape = [20, 12, 14];
    let (_, classes, data) = scene(shape, 6, 11);
    let n = shape.iter().product::<usize>();
    let dir = std::env::temp_dir().join(format!("tomoflow-probexport-{}", std::process::id()));
    let path = dir.join("probs.mrc");
    let mut chunks = slab_chunks(shape, &classes, &data, 6, 2);
    // Out of order: the last chunk first.
    chunks.rotate_right(1);
    let mut w = ProbMrcExport::new(path.clone());
    for (h, d) in &chunks {
        w.add(h, d).unwrap();
    }
    w.finish().unwrap();
    let (hdr, best) = tomoflow_cryo::mrc::read_mrc(&path).unwrap();
    assert_eq!(hdr.shape, shape);
    assert_eq!(hdr.voxel_size, [10.0; 3]);
    for (k, c) in classes.iter().enumerate() {
        let p = class_path(&path, &c.name);
        let (_, v) = tomoflow_cryo::mrc::read_mrc(&p).unwrap();
        assert_eq!(v, data[k * n..(k + 1) * n], "{}", c.name);
    }
    for i in 0..n {
        let m = (0..classes.len())
            .map(|k| data[k * n + i])
            .fold(0.0, f32::max);
        assert_eq!(best[i], m);
    }
    // A missing slab is an error, not a short file.
    let mut w = ProbMrcExport::new(dir.join("short.mrc"));
    for (h, d) in chunks.iter().skip(1) {
        w.add(h, d).unwrap();
    }
    let e = w.finish().unwrap_err().to_string();
    assert!(e.contains("planes missing"), "{e}");
    assert!(!dir.join("short.mrc").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

/// A plateau's maximum can sit on its edge; `centroid` places the pick at the plateau's
/// probability-weighted centre instead, and streaming gives the same centre.
#[test]
fn centroid_places_a_plateau_pick_at_its_centre() {
    let shape = [17, 17, 17];
    let classes = vec![ProbClass {
        id: 6,
        name: "virus-like-particle".into(),
        radius_a: 135.0,
    }];
    // A ball of radius 3 voxels about (8, 8, 8), 0.8 everywhere but a hair higher at x = 11.
    let mut data = vec![0.0f32; 17 * 17 * 17];
    for z in 0..17 {
        for y in 0..17 {
            for x in 0..17 {
                let d2 = [z, y, x]
                    .iter()
                    .map(|&v| (v as f64 - 8.0).powi(2))
                    .sum::<f64>();
                if d2 <= 9.0 {
                    data[(z * 17 + y) * 17 + x] = 0.8 + 0.001 * (x as f32 - 8.0);
                }
            }
        }
    }
    let whole = ChunkMeta::whole(shape, [10.0; 3], [0.0; 3]);
    let h = ProbHeader {
        chunk: whole,
        classes: classes.clone(),
        tomogram: "T".into(),
    };
    let peak = pick_whole(&h, &data, opts(1, None), &serial).unwrap();
    assert_eq!(peak.picks.len(), 1);
    assert_eq!(peak.picks[0].centre, [8.0, 8.0, 11.0]);
    let o = NmsOptions {
        centroid: true,
        ..opts(1, None)
    };
    let centred = pick_whole(&h, &data, o.clone(), &serial).unwrap();
    let c = centred.picks[0].centre;
    assert_eq!(centred.picks[0].voxel, [8, 8, 11]);
    assert!(
        (c[0] - 8.0).abs() < 1e-9 && (c[1] - 8.0).abs() < 1e-9 && (c[2] - 8.0).abs() < 0.01,
        "{c:?}"
    );
    // Streamed in slabs of 4 planes: the same centre.
    let mut p = Picker::new(&h, o).unwrap();
    for (h, d) in &slab_chunks(shape, &classes, &data, 4, 1) {
        p.push(h, d, &serial).unwrap();
    }
    assert_eq!(p.finish(None).unwrap().picks[0].centre, c);
}
