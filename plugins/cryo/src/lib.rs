//! Shared cryo-ET science for tomoflow plugins: MRC and OME-Zarr I/O, PNG previews and
//! streaming statistics. No dependency on the plugin SDK.

pub mod ctf;
pub mod fft;
pub mod image;
pub mod imod;
pub mod mrc;
pub mod particles;
pub mod pdb;
pub mod poisson;
pub mod projector;
pub mod rng;
pub mod rotation;
pub mod scattering;
pub mod stats;
pub mod template;
pub mod tiff;
pub mod tiltgeom;
pub mod tiltscheme;
pub mod tiltseries;
pub mod zarr;
