//! Benchmark of the recon/projector pure functions on a 256 x 256 x 128 (x, y, z) sphere
//! phantom, 61 tilts from -60° to +60°. Writes the phantom and the tilt
//! geometry for the peers (bench/recon.sh) and prints timings and correlations as JSON.
//!
//!   cargo run --release -p tomoflow-recon --example bench -- OUT_DIR [THREADS]

use std::time::Instant;
use tomoflow_cryo::fft::transpose;
use tomoflow_cryo::projector::{from_zxy, to_zxy, Geometry};
use tomoflow_recon::recon::*;

struct Pool(rayon::ThreadPool);
impl Par for Pool {
    fn run(&self, n: usize, f: &(dyn Fn(usize) + Sync)) {
        use rayon::prelude::*;
        self.0.install(|| (0..n).into_par_iter().for_each(f))
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let out = std::path::PathBuf::from(args.get(1).cloned().unwrap_or_else(|| "bench/out".into()));
    let threads: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1);
    std::fs::create_dir_all(&out).unwrap();
    let pool = Pool(
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap(),
    );
    let shape = [128, 256, 256];
    let truth = phantom::render(shape, &phantom::spheres(shape));
    tomoflow_cryo::mrc::write_mrc(out.join("phantom.mrc"), &truth, shape, [1.0; 3], [0.0; 3])
        .unwrap();
    let angles: Vec<f64> = (0..61).map(|i| -60.0 + 2.0 * i as f64).collect();
    let g = Geometry::new(shape, 1.0);
    let vol = to_zxy(&truth, shape);
    let best = |f: &mut dyn FnMut()| {
        (0..3)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64()
            })
            .fold(f64::MAX, f64::min)
    };
    let mut projs = Vec::new();
    let t_fp = best(&mut || projs = forward_all(&g, &vol, &angles, &pool));
    // Sinograms for the peers: (tilt, y, u) as MRC.
    let mut stack = Vec::with_capacity(61 * 256 * 256);
    for p in &projs {
        let mut img = vec![0f32; p.len()];
        transpose(p, &mut img, g.nu, g.ny);
        stack.extend_from_slice(&img);
    }
    tomoflow_cryo::mrc::write_mrc(
        out.join("projections.mrc"),
        &stack,
        [61, 256, 256],
        [1.0; 3],
        [0.0; 3],
    )
    .unwrap();
    let images: Vec<Vec<f32>> = stack.chunks_exact(256 * 256).map(|c| c.to_vec()).collect();
    let w = angle_weights(&angles);
    let mut results = Vec::new();
    for (name, f) in [
        (
            "ramp",
            Filter {
                window: Window::Ramp,
                cutoff: 1.0,
                sirt_like: None,
            },
        ),
        (
            "hamming",
            Filter {
                window: Window::Hamming,
                cutoff: 1.0,
                sirt_like: None,
            },
        ),
    ] {
        let mut rec = Vec::new();
        let t = best(&mut || {
            let q = prepare_wbp(images.clone(), g.ny, g.nu, 1.0, &f, &pool);
            rec = wbp_all(&g, &q, &angles, &w, &pool);
        });
        let r = pearson(&from_zxy(&rec, g.ny, g.nx), &truth);
        results.push(format!(
            "\"wbp_{name}\": {{\"seconds\": {t:.4}, \"pearson\": {r:.4}}}"
        ));
    }
    // SIRT: plain (as ASTRA's SIRT) and with the non-negativity of a density.
    for (label, it, nonneg) in [
        ("sirt10", 10, false),
        ("sirt30", 30, false),
        ("sirt10_nonneg", 10, true),
    ] {
        let t_s = Instant::now();
        let x = sirt(&g, &projs, &angles, it, 1.0, nonneg, &pool, |_| true);
        let t = t_s.elapsed().as_secs_f64();
        let r = pearson(&from_zxy(&x, g.ny, g.nx), &truth);
        results.push(format!(
            "\"{label}\": {{\"seconds\": {t:.3}, \"pearson\": {r:.4}}}"
        ));
    }
    let updates = (g.volume_len() * angles.len()) as f64;
    println!(
        "{{\"threads\": {threads}, \"forward_seconds\": {t_fp:.4}, \"forward_voxel_updates_per_s_per_core\": {:.3e}, {}}}",
        updates / t_fp / threads as f64,
        results.join(", ")
    );
}
