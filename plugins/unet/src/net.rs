//! The 3D U-Net: architecture description, the burn module, and the loss.
//!
//! DeepFinder-like by default: encoder widths 32-48-64 (two downsamplings), two 3×3×3
//! convolutions + ReLU per level, 2×2×2 max pooling down, 2×2×2 transposed convolution up with
//! skip concatenation, and a 1×1×1 convolution to `K + 1` class logits (background first).
//! The 3D layers' arithmetic is in [`crate::flex_ops`] (burn has no MaxPool3d; on flex the
//! convolutions, up-convolutions and pooling have hand-written backward passes).

use crate::flex_ops::{conv1x1, conv3x3_relu, max_pool_2x, up2x};
use anyhow::{bail, Result};
use burn::module::{Module, Param};
use burn::nn::conv::{Conv3d, Conv3dConfig, ConvTranspose3d, ConvTranspose3dConfig};
use burn::nn::PaddingConfig3d;
use burn::tensor::activation::{log_softmax, softmax};
use burn::tensor::{Device, Tensor, TensorData};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tomoflow_cryo::rng::Rng;

/// Network shape: stored in every model file so that it rebuilds anywhere.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Arch {
    /// Channels per level, top to bottom; `len() - 1` downsamplings (DeepFinder: 32, 48, 64).
    #[serde(default = "d_widths")]
    pub widths: Vec<usize>,
    /// Output classes including background (`K + 1`); filled in from the class table.
    #[serde(default)]
    pub classes: usize,
}

fn d_widths() -> Vec<usize> {
    vec![32, 48, 64]
}

impl Default for Arch {
    fn default() -> Self {
        Arch {
            widths: d_widths(),
            classes: 0,
        }
    }
}

impl Arch {
    /// Number of 2× downsamplings.
    pub fn depth(&self) -> usize {
        self.widths.len() - 1
    }

    /// Every patch and tile edge must be a multiple of this (`2^depth`).
    pub fn granularity(&self) -> usize {
        1 << self.depth()
    }

    /// Radius of the receptive field in voxels: how far a voxel's output looks. Tiles whose
    /// margin is at least this give outputs identical to whole-volume inference.
    pub fn receptive_radius(&self) -> usize {
        let d = self.depth();
        // Two 3×3×3 convolutions per level (radius 2 × scale) on the way down, at the bottom
        // and on the way up, plus pooling / upsampling (one scale step each).
        let down: usize = (0..d).map(|l| 2 << l).sum();
        let bottom = 2 << d;
        let up = down;
        let resample: usize = (0..d).map(|l| 2 << l).sum();
        down + bottom + up + resample
    }

    /// Check widths and class count.
    pub fn validate(&self) -> Result<()> {
        if self.widths.is_empty() || self.widths.len() > 6 {
            bail!(
                "architecture.widths must list 1 to 6 levels (got {})",
                self.widths.len()
            );
        }
        if self.widths.iter().any(|&w| w == 0 || w > 1024) {
            bail!(
                "architecture.widths must be between 1 and 1024 channels (got {:?})",
                self.widths
            );
        }
        if self.classes < 2 {
            bail!("the network needs at least one foreground class besides background");
        }
        Ok(())
    }
}

/// Two 3×3×3 convolutions, each followed by ReLU ([`conv3x3_relu`]: burn's `Conv3d` parameters,
/// faster kernels on the flex and libtorch backends).
#[derive(Module, Debug)]
pub struct DoubleConv {
    a: Conv3d,
    b: Conv3d,
}

impl DoubleConv {
    fn seed(&mut self, rng: &mut Rng, device: &Device) {
        seed_conv(&mut self.a, rng, device);
        seed_conv(&mut self.b, rng, device);
    }

    fn new(cin: usize, cout: usize, device: &Device) -> DoubleConv {
        let cfg = |i, o| {
            Conv3dConfig::new([i, o], [3, 3, 3]).with_padding(PaddingConfig3d::Explicit(1, 1, 1))
        };
        DoubleConv {
            a: cfg(cin, cout).init(device),
            b: cfg(cout, cout).init(device),
        }
    }

    fn forward(&self, x: Tensor<5>) -> Tensor<5> {
        let conv =
            |c: &Conv3d, x| conv3x3_relu(x, c.weight.val(), c.bias.as_ref().map(|b| b.val()));
        conv(&self.b, conv(&self.a, x))
    }
}

/// The U-Net module.
#[derive(Module, Debug)]
pub struct UNet {
    down: Vec<DoubleConv>,
    up: Vec<ConvTranspose3d>,
    dec: Vec<DoubleConv>,
    head: Conv3d,
}

/// Parameter values uniform in ±1/sqrt(`fan_in`), drawn on the CPU.
fn uniform_param<const D: usize>(
    shape: [usize; D],
    fan_in: usize,
    rng: &mut Rng,
    device: &Device,
) -> Param<Tensor<D>> {
    let bound = 1.0 / (fan_in as f64).sqrt();
    let values: Vec<f32> = (0..shape.iter().product::<usize>())
        .map(|_| rng.range(-bound, bound) as f32)
        .collect();
    Param::from_tensor(Tensor::from_data(TensorData::new(values, shape), device))
}

/// Redraw a weight and its bias. `out_axis` is the weight's output-channel axis: 0 for a
/// convolution `[out, in, k, k, k]`, 1 for a transposed one `[in, out, k, k, k]`; the fan-in is
/// the product of axes 1.. in both cases, as burn and PyTorch count it.
fn redraw(
    weight: &mut Param<Tensor<5>>,
    bias: Option<&mut Param<Tensor<1>>>,
    out_axis: usize,
    rng: &mut Rng,
    device: &Device,
) {
    let shape: [usize; 5] = weight.lazy_shape().dims();
    let fan_in = shape[1..].iter().product();
    *weight = uniform_param(shape, fan_in, rng, device);
    if let Some(b) = bias {
        *b = uniform_param([shape[out_axis]], fan_in, rng, device);
    }
}

fn seed_conv(c: &mut Conv3d, rng: &mut Rng, device: &Device) {
    redraw(&mut c.weight, c.bias.as_mut(), 0, rng, device);
}

impl UNet {
    /// A freshly initialised network: every weight and bias uniform in ±1/sqrt(fan-in) (the
    /// default of burn and PyTorch), drawn from `seed` on the CPU in a fixed order, so that the
    /// same seed gives the same initial network on every backend (burn's own initialisers draw
    /// from the backend's generator, which differs between CPU and GPU).
    pub fn seeded(arch: &Arch, seed: u64, device: &Device) -> UNet {
        let mut rng = Rng::new(seed);
        let mut net = UNet::new(arch, device);
        for block in net.down.iter_mut() {
            block.seed(&mut rng, device);
        }
        for (up, dec) in net.up.iter_mut().zip(net.dec.iter_mut()) {
            redraw(&mut up.weight, up.bias.as_mut(), 1, &mut rng, device);
            dec.seed(&mut rng, device);
        }
        seed_conv(&mut net.head, &mut rng, device);
        net
    }

    /// A network of shape `arch` whose parameters are still to be loaded or drawn (burn fills
    /// them lazily from the backend's generator if they are used before).
    pub fn new(arch: &Arch, device: &Device) -> UNet {
        let w = &arch.widths;
        let mut down = Vec::new();
        let mut cin = 1;
        for &c in w {
            down.push(DoubleConv::new(cin, c, device));
            cin = c;
        }
        let mut up = Vec::new();
        let mut dec = Vec::new();
        for l in (0..arch.depth()).rev() {
            up.push(
                ConvTranspose3dConfig::new([w[l + 1], w[l]], [2, 2, 2])
                    .with_stride([2, 2, 2])
                    .init(device),
            );
            dec.push(DoubleConv::new(2 * w[l], w[l], device));
        }
        let head = Conv3dConfig::new([w[0], arch.classes], [1, 1, 1]).init(device);
        UNet {
            down,
            up,
            dec,
            head,
        }
    }

    /// Logits `[N, K+1, D, H, W]` of an input `[N, 1, D, H, W]` (edges multiples of 2^depth).
    pub fn forward(&self, x: Tensor<5>) -> Tensor<5> {
        let mut skips = Vec::with_capacity(self.down.len());
        let mut h = x;
        for (l, block) in self.down.iter().enumerate() {
            if l > 0 {
                h = max_pool_2x(h);
            }
            h = block.forward(h);
            skips.push(h.clone());
        }
        skips.pop();
        for (up, dec) in self.up.iter().zip(&self.dec) {
            let skip = skips.pop().expect("one skip per level");
            h = up2x(h, up.weight.val(), up.bias.as_ref().map(|b| b.val()));
            h = dec.forward(Tensor::cat(vec![skip, h], 1));
        }
        conv1x1(
            h,
            self.head.weight.val(),
            self.head.bias.as_ref().map(|b| b.val()),
        )
    }
}

/// Per-class weights and the one-hot targets of a batch, prepared on the CPU.
pub struct Targets {
    /// One-hot `[N, C, D, H, W]`.
    pub onehot: Tensor<5>,
    /// One-hot times the class weight of each voxel's class.
    pub weighted: Tensor<5>,
    /// Sum of the class weights over all voxels (the cross-entropy normaliser).
    pub weight_sum: f32,
}

impl Targets {
    /// Build from class indices (`0..classes`) of a batch of shape `[n, d, h, w]`.
    pub fn new(
        labels: &[u8],
        shape: [usize; 4],
        classes: usize,
        weights: &[f32],
        device: &Device,
    ) -> Targets {
        let [n, d, h, w] = shape;
        let v = d * h * w;
        let mut onehot = vec![0f32; n * classes * v];
        let mut weighted = vec![0f32; n * classes * v];
        let mut weight_sum = 0f64;
        for b in 0..n {
            for i in 0..v {
                let k = labels[b * v + i] as usize;
                let j = (b * classes + k) * v + i;
                onehot[j] = 1.0;
                weighted[j] = weights[k];
                weight_sum += weights[k] as f64;
            }
        }
        let dims = [n, classes, d, h, w];
        Targets {
            onehot: Tensor::from_data(TensorData::new(onehot, dims), device),
            weighted: Tensor::from_data(TensorData::new(weighted, dims), device),
            weight_sum: weight_sum.max(1e-12) as f32,
        }
    }
}

/// Class-weighted cross-entropy (mean over voxels, PyTorch's weighting) plus `dice_weight` ×
/// (1 − mean soft Dice over the foreground classes). Returns the scalar loss tensor. On libtorch
/// it runs in libtorch's kernels, forward and backward; they agree with [`loss_generic`] (tested).
pub fn loss(logits: Tensor<5>, t: &Targets, dice_weight: f32) -> Tensor<1> {
    #[cfg(feature = "tch")]
    if crate::flex_ops::on_libtorch(&logits.device()) {
        return crate::flex_ops::libtorch::seg_loss(
            logits,
            t.weighted.clone(),
            t.onehot.clone(),
            t.weight_sum,
            dice_weight,
        );
    }
    loss_generic(logits, t, dice_weight)
}

/// [`loss`] in burn's generic operations, for every backend.
pub fn loss_generic(logits: Tensor<5>, t: &Targets, dice_weight: f32) -> Tensor<1> {
    let logp = log_softmax(logits.clone(), 1);
    let ce = (logp * t.weighted.clone()).sum().div_scalar(-t.weight_sum);
    if dice_weight == 0.0 {
        return ce;
    }
    let [n, c, d, h, w] = logits.dims();
    let p = softmax(logits, 1);
    let flat = |x: Tensor<5>| x.swap_dims(0, 1).reshape([c, n * d * h * w]);
    let p = flat(p);
    let g = flat(t.onehot.clone());
    let inter = (p.clone() * g.clone()).sum_dim(1);
    let denom = p.sum_dim(1) + g.sum_dim(1);
    let eps = 1.0;
    let dice = inter.mul_scalar(2.0).add_scalar(eps) / denom.add_scalar(eps);
    let fg = dice.slice([1..c, 0..1]).mean();
    ce + fg.neg().add_scalar(1.0).mul_scalar(dice_weight)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_pool_matches_definition() {
        let device = Device::default();
        let vals: Vec<f32> = (0..2 * 4 * 4 * 4)
            .map(|i| ((i * 37) % 101) as f32)
            .collect();
        let x = Tensor::<5>::from_data(TensorData::new(vals.clone(), [1, 2, 4, 4, 4]), &device);
        for y in [
            max_pool_2x(x.clone()),
            crate::flex_ops::max_pool_2x_reshaped(x.clone()),
        ] {
            let y: Vec<f32> = y.into_data().try_to_vec().unwrap();
            assert_eq!(y.len(), 2 * 8);
            for c in 0..2 {
                for z in 0..2 {
                    for yy in 0..2 {
                        for xx in 0..2 {
                            let mut m = f32::MIN;
                            for dz in 0..2 {
                                for dy in 0..2 {
                                    for dx in 0..2 {
                                        let i = ((c * 4 + 2 * z + dz) * 4 + 2 * yy + dy) * 4
                                            + 2 * xx
                                            + dx;
                                        m = m.max(vals[i]);
                                    }
                                }
                            }
                            assert_eq!(y[((c * 2 + z) * 2 + yy) * 2 + xx], m);
                        }
                    }
                }
            }
        }
    }

    /// The loss against a plain f64 computation of its definition, and (on libtorch, where
    /// [`loss`] is libtorch's) its value and gradient against [`loss_generic`].
    #[test]
    fn loss_matches_its_definition() {
        let ad = Device::default().autodiff();
        let (n, c, d, h, w) = (2, 3, 2, 3, 4);
        let v = d * h * w;
        let values = crate::flex_ops::test_values(n * c * v, 7);
        let logits: Vec<f32> = values.iter().map(|x| 6.0 * x).collect();
        let labels: Vec<u8> = (0..n * v).map(|i| ((i * 5 + i / 7) % c) as u8).collect();
        let weights = [0.5f32, 2.0, 1.5];
        let t = Targets::new(&labels, [n, d, h, w], c, &weights, &ad);
        for dice_weight in [0.0f32, 0.7] {
            // The definition, voxel by voxel, in f64.
            let (mut ce, mut wsum) = (0f64, 0f64);
            let (mut inter, mut psum, mut gsum) = (vec![0f64; c], vec![0f64; c], vec![0f64; c]);
            for b in 0..n {
                for i in 0..v {
                    let l: Vec<f64> = (0..c).map(|k| logits[(b * c + k) * v + i] as f64).collect();
                    let m = l.iter().cloned().fold(f64::MIN, f64::max);
                    let z: f64 = l.iter().map(|x| (x - m).exp()).sum();
                    let k0 = labels[b * v + i] as usize;
                    ce -= weights[k0] as f64 * (l[k0] - m - z.ln());
                    wsum += weights[k0] as f64;
                    for k in 0..c {
                        let p = (l[k] - m).exp() / z;
                        psum[k] += p;
                        if k == k0 {
                            inter[k] += p;
                            gsum[k] += 1.0;
                        }
                    }
                }
            }
            let dice: f64 = (1..c)
                .map(|k| (2.0 * inter[k] + 1.0) / (psum[k] + gsum[k] + 1.0))
                .sum::<f64>()
                / (c - 1) as f64;
            let want = ce / wsum + dice_weight as f64 * (1.0 - dice);
            let run = |generic: bool| {
                let x =
                    Tensor::<5>::from_data(TensorData::new(logits.clone(), [n, c, d, h, w]), &ad)
                        .require_grad();
                let l = if generic {
                    loss_generic(x.clone(), &t, dice_weight)
                } else {
                    loss(x.clone(), &t, dice_weight)
                };
                let value = l.clone().into_scalar::<f32>() as f64;
                let grad = x
                    .grad(&l.backward())
                    .unwrap()
                    .into_data()
                    .try_to_vec::<f32>()
                    .unwrap();
                (value, grad)
            };
            let (fast, generic) = (run(false), run(true));
            assert!((fast.0 - want).abs() < 1e-5, "{} vs {want}", fast.0);
            assert!((generic.0 - want).abs() < 1e-5, "{} vs {want}", generic.0);
            for (a, b) in fast.1.iter().zip(&generic.1) {
                assert!((a - b).abs() < 1e-6, "gradient {a} vs {b}");
            }
        }
    }

    #[test]
    fn forward_shape_and_receptive_radius() {
        let device = Device::default();
        let arch = Arch {
            widths: vec![4, 8, 8],
            classes: 3,
        };
        let net = UNet::new(&arch, &device);
        let x = Tensor::<5>::zeros([2, 1, 8, 12, 16], &device);
        assert_eq!(net.forward(x).dims(), [2, 3, 8, 12, 16]);
        assert_eq!(arch.granularity(), 4);
        assert_eq!(arch.receptive_radius(), 6 + 8 + 6 + 6);
    }
}
