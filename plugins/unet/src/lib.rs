//! tomoflow plugin `unet`: multi-class 3D U-Net segmentation with burn.
//!
//! - [`alloc`]: glibc allocator settings that keep large tensors' pages in the process;
//! - [`flex_ops`]: the 3D convolution, up-convolution and pooling with hand-written forward and
//!   backward passes on the flex backend, and through libtorch's own kernels with `tch`;
//! - [`net`]: the architecture, the burn module (exact 3D max pooling), the loss;
//! - [`data`]: training volumes, class tables, patch sampling and augmentation, Dice;
//! - [`train`]: the training loop, validation, early stopping and bit-exact checkpoints;
//! - [`infer`]: sliding-window inference with blending, test-time augmentation, resampling;
//! - [`model`]: the `model` data kind and the `.bpk` model file;
//! - [`plot`]: training curves and class overlays as PNG;
//! - [`nodes`]: `unet-train`, `unet-infer`;
//! - [`model_nodes`]: `model-read`, `model-calibrate`, `model-write`, `training-history-write`.
//!
//! See docs/unet.md.

pub mod alloc;
pub mod data;
pub mod flex_ops;
pub mod infer;
pub mod model;
pub mod model_nodes;
pub mod net;
pub mod nodes;
pub mod plot;
pub mod train;

tomoflow_sdk::export_plugin! {
    name: "unet",
    version: env!("CARGO_PKG_VERSION"),
    description: "Multi-class 3D U-Net training and tiled inference (burn)",
    nodes: [
        nodes::TrainNode,
        nodes::InferNode,
        model_nodes::ReadNode,
        model_nodes::CalibrateNode,
        model_nodes::WriteNode,
        model_nodes::HistoryWriteNode,
    ],
}

#[cfg(test)]
mod tests;
