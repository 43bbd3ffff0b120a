//! Analytic checks of the packing and rendering, on the real CZII-like templates in data/templates.

use std::collections::HashMap;
use tomoflow_cryo::template::Template;
use tomoflow_placement::nodes::{build_template, run_place, ClassParams, PlaceParams};
use tomoflow_placement::place::{serial, Packing, Physics, Prepared, Renderer};

fn data(p: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../data/templates")).join(p)
}

fn template(name: &str, file: &str, label: u32) -> Template {
    let c: ClassParams =
        serde_json::from_value(serde_json::json!({"name": name, "path": file, "label": label}))
            .unwrap();
    build_template(&c, 0, 10.0, &|s| data(s)).unwrap()
}

fn templates() -> Vec<Template> {
    vec![
        template("apo-ferritin", "6pxm.mrc", 1),
        template("beta-galactosidase", "1f4a.mrc", 3),
        template("thyroglobulin", "7n4y.mrc", 5),
    ]
}

fn params(v: serde_json::Value) -> PlaceParams {
    serde_json::from_value(v).unwrap()
}

struct Rendered {
    pot: Vec<f32>,
    lab: Vec<u16>,
    ins: Vec<u32>,
}

fn render(
    cfg: &tomoflow_placement::place::PlaceConfig,
    ts: &[Template],
    packing: &Packing,
    physics: Physics,
    par: tomoflow_placement::place::Par,
) -> Rendered {
    let prepared: Vec<Prepared> = ts.iter().map(Prepared::new).collect();
    let r = Renderer::new(cfg, &prepared, packing, physics);
    let s = r.slab(0, cfg.shape[0], par);
    Rendered {
        pot: s.potential,
        lab: s.labels,
        ins: s.instances,
    }
}

/// A `Par` on 3 real threads with interleaved work, to prove thread-count independence.
fn threaded(n: usize, f: &(dyn Fn(usize) + Sync)) {
    std::thread::scope(|s| {
        for t in 0..3 {
            s.spawn(move || {
                let mut i = t;
                while i < n {
                    f(i);
                    i += 3;
                }
            });
        }
    });
}

#[test]
fn instances_are_disjoint_and_label_volumes_match_the_masks() {
    let ts = templates();
    let p = params(
        serde_json::json!({"shape": [60, 120, 120], "counts": {"apo-ferritin": 12, "beta-galactosidase": 8, "thyroglobulin": 6}, "ice_thickness": 500}),
    );
    let run = run_place(&p, 11, "t", &ts).unwrap();
    let out = render(&run.cfg, &ts, &run.packing, run.physics, &serial);
    let mut per: HashMap<u32, usize> = HashMap::new();
    for (&i, &l) in out.ins.iter().zip(&out.lab) {
        if i != 0 {
            *per.entry(i).or_default() += 1;
            let pl = &run.packing.particles[i as usize - 1];
            assert_eq!(l as u32, ts[pl.class].label, "label and instance disagree");
        }
    }
    assert_eq!(per.len(), 26);
    for (k, pl) in run.packing.particles.iter().enumerate() {
        let n = per[&(k as u32 + 1)];
        // no two instances share a voxel: every instance kept all the mask voxels it claimed
        assert_eq!(
            n,
            pl.mask_voxels,
            "instance {} lost voxels to another",
            k + 1
        );
        // the rotated mask volume equals the template's within interpolation error
        let m = ts[pl.class].mask_voxels() as f64;
        assert!(
            (n as f64 / m - 1.0).abs() < 0.12,
            "instance {}: {n} voxels vs mask {m}",
            k + 1
        );
    }
    // particles stay inside the ice slab
    let slab = run.packing.slab;
    for z in 0..60usize {
        let plane = &out.ins[z * 120 * 120..(z + 1) * 120 * 120];
        if (z as i64) < slab[0] || (z as i64) > slab[1] {
            assert!(
                plane.iter().all(|&v| v == 0),
                "particle voxel outside the ice at z={z}"
            );
        }
    }
}

#[test]
fn rotated_centre_of_mass_lands_on_the_recorded_coordinate() {
    let ts = templates();
    let p = params(
        serde_json::json!({"shape": [40, 64, 64], "counts": {"apo-ferritin": 2, "beta-galactosidase": 2, "thyroglobulin": 2}}),
    );
    let run = run_place(&p, 5, "t", &ts).unwrap();
    let table = tomoflow_cryo::particles::ParticleTable::from_json(&serde_json::Value::Object(
        run.table_msg.meta.clone(),
    ))
    .unwrap();
    let physics = Physics {
        ice_v: 0.0,
        protein_v: run.physics.protein_v,
    };
    for (k, pl) in run.packing.particles.iter().enumerate() {
        let single = Packing {
            particles: vec![pl.clone()],
            vesicles: vec![],
            ..run.packing.clone()
        };
        let out = render(&run.cfg, &ts, &single, physics, &serial);
        let [_, ny, nx] = run.cfg.shape;
        let (mut s, mut w) = ([0.0f64; 3], 0.0f64);
        for (i, &v) in out.pot.iter().enumerate() {
            if v > 0.0 {
                let v = v as f64;
                s[0] += v * (i / (ny * nx)) as f64;
                s[1] += v * ((i / nx) % ny) as f64;
                s[2] += v * (i % nx) as f64;
                w += v;
            }
        }
        let com = s.map(|c| c / w);
        let rec = &table.particles[k];
        let want = [rec.z / 10.0, rec.y / 10.0, rec.x / 10.0];
        let err = (0..3)
            .map(|a| (com[a] - want[a]).powi(2))
            .sum::<f64>()
            .sqrt();
        assert!(
            err < 0.5,
            "particle {k} ({}): COM {com:?} vs recorded {want:?}: {err:.3} voxel",
            rec.class
        );
    }
}

#[test]
fn same_seed_same_bits_whatever_the_threads() {
    let ts = templates();
    let p = params(
        serde_json::json!({"shape": [40, 80, 80], "counts": {"apo-ferritin": 8, "thyroglobulin": 3},
        "vesicles": {"count": 1, "radius": [120, 150]}, "ice_thickness": 350}),
    );
    let a = run_place(&p, 99, "t", &ts).unwrap();
    let b = run_place(&p, 99, "t", &ts).unwrap();
    assert_eq!(a.table_msg.meta, b.table_msg.meta);
    let ra = render(&a.cfg, &ts, &a.packing, a.physics, &serial);
    let rb = render(&b.cfg, &ts, &b.packing, b.physics, &threaded);
    assert!(ra
        .pot
        .iter()
        .zip(&rb.pot)
        .all(|(x, y)| x.to_bits() == y.to_bits()));
    assert_eq!(ra.lab, rb.lab);
    assert_eq!(ra.ins, rb.ins);
    let c = run_place(&p, 100, "t", &ts).unwrap();
    assert_ne!(
        a.table_msg.meta, c.table_msg.meta,
        "another seed must give another sample"
    );
}

#[test]
fn potential_has_ice_slab_vacuum_displacement_and_membranes() {
    let ts = templates();
    let p = params(
        serde_json::json!({"shape": [40, 80, 80], "counts": {"apo-ferritin": 3},
        "vesicles": {"count": 1, "radius": [120, 130], "label": 9}, "ice_thickness": 340}),
    );
    let run = run_place(&p, 3, "t", &ts).unwrap();
    let out = render(&run.cfg, &ts, &run.packing, run.physics, &serial);
    let plane = 80 * 80;
    let ice = run.physics.ice_v as f32;
    // vacuum outside the slab, ice inside away from everything
    assert!(out.pot[..plane].iter().all(|&v| v == 0.0));
    let mid = 20 * plane;
    let bg: Vec<f32> = (0..plane)
        .filter(|&i| {
            out.lab[mid + i] == 0 && out.pot[mid + i] < ice + 0.01 && out.pot[mid + i] > ice - 0.01
        })
        .map(|i| out.pot[mid + i])
        .collect();
    assert!(bg.len() > plane / 4, "ice background missing");
    // the membrane is labelled and denser than ice
    let m: Vec<f32> = (0..out.lab.len())
        .filter(|&i| out.lab[i] == 9)
        .map(|i| out.pot[i])
        .collect();
    assert!(!m.is_empty());
    assert!(m.iter().sum::<f32>() / m.len() as f32 > ice + 1.0);
    // solvent displacement: protein interiors carry the protein potential, not protein + ice
    let prot: Vec<f32> = (0..out.lab.len())
        .filter(|&i| out.lab[i] == 1)
        .map(|i| out.pot[i])
        .collect();
    let mean = prot.iter().sum::<f32>() / prot.len() as f32;
    assert!(mean > ice, "{mean}");
}

#[test]
fn clustered_mode_builds_chains() {
    let ts = vec![template("apo-ferritin", "6pxm.mrc", 1)];
    let nn = |mode: &str| {
        let p = params(
            serde_json::json!({"shape": [60, 250, 250], "counts": {"apo-ferritin": 40}, "mode": mode,
            "clustered": if mode == "clustered" { serde_json::json!({"chain_length": 10, "max_bend": 30}) } else { serde_json::Value::Null }}),
        );
        let run = run_place(&p, 8, "t", &ts).unwrap();
        let t = tomoflow_cryo::particles::ParticleTable::from_json(&serde_json::Value::Object(
            run.table_msg.meta.clone(),
        ))
        .unwrap();
        let pts: Vec<[f64; 3]> = t.particles.iter().map(|p| [p.x, p.y, p.z]).collect();
        assert_eq!(pts.len(), 40);
        pts.iter()
            .enumerate()
            .map(|(i, a)| {
                pts.iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .map(|(_, b)| (0..3).map(|k| (a[k] - b[k]).powi(2)).sum::<f64>().sqrt())
                    .fold(f64::MAX, f64::min)
            })
            .sum::<f64>()
            / pts.len() as f64
    };
    let (u, c) = (nn("uniform"), nn("clustered"));
    assert!(
        c < 0.75 * u,
        "clustered mean nearest neighbour {c:.0} Å vs uniform {u:.0} Å"
    );
}

#[test]
fn impossible_requests_are_clear_errors() {
    let ts = templates();
    let err = |v: serde_json::Value| {
        run_place(&params(v), 1, "t", &ts)
            .err()
            .map(|e| format!("{e:#}"))
            .unwrap_or_default()
    };
    // template larger than the box
    let e = err(serde_json::json!({"shape": [8, 64, 64], "counts": {"thyroglobulin": 1}}));
    assert!(
        e.contains("does not fit") && e.contains("thyroglobulin"),
        "{e}"
    );
    // more particles than the volume holds
    let e = err(serde_json::json!({"shape": [30, 40, 40], "counts": {"beta-galactosidase": 200}}));
    assert!(e.contains("cannot fit"), "{e}");
    let e = err(
        serde_json::json!({"shape": [30, 40, 40], "occupancy": {"apo-ferritin": 0.8, "thyroglobulin": 0.5}}),
    );
    assert!(e.contains("sum to at most 1"), "{e}");
    // fits by volume but not by packing: a report of what was placed, not silently fewer
    let e = err(
        serde_json::json!({"shape": [30, 45, 45], "counts": {"thyroglobulin": 25}, "max_attempts": 200}),
    );
    assert!(
        e.contains("placed only") && e.contains("of 25 thyroglobulin") && e.contains("allow_fewer"),
        "{e}"
    );
    // unknown class, wrong voxel size
    let e = err(serde_json::json!({"shape": [30, 45, 45], "counts": {"ribosome": 1}}));
    assert!(e.contains("no template named \"ribosome\""), "{e}");
    let e = err(
        serde_json::json!({"shape": [30, 45, 45], "voxel_size": 5, "counts": {"apo-ferritin": 1}}),
    );
    assert!(e.contains("set the templates node's voxel_size"), "{e}");
    // allow_fewer reports instead
    let p = params(
        serde_json::json!({"shape": [30, 45, 45], "counts": {"thyroglobulin": 25}, "max_attempts": 200, "allow_fewer": true}),
    );
    let run = run_place(&p, 1, "t", &ts).unwrap();
    let rep = &run.table_msg.meta["report"]["classes"];
    let placed = rep
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "thyroglobulin")
        .unwrap()["placed"]
        .as_u64()
        .unwrap();
    assert!(placed < 25 && placed > 0, "{placed}");
}

#[test]
fn pdb_template_through_the_node_builder() {
    let p = std::path::PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/data/templates/pdbs/1s3x.pdb.gz"
    ));
    if !p.exists() {
        eprintln!("skipping: {} missing", p.display());
        return;
    }
    let c: ClassParams =
        serde_json::from_value(serde_json::json!({"name": "hsp70", "path": p.to_string_lossy()}))
            .unwrap();
    let t = build_template(&c, 0, 10.0, &|s| std::path::PathBuf::from(s)).unwrap();
    let m = tomoflow_cryo::pdb::read_model(&p).unwrap();
    assert!((t.integral() / m.potential_integral() - 1.0).abs() < 0.01);
    assert_eq!(t.label, 1);
}
