//! # tomoflow-sdk
//!
//! Everything a tomoflow plugin needs, and the one crate the engine and plugins share.
//!
//! - [`abi`]: the `#[repr(C)]` plugin ABI (descriptor, host function table, DLPack tensors).
//! - [`tensor`]: safe owned tensors and the [`Message`] that travels along an edge.
//! - [`plugin`]: the [`NodeDef`]/[`Node`] traits, the [`Ctx`] handle and [`export_plugin!`].
//! - [`volume`]: chunk geometry for volumes, slab splitting with halos, reassembly, and putting
//!   streamed slabs back in z order.
//! - [`image`]: the `image` kind (a PNG file's bytes in one message).
//! - [`gather`]: where a message of a gathered input came from, to pair gathered inputs.
//!
//! A minimal node:
//!
//! ```ignore
//! use tomoflow_sdk::prelude::*;
//!
//! #[derive(serde::Deserialize, schemars::JsonSchema)]
//! #[serde(deny_unknown_fields)]
//! struct Params { factor: f32 }
//!
//! struct Scale { factor: f32 }
//! impl Node for Scale {
//!     fn process(&mut self, ctx: &mut Ctx, _input: usize, msg: Message) -> Result<()> {
//!         let (meta, data) = volume::chunk_f32(&msg)?;
//!         let out: Vec<f32> = data.iter().map(|v| v * self.factor).collect();
//!         ctx.emit("volume", volume::chunk_message(&meta, out))
//!     }
//!     fn finish(&mut self, _ctx: &mut Ctx) -> Result<()> { Ok(()) }
//! }
//! impl NodeDef for Scale {
//!     type Params = Params;
//!     const NAME: &'static str = "scale";
//!     const DOC: &'static str = "Multiply every voxel by a factor.";
//!     const INPUTS: &'static [Port] = &[port("volume", "volume", "input")];
//!     const OUTPUTS: &'static [Port] = &[port("volume", "volume", "scaled")];
//!     fn create(p: Params, _info: &NodeInfo) -> Result<Self> { Ok(Scale { factor: p.factor }) }
//! }
//! export_plugin! { name: "scale", version: "0.1.0", description: "demo", nodes: [Scale] }
//! ```

pub mod abi;
pub mod gather;
pub mod image;
pub mod memory;
pub mod plugin;
pub mod tensor;
pub mod volume;

pub use plugin::{port, Cancelled, Ctx, Node, NodeDef, NodeInfo, Par, Port, Result};
pub use tensor::{DType, Element, Message, Tensor};

/// Re-exports for plugin authors: `use tomoflow_sdk::prelude::*;`.
pub mod prelude {
    pub use crate::export_plugin;
    pub use crate::image;
    pub use crate::plugin::{port, Cancelled, Ctx, Node, NodeDef, NodeInfo, Par, Port, Result};
    pub use crate::tensor::{DType, Element, Message, Tensor};
    pub use crate::volume;
    pub use anyhow::{anyhow, bail, Context as _};
}

pub use anyhow;
pub use schemars;
pub use serde_json;

/// Give the allocator's free pages back to the operating system (glibc `malloc_trim`; a no-op
/// elsewhere). glibc keeps freed blocks of a fragmented heap resident, so a node that has just
/// dropped hundreds of MiB (a whole tilt series, say) calls this before its next big phase to
/// keep the process's peak memory at what it really holds.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn malloc_trim(pad: usize) -> std::ffi::c_int;
        }
        // SAFETY: malloc_trim only walks glibc's own arenas; it has no preconditions.
        unsafe {
            malloc_trim(0);
        }
    }
}
