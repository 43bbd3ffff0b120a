//! Benchmark of the placement plugin's science (run by `bench/placement.sh`, release build):
//!
//! 1. Packing N particles of the five CZII-like classes (equal counts) into 512 x 512 x 200
//!    voxels at 10 Å with exact mask overlap checks, then rendering the potential, class and
//!    instance maps, for N = 250, 500, 1000, 2000, on `THREADS` threads (default 2).
//! 2. PDB -> potential for 3j9i (46,228 atoms) at 5 Å: reading the gzipped PDB plus the
//!    voxel-integrated potential.
//!
//! Usage: `bench_placement [DATA_TEMPLATES_DIR] [SHARED_PDB_DIR]`.

use std::time::Instant;
use tomoflow_cryo::template::{AtomOptions, Template};
use tomoflow_placement::nodes::{build_template, run_place, ClassParams, PlaceParams};
use tomoflow_placement::place::{Prepared, Renderer};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let tdir = std::path::PathBuf::from(
        args.get(1)
            .cloned()
            .unwrap_or_else(|| "data/templates".into()),
    );
    let pdir = std::path::PathBuf::from(
        args.get(2)
            .cloned()
            .unwrap_or_else(|| "../shared/data/templates/pdbs".into()),
    );
    let threads: usize = std::env::var("THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let classes = [
        ("apo-ferritin", "6pxm.mrc"),
        ("beta-galactosidase", "1f4a.mrc"),
        ("ribosome", "6qzp.mrc"),
        ("thyroglobulin", "7n4y.mrc"),
        ("virus-like-particle", "8tux.mrc"),
    ];
    let t0 = Instant::now();
    let templates: Vec<Template> = classes
        .iter()
        .enumerate()
        .map(|(i, (n, f))| {
            let c: ClassParams =
                serde_json::from_value(serde_json::json!({"name": n, "path": f})).unwrap();
            build_template(&c, i, 10.0, &|s| tdir.join(s))
        })
        .collect::<anyhow::Result<_>>()?;
    println!(
        "templates: 5 maps -> 10 Å templates in {:.3} s",
        t0.elapsed().as_secs_f64()
    );
    let par = |n: usize, f: &(dyn Fn(usize) + Sync)| {
        let next = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= n {
                        break;
                    }
                    f(i);
                });
            }
        });
    };
    println!("placement into 512 x 512 x 200 voxels at 10 Å, {threads} threads (render = potential + labels + instances, all planes)");
    println!(
        "{:>6} {:>10} {:>10} {:>10} {:>10} {:>9}",
        "N", "pack_s", "render_s", "total_s", "attempts", "occupancy"
    );
    for n in [250usize, 500, 1000, 2000] {
        let per = n / 5;
        let counts: serde_json::Map<String, serde_json::Value> = classes
            .iter()
            .map(|(c, _)| (c.to_string(), per.into()))
            .collect();
        let p: PlaceParams = serde_json::from_value(
            serde_json::json!({"shape": [200, 512, 512], "voxel_size": 10, "counts": counts}),
        )?;
        let t = Instant::now();
        let run = run_place(&p, 42, "bench", &templates)?;
        let pack_s = t.elapsed().as_secs_f64();
        let prepared: Vec<Prepared> = run.prepared_templates.iter().map(Prepared::new).collect();
        let r = Renderer::new(&run.cfg, &prepared, &run.packing, run.physics);
        let t = Instant::now();
        let mut check = 0f64;
        for z0 in (0..200).step_by(16) {
            let s = r.slab(z0, (z0 + 16).min(200), &par);
            check += s.potential.iter().map(|&v| v as f64).sum::<f64>();
        }
        let render_s = t.elapsed().as_secs_f64();
        assert!(check > 0.0);
        println!(
            "{:>6} {:>10.3} {:>10.3} {:>10.3} {:>10} {:>9.4}",
            n,
            pack_s,
            render_s,
            pack_s + render_s,
            run.packing.attempts,
            run.packing.occupancy
        );
    }
    let pdb = pdir.join("3j9i.pdb.gz");
    if pdb.exists() {
        let t = Instant::now();
        let m = tomoflow_cryo::pdb::read_model(&pdb)?;
        let read_s = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let tpl = Template::from_atoms("3j9i", 1, &m, 5.0, &AtomOptions::default())?;
        let pot_s = t.elapsed().as_secs_f64();
        println!(
            "pdb->potential 3j9i: {} atoms, {:?} voxels at 5 Å: read {:.3} s + potential {:.3} s = {:.3} s (integral error {:.2e})",
            m.atoms.len(), tpl.shape, read_s, pot_s, read_s + pot_s, tpl.integral() / m.potential_integral() - 1.0
        );
    } else {
        println!("pdb->potential: {} missing, skipped", pdb.display());
    }
    Ok(())
}
