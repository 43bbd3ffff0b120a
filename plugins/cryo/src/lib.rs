//! Shared cryo-ET science for tomoflow plugins: MRC and OME-Zarr I/O, PNG previews and
//! streaming statistics. No dependency on the plugin SDK.

pub mod image;
pub mod mrc;
pub mod stats;
pub mod zarr;
