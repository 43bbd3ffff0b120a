//! The U-Net's 3D layers with hand-written forward and backward passes for burn's pure-Rust
//! `flex` backend: the 3×3×3 convolution ([`conv3`]), the 2×2×2 transposed convolution with
//! stride 2 ([`up2`]) and 2×2×2 max pooling ([`pool2`]).
//!
//! burn computes these gradients generically: a convolution's input gradient as a transposed
//! convolution and its weight gradient as a convolution whose kernel is the whole output
//! gradient (three forward passes' worth on a CPU), and pooling built from reshapes through
//! `max_dim` and scatter. The kernels here are GEMMs on strided views (no im2col) and one pass over
//! the data; this module plugs them into burn as a backend extension with hand-written autodiff
//! nodes. On burn's libtorch backend ([`libtorch`], `tch` feature) the three layers, with their
//! biases and ReLUs, the 1×1×1 head ([`conv1x1`]) and the loss run forward and backward in
//! libtorch's own kernels; on `wgpu` [`conv3x3`], [`up2x`] and [`max_pool_2x`] are burn's own
//! operations.

pub mod conv3;
#[cfg(feature = "tch")]
pub mod libtorch;
pub mod pool2;
pub mod up2;

use burn::tensor::module::{conv3d, conv_transpose3d};
use burn::tensor::ops::{ConvOptions, ConvTransposeOptions};
use burn::tensor::Tensor;
use rayon::prelude::*;

/// A raw pointer that may cross threads; every use writes a region no other task writes.
#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

impl SendPtr {
    /// The pointer (a method, so closures capture the whole `Send` wrapper).
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// `dst (m × n) = lhs (m × k) · rhs (k × n)`, or `dst += …` with `accumulate`, on strided views
/// given as `(pointer, [row stride, column stride])` in elements; single-threaded (the kernels
/// parallelise over blocks). The `gemm` crate that burn-flex uses does the work.
///
/// # Safety
/// Every element the three views address must lie inside a live allocation, and no other thread
/// may touch the elements of `dst` meanwhile.
unsafe fn matmul(
    [m, n, k]: [usize; 3],
    (dst, [dst_rs, dst_cs]): (*mut f32, [usize; 2]),
    accumulate: bool,
    (lhs, [lhs_rs, lhs_cs]): (*const f32, [usize; 2]),
    (rhs, [rhs_rs, rhs_cs]): (*const f32, [usize; 2]),
) {
    // SAFETY: the caller's contract.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            dst_cs as isize,
            dst_rs as isize,
            accumulate,
            lhs,
            lhs_cs as isize,
            lhs_rs as isize,
            rhs,
            rhs_cs as isize,
            rhs_rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// A kernel `[a, b, taps]` as `[taps, a, b]`: one `a × b` matrix per tap.
fn taps_first(weight: &[f32], [a, b, taps]: [usize; 3]) -> Vec<f32> {
    let mut out = vec![0.0f32; weight.len()];
    for i in 0..a {
        for j in 0..b {
            for t in 0..taps {
                out[(t * a + i) * b + j] = weight[(i * b + j) * taps + t];
            }
        }
    }
    out
}

/// The inverse of [`taps_first`]: `[taps, a, b]` back to the kernel layout `[a, b, taps]`.
fn taps_last(per_tap: &[f32], [a, b, taps]: [usize; 3]) -> Vec<f32> {
    let mut out = vec![0.0f32; per_tap.len()];
    for t in 0..taps {
        for i in 0..a {
            for j in 0..b {
                out[(i * b + j) * taps + t] = per_tap[(t * a + i) * b + j];
            }
        }
    }
    out
}

/// Work items of a reduction are summed in this many fixed groups, in order.
const SUM_GROUPS: usize = 16;

/// `Σ_item work(item)` into `len` accumulators, in parallel but in a fixed order (items in
/// [`SUM_GROUPS`] consecutive groups, groups added first to last), so the result does not depend
/// on the number of threads. `scratch` makes each group's working buffer.
fn ordered_sum<S>(
    items: usize,
    len: usize,
    scratch: impl Fn() -> S + Sync,
    work: impl Fn(&mut S, usize, &mut [f32]) + Sync,
) -> Vec<f32> {
    let mut total = vec![0.0f32; len];
    if items == 0 {
        return total;
    }
    let per_group = items.div_ceil(SUM_GROUPS);
    let partials: Vec<Vec<f32>> = (0..items.div_ceil(per_group))
        .into_par_iter()
        .map(|group| {
            let (mut s, mut acc) = (scratch(), vec![0.0f32; len]);
            for item in group * per_group..((group + 1) * per_group).min(items) {
                work(&mut s, item, &mut acc);
            }
            acc
        })
        .collect();
    for part in &partials {
        for (t, v) in total.iter_mut().zip(part) {
            *t += v;
        }
    }
    total
}

#[cfg(feature = "flex")]
mod flex {
    use super::{conv3, pool2, up2};
    use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::CheckpointStrategy};
    use burn::backend::autodiff::grads::Gradients;
    use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
    use burn::backend::autodiff::Autodiff;
    use burn::backend::flex::FlexTensor;
    use burn::backend::tensor::FloatTensor;
    use burn::backend::{backend_extension, Backend, BackendTypes, Dispatch, Flex};
    use burn::tensor::{DType, Tensor, TensorData};

    /// The extension: each layer's forward pass (no bias) and its gradients.
    #[backend_extension(Flex, Autodiff)]
    pub trait FlexOpsBackend: Backend {
        /// 3×3×3 convolution, stride 1, padding 1: `x` `[n, cin, d, h, w]`, `weight`
        /// `[cout, cin, 3, 3, 3]` → `[n, cout, d, h, w]`.
        fn conv3x3(x: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self>;

        /// Gradient of [`FlexOpsBackend::conv3x3`] with respect to `x`.
        fn conv3x3_input_grad(
            weight: FloatTensor<Self>,
            grad: FloatTensor<Self>,
        ) -> FloatTensor<Self> {
            let _ = (weight, grad);
            unreachable!("called only by the conv3x3 autodiff node")
        }

        /// Gradient of [`FlexOpsBackend::conv3x3`] with respect to `weight`.
        fn conv3x3_weight_grad(x: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
            let _ = (x, grad);
            unreachable!("called only by the conv3x3 autodiff node")
        }

        /// 2×2×2 transposed convolution, stride 2: `x` `[n, cin, d, h, w]`, `weight`
        /// `[cin, cout, 2, 2, 2]` → `[n, cout, 2d, 2h, 2w]`.
        fn up2x(x: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self>;

        /// Gradient of [`FlexOpsBackend::up2x`] with respect to `x`.
        fn up2x_input_grad(
            weight: FloatTensor<Self>,
            grad: FloatTensor<Self>,
        ) -> FloatTensor<Self> {
            let _ = (weight, grad);
            unreachable!("called only by the up2x autodiff node")
        }

        /// Gradient of [`FlexOpsBackend::up2x`] with respect to `weight`.
        fn up2x_weight_grad(x: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
            let _ = (x, grad);
            unreachable!("called only by the up2x autodiff node")
        }

        /// 2×2×2 max pooling, stride 2 (even edges).
        fn max_pool2x(x: FloatTensor<Self>) -> FloatTensor<Self>;

        /// Gradient of [`FlexOpsBackend::max_pool2x`] with respect to `x`.
        fn max_pool2x_grad(x: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
            let _ = (x, grad);
            unreachable!("called only by the max_pool2x autodiff node")
        }
    }

    /// The tensor in a contiguous buffer (a copy only when it is a strided view).
    fn contiguous(t: &FlexTensor) -> FlexTensor {
        assert_eq!(
            t.dtype(),
            DType::F32,
            "the flex U-Net layers compute in f32"
        );
        t.to_contiguous()
    }

    /// The elements of a contiguous tensor, in order (a view may start inside its buffer).
    fn values(t: &FlexTensor) -> &[f32] {
        t.as_slice().expect("contiguous f32 tensor")
    }

    fn dims5(t: &FlexTensor) -> [usize; 5] {
        let s = t.layout().shape();
        assert_eq!(s.num_dims(), 5, "expected a 5D tensor, got {s:?}");
        [s[0], s[1], s[2], s[3], s[4]]
    }

    fn tensor(values: Vec<f32>, shape: [usize; 5]) -> FlexTensor {
        FlexTensor::from_data(TensorData::new(values, shape))
    }

    impl FlexOpsBackend for Flex {
        fn conv3x3(x: FlexTensor, weight: FlexTensor) -> FlexTensor {
            let (x, weight) = (contiguous(&x), contiguous(&weight));
            let ([n, cin, d, h, w], ws) = (dims5(&x), dims5(&weight));
            assert!(
                ws[1] == cin && ws[2..] == [3, 3, 3],
                "conv3x3: input [{n}, {cin}, ..] and kernel {ws:?} do not fit"
            );
            let g = conv3::Geometry {
                batch: n,
                cin,
                cout: ws[0],
                dims: [d, h, w],
            };
            tensor(
                conv3::forward(values(&x), values(&weight), g),
                [n, g.cout, d, h, w],
            )
        }

        fn conv3x3_input_grad(weight: FlexTensor, grad: FlexTensor) -> FlexTensor {
            let (weight, grad) = (contiguous(&weight), contiguous(&grad));
            let ([n, cout, d, h, w], ws) = (dims5(&grad), dims5(&weight));
            let g = conv3::Geometry {
                batch: n,
                cin: ws[1],
                cout,
                dims: [d, h, w],
            };
            let dx = conv3::input_grad(values(&grad), values(&weight), g);
            tensor(dx, [n, g.cin, d, h, w])
        }

        fn conv3x3_weight_grad(x: FlexTensor, grad: FlexTensor) -> FlexTensor {
            let (x, grad) = (contiguous(&x), contiguous(&grad));
            let [n, cin, d, h, w] = dims5(&x);
            let g = conv3::Geometry {
                batch: n,
                cin,
                cout: dims5(&grad)[1],
                dims: [d, h, w],
            };
            let dw = conv3::weight_grad(values(&x), values(&grad), g);
            tensor(dw, [g.cout, cin, 3, 3, 3])
        }

        fn up2x(x: FlexTensor, weight: FlexTensor) -> FlexTensor {
            let (x, weight) = (contiguous(&x), contiguous(&weight));
            let ([n, cin, d, h, w], ws) = (dims5(&x), dims5(&weight));
            assert!(
                ws[0] == cin && ws[2..] == [2, 2, 2],
                "up2x: input [{n}, {cin}, ..] and kernel {ws:?} do not fit"
            );
            let g = up2::Geometry {
                batch: n,
                cin,
                cout: ws[1],
                dims: [d, h, w],
            };
            let out = up2::forward(values(&x), values(&weight), g);
            tensor(out, [n, g.cout, 2 * d, 2 * h, 2 * w])
        }

        fn up2x_input_grad(weight: FlexTensor, grad: FlexTensor) -> FlexTensor {
            let (weight, grad) = (contiguous(&weight), contiguous(&grad));
            let ([n, cout, d2, h2, w2], ws) = (dims5(&grad), dims5(&weight));
            let g = up2::Geometry {
                batch: n,
                cin: ws[0],
                cout,
                dims: [d2 / 2, h2 / 2, w2 / 2],
            };
            let dx = up2::input_grad(values(&grad), values(&weight), g);
            tensor(dx, [n, g.cin, d2 / 2, h2 / 2, w2 / 2])
        }

        fn up2x_weight_grad(x: FlexTensor, grad: FlexTensor) -> FlexTensor {
            let (x, grad) = (contiguous(&x), contiguous(&grad));
            let [n, cin, d, h, w] = dims5(&x);
            let g = up2::Geometry {
                batch: n,
                cin,
                cout: dims5(&grad)[1],
                dims: [d, h, w],
            };
            let dw = up2::weight_grad(values(&x), values(&grad), g);
            tensor(dw, [cin, g.cout, 2, 2, 2])
        }

        fn max_pool2x(x: FlexTensor) -> FlexTensor {
            let x = contiguous(&x);
            let [n, c, d, h, w] = dims5(&x);
            let out = pool2::forward(values(&x), n * c, [d, h, w]);
            tensor(out, [n, c, d / 2, h / 2, w / 2])
        }

        fn max_pool2x_grad(x: FlexTensor, grad: FlexTensor) -> FlexTensor {
            let (x, grad) = (contiguous(&x), contiguous(&grad));
            let [n, c, d, h, w] = dims5(&x);
            let dx = pool2::input_grad(values(&x), values(&grad), n * c, [d, h, w]);
            tensor(dx, [n, c, d, h, w])
        }
    }

    /// Autodiff state of a layer with an input and a weight.
    #[derive(Clone, Debug)]
    struct Saved<B: Backend> {
        x: <B as BackendTypes>::FloatTensorPrimitive,
        weight: <B as BackendTypes>::FloatTensorPrimitive,
    }

    /// The two layers with an input and a weight; each is its own autodiff node.
    #[derive(Clone, Copy, Debug)]
    enum WeightedLayer {
        /// [`FlexOpsBackend::conv3x3`].
        Conv3x3,
        /// [`FlexOpsBackend::up2x`].
        Up2x,
    }

    impl WeightedLayer {
        fn forward<B: FlexOpsBackend>(
            self,
            x: FloatTensor<B>,
            w: FloatTensor<B>,
        ) -> FloatTensor<B> {
            match self {
                WeightedLayer::Conv3x3 => B::conv3x3(x, w),
                WeightedLayer::Up2x => B::up2x(x, w),
            }
        }

        fn input_grad<B: FlexOpsBackend>(
            self,
            w: FloatTensor<B>,
            g: FloatTensor<B>,
        ) -> FloatTensor<B> {
            match self {
                WeightedLayer::Conv3x3 => B::conv3x3_input_grad(w, g),
                WeightedLayer::Up2x => B::up2x_input_grad(w, g),
            }
        }

        fn weight_grad<B: FlexOpsBackend>(
            self,
            x: FloatTensor<B>,
            g: FloatTensor<B>,
        ) -> FloatTensor<B> {
            match self {
                WeightedLayer::Conv3x3 => B::conv3x3_weight_grad(x, g),
                WeightedLayer::Up2x => B::up2x_weight_grad(x, g),
            }
        }

        /// The forward pass on the autodiff backend, recording the node when a gradient is
        /// needed.
        fn record<B: Backend + FlexOpsBackend, C: CheckpointStrategy>(
            self,
            x: FloatTensor<Autodiff<B, C>>,
            weight: FloatTensor<Autodiff<B, C>>,
        ) -> FloatTensor<Autodiff<B, C>> {
            let (x, x_node) = x.into_parts();
            let (weight, weight_node) = weight.into_parts();
            match self
                .prepare::<C>([x_node, weight_node])
                .compute_bound()
                .stateful()
            {
                OpsKind::Tracked(prep) => {
                    let out = self.forward::<B>(x.clone(), weight.clone());
                    prep.finish(Saved { x, weight }, out)
                }
                OpsKind::UnTracked(prep) => prep.finish(self.forward::<B>(x, weight)),
            }
        }
    }

    impl<B: Backend + FlexOpsBackend> Backward<B, 2> for WeightedLayer {
        type State = Saved<B>;

        fn backward(self, ops: Ops<Saved<B>, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
            let [x_node, weight_node] = ops.parents;
            let grad = grads.consume::<B>(&ops.node);
            // Only the gradients someone needs: a network's input has none.
            if let Some(node) = weight_node {
                let dw = self.weight_grad::<B>(ops.state.x, grad.clone());
                grads.register::<B>(node.id, dw);
            }
            if let Some(node) = x_node {
                let dx = self.input_grad::<B>(ops.state.weight, grad);
                grads.register::<B>(node.id, dx);
            }
        }
    }

    /// Autodiff node of [`FlexOpsBackend::max_pool2x`].
    #[derive(Debug)]
    struct MaxPool2xNode;

    impl<B: Backend + FlexOpsBackend> Backward<B, 1> for MaxPool2xNode {
        type State = <B as BackendTypes>::FloatTensorPrimitive;

        fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
            let [x_node] = ops.parents;
            let grad = grads.consume::<B>(&ops.node);
            if let Some(node) = x_node {
                grads.register::<B>(node.id, B::max_pool2x_grad(ops.state, grad));
            }
        }
    }

    impl<B: Backend + FlexOpsBackend, C: CheckpointStrategy> FlexOpsBackend for Autodiff<B, C> {
        fn conv3x3(x: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self> {
            WeightedLayer::Conv3x3.record::<B, C>(x, weight)
        }

        fn up2x(x: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self> {
            WeightedLayer::Up2x.record::<B, C>(x, weight)
        }

        fn max_pool2x(x: FloatTensor<Self>) -> FloatTensor<Self> {
            let (x, x_node) = x.into_parts();
            match MaxPool2xNode
                .prepare::<C>([x_node])
                .compute_bound()
                .stateful()
            {
                OpsKind::Tracked(prep) => {
                    let out = B::max_pool2x(x.clone());
                    prep.finish(x, out)
                }
                OpsKind::UnTracked(prep) => prep.finish(B::max_pool2x(x)),
            }
        }
    }

    /// [`FlexOpsBackend::conv3x3`] on dispatch tensors.
    pub fn conv3x3(x: Tensor<5>, weight: Tensor<5>) -> Tensor<5> {
        Tensor::from_dispatch(<Dispatch as FlexOpsBackend>::conv3x3(
            x.into_dispatch(),
            weight.into_dispatch(),
        ))
    }

    /// [`FlexOpsBackend::up2x`] on dispatch tensors.
    pub fn up2x(x: Tensor<5>, weight: Tensor<5>) -> Tensor<5> {
        Tensor::from_dispatch(<Dispatch as FlexOpsBackend>::up2x(
            x.into_dispatch(),
            weight.into_dispatch(),
        ))
    }

    /// [`FlexOpsBackend::max_pool2x`] on dispatch tensors.
    pub fn max_pool2x(x: Tensor<5>) -> Tensor<5> {
        Tensor::from_dispatch(<Dispatch as FlexOpsBackend>::max_pool2x(x.into_dispatch()))
    }
}

/// Whether `device` computes on the flex backend (directly or under autodiff).
pub fn on_flex(device: &burn::tensor::Device) -> bool {
    #[cfg(feature = "flex")]
    {
        matches!(
            device.as_dispatch().clone().inner(),
            burn::backend::DispatchDevice::Flex(_)
        )
    }
    #[cfg(not(feature = "flex"))]
    {
        let _ = device;
        false
    }
}

/// Whether `device` computes on burn's libtorch backend (directly or under autodiff).
pub fn on_libtorch(device: &burn::tensor::Device) -> bool {
    #[cfg(feature = "tch")]
    {
        matches!(
            device.as_dispatch().clone().inner(),
            burn::backend::DispatchDevice::LibTorch(_)
        )
    }
    #[cfg(not(feature = "tch"))]
    {
        let _ = device;
        false
    }
}

/// Deterministic test values in [-0.5, 0.5).
#[cfg(test)]
pub(crate) fn test_values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        })
        .collect()
}

/// `y + bias` broadcast over the channel axis.
#[cfg(feature = "flex")]
fn add_bias(y: Tensor<5>, bias: Option<Tensor<1>>) -> Tensor<5> {
    match bias {
        Some(b) => {
            let c = b.dims()[0];
            y + b.reshape([1, c, 1, 1, 1])
        }
        None => y,
    }
}

/// A 3×3×3 convolution with stride 1 and zero padding 1: `x` `[n, cin, d, h, w]`, `weight`
/// `[cout, cin, 3, 3, 3]`, `bias` `[cout]`. On flex it is [`conv3`]'s, forward and backward; on
/// libtorch libtorch's, forward and backward; elsewhere burn's `conv3d`. They agree to 1e-4
/// (tested).
pub fn conv3x3(x: Tensor<5>, weight: Tensor<5>, bias: Option<Tensor<1>>) -> Tensor<5> {
    #[cfg(feature = "flex")]
    if on_flex(&x.device()) {
        return add_bias(flex::conv3x3(x, weight), bias);
    }
    conv_same(x, weight, bias)
}

/// [`conv3x3`] followed by ReLU; on libtorch the bias and the ReLU run inside libtorch's layer,
/// forward and backward, as in PyTorch.
pub fn conv3x3_relu(x: Tensor<5>, weight: Tensor<5>, bias: Option<Tensor<1>>) -> Tensor<5> {
    #[cfg(feature = "tch")]
    if on_libtorch(&x.device()) {
        return libtorch::conv(x, weight, bias, true);
    }
    burn::tensor::activation::relu(conv3x3(x, weight, bias))
}

/// A 1×1×1 convolution (the U-Net's head): `x` `[n, cin, d, h, w]`, `weight`
/// `[cout, cin, 1, 1, 1]`, `bias` `[cout]`. On libtorch libtorch's, forward and backward (burn's
/// generic weight gradient is a convolution whose kernel is the whole output gradient);
/// elsewhere burn's `conv3d`.
pub fn conv1x1(x: Tensor<5>, weight: Tensor<5>, bias: Option<Tensor<1>>) -> Tensor<5> {
    conv_same(x, weight, bias)
}

/// A convolution with an odd cubic kernel, stride 1 and zero padding of half the kernel (the
/// output has the input's grid): libtorch's on libtorch, forward and backward; elsewhere burn's
/// `conv3d`.
fn conv_same(x: Tensor<5>, weight: Tensor<5>, bias: Option<Tensor<1>>) -> Tensor<5> {
    #[cfg(feature = "tch")]
    if on_libtorch(&x.device()) {
        return libtorch::conv(x, weight, bias, false);
    }
    let pad = weight.dims()[2] / 2;
    conv3d(
        x,
        weight,
        bias,
        ConvOptions::new([1, 1, 1], [pad; 3], [1, 1, 1], 1),
    )
}

/// A 2×2×2 transposed convolution with stride 2: `x` `[n, cin, d, h, w]`, `weight`
/// `[cin, cout, 2, 2, 2]`, `bias` `[cout]` → `[n, cout, 2d, 2h, 2w]`. On flex it is [`up2`]'s, on
/// libtorch libtorch's, elsewhere burn's `conv_transpose3d` (they agree to 1e-4, tested).
pub fn up2x(x: Tensor<5>, weight: Tensor<5>, bias: Option<Tensor<1>>) -> Tensor<5> {
    #[cfg(feature = "flex")]
    if on_flex(&x.device()) {
        return add_bias(flex::up2x(x, weight), bias);
    }
    #[cfg(feature = "tch")]
    if on_libtorch(&x.device()) {
        return libtorch::up2x(x, weight, bias);
    }
    conv_transpose3d(
        x,
        weight,
        bias,
        ConvTransposeOptions::new([2, 2, 2], [0, 0, 0], [0, 0, 0], [1, 1, 1], 1),
    )
}

/// Exact 2×2×2 max pooling with stride 2 (edges must be even). On flex it is [`pool2`]'s, on
/// libtorch libtorch's `max_pool3d`; elsewhere it is built from reshapes and `max_dim` (burn has
/// no MaxPool3d). Each is tested against the definition or against the reshaped pooling.
pub fn max_pool_2x(x: Tensor<5>) -> Tensor<5> {
    #[cfg(feature = "flex")]
    if on_flex(&x.device()) {
        return flex::max_pool2x(x);
    }
    #[cfg(feature = "tch")]
    if on_libtorch(&x.device()) {
        return libtorch::max_pool2x(x);
    }
    max_pool_2x_reshaped(x)
}

/// 2×2×2 max pooling from reshapes and `max_dim`, for any backend.
pub fn max_pool_2x_reshaped(x: Tensor<5>) -> Tensor<5> {
    let [n, c, d, h, w] = x.dims();
    x.reshape([n * c * d / 2, 2, h / 2, 2, w / 2, 2])
        .max_dim(5)
        .max_dim(3)
        .max_dim(1)
        .reshape([n, c, d / 2, h / 2, w / 2])
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, Distribution, TensorData};

    /// Assert `a` equals `b` element by element to 1e-4 (relative above 1).
    fn assert_close(a: &[f32], b: &[f32], what: &str) {
        assert_eq!(a.len(), b.len(), "{what}");
        for (p, q) in a.iter().zip(b) {
            assert!(
                (p - q).abs() <= 1e-4 * (1.0 + q.abs()),
                "{what}: {p} vs {q}"
            );
        }
    }

    /// burn's own 3D convolution with "same" padding, then ReLU if `relu`: the reference.
    fn burn_conv(x: Tensor<5>, w: Tensor<5>, b: Tensor<1>, relu: bool) -> Tensor<5> {
        let pad = w.dims()[2] / 2;
        let options = ConvOptions::new([1, 1, 1], [pad; 3], [1, 1, 1], 1);
        let y = conv3d(x, w, Some(b), options);
        if relu {
            burn::tensor::activation::relu(y)
        } else {
            y
        }
    }

    /// Forward and all three gradients against burn's own conv3d (and ReLU), on the autodiff
    /// device, for a fresh input, a contiguous view that starts inside its buffer, and a strided
    /// view.
    #[test]
    fn matches_burns_conv3d_forward_and_backward() {
        let device = Device::default();
        // The test suite runs on flex; `cargo test --features tch` checks libtorch's layers.
        assert!(on_flex(&device) || on_libtorch(&device), "{device:?}");
        let ad = device.clone().autodiff();
        assert!(on_flex(&ad) || on_libtorch(&ad));
        let normal = Distribution::Normal(0.0, 1.0);
        let big = Tensor::<5>::random([3, 5, 5, 6, 7], normal, &ad);
        let inputs = [
            Tensor::<5>::random([2, 3, 5, 6, 7], normal, &ad),
            Tensor::<5>::random([3, 3, 5, 6, 7], normal, &ad).narrow(0, 1, 2),
            big.clone().narrow(0, 1, 2).narrow(1, 2, 3),
            big.narrow(1, 0, 3)
                .narrow(0, 1, 2)
                .swap_dims(3, 4)
                .swap_dims(3, 4),
        ];
        let w = Tensor::<5>::random([4, 3, 3, 3, 3], normal, &ad);
        let b = Tensor::<1>::random([4], normal, &ad);
        let up = Tensor::<5>::random([2, 4, 5, 6, 7], normal, &ad);
        for (x, relu) in inputs
            .into_iter()
            .flat_map(|x| [(x.clone(), false), (x, true)])
        {
            let run = |fast: bool| {
                let (x, w, b) = (
                    x.clone().require_grad(),
                    w.clone().require_grad(),
                    b.clone().require_grad(),
                );
                let y = match (fast, relu) {
                    (true, false) => conv3x3(x.clone(), w.clone(), Some(b.clone())),
                    (true, true) => conv3x3_relu(x.clone(), w.clone(), Some(b.clone())),
                    (false, _) => burn_conv(x.clone(), w.clone(), b.clone(), relu),
                };
                let v = |t: Tensor<5>| t.into_data().try_to_vec::<f32>().unwrap();
                let out = v(y.clone());
                // `y` is unique now, so burn may scale it in place: a layer whose backward pass
                // reads its output (ReLU's) must keep that from happening.
                let grads = (y.mul_scalar(2.0) * up.clone()).sum().backward();
                (
                    out,
                    v(x.grad(&grads).unwrap()),
                    v(w.grad(&grads).unwrap()),
                    b.grad(&grads)
                        .unwrap()
                        .into_data()
                        .try_to_vec::<f32>()
                        .unwrap(),
                )
            };
            let (fast, slow) = (run(true), run(false));
            let what = |w: &str| format!("{w} (relu: {relu})");
            assert_close(&fast.0, &slow.0, &what("output"));
            assert_close(&fast.1, &slow.1, &what("input gradient"));
            assert_close(&fast.2, &slow.2, &what("weight gradient"));
            assert_close(&fast.3, &slow.3, &what("bias gradient"));
        }
    }

    /// The 1×1×1 head, and a first layer (whose input needs no gradient) with its ReLU, against
    /// burn's `conv3d`: outputs and the weight and bias gradients, to 1e-4, and no input gradient.
    #[test]
    fn head_and_first_layer_match_burn() {
        let ad = Device::default().autodiff();
        let data = |dims: [usize; 5], seed| {
            let n = dims.iter().product();
            Tensor::<5>::from_data(TensorData::new(test_values(n, seed), dims), &ad)
        };
        let v = |t: Tensor<5>| t.into_data().try_to_vec::<f32>().unwrap();
        let v1 = |t: Tensor<1>| t.into_data().try_to_vec::<f32>().unwrap();
        let x = data([2, 3, 4, 5, 6], 1);
        let up = data([2, 4, 4, 5, 6], 2);
        let b = Tensor::<1>::from_data(TensorData::new(test_values(4, 3), [4]), &ad);
        for k in [1usize, 3] {
            let w = data([4, 3, k, k, k], 4 + k as u64);
            let run = |fast: bool| {
                let (w, b) = (w.clone().require_grad(), b.clone().require_grad());
                let y = match (fast, k) {
                    (true, 1) => conv1x1(x.clone(), w.clone(), Some(b.clone())),
                    (true, _) => conv3x3_relu(x.clone(), w.clone(), Some(b.clone())),
                    (false, _) => burn_conv(x.clone(), w.clone(), b.clone(), k == 3),
                };
                let grads = (y.clone() * up.clone()).sum().backward();
                assert!(x.grad(&grads).is_none(), "the input needs no gradient");
                let (gw, gb) = (w.grad(&grads).unwrap(), b.grad(&grads).unwrap());
                (v(y), v(gw), v1(gb))
            };
            let (fast, slow) = (run(true), run(false));
            assert_close(&fast.0, &slow.0, &format!("k {k}, output"));
            assert_close(&fast.1, &slow.1, &format!("k {k}, weight gradient"));
            assert_close(&fast.2, &slow.2, &format!("k {k}, bias gradient"));
        }
    }

    /// The up-convolution and the pooling, forward and gradients, against burn's own operations.
    #[test]
    fn up_convolution_and_pooling_match_burn() {
        let ad = Device::default().autodiff();
        let normal = Distribution::Normal(0.0, 1.0);
        let x = Tensor::<5>::random([2, 3, 2, 3, 4], normal, &ad);
        let w = Tensor::<5>::random([3, 5, 2, 2, 2], normal, &ad);
        let b = Tensor::<1>::random([5], normal, &ad);
        let up = Tensor::<5>::random([2, 5, 4, 6, 8], normal, &ad);
        let v5 = |t: Tensor<5>| t.into_data().try_to_vec::<f32>().unwrap();
        let run = |fast: bool| {
            let (x, w, b) = (
                x.clone().require_grad(),
                w.clone().require_grad(),
                b.clone().require_grad(),
            );
            let y = if fast {
                up2x(x.clone(), w.clone(), Some(b.clone()))
            } else {
                conv_transpose3d(
                    x.clone(),
                    w.clone(),
                    Some(b.clone()),
                    ConvTransposeOptions::new([2, 2, 2], [0, 0, 0], [0, 0, 0], [1, 1, 1], 1),
                )
            };
            // pool the up-convolved volume again, so the pooling's gradient is checked too
            let pooled = if fast {
                max_pool_2x(y.clone())
            } else {
                max_pool_2x_reshaped(y.clone())
            };
            let grads = ((y.clone() * up.clone()).sum() + pooled.clone().sum()).backward();
            (
                v5(y),
                v5(pooled),
                v5(x.grad(&grads).unwrap()),
                v5(w.grad(&grads).unwrap()),
                b.grad(&grads)
                    .unwrap()
                    .into_data()
                    .try_to_vec::<f32>()
                    .unwrap(),
            )
        };
        let (fast, slow) = (run(true), run(false));
        assert_close(&fast.0, &slow.0, "up-convolution");
        assert_close(&fast.1, &slow.1, "pooling");
        assert_close(&fast.2, &slow.2, "input gradient");
        assert_close(&fast.3, &slow.3, "weight gradient");
        assert_close(&fast.4, &slow.4, "bias gradient");
    }
}
