//! Benchmark (bench/noise.sh): 100 empirical and 100 spectral 128³ boxes, single-threaded, and
//! the FFT share of spectral synthesis against the bare `rustfft` bound.
//!
//! `cargo run --release -p tomoflow-noise --example noise_bench -- [path/to/tomogram]`

use std::path::PathBuf;
use std::time::Instant;
use tomoflow_cryo::fft::{plan, Complex32};
use tomoflow_noise::empirical::{SampleOptions, Sampler};
use tomoflow_noise::fft3d::ifft3_xyz_to_zyx;
use tomoflow_noise::source::{load_source, MaskParams, NonFinite, SourceOptions};
use tomoflow_noise::spectral::{estimate, EstimateOptions, Synthesizer};

fn main() -> anyhow::Result<()> {
    let path = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("data/real-tomograms/13pf_MT.tif"));
    let n = 100u64;
    let shape = [128usize; 3];
    let vox: usize = shape.iter().product();
    let t = Instant::now();
    let src = load_source(
        &path,
        &path.display().to_string(),
        &SourceOptions {
            voxel_size: 10.0,
            source_voxel_size: None,
            invert: false,
            mask: MaskParams::default(),
            non_finite: NonFinite::Error,
        },
    )?;
    let t_load = t.elapsed().as_secs_f64();
    let srcs = [src];
    let t = Instant::now();
    let sampler = Sampler::new(
        &srcs,
        SampleOptions {
            shape,
            overlap: 8,
            quarter_turns: false,
            min_positions: 16,
        },
    )?;
    let t_plan = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut check = 0.0f64;
    for i in 0..n {
        let b = sampler.sample(42, i);
        check += b[vox / 2] as f64;
    }
    let t_emp = t.elapsed().as_secs_f64();
    println!(
        "empirical: load+resample+mask {t_load:.3} s, layout {t_plan:.3} s ({:?}), {n} boxes of 128^3 in {t_emp:.3} s ({:.1} ms/box, {:.0} Mvoxel/s)",
        sampler.layout(),
        1e3 * t_emp / n as f64,
        (n as f64 * vox as f64) / t_emp / 1e6
    );

    let t = Instant::now();
    let model = estimate(
        &srcs,
        &EstimateOptions {
            patch: 32,
            max_patches: 256,
            n_xy: 16,
            n_z: 16,
        },
        "bench",
    )?;
    let t_fit = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let syn = Synthesizer::new(&model, shape, 10.0)?;
    let t_prep = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut tmp = Vec::new();
    for i in 0..n / 2 {
        let (a, b) = syn.pair(42, i, &mut tmp);
        check += (a[0] + b[0]) as f64;
    }
    let t_spec = t.elapsed().as_secs_f64();
    println!(
        "spectral: fit {t_fit:.3} s, amplitude grid {t_prep:.3} s, {n} boxes of 128^3 ({} inverse 3D FFTs) in {t_spec:.3} s ({:.1} ms/box)",
        n / 2,
        1e3 * t_spec / n as f64
    );

    // FFT share: our 3D inverse FFT vs the bare rustfft bound (the three batched line passes
    // alone, no transposes), each × 50.
    let reps = 10;
    let mut data = vec![Complex32::new(1.0, 0.5); vox];
    let t = Instant::now();
    for _ in 0..reps {
        ifft3_xyz_to_zyx(&mut data, shape, &mut tmp);
    }
    let t3 = t.elapsed().as_secs_f64() / reps as f64;
    let p = plan(128, true);
    let mut scratch = vec![Complex32::default(); p.get_inplace_scratch_len()];
    let t = Instant::now();
    for _ in 0..reps {
        for _ in 0..3 {
            p.process_with_scratch(&mut data, &mut scratch);
        }
    }
    let tb = t.elapsed().as_secs_f64() / reps as f64;
    let flops = 5.0 * vox as f64 * (vox as f64).log2();
    println!(
        "FFT 128^3 (complex, inverse): ours {:.2} ms ({:.2} GFLOP/s), bare rustfft bound {:.2} ms ({:.2} GFLOP/s): ratio {:.2}; × {} FFTs = {:.3} s vs bound {:.3} s",
        1e3 * t3,
        flops / t3 / 1e9,
        1e3 * tb,
        flops / tb / 1e9,
        t3 / tb,
        n / 2,
        t3 * (n / 2) as f64,
        tb * (n / 2) as f64
    );
    println!("(checksum {check:.3})");
    let ok = t_emp < 2.0 && t_spec < 2.0;
    println!("budget (each < 2 s): {}", if ok { "PASS" } else { "FAIL" });
    Ok(())
}
