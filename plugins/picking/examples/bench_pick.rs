//! Benchmark of `pick-nms`'s core on a 7-class 630 x 630 x 184 probability map (bench/picking.sh).
//!
//! `bench_pick OUT_DIR [THREADS]`: renders the map (Gaussian blobs plus noise, deterministic),
//! writes it raw (`probs.f32`, [K, z, y, x] little-endian) with `params.json`, times
//! `nms::pick_whole` (best of 3, a rayon pool of THREADS) and writes `rust_picks.json`.

use std::io::Write;
use std::time::Instant;
use tomoflow_cryo::particles::{ClassInfo, Particle, ParticleTable, TomogramInfo};
use tomoflow_picking::nms::{pick_whole, NmsOptions};
use tomoflow_picking::probmap::{render_blobs, BlobOptions, ProbClass, ProbHeader};
use tomoflow_sdk::volume::ChunkMeta;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let out = std::path::PathBuf::from(args.get(1).map_or("bench/out/picking", |s| s.as_str()));
    let threads: usize = args.get(2).map_or(2, |s| s.parse().unwrap_or(2));
    std::fs::create_dir_all(&out)?;
    let shape = [184usize, 630, 630];
    let vs = 10.0;
    let defs = [
        ("apo-ferritin", 1, 60.0),
        ("beta-amylase", 2, 65.0),
        ("beta-galactosidase", 3, 90.0),
        ("ribosome", 4, 150.0),
        ("thyroglobulin", 5, 130.0),
        ("virus-like-particle", 6, 135.0),
        ("membrane", 7, 100.0),
    ];
    let classes: Vec<ProbClass> = defs
        .iter()
        .map(|(n, id, r)| ProbClass {
            id: *id,
            name: n.to_string(),
            radius_a: *r,
        })
        .collect();
    let mut rng = tomoflow_cryo::rng::Rng::new(7);
    let mut particles = Vec::new();
    for c in &classes {
        for _ in 0..60 {
            particles.push(Particle {
                class: c.name.clone(),
                class_id: c.id,
                x: rng.range(0.0, 6300.0),
                y: rng.range(0.0, 6300.0),
                z: rng.range(300.0, 1540.0),
                rot: 0.0,
                tilt: 0.0,
                psi: 0.0,
                q: [1.0, 0.0, 0.0, 0.0],
                instance: 0,
                score: 1.0,
            });
        }
    }
    let table = ParticleTable {
        tomogram: TomogramInfo {
            name: "bench".into(),
            shape,
            voxel_size: [vs; 3],
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
    let chunk = ChunkMeta::whole(shape, [vs; 3], [0.0; 3]);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()?;
    let t0 = Instant::now();
    // render per class in parallel (one class per task)
    let parts: Vec<Vec<f32>> = pool.install(|| {
        use rayon::prelude::*;
        (0..classes.len())
            .into_par_iter()
            .map(|k| {
                let mut d = render_blobs(
                    &table,
                    &classes[k..k + 1],
                    &chunk,
                    &BlobOptions {
                        sigma_fraction: 0.25,
                        peak: 0.8,
                        noise: 0.0,
                        seed: 1,
                    },
                );
                // class-specific noise (the same hash as a K-class render would use)
                let n = d.len() as u64;
                for (i, v) in d.iter_mut().enumerate() {
                    *v += 0.1 * tomoflow_picking::probmap::hash_noise(1, k, i as u64 % n);
                }
                d
            })
            .collect()
    });
    let data: Vec<f32> = parts.concat();
    eprintln!(
        "rendered {} voxels x {} classes in {:.1} s",
        chunk.len(),
        classes.len(),
        t0.elapsed().as_secs_f64()
    );
    let mut f = std::io::BufWriter::new(std::fs::File::create(out.join("probs.f32"))?);
    for v in &data {
        f.write_all(&v.to_le_bytes())?;
    }
    f.flush()?;
    let (threshold, rf, nf) = (0.5f32, 0.5, 0.5);
    std::fs::write(
        out.join("params.json"),
        serde_json::to_string_pretty(&serde_json::json!({
            "shape": shape, "voxel": vs, "threshold": threshold, "radius_fraction": rf, "nms_fraction": nf,
            "radii": classes.iter().map(|c| c.radius_a).collect::<Vec<_>>(),
        }))?,
    )?;
    let h = ProbHeader {
        chunk,
        classes: classes.clone(),
        tomogram: "bench".into(),
    };
    let opts = NmsOptions {
        radius_fraction: rf,
        nms_fraction: nf,
        smooth_a: None,
        min_voxels: 1,
        floors: vec![threshold; classes.len()],
        centroid: false,
    };
    let mut best = f64::INFINITY;
    let mut picks = None;
    for _ in 0..3 {
        let t = Instant::now();
        let p = pool.install(|| {
            let par = |n: usize, f: &(dyn Fn(usize) + Sync)| {
                use rayon::prelude::*;
                (0..n).into_par_iter().for_each(f)
            };
            pick_whole(&h, &data, opts.clone(), &par)
        })?;
        best = best.min(t.elapsed().as_secs_f64());
        picks = Some(p);
    }
    let p = picks.expect("ran");
    let rows: Vec<serde_json::Value> = p
        .picks
        .iter()
        .map(|c| serde_json::json!([c.class, c.voxel[0], c.voxel[1], c.voxel[2], c.score]))
        .collect();
    std::fs::write(out.join("rust_picks.json"), serde_json::to_string(&rows)?)?;
    println!("{{\"rust_seconds\": {best:.4}, \"threads\": {threads}, \"picks\": {}, \"candidates\": {}}}", p.picks.len(), p.candidates);
    Ok(())
}
