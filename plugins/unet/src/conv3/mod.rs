//! A faster 3×3×3 convolution (stride 1, padding 1) for burn's pure-Rust `flex` backend, with its
//! own backward pass.
//!
//! burn computes the gradient of a 3D convolution generically: the input gradient as a transposed
//! convolution and the weight gradient as a convolution whose kernel is the whole output
//! gradient, which on a CPU costs more than twice the forward pass. [`kernel`] computes all three
//! passes as GEMMs on offset views of a zero-padded volume (no im2col), and this module plugs them
//! into burn as a backend extension with a hand-written autodiff node. On other backends (`tch`,
//! `wgpu`) [`conv3x3`] is burn's own `conv3d`.

pub mod kernel;

use burn::tensor::module::conv3d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::Tensor;

#[cfg(feature = "flex")]
mod flex {
    use super::kernel::{self, Geometry};
    use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::CheckpointStrategy};
    use burn::backend::autodiff::grads::Gradients;
    use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
    use burn::backend::autodiff::Autodiff;
    use burn::backend::flex::FlexTensor;
    use burn::backend::tensor::FloatTensor;
    use burn::backend::{backend_extension, Backend, BackendTypes, Dispatch, Flex};
    use burn::tensor::{DType, Tensor, TensorData};

    /// The extension: a 3×3×3 "same" convolution without bias, and its two gradients.
    #[backend_extension(Flex, Autodiff)]
    pub trait Conv3x3Backend: Backend {
        /// `x` `[n, cin, d, h, w]`, `weight` `[cout, cin, 3, 3, 3]` → `[n, cout, d, h, w]`.
        fn conv3x3(x: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self>;

        /// Gradient of [`Conv3x3Backend::conv3x3`] with respect to `x`.
        fn conv3x3_input_grad(
            weight: FloatTensor<Self>,
            grad: FloatTensor<Self>,
        ) -> FloatTensor<Self> {
            let _ = (weight, grad);
            panic!("conv3x3_input_grad is only called by the conv3x3 autodiff node")
        }

        /// Gradient of [`Conv3x3Backend::conv3x3`] with respect to `weight`.
        fn conv3x3_weight_grad(x: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
            let _ = (x, grad);
            panic!("conv3x3_weight_grad is only called by the conv3x3 autodiff node")
        }
    }

    fn geometry(x: &FlexTensor, weight: &FlexTensor) -> Geometry {
        let xs = x.layout().shape();
        let ws = weight.layout().shape();
        assert!(
            xs.num_dims() == 5 && ws.num_dims() == 5 && ws[1] == xs[1] && ws[2..] == [3, 3, 3],
            "conv3x3: input {xs:?} and kernel {ws:?} do not fit"
        );
        Geometry {
            batch: xs[0],
            cin: xs[1],
            cout: ws[0],
            dims: [xs[2], xs[3], xs[4]],
        }
    }

    /// The tensor in a contiguous buffer (a copy only when it is a strided view).
    fn f32_data(t: &FlexTensor) -> FlexTensor {
        assert_eq!(t.dtype(), DType::F32, "conv3x3 computes in f32");
        t.to_contiguous()
    }

    /// The elements of a contiguous tensor, in order (a view may start inside its buffer).
    fn values(t: &FlexTensor) -> &[f32] {
        t.as_slice().expect("contiguous f32 tensor")
    }

    fn tensor(values: Vec<f32>, shape: [usize; 5]) -> FlexTensor {
        FlexTensor::from_data(TensorData::new(values, shape))
    }

    impl Conv3x3Backend for Flex {
        fn conv3x3(x: FlexTensor, weight: FlexTensor) -> FlexTensor {
            let (x, weight) = (f32_data(&x), f32_data(&weight));
            let g = geometry(&x, &weight);
            let out = kernel::forward(values(&x), values(&weight), g);
            let [d, h, w] = g.dims;
            tensor(out, [g.batch, g.cout, d, h, w])
        }

        fn conv3x3_input_grad(weight: FlexTensor, grad: FlexTensor) -> FlexTensor {
            let (weight, grad) = (f32_data(&weight), f32_data(&grad));
            let (ws, gs) = (weight.layout().shape(), grad.layout().shape());
            let g = Geometry {
                batch: gs[0],
                cin: ws[1],
                cout: ws[0],
                dims: [gs[2], gs[3], gs[4]],
            };
            let [d, h, w] = g.dims;
            let dx = kernel::input_grad(values(&grad), values(&weight), g);
            tensor(dx, [g.batch, g.cin, d, h, w])
        }

        fn conv3x3_weight_grad(x: FlexTensor, grad: FlexTensor) -> FlexTensor {
            let (x, grad) = (f32_data(&x), f32_data(&grad));
            let (xs, gs) = (x.layout().shape(), grad.layout().shape());
            let g = Geometry {
                batch: xs[0],
                cin: xs[1],
                cout: gs[1],
                dims: [xs[2], xs[3], xs[4]],
            };
            let dw = kernel::weight_grad(values(&x), values(&grad), g);
            tensor(dw, [g.cout, g.cin, 3, 3, 3])
        }
    }

    impl<B: Backend + Conv3x3Backend, C: CheckpointStrategy> Conv3x3Backend for Autodiff<B, C> {
        fn conv3x3(x: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self> {
            #[derive(Debug)]
            struct Conv3x3Node;

            #[derive(Clone, Debug)]
            struct State<B: Backend> {
                x: <B as BackendTypes>::FloatTensorPrimitive,
                weight: <B as BackendTypes>::FloatTensorPrimitive,
            }

            impl<B: Backend + Conv3x3Backend> Backward<B, 2> for Conv3x3Node {
                type State = State<B>;

                fn backward(
                    self,
                    ops: Ops<Self::State, 2>,
                    grads: &mut Gradients,
                    _checkpointer: &mut Checkpointer,
                ) {
                    let [x_node, weight_node] = ops.parents;
                    let grad = grads.consume::<B>(&ops.node);
                    // Only the gradients someone needs: a network's input has none.
                    if let Some(node) = weight_node {
                        let dw = B::conv3x3_weight_grad(ops.state.x, grad.clone());
                        grads.register::<B>(node.id, dw);
                    }
                    if let Some(node) = x_node {
                        grads.register::<B>(node.id, B::conv3x3_input_grad(ops.state.weight, grad));
                    }
                }
            }

            let (x, x_node) = x.into_parts();
            let (weight, weight_node) = weight.into_parts();
            match Conv3x3Node
                .prepare::<C>([x_node, weight_node])
                .compute_bound()
                .stateful()
            {
                OpsKind::Tracked(prep) => {
                    let out = B::conv3x3(x.clone(), weight.clone());
                    prep.finish(State { x, weight }, out)
                }
                OpsKind::UnTracked(prep) => prep.finish(B::conv3x3(x, weight)),
            }
        }
    }

    /// The extension's forward pass on dispatch tensors.
    pub fn conv3x3(x: Tensor<5>, weight: Tensor<5>) -> Tensor<5> {
        Tensor::from_dispatch(<Dispatch as Conv3x3Backend>::conv3x3(
            x.into_dispatch(),
            weight.into_dispatch(),
        ))
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

/// A 3×3×3 convolution with stride 1 and zero padding 1: `x` `[n, cin, d, h, w]`, `weight`
/// `[cout, cin, 3, 3, 3]`, `bias` `[cout]`. On flex it is [`kernel`]'s, forward and backward;
/// elsewhere burn's `conv3d`. The two agree to 1e-4 (tested).
pub fn conv3x3(x: Tensor<5>, weight: Tensor<5>, bias: Option<Tensor<1>>) -> Tensor<5> {
    #[cfg(feature = "flex")]
    if on_flex(&x.device()) {
        let y = flex::conv3x3(x, weight);
        return match bias {
            Some(b) => {
                let c = b.dims()[0];
                y + b.reshape([1, c, 1, 1, 1])
            }
            None => y,
        };
    }
    conv3d(
        x,
        weight,
        bias,
        ConvOptions::new([1, 1, 1], [1, 1, 1], [1, 1, 1], 1),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, Distribution};

    /// Forward and both gradients against burn's own conv3d, on the autodiff device, for a fresh
    /// input, a contiguous view that starts inside its buffer, and a strided view.
    #[test]
    fn matches_burns_conv3d_forward_and_backward() {
        let device = Device::default();
        assert!(on_flex(&device), "the test suite runs on flex");
        let ad = device.clone().autodiff();
        assert!(on_flex(&ad));
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
        for x in inputs {
            let run = |fast: bool| {
                let (x, w, b) = (
                    x.clone().require_grad(),
                    w.clone().require_grad(),
                    b.clone().require_grad(),
                );
                let y = if fast {
                    conv3x3(x.clone(), w.clone(), Some(b.clone()))
                } else {
                    conv3d(
                        x.clone(),
                        w.clone(),
                        Some(b.clone()),
                        ConvOptions::new([1, 1, 1], [1, 1, 1], [1, 1, 1], 1),
                    )
                };
                let grads = (y.clone() * up.clone()).sum().backward();
                let v = |t: Tensor<5>| t.into_data().try_to_vec::<f32>().unwrap();
                (
                    v(y),
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
            let close = |a: &[f32], b: &[f32], what: &str| {
                assert_eq!(a.len(), b.len());
                for (p, q) in a.iter().zip(b) {
                    assert!(
                        (p - q).abs() <= 1e-4 * (1.0 + q.abs()),
                        "{what}: {p} vs {q}"
                    );
                }
            };
            close(&fast.0, &slow.0, "output");
            close(&fast.1, &slow.1, "input gradient");
            close(&fast.2, &slow.2, "weight gradient");
            close(&fast.3, &slow.3, "bias gradient");
        }
    }
}
