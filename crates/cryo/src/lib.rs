//! Shared cryo-ET science for tomoflow plugins: MRC, OME-Zarr, TIFF and particle-table I/O,
//! rotations, scattering factors, FFT, CTF, projectors, tilt schemes, PNG previews, plots and streaming
//! statistics. No dependency on the plugin SDK.

pub mod ctf;
pub mod fft;
pub mod image;
pub mod imod;
pub mod mrc;
pub mod particles;
pub mod particles_read;
pub mod pdb;
pub mod plot;
pub mod poisson;
pub mod projector;
pub mod rng;
pub mod rotation;
pub mod scattering;
pub mod sniff;
pub mod star;
pub mod stats;
pub mod template;
pub mod tiff;
pub mod tiltgeom;
pub mod tiltscheme;
pub mod tiltseries;
pub mod zarr;

/// How many whole z planes of a `shape` (z, y, x) volume a slab of `len` values holds, checking
/// that it holds whole planes and that `written` + those planes fit in the volume at `target`.
/// The streaming MRC and OME-Zarr writers share it.
pub(crate) fn slab_planes(
    len: usize,
    shape: [usize; 3],
    written: usize,
    target: &std::path::Path,
) -> anyhow::Result<usize> {
    let plane = shape[1] * shape[2];
    if !len.is_multiple_of(plane) {
        anyhow::bail!(
            "slab of {len} values is not a whole number of {}x{} planes",
            shape[1],
            shape[2]
        );
    }
    let n = len / plane;
    if written + n > shape[0] {
        anyhow::bail!(
            "too many planes for {}: {written} + {n} > NZ={}",
            target.display(),
            shape[0]
        );
    }
    Ok(n)
}
