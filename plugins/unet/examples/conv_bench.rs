//! One 32 → 32 channel 3×3×3 convolution on a batch of 4 × 48³ (the U-Net's top level), forward
//! and backward: burn's generic passes on this build's backend next to `flex_ops::conv3`'s
//! kernels, and through autodiff next to the plugin's `conv3x3` (the `conv3` kernels on flex,
//! libtorch's own backward on `tch`).
//!
//! `cargo run --release -p tomoflow-unet --example conv_bench` prints seconds per pass (mean of 3
//! after a warm-up). It is also the minimal reproduction of where burn's CPU training time goes:
//! the weight gradient, computed as a convolution whose kernel is the whole output gradient,
//! costs about three forward passes.

use burn::tensor::module::{conv3d, conv_transpose3d};
use burn::tensor::ops::{ConvOptions, ConvTransposeOptions};
use burn::tensor::{Device, Distribution, Tensor};
use std::time::Instant;
use tomoflow_unet::flex_ops::{conv3, conv3x3};

fn time<T>(name: &str, mut f: impl FnMut() -> T) {
    let _ = f();
    let t0 = Instant::now();
    for _ in 0..3 {
        let _ = f();
    }
    println!("{name:<44} {:.3} s", t0.elapsed().as_secs_f64() / 3.0);
}

fn values(t: &Tensor<5>) -> Vec<f32> {
    t.clone().into_data().try_to_vec().expect("f32")
}

fn main() {
    let device = Device::default();
    let (batch, c, e) = (4, 32, 48);
    let normal = Distribution::Normal(0.0, 1.0);
    let x = Tensor::<5>::random([batch, c, e, e, e], normal, &device);
    let up = Tensor::<5>::random([batch, c, e, e, e], normal, &device);
    let w = Tensor::<5>::random([c, c, 3, 3, 3], normal, &device);
    let same = ConvOptions::new([1, 1, 1], [1, 1, 1], [1, 1, 1], 1);
    println!("backend {device:?}, batch {batch} x {c} channels x {e}^3");
    time("burn conv3d forward", || {
        values(&conv3d(x.clone(), w.clone(), None, same.clone()))
    });
    time("burn input gradient (conv_transpose3d)", || {
        let o = ConvTransposeOptions::new([1, 1, 1], [1, 1, 1], [0, 0, 0], [1, 1, 1], 1);
        values(&conv_transpose3d(up.clone(), w.clone(), None, o))
    });
    time("burn weight gradient (conv3d, kernel = grad)", || {
        let (xs, gs) = (x.clone().swap_dims(0, 1), up.clone().swap_dims(0, 1));
        values(&conv3d(xs, gs, None, same.clone()))
    });

    let g = conv3::Geometry {
        batch,
        cin: c,
        cout: c,
        dims: [e, e, e],
    };
    let (xv, gv, wv) = (values(&x), values(&up), values(&w));
    time("kernel forward", || conv3::forward(&xv, &wv, g));
    time("kernel input gradient", || conv3::input_grad(&gv, &wv, g));
    time("kernel weight gradient", || conv3::weight_grad(&xv, &gv, g));

    // The first layer: one input channel.
    let x1 = Tensor::<5>::random([batch, 1, e, e, e], normal, &device);
    let w1 = Tensor::<5>::random([c, 1, 3, 3, 3], normal, &device);
    time("burn conv3d forward, 1 -> 32 channels", || {
        values(&conv3d(x1.clone(), w1.clone(), None, same.clone()))
    });
    let g1 = conv3::Geometry { cin: 1, ..g };
    let (x1v, w1v) = (values(&x1), values(&w1));
    time("kernel forward, 1 -> 32 channels", || {
        conv3::forward(&x1v, &w1v, g1)
    });
    time("kernel weight gradient, 1 -> 32 channels", || {
        conv3::weight_grad(&x1v, &gv, g1)
    });

    let ad = device.autodiff();
    let xa = Tensor::<5>::from_data(x.into_data(), &ad).require_grad();
    let wa = Tensor::<5>::from_data(w.into_data(), &ad).require_grad();
    let ua = Tensor::<5>::from_data(up.into_data(), &ad);
    time("autodiff forward + backward, burn conv3d", || {
        let grads = (conv3d(xa.clone(), wa.clone(), None, same.clone()) * ua.clone())
            .sum()
            .backward();
        wa.grad(&grads).map(|t| t.into_data())
    });
    time("autodiff forward + backward, flex_ops::conv3x3", || {
        let grads = (conv3x3(xa.clone(), wa.clone(), None) * ua.clone())
            .sum()
            .backward();
        wa.grad(&grads).map(|t| t.into_data())
    });
}
