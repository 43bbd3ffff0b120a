//! The U-Net's layers and loss on burn's libtorch backend (`tch` feature), forward and backward
//! in libtorch's own kernels, as in PyTorch.
//!
//! burn-tch runs a convolution's forward pass in libtorch but its gradients through burn's
//! generic passes (the input gradient as a transposed convolution, the weight gradient as a
//! convolution whose kernel is the whole output gradient), and 3D max pooling from reshapes.
//! Here each layer's forward pass runs under libtorch's autograd on leaves that share the
//! inputs' memory, and burn's autodiff node for the layer keeps that small graph: its backward
//! pass asks libtorch for the gradients of `Σ out · grad`, which are exactly the layer's input,
//! weight and bias gradients, computed by the kernels PyTorch uses (oneDNN on a CPU, cuDNN on a
//! GPU). Only the gradients burn needs are computed (a network's input has none). The bias, and
//! the ReLU that follows every 3×3×3 convolution in the U-Net, run inside the same libtorch
//! layer, as in PyTorch: burn's generic bias broadcast and ReLU each cost a pass over the
//! activation forward and two or three backward.
#![allow(deprecated)] // burn 0.22 marks its libtorch backend deprecated; it is still the fastest CPU one.

use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::CheckpointStrategy};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::Autodiff;
use burn::backend::libtorch::TchTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{backend_extension, Backend, Dispatch, LibTorch};
use burn::tensor::Tensor;

/// The extension: each layer's forward pass in libtorch.
#[backend_extension(LibTorch, Autodiff)]
pub trait TorchLayersBackend: Backend {
    /// Convolution with a cubic kernel of odd edge `k` (3 in the U-Net's blocks, 1 in its head),
    /// stride 1, zero padding `k / 2`, no bias: `x` `[n, cin, d, h, w]`, `weight`
    /// `[cout, cin, k, k, k]` → `[n, cout, d, h, w]`.
    fn torch_conv(x: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self>;

    /// [`torch_conv`](TorchLayersBackend::torch_conv) plus `bias` `[cout]`, then ReLU if `relu`.
    fn torch_conv_bias(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        relu: bool,
    ) -> FloatTensor<Self>;

    /// 2×2×2 transposed convolution, stride 2, no bias: `x` `[n, cin, d, h, w]`, `weight`
    /// `[cin, cout, 2, 2, 2]` → `[n, cout, 2d, 2h, 2w]`.
    fn torch_up2x(x: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self>;

    /// [`torch_up2x`](TorchLayersBackend::torch_up2x) plus `bias` `[cout]`.
    fn torch_up2x_bias(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self>;

    /// The training loss of [`crate::net::loss`] from `logits` `[n, c, d, h, w]`, the one-hot
    /// targets `onehot` and their class-weighted copy `weighted` (same shape): class-weighted
    /// cross-entropy over `weight_sum`, plus `dice_weight` × (1 − mean soft Dice of the
    /// foreground classes). Shape `[1]`; only `logits` gets a gradient.
    fn torch_seg_loss(
        logits: FloatTensor<Self>,
        weighted: FloatTensor<Self>,
        onehot: FloatTensor<Self>,
        weight_sum: f32,
        dice_weight: f32,
    ) -> FloatTensor<Self>;

    /// 2×2×2 max pooling, stride 2 (even edges).
    fn torch_max_pool2x(x: FloatTensor<Self>) -> FloatTensor<Self>;
}

/// Which layer a node computes.
#[derive(Clone, Copy, Debug)]
enum Layer {
    /// Convolution with an odd cubic kernel and "same" padding (with the bias when one is
    /// given), then ReLU if `relu`.
    Conv {
        relu: bool,
    },
    /// 2×2×2 transposed convolution (with the bias when one is given).
    Up2x,
    MaxPool2x,
    /// The segmentation loss; `params` are the weighted and the plain one-hot targets.
    SegLoss {
        weight_sum: f32,
        dice_weight: f32,
    },
}

impl Layer {
    /// The forward pass on libtorch tensors: `params` are the weight and the optional bias of a
    /// convolution, none for pooling, the weighted and plain one-hot targets for the loss.
    fn apply(self, x: &tch::Tensor, params: &[TchTensor]) -> tch::Tensor {
        let bias = params.get(1).map(|b| &b.tensor);
        match (self, params.first()) {
            (Layer::Conv { relu }, Some(w)) => {
                let pad = w.tensor.size()[2] / 2;
                let y = x.conv3d(&w.tensor, bias, [1, 1, 1], [pad; 3], [1, 1, 1], 1);
                if relu {
                    y.relu()
                } else {
                    y
                }
            }
            (Layer::Up2x, Some(w)) => x.conv_transpose3d(
                &w.tensor,
                bias,
                [2, 2, 2],
                [0, 0, 0],
                [0, 0, 0],
                1,
                [1, 1, 1],
            ),
            (Layer::MaxPool2x, _) => {
                x.max_pool3d([2, 2, 2], [2, 2, 2], [0, 0, 0], [1, 1, 1], false)
            }
            (
                Layer::SegLoss {
                    weight_sum,
                    dice_weight,
                },
                Some(weighted),
            ) => loss_on_tch(
                x,
                &weighted.tensor,
                &params[1].tensor,
                weight_sum,
                dice_weight,
            ),
            (layer, None) => unreachable!("{layer:?} needs its weight or targets"),
        }
    }

    /// Whether libtorch's backward pass reads the layer's output (ReLU's does), which burn must
    /// then not overwrite in place.
    fn saves_output(self) -> bool {
        matches!(self, Layer::Conv { relu: true })
    }
}

/// [`Layer::SegLoss`]'s arithmetic: that of [`crate::net::loss_generic`] in libtorch's
/// kernels.
fn loss_on_tch(
    logits: &tch::Tensor,
    weighted: &tch::Tensor,
    onehot: &tch::Tensor,
    weight_sum: f32,
    dice_weight: f32,
) -> tch::Tensor {
    let float = tch::Kind::Float;
    let ce = (logits.log_softmax(1, float) * weighted).sum(float) / (-f64::from(weight_sum));
    let ce = ce.reshape([1]);
    if dice_weight == 0.0 {
        return ce;
    }
    let c = logits.size()[1];
    let axes: &[i64] = &[0, 2, 3, 4];
    let p = logits.softmax(1, float);
    let inter = (&p * onehot).sum_dim_intlist(axes, false, float);
    let denom = p.sum_dim_intlist(axes, false, float) + onehot.sum_dim_intlist(axes, false, float);
    let dice = (inter * 2.0 + 1.0) / (denom + 1.0);
    let fg = dice.narrow(0, 1, c - 1).mean(float);
    ce + (fg.neg() + 1.0) * f64::from(dice_weight)
}

impl TorchLayersBackend for LibTorch {
    fn torch_conv(x: TchTensor, weight: TchTensor) -> TchTensor {
        TchTensor::new(Layer::Conv { relu: false }.apply(&x.tensor, &[weight]))
    }

    fn torch_conv_bias(x: TchTensor, weight: TchTensor, bias: TchTensor, relu: bool) -> TchTensor {
        TchTensor::new(Layer::Conv { relu }.apply(&x.tensor, &[weight, bias]))
    }

    fn torch_up2x(x: TchTensor, weight: TchTensor) -> TchTensor {
        TchTensor::new(Layer::Up2x.apply(&x.tensor, &[weight]))
    }

    fn torch_up2x_bias(x: TchTensor, weight: TchTensor, bias: TchTensor) -> TchTensor {
        TchTensor::new(Layer::Up2x.apply(&x.tensor, &[weight, bias]))
    }

    fn torch_seg_loss(
        logits: TchTensor,
        weighted: TchTensor,
        onehot: TchTensor,
        weight_sum: f32,
        dice_weight: f32,
    ) -> TchTensor {
        let layer = Layer::SegLoss {
            weight_sum,
            dice_weight,
        };
        TchTensor::new(layer.apply(&logits.tensor, &[weighted, onehot]))
    }

    fn torch_max_pool2x(x: TchTensor) -> TchTensor {
        TchTensor::new(Layer::MaxPool2x.apply(&x.tensor, &[]))
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
    /// burn's alias of the output, held for the same reason when the backward pass reads the
    /// output.
    _result: Option<TchTensor>,
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
        let objective = out.tensor.flatten(0, -1).dot(&grad.tensor.flatten(0, -1));
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
    let tracked: [bool; N] = std::array::from_fn(|i| inputs[i].is_tracked());
    let (inputs, parents): (Vec<TchTensor>, Vec<_>) =
        inputs.into_iter().map(|t| t.into_parts()).unzip();
    let inputs: [TchTensor; N] = inputs.try_into().expect("N inputs");
    let parents = parents.try_into().expect("N parents");
    match Node::<N>.prepare::<C>(parents).compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            // Inputs without a gradient (a network's input, a loss's targets) stay constants.
            let leaves: [TchTensor; N] = std::array::from_fn(|i| {
                TchTensor::new(inputs[i].tensor.detach().set_requires_grad(tracked[i]))
            });
            // Recorded even where the caller switched libtorch's gradient mode off.
            let out = tch::with_grad(|| layer.apply(&leaves[0].tensor, &leaves[1..]));
            // burn gets a detached alias of the output: its later operations stay out of the
            // layer's libtorch graph.
            let result = TchTensor::new(out.detach());
            let graph = Graph {
                out: TchTensor::new(out),
                leaves,
                _inputs: inputs,
                _result: layer.saves_output().then(|| result.clone()),
            };
            prep.finish(graph, result)
        }
        OpsKind::UnTracked(prep) => {
            let out = layer.apply(&inputs[0].tensor, &inputs[1..]);
            prep.finish(TchTensor::new(out))
        }
    }
}

impl<C: CheckpointStrategy> TorchLayersBackend for Autodiff<LibTorch, C> {
    fn torch_conv(x: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self> {
        record::<C, 2>(Layer::Conv { relu: false }, [x, weight])
    }

    fn torch_conv_bias(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        relu: bool,
    ) -> FloatTensor<Self> {
        record::<C, 3>(Layer::Conv { relu }, [x, weight, bias])
    }

    fn torch_up2x(x: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self> {
        record::<C, 2>(Layer::Up2x, [x, weight])
    }

    fn torch_up2x_bias(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        record::<C, 3>(Layer::Up2x, [x, weight, bias])
    }

    fn torch_seg_loss(
        logits: FloatTensor<Self>,
        weighted: FloatTensor<Self>,
        onehot: FloatTensor<Self>,
        weight_sum: f32,
        dice_weight: f32,
    ) -> FloatTensor<Self> {
        let layer = Layer::SegLoss {
            weight_sum,
            dice_weight,
        };
        record::<C, 3>(layer, [logits, weighted, onehot])
    }

    fn torch_max_pool2x(x: FloatTensor<Self>) -> FloatTensor<Self> {
        record::<C, 1>(Layer::MaxPool2x, [x])
    }
}

/// A convolution with an odd cubic kernel and "same" padding on dispatch tensors, with the bias
/// and ReLU in the same libtorch layer when given.
pub fn conv(x: Tensor<5>, weight: Tensor<5>, bias: Option<Tensor<1>>, relu: bool) -> Tensor<5> {
    let (x, weight) = (x.into_dispatch(), weight.into_dispatch());
    Tensor::from_dispatch(match bias {
        Some(b) => {
            <Dispatch as TorchLayersBackend>::torch_conv_bias(x, weight, b.into_dispatch(), relu)
        }
        None => {
            let y = <Dispatch as TorchLayersBackend>::torch_conv(x, weight);
            if relu {
                return burn::tensor::activation::relu(Tensor::from_dispatch(y));
            }
            y
        }
    })
}

/// A 2×2×2 transposed convolution on dispatch tensors, with the bias in the same libtorch layer
/// when given.
pub fn up2x(x: Tensor<5>, weight: Tensor<5>, bias: Option<Tensor<1>>) -> Tensor<5> {
    let (x, weight) = (x.into_dispatch(), weight.into_dispatch());
    Tensor::from_dispatch(match bias {
        Some(b) => <Dispatch as TorchLayersBackend>::torch_up2x_bias(x, weight, b.into_dispatch()),
        None => <Dispatch as TorchLayersBackend>::torch_up2x(x, weight),
    })
}

/// [`TorchLayersBackend::torch_max_pool2x`] on dispatch tensors.
pub fn max_pool2x(x: Tensor<5>) -> Tensor<5> {
    Tensor::from_dispatch(<Dispatch as TorchLayersBackend>::torch_max_pool2x(
        x.into_dispatch(),
    ))
}

/// [`TorchLayersBackend::torch_seg_loss`] on dispatch tensors.
pub fn seg_loss(
    logits: Tensor<5>,
    weighted: Tensor<5>,
    onehot: Tensor<5>,
    weight_sum: f32,
    dice_weight: f32,
) -> Tensor<1> {
    Tensor::from_dispatch(<Dispatch as TorchLayersBackend>::torch_seg_loss(
        logits.into_dispatch(),
        weighted.into_dispatch(),
        onehot.into_dispatch(),
        weight_sum,
        dice_weight,
    ))
}
