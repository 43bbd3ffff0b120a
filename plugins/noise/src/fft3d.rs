//! Batched 3D FFTs on top of `rustfft` (plans from `tomoflow_cryo::fft::plan`).
//!
//! `rustfft` transforms many contiguous lines in one call, so every pass here runs on the
//! contiguous axis of a layout and the layouts are changed by blocked transposes
//! (`tomoflow_cryo::fft::transpose`). [`fft3`] works in the standard (z, y, x) layout (four
//! transposes); [`ifft3_xyz_to_zyx`] takes a spectrum laid out (x, y, z) and returns the image in
//! (z, y, x) with only two transposes, which is what noise synthesis uses.
//!
//! Forward transforms are unnormalised; `fft3(.., inverse = true)` divides by the size so that
//! the round trip is the identity; [`ifft3_xyz_to_zyx`] does not normalise.

use tomoflow_cryo::fft::{plan, transpose, Complex32};

fn batch(data: &mut [Complex32], n: usize, inverse: bool, scratch: &mut Vec<Complex32>) {
    let p = plan(n, inverse);
    let need = p.get_inplace_scratch_len();
    if scratch.len() < need {
        scratch.resize(need, Complex32::default());
    }
    p.process_with_scratch(data, &mut scratch[..need]);
}

/// 3D transform in place of a (z, y, x) array. `inverse` normalises by the number of voxels.
pub fn fft3(data: &mut [Complex32], shape: [usize; 3], inverse: bool) {
    let [nz, ny, nx] = shape;
    let n = nz * ny * nx;
    assert_eq!(data.len(), n, "fft3: data length does not match shape");
    if n == 0 {
        return;
    }
    let mut scratch = Vec::new();
    let mut tmp = vec![Complex32::default(); n];
    // x: contiguous.
    batch(data, nx, inverse, &mut scratch);
    // y: per plane (ny, nx) -> (nx, ny).
    let plane = ny * nx;
    for z in 0..nz {
        let s = &mut data[z * plane..(z + 1) * plane];
        let t = &mut tmp[z * plane..(z + 1) * plane];
        transpose(s, t, ny, nx);
        batch(t, ny, inverse, &mut scratch);
        transpose(t, s, nx, ny);
    }
    // z: (nz, plane) -> (plane, nz).
    transpose(data, &mut tmp, nz, plane);
    batch(&mut tmp, nz, inverse, &mut scratch);
    transpose(&tmp, data, plane, nz);
    if inverse {
        let s = 1.0 / n as f32;
        data.iter_mut().for_each(|c| *c *= s);
    }
}

/// Unnormalised inverse 3D transform of a spectrum stored in (x, y, z) layout (z fastest) for
/// an image of shape (z, y, x) = `shape`. The image replaces the spectrum in `spec`, in (z, y, x)
/// layout; `tmp` is scratch space (resized as needed, reusable across calls).
pub fn ifft3_xyz_to_zyx(spec: &mut [Complex32], shape: [usize; 3], tmp: &mut Vec<Complex32>) {
    let [nz, ny, nx] = shape;
    let n = nz * ny * nx;
    assert_eq!(spec.len(), n, "ifft3: data length does not match shape");
    tmp.resize(n, Complex32::default());
    let mut scratch = Vec::new();
    // z lines are contiguous in (x, y, z).
    batch(spec, nz, true, &mut scratch);
    // (x*y, z) -> (z, x*y) = (z, x, y): y contiguous.
    transpose(spec, tmp, nx * ny, nz);
    batch(tmp, ny, true, &mut scratch);
    // per z plane (x, y) -> (y, x): x contiguous.
    let plane = ny * nx;
    for z in 0..nz {
        transpose(
            &tmp[z * plane..(z + 1) * plane],
            &mut spec[z * plane..(z + 1) * plane],
            nx,
            ny,
        );
    }
    batch(spec, nx, true, &mut scratch);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive_dft3(x: &[Complex32], shape: [usize; 3]) -> Vec<Complex32> {
        let [nz, ny, nx] = shape;
        let mut out = vec![Complex32::default(); x.len()];
        for kz in 0..nz {
            for ky in 0..ny {
                for kx in 0..nx {
                    let (mut re, mut im) = (0.0f64, 0.0f64);
                    for z in 0..nz {
                        for y in 0..ny {
                            for xx in 0..nx {
                                let ph = -std::f64::consts::TAU
                                    * ((kz * z) as f64 / nz as f64
                                        + (ky * y) as f64 / ny as f64
                                        + (kx * xx) as f64 / nx as f64);
                                let v = x[(z * ny + y) * nx + xx];
                                let (c, sn) = (ph.cos(), ph.sin());
                                re += v.re as f64 * c - v.im as f64 * sn;
                                im += v.re as f64 * sn + v.im as f64 * c;
                            }
                        }
                    }
                    out[(kz * ny + ky) * nx + kx] = Complex32::new(re as f32, im as f32);
                }
            }
        }
        out
    }

    #[test]
    fn matches_a_naive_dft_and_roundtrips() {
        let shape = [3, 5, 4];
        let n = 60;
        let x: Vec<Complex32> = (0..n)
            .map(|i| Complex32::new(((i * 7) % 11) as f32 - 5.0, ((i * 3) % 5) as f32))
            .collect();
        let want = naive_dft3(&x, shape);
        let mut got = x.clone();
        fft3(&mut got, shape, false);
        for (a, b) in got.iter().zip(&want) {
            assert!((a - b).norm() < 1e-3, "{a} vs {b}");
        }
        fft3(&mut got, shape, true);
        for (a, b) in got.iter().zip(&x) {
            assert!((a - b).norm() < 1e-4);
        }
    }

    #[test]
    fn transposed_inverse_equals_the_standard_one() {
        let shape = [4, 6, 5];
        let [nz, ny, nx] = shape;
        let spec: Vec<Complex32> = (0..nz * ny * nx)
            .map(|i| Complex32::new(((i * 13) % 7) as f32, ((i * 5) % 3) as f32 - 1.0))
            .collect();
        let mut want = spec.clone();
        fft3(&mut want, shape, true);
        let mut xyz = vec![Complex32::default(); spec.len()];
        for z in 0..nz {
            for y in 0..ny {
                for x in 0..nx {
                    xyz[(x * ny + y) * nz + z] = spec[(z * ny + y) * nx + x];
                }
            }
        }
        ifft3_xyz_to_zyx(&mut xyz, shape, &mut Vec::new());
        let s = (nz * ny * nx) as f32;
        for (a, b) in xyz.iter().zip(&want) {
            assert!((a / s - b).norm() < 1e-4, "{a} vs {b}");
        }
    }
}
