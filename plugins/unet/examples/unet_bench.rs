//! Step and inference times of the U-Net on this machine's burn backend, for bench/unet.sh.
//!
//! `cargo run --release -p tomoflow-unet --example unet_bench` prints one JSON line per
//! measurement: training steps (batch 4 x 48^3 and 2 x 32^3) and inference of a 128^3 volume in
//! 27 tiles of 64^3, with the DeepFinder-like default network (widths 32-48-64, 7 classes).

use burn::module::Module;
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{Device, Tensor, TensorData};
use std::time::Instant;
use tomoflow_unet::infer::{infer, Blend, Tiling};
use tomoflow_unet::net::{loss, Arch, Targets, UNet};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    // As unet-train and unet-infer do (TOMOFLOW_MALLOC_TUNE=0 to compare without).
    eprintln!("allocator tuned: {}", tomoflow_unet::alloc::tune());
    let args: Vec<String> = std::env::args().collect();
    let steps: usize = args
        .iter()
        .position(|a| a == "--steps")
        .map(|i| args[i + 1].parse().unwrap())
        .unwrap_or(3);
    let device = Device::default();
    let arch = Arch {
        widths: vec![32, 48, 64],
        classes: 7,
    };
    let params = UNet::seeded(&arch, 1, &device).num_params();
    eprintln!("backend {device:?}, {params} parameters");
    for (batch, edge) in [(4usize, 48usize), (2, 32)] {
        let ad = device.clone().autodiff();
        let mut model = UNet::seeded(&arch, 1, &ad);
        let mut optim = AdamConfig::new().init();
        let n = batch * edge * edge * edge;
        let data: Vec<f32> = (0..n)
            .map(|i| ((i * 7919) % 1000) as f32 / 1000.0)
            .collect();
        let labels: Vec<u8> = (0..n).map(|i| ((i / 97) % 7) as u8).collect();
        let weights = vec![1.0f32; 7];
        let mut times = Vec::new();
        for s in 0..steps + 1 {
            let t0 = Instant::now();
            let x = Tensor::<5>::from_data(
                TensorData::new(data.clone(), [batch, 1, edge, edge, edge]),
                &ad,
            );
            let t = Targets::new(&labels, [batch, edge, edge, edge], 7, &weights, &ad);
            let l = loss(model.forward(x), &t, 1.0);
            let value = l.clone().into_scalar::<f32>();
            let grads = GradientsParams::from_grads(l.backward(), &model);
            model = optim.step(1e-3, model, grads);
            // GPU backends queue work: wait for the optimiser step before reading the clock.
            ad.sync().expect("device sync");
            if s == 0 || s == steps {
                eprintln!("batch {batch} x {edge}^3, step {s}: loss {value:.4}");
            }
            if s > 0 {
                times.push(t0.elapsed().as_secs_f64());
            }
        }
        let m = median(times);
        println!(
            "{{\"what\": \"train\", \"batch\": {batch}, \"patch\": {edge}, \"s_per_step\": {m:.4}, \"voxels_per_s\": {:.0}, \"params\": {params}}}",
            n as f64 / m
        );
    }
    let net = UNet::seeded(&arch, 1, &device);
    let shape = [128usize; 3];
    let vol: Vec<f32> = (0..128 * 128 * 128)
        .map(|i| ((i * 7919) % 1000) as f32 / 1000.0)
        .collect();
    let tiling = Tiling {
        tile: 64,
        stride: 32,
        tile_depth: None,
        stride_depth: None,
        margin: 0,
        blend: Blend::Gaussian,
        tta: false,
        batch: 1,
    };
    let mut times = Vec::new();
    for _ in 0..2 {
        let t0 = Instant::now();
        let p = infer(
            &net,
            &arch,
            &vol,
            shape,
            &tiling,
            &device,
            &mut |_, _| {},
            &|| false,
        )
        .unwrap();
        assert_eq!(p.len(), 6 * 128 * 128 * 128);
        times.push(t0.elapsed().as_secs_f64());
    }
    let m = times.iter().cloned().fold(f64::MAX, f64::min);
    println!(
        "{{\"what\": \"infer\", \"volume\": 128, \"tiles\": 27, \"tile\": 64, \"s\": {m:.3}, \"voxels_per_s\": {:.0}}}",
        (27 * 64 * 64 * 64) as f64 / m
    );
}
