//! The U-Net's 3D layers on burn's libtorch backend (`tch` feature), forward and backward in
//! libtorch's own kernels, as in PyTorch.
//!
//! burn-tch runs a convolution's forward pass in libtorch but its gradients through burn's
//! generic passes (the input gradient as a transposed convolution, the weight gradient as a
//! convolution whose kernel is the whole output gradient), and 3D max pooling from reshapes.
//! Here each layer's forward pass runs under libtorch's autograd on leaves that share the
//! inputs' memory, and burn's autodiff node for the layer keeps that small graph: its backward
//! pass asks libtorch for the gradients of `Σ out · grad`, which are exactly the layer's input
//! and weight gradients, computed by the kernels PyTorch uses (oneDNN on a CPU, cuDNN on a GPU).
//! Only the gradients burn needs are computed (a network's input has none).
#![allow(deprecated)] // burn 0.22 marks its libtorch backend deprecated; it is still the fastest CPU one.

use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::CheckpointStrategy};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::Autodiff;
use burn::backend::libtorch::TchTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{backend_extension, Backend, Dispatch, LibTorch};
use burn::tensor::Tensor;

/// The extension: each layer's forward pass (no bias) in libtorch.
#[backend_extension(LibTorch, Autodiff)]
pub trait TorchLayersBackend: Backend {
    /// 3×3×3 convolution, stride 1, padding 1: `x` `[n, cin, d, h, w]`, `weight`
    /// `[cout, cin, 3, 3, 3]` → `[n, cout, d, h, w]`.
    fn torch_conv3x3(x: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self>;

    /// 2×2×2 transposed convolution, stride 2: `x` `[n, cin, d, h, w]`, `weight`
    /// `[cin, cout, 2, 2, 2]` → `[n, cout, 2d, 2h, 2w]`.
    fn torch_up2x(x: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self>;

    /// 2×2×2 max pooling, stride 2 (even edges).
    fn torch_max_pool2x(x: FloatTensor<Self>) -> FloatTensor<Self>;
}

/// Which layer a node computes.
#[derive(Clone, Copy, Debug)]
enum Layer {
    Conv3x3,
    Up2x,
    MaxPool2x,
}

impl Layer {
    /// The forward pass on libtorch tensors (`weight` is ignored by pooling).
    fn apply(self, x: &tch::Tensor, weight: Option<&tch::Tensor>) -> tch::Tensor {
        let none = None::<&tch::Tensor>;
        match (self, weight) {
            (Layer::Conv3x3, Some(w)) => x.conv3d(w, none, [1, 1, 1], [1, 1, 1], [1, 1, 1], 1),
            (Layer::Up2x, Some(w)) => {
                x.conv_transpose3d(w, none, [2, 2, 2], [0, 0, 0], [0, 0, 0], 1, [1, 1, 1])
            }
            (Layer::MaxPool2x, _) => {
                x.max_pool3d([2, 2, 2], [2, 2, 2], [0, 0, 0], [1, 1, 1], false)
            }
            (layer, None) => unreachable!("{layer:?} needs a weight"),
        }
    }
}

impl TorchLayersBackend for LibTorch {
    fn torch_conv3x3(x: TchTensor, weight: TchTensor) -> TchTensor {
        TchTensor::new(Layer::Conv3x3.apply(&x.tensor, Some(&weight.tensor)))
    }

    fn torch_up2x(x: TchTensor, weight: TchTensor) -> TchTensor {
        TchTensor::new(Layer::Up2x.apply(&x.tensor, Some(&weight.tensor)))
    }

    fn torch_max_pool2x(x: TchTensor) -> TchTensor {
        TchTensor::new(Layer::MaxPool2x.apply(&x.tensor, None))
    }
}

/// What a recorded layer keeps for its backward pass.
#[derive(Clone, Debug)]
struct Graph<const N: usize> {
    /// The output, still attached to libtorch's graph of the layer.
    out: TchTensor,
    /// The graph's leaves, one per input (sharing the inputs' memory).
    leaves: [TchTensor; N],
    /// The inputs themselves: holding them keeps burn from overwriting their memory in place
    /// before the backward pass reads it.
    _inputs: [TchTensor; N],
}

/// burn's autodiff node of a layer with `N` inputs (the layer itself is in its libtorch graph).
#[derive(Debug)]
struct Node<const N: usize>;

impl<const N: usize> Backward<LibTorch, N> for Node<N> {
    type State = Graph<N>;

    fn backward(self, ops: Ops<Graph<N>, N>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<LibTorch>(&ops.node);
        let Graph { out, leaves, .. } = ops.state;
        let (nodes, wanted): (Vec<_>, Vec<_>) = ops
            .parents
            .into_iter()
            .zip(leaves)
            .filter_map(|(node, leaf)| Some((node?, leaf.tensor)))
            .unzip();
        if nodes.is_empty() {
            return;
        }
        // d/dθ Σ out·grad = the layer's gradient for θ, from libtorch's backward kernels.
        let objective = (&out.tensor * &grad.tensor).sum(tch::Kind::Float);
        let found = tch::Tensor::run_backward(&[objective], &wanted, false, false);
        for (node, g) in nodes.into_iter().zip(found) {
            grads.register::<LibTorch>(node.id, TchTensor::new(g));
        }
    }
}

/// Run `layer` on the autodiff backend, recording its libtorch graph when a gradient is needed.
fn record<C: CheckpointStrategy, const N: usize>(
    layer: Layer,
    inputs: [FloatTensor<Autodiff<LibTorch, C>>; N],
) -> FloatTensor<Autodiff<LibTorch, C>> {
    let (inputs, parents): (Vec<TchTensor>, Vec<_>) =
        inputs.into_iter().map(|t| t.into_parts()).unzip();
    let inputs: [TchTensor; N] = inputs.try_into().expect("N inputs");
    let parents = parents.try_into().expect("N parents");
    match Node::<N>.prepare::<C>(parents).compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            let leaves: [TchTensor; N] = std::array::from_fn(|i| {
                TchTensor::new(inputs[i].tensor.detach().set_requires_grad(true))
            });
            let out = layer.apply(&leaves[0].tensor, leaves.get(1).map(|w| &w.tensor));
            // burn gets a detached alias of the output: its later operations stay out of the
            // layer's libtorch graph.
            let result = TchTensor::new(out.detach());
            let graph = Graph {
                out: TchTensor::new(out),
                leaves,
                _inputs: inputs,
            };
            prep.finish(graph, result)
        }
        OpsKind::UnTracked(prep) => {
            let out = layer.apply(&inputs[0].tensor, inputs.get(1).map(|w| &w.tensor));
            prep.finish(TchTensor::new(out))
        }
    }
}

impl<C: CheckpointStrategy> TorchLayersBackend for Autodiff<LibTorch, C> {
    fn torch_conv3x3(x: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self> {
        record::<C, 2>(Layer::Conv3x3, [x, weight])
    }

    fn torch_up2x(x: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self> {
        record::<C, 2>(Layer::Up2x, [x, weight])
    }

    fn torch_max_pool2x(x: FloatTensor<Self>) -> FloatTensor<Self> {
        record::<C, 1>(Layer::MaxPool2x, [x])
    }
}

/// [`TorchLayersBackend::torch_conv3x3`] on dispatch tensors.
pub fn conv3x3(x: Tensor<5>, weight: Tensor<5>) -> Tensor<5> {
    Tensor::from_dispatch(<Dispatch as TorchLayersBackend>::torch_conv3x3(
        x.into_dispatch(),
        weight.into_dispatch(),
    ))
}

/// [`TorchLayersBackend::torch_up2x`] on dispatch tensors.
pub fn up2x(x: Tensor<5>, weight: Tensor<5>) -> Tensor<5> {
    Tensor::from_dispatch(<Dispatch as TorchLayersBackend>::torch_up2x(
        x.into_dispatch(),
        weight.into_dispatch(),
    ))
}

/// [`TorchLayersBackend::torch_max_pool2x`] on dispatch tensors.
pub fn max_pool2x(x: Tensor<5>) -> Tensor<5> {
    Tensor::from_dispatch(<Dispatch as TorchLayersBackend>::torch_max_pool2x(
        x.into_dispatch(),
    ))
}
