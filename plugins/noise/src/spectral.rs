//! Anisotropic spectral noise model: estimation from real tomograms and synthesis of coloured
//! Gaussian noise at any box size.
//!
//! **Model.** A table P(k_xy, |k_z|) of relative power (white noise of unit variance has P = 1)
//! over `n_xy` radial bins of k_xy = sqrt(k_x² + k_y²) in [0, √2·Nyquist] and `n_z` bins of |k_z|
//! in [0, Nyquist] (cycles/Å at the model's voxel size). Keeping k_z separate keeps the missing
//! wedge (power missing at high |k_z|/k_xy) and the z-elongation of real tomograms; averaging over
//! the azimuth in xy loses the wedge's orientation about z (the tilt axis direction).
//!
//! **Estimation** (Welch): structure-free patches (the same masks as `noise-empirical`), mean
//! removed, separable Hann window, |FFT|² / Σw², averaged per bin over all patches.
//!
//! **Synthesis.** Fourier coefficients C(k) = sqrt(P̂(k)/N)·(g₁ + i g₂), with P̂ the table
//! interpolated bilinearly between bin centres at the box's frequencies (zero beyond the model's
//! band and at k = 0), scaled so that its mean over the grid is 1 (expected unit variance); one
//! unnormalised inverse FFT gives two independent real fields (its real and imaginary parts).
//! The g are drawn from a 65,536-level inverse-CDF table of the standard normal (renormalised to
//! unit variance; 4 draws per 64 random bits) — each output voxel sums N such terms, so its
//! distribution is Gaussian to within the central-limit error.

use crate::empirical::{free_positions, prefix};
use crate::fft3d::{fft3, ifft3_xyz_to_zyx};
use crate::source::{Source, SourceInfo};
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use std::sync::OnceLock;
use tomoflow_cryo::fft::{freq, Complex32};
use tomoflow_cryo::rng::Rng;

/// Provenance of a fitted model.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Provenance {
    /// Node and plugin version that fitted it.
    pub fitted_by: String,
    /// The sources (paths, shapes, voxel sizes, statistics) as JSON.
    pub sources: serde_json::Value,
    /// Patch shape (z, y, x) used for the estimate.
    pub patch: [usize; 3],
    /// Number of patches averaged.
    pub patches: usize,
}

/// A fitted noise model (the `noise_model` kind's `model` object, see docs/data-kinds.md).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NoiseModel {
    /// Always `"anisotropic-power-spectrum"`.
    pub model: String,
    /// Format version (1).
    pub version: u32,
    /// Voxel size (Å) of the data the model was fitted on; frequencies are in cycles/Å.
    pub voxel_size: f64,
    /// Upper edge of the k_xy bins (cycles/Å): √2 × Nyquist.
    pub kxy_max: f64,
    /// Upper edge of the |k_z| bins (cycles/Å): Nyquist.
    pub kz_max: f64,
    /// Relative power, `power[iz][ixy]` (white unit-variance noise: 1).
    pub power: Vec<Vec<f64>>,
    /// Periodogram samples per bin.
    pub counts: Vec<Vec<u64>>,
    /// Where it came from.
    pub provenance: Provenance,
}

impl NoiseModel {
    /// Number of k_xy bins.
    pub fn n_xy(&self) -> usize {
        self.power.first().map_or(0, |r| r.len())
    }

    /// Number of |k_z| bins.
    pub fn n_z(&self) -> usize {
        self.power.len()
    }

    /// Check consistency (after reading a file).
    pub fn validate(&self) -> Result<()> {
        if self.model != "anisotropic-power-spectrum" || self.version != 1 {
            bail!(
                "not a tomoflow noise model (model {:?}, version {}); expected anisotropic-power-spectrum v1",
                self.model,
                self.version
            );
        }
        let n = self.n_xy();
        if n == 0 || self.power.iter().any(|r| r.len() != n) {
            bail!("noise model table is empty or ragged");
        }
        if self
            .power
            .iter()
            .flatten()
            .any(|p| !(p.is_finite() && *p >= 0.0))
        {
            bail!("noise model has negative or non-finite power");
        }
        if !(self.voxel_size > 0.0 && self.kxy_max > 0.0 && self.kz_max > 0.0) {
            bail!("noise model has a non-positive voxel size or band");
        }
        Ok(())
    }

    /// Relative power at (k_xy, |k_z|) in cycles/Å: bilinear between bin centres, clamped at
    /// the table's ends, zero beyond the band.
    pub fn eval(&self, kxy: f64, kz: f64) -> f64 {
        if kxy > self.kxy_max * (1.0 + 1e-9) || kz > self.kz_max * (1.0 + 1e-9) {
            return 0.0;
        }
        let (nx, nz) = (self.n_xy(), self.n_z());
        let coord = |k: f64, kmax: f64, n: usize| -> (usize, usize, f64) {
            let c = (k / kmax * n as f64 - 0.5).clamp(0.0, (n - 1) as f64);
            let i0 = c.floor() as usize;
            let i1 = (i0 + 1).min(n - 1);
            (i0, i1, c - i0 as f64)
        };
        let (x0, x1, fx) = coord(kxy, self.kxy_max, nx);
        let (z0, z1, fz) = coord(kz, self.kz_max, nz);
        let p = &self.power;
        (1.0 - fz) * ((1.0 - fx) * p[z0][x0] + fx * p[z0][x1])
            + fz * ((1.0 - fx) * p[z1][x0] + fx * p[z1][x1])
    }
}

/// Estimation settings.
#[derive(Debug, Clone)]
pub struct EstimateOptions {
    /// Patch edge (voxels) before clamping to the structure-free extent.
    pub patch: usize,
    /// Most patches to average.
    pub max_patches: usize,
    /// k_xy bins.
    pub n_xy: usize,
    /// |k_z| bins.
    pub n_z: usize,
}

fn hann(n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| (0.5 - 0.5 * (std::f64::consts::TAU * (i as f64 + 0.5) / n as f64).cos()) as f32)
        .collect()
}

/// Fit a model to normalised, masked sources (all at the same voxel size).
pub fn estimate(sources: &[Source], o: &EstimateOptions, fitted_by: &str) -> Result<NoiseModel> {
    let Some(first) = sources.first() else {
        bail!("no source to estimate a spectrum from")
    };
    let vs = first.info.voxel_size;
    // Largest cube-ish patch with structure-free positions (shrink z first: tomograms are thin).
    let pre: Vec<Vec<u32>> = sources.iter().map(|s| prefix(&s.mask, s.shape)).collect();
    let mut p = [o.patch; 3];
    for (a, pa) in p.iter_mut().enumerate() {
        *pa = (*pa).min(sources.iter().map(|s| s.shape[a]).max().unwrap_or(1));
    }
    let mut valid = Vec::new();
    loop {
        valid.clear();
        for (k, (pr, s)) in pre.iter().zip(sources).enumerate() {
            free_positions(pr, s.shape, p, k as u32, &mut valid);
        }
        if valid.len() >= 4 || p.iter().all(|&n| n <= 8) {
            break;
        }
        let a = (0..3).max_by_key(|&a| p[a]).unwrap_or(0);
        p[a] = (p[a] * 4 / 5).max(8);
    }
    if valid.is_empty() {
        bail!("the sources have no structure-free block of {p:?} voxels to estimate a spectrum from; lower `mask.k` or `mask.margin`");
    }
    // Spread the patches: a fixed-seed shuffle (the estimate depends on the data only).
    let mut rng = Rng::new(0x5eed_0f5b_ec00);
    for i in (1..valid.len()).rev() {
        valid.swap(i, rng.below(i as u64 + 1) as usize);
    }
    valid.truncate(o.max_patches.max(1));
    let w = [hann(p[0]), hann(p[1]), hann(p[2])];
    let n: usize = p.iter().product();
    let mut wsum2 = 0.0f64;
    for a in &w[0] {
        for b in &w[1] {
            for c in &w[2] {
                wsum2 += ((a * b * c) as f64).powi(2);
            }
        }
    }
    let kxy_max = std::f64::consts::SQRT_2 / (2.0 * vs);
    let kz_max = 1.0 / (2.0 * vs);
    let (nbx, nbz) = (o.n_xy.max(1), o.n_z.max(1));
    let mut sum = vec![vec![0.0f64; nbx]; nbz];
    let mut cnt = vec![vec![0u64; nbx]; nbz];
    // Bin index of every periodogram sample.
    let fz: Vec<f64> = (0..p[0]).map(|i| freq(i, p[0], vs).abs()).collect();
    let fy: Vec<f64> = (0..p[1]).map(|i| freq(i, p[1], vs)).collect();
    let fx: Vec<f64> = (0..p[2]).map(|i| freq(i, p[2], vs)).collect();
    let bin = |k: f64, kmax: f64, nb: usize| ((k / kmax * nb as f64) as usize).min(nb - 1);
    let mut buf = vec![Complex32::default(); n];
    for &(src, corner) in &valid {
        let s = &sources[src as usize];
        let [_, sy, sx] = s.shape;
        let c = corner as usize;
        let (cz, cy, cx) = (c / (sy * sx), (c / sx) % sy, c % sx);
        let mut mean = 0.0f64;
        for z in 0..p[0] {
            for y in 0..p[1] {
                for x in 0..p[2] {
                    mean += s.data[((cz + z) * sy + cy + y) * sx + cx + x] as f64;
                }
            }
        }
        let mean = (mean / n as f64) as f32;
        for z in 0..p[0] {
            for y in 0..p[1] {
                for x in 0..p[2] {
                    let v = s.data[((cz + z) * sy + cy + y) * sx + cx + x] - mean;
                    buf[(z * p[1] + y) * p[2] + x] =
                        Complex32::new(v * w[0][z] * w[1][y] * w[2][x], 0.0);
                }
            }
        }
        fft3(&mut buf, p, false);
        for z in 0..p[0] {
            let bz = bin(fz[z], kz_max, nbz);
            for y in 0..p[1] {
                for x in 0..p[2] {
                    if z == 0 && y == 0 && x == 0 {
                        continue;
                    }
                    let kxy = (fy[y] * fy[y] + fx[x] * fx[x]).sqrt();
                    let bx = bin(kxy, kxy_max, nbx);
                    sum[bz][bx] += buf[(z * p[1] + y) * p[2] + x].norm_sqr() as f64 / wsum2;
                    cnt[bz][bx] += 1;
                }
            }
        }
    }
    let mut power: Vec<Vec<f64>> = sum
        .iter()
        .zip(&cnt)
        .map(|(s, c)| {
            s.iter()
                .zip(c)
                .map(|(s, &c)| if c > 0 { s / c as f64 } else { f64::NAN })
                .collect()
        })
        .collect();
    // Empty bins (coarse patches): nearest filled bin in the same k_z row, else column.
    for row in power.iter_mut() {
        let filled = row.clone();
        for (ix, v) in row.iter_mut().enumerate() {
            if v.is_nan() {
                let near = (0..nbx)
                    .filter(|&j| !filled[j].is_nan())
                    .min_by_key(|&j| j.abs_diff(ix));
                *v = near.map_or(f64::NAN, |j| filled[j]);
            }
        }
    }
    for iz in 0..nbz {
        if power[iz].iter().all(|v| v.is_nan()) {
            let near = (0..nbz)
                .filter(|&j| !power[j][0].is_nan())
                .min_by_key(|&j| j.abs_diff(iz));
            power[iz] = near.map_or(vec![1.0; nbx], |j| power[j].clone());
        }
    }
    let infos: Vec<&SourceInfo> = sources.iter().map(|s| &s.info).collect();
    Ok(NoiseModel {
        model: "anisotropic-power-spectrum".into(),
        version: 1,
        voxel_size: vs,
        kxy_max,
        kz_max,
        power,
        counts: cnt,
        provenance: Provenance {
            fitted_by: fitted_by.into(),
            sources: serde_json::to_value(infos)?,
            patch: p,
            patches: valid.len(),
        },
    })
}

/// Unit-variance quantised normal: 65,536 inverse-CDF levels.
fn normal_table() -> &'static [f32] {
    static T: OnceLock<Vec<f32>> = OnceLock::new();
    T.get_or_init(|| {
        let n = 1usize << 16;
        let mut t: Vec<f64> = (0..n)
            .map(|i| inv_norm_cdf((i as f64 + 0.5) / n as f64))
            .collect();
        let var = t.iter().map(|v| v * v).sum::<f64>() / n as f64;
        let s = 1.0 / var.sqrt();
        t.iter_mut().for_each(|v| *v *= s);
        t.into_iter().map(|v| v as f32).collect()
    })
}

/// Inverse of the standard normal CDF (Acklam's rational approximation, relative error
/// < 1.2e-9).
pub fn inv_norm_cdf(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969683028665376e1,
        2.209460984245205e2,
        -2.759285104469687e2,
        1.383_577_518_672_69e2,
        -3.066479806614716e1,
        2.506628277459239,
    ];
    const B: [f64; 5] = [
        -5.447609879822406e1,
        1.615858368580409e2,
        -1.556989798598866e2,
        6.680131188771972e1,
        -1.328068155288572e1,
    ];
    const C: [f64; 6] = [
        -7.784894002430293e-3,
        -3.223964580411365e-1,
        -2.400758277161838,
        -2.549732539343734,
        4.374664141464968,
        2.938163982698783,
    ];
    const D: [f64; 4] = [
        7.784695709041462e-3,
        3.224671290700398e-1,
        2.445134137142996,
        3.754408661907416,
    ];
    let pl = 0.02425;
    if p < pl {
        let q = (-2.0 * p.ln()).sqrt();
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    } else if p <= 1.0 - pl {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    } else {
        -inv_norm_cdf(1.0 - p)
    }
}

/// Synthesises boxes of one shape and voxel size from a model (the amplitude grid is computed
/// once and reused).
pub struct Synthesizer {
    shape: [usize; 3],
    /// sqrt(P̂/N) in (x, y, z) layout.
    amp: Vec<f32>,
    /// Expected relative power P̂ per (z, y, x) frequency (mean 1), for tests and reports.
    target_zyx: Vec<f32>,
}

impl Synthesizer {
    /// Prepare synthesis of boxes of `shape` (z, y, x) at `voxel_size` Å from `model`.
    pub fn new(model: &NoiseModel, shape: [usize; 3], voxel_size: f64) -> Result<Synthesizer> {
        model.validate()?;
        let [nz, ny, nx] = shape;
        let n = nz * ny * nx;
        if n == 0 {
            bail!("box shape {shape:?} has an empty axis");
        }
        let fz: Vec<f64> = (0..nz).map(|i| freq(i, nz, voxel_size).abs()).collect();
        let fy: Vec<f64> = (0..ny).map(|i| freq(i, ny, voxel_size)).collect();
        let fx: Vec<f64> = (0..nx).map(|i| freq(i, nx, voxel_size)).collect();
        // The table varies with (k_xy, k_z) only: evaluate per (y, x) pair and z.
        let mut p = vec![0.0f64; n];
        let mut total = 0.0;
        for x in 0..nx {
            for y in 0..ny {
                let kxy = (fx[x] * fx[x] + fy[y] * fy[y]).sqrt();
                for z in 0..nz {
                    let v = if x == 0 && y == 0 && z == 0 {
                        0.0
                    } else {
                        model.eval(kxy, fz[z])
                    };
                    p[(x * ny + y) * nz + z] = v;
                    total += v;
                }
            }
        }
        if total <= 0.0 {
            bail!(
                "the noise model has no power in the band of a {shape:?} box at {voxel_size} Å (model at {} Å)",
                model.voxel_size
            );
        }
        let norm = n as f64 / total;
        let amp = p
            .iter()
            .map(|&v| (v * norm / n as f64).sqrt() as f32)
            .collect();
        let mut target_zyx = vec![0.0f32; n];
        for x in 0..nx {
            for y in 0..ny {
                for z in 0..nz {
                    target_zyx[(z * ny + y) * nx + x] = (p[(x * ny + y) * nz + z] * norm) as f32;
                }
            }
        }
        Ok(Synthesizer {
            shape,
            amp,
            target_zyx,
        })
    }

    /// Expected relative power per frequency, (z, y, x) layout, mean 1.
    pub fn target(&self) -> &[f32] {
        &self.target_zyx
    }

    /// Two independent boxes (z, y, x) from one seed and pair index.
    pub fn pair(&self, seed: u64, index: u64, tmp: &mut Vec<Complex32>) -> (Vec<f32>, Vec<f32>) {
        let table = normal_table();
        let mut rng = Rng::derive(seed, index);
        let mut spec: Vec<Complex32> = Vec::with_capacity(self.amp.len());
        let mut chunks = self.amp.chunks_exact(2);
        for a in &mut chunks {
            let r = rng.next_u64();
            let g = |s: u32| table[((r >> s) & 0xffff) as usize];
            spec.push(Complex32::new(a[0] * g(0), a[0] * g(16)));
            spec.push(Complex32::new(a[1] * g(32), a[1] * g(48)));
        }
        for a in chunks.remainder() {
            let r = rng.next_u64();
            spec.push(Complex32::new(
                a * table[(r & 0xffff) as usize],
                a * table[((r >> 16) & 0xffff) as usize],
            ));
        }
        ifft3_xyz_to_zyx(&mut spec, self.shape, tmp);
        let re = spec.iter().map(|c| c.re).collect();
        let im = spec.iter().map(|c| c.im).collect();
        (re, im)
    }

    /// Box number `index` (reproducible from `seed`): boxes 2i and 2i+1 share one FFT.
    pub fn sample(&self, seed: u64, index: u64) -> Vec<f32> {
        let (a, b) = self.pair(seed, index / 2, &mut Vec::new());
        if index.is_multiple_of(2) {
            a
        } else {
            b
        }
    }
}

/// Relative power spectrum of a box (|FFT|²/N), (z, y, x) layout.
pub fn periodogram(data: &[f32], shape: [usize; 3]) -> Vec<f32> {
    let mut c: Vec<Complex32> = data.iter().map(|&v| Complex32::new(v, 0.0)).collect();
    fft3(&mut c, shape, false);
    let n = data.len() as f32;
    c.iter().map(|v| v.norm_sqr() / n).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::load_source;
    use crate::source::tests::{opts, shared};

    fn model_from(f: impl Fn(f64, f64) -> f64, vs: f64, nb: usize) -> NoiseModel {
        let kxy_max = std::f64::consts::SQRT_2 / (2.0 * vs);
        let kz_max = 1.0 / (2.0 * vs);
        let power = (0..nb)
            .map(|iz| {
                (0..nb)
                    .map(|ix| {
                        f(
                            (ix as f64 + 0.5) * kxy_max / nb as f64,
                            (iz as f64 + 0.5) * kz_max / nb as f64,
                        )
                    })
                    .collect()
            })
            .collect();
        NoiseModel {
            model: "anisotropic-power-spectrum".into(),
            version: 1,
            voxel_size: vs,
            kxy_max,
            kz_max,
            power,
            counts: vec![vec![1; nb]; nb],
            provenance: Provenance {
                fitted_by: "test".into(),
                sources: serde_json::Value::Null,
                patch: [0; 3],
                patches: 0,
            },
        }
    }

    /// A wedge-like, z-elongated spectrum: low-pass, with power missing where |kz| > 1.7 kxy.
    fn wedge(kxy: f64, kz: f64) -> f64 {
        let lp = (-(kxy * kxy + 4.0 * kz * kz) / (2.0 * 0.02f64.powi(2))).exp() + 0.05;
        if kz > 1.7 * kxy {
            0.2 * lp
        } else {
            lp
        }
    }

    /// Mean measured and target power per k_xy shell and per k_z band.
    fn marginals(
        boxes: &[Vec<f32>],
        target: &[f32],
        shape: [usize; 3],
        vs: f64,
        m: &NoiseModel,
        nb: usize,
    ) -> Vec<(String, f64, f64, usize)> {
        let [nz, ny, nx] = shape;
        let mut acc = vec![(0.0f64, 0.0f64, 0usize); 2 * nb];
        let pgs: Vec<Vec<f32>> = boxes.iter().map(|b| periodogram(b, shape)).collect();
        for z in 0..nz {
            let kz = freq(z, nz, vs).abs();
            for y in 0..ny {
                for x in 0..nx {
                    let (fy, fx) = (freq(y, ny, vs), freq(x, nx, vs));
                    let kxy = (fy * fy + fx * fx).sqrt();
                    let i = (z * ny + y) * nx + x;
                    let t = target[i] as f64;
                    if t == 0.0 {
                        continue;
                    }
                    let meas: f64 = pgs.iter().map(|p| p[i] as f64).sum::<f64>() / pgs.len() as f64;
                    let bx = ((kxy / m.kxy_max * nb as f64) as usize).min(nb - 1);
                    let bz = nb + ((kz / m.kz_max * nb as f64) as usize).min(nb - 1);
                    for b in [bx, bz] {
                        acc[b].0 += meas;
                        acc[b].1 += t;
                        acc[b].2 += 1;
                    }
                }
            }
        }
        acc.iter()
            .enumerate()
            .map(|(i, &(a, b, c))| {
                let name = if i < nb {
                    format!("k_xy shell {i}")
                } else {
                    format!("k_z band {}", i - nb)
                };
                (name, a, b, c)
            })
            .collect()
    }

    #[test]
    fn synthesised_spectrum_matches_target_per_shell_and_band() {
        let vs = 10.0;
        let m = model_from(wedge, vs, 12);
        let shape = [64, 64, 64];
        let s = Synthesizer::new(&m, shape, vs).unwrap();
        let mut tmp = Vec::new();
        let mut boxes = Vec::new();
        for i in 0..4 {
            let (a, b) = s.pair(9, i, &mut tmp);
            boxes.push(a);
            boxes.push(b);
        }
        let mut tested = 0;
        for (name, meas, target, _) in marginals(&boxes, s.target(), shape, vs, &m, 12) {
            if target == 0.0 {
                continue;
            }
            let r = meas / target;
            assert!((r - 1.0).abs() < 0.05, "{name}: measured/target = {r}");
            tested += 1;
        }
        assert!(tested >= 20, "{tested}");
        // Unit variance, zero mean, Gaussian-like (kurtosis ≈ 3).
        let v: Vec<f64> = boxes.concat().iter().map(|&x| x as f64).collect();
        let n = v.len() as f64;
        let mean = v.iter().sum::<f64>() / n;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
        let kurt = v.iter().map(|x| (x - mean).powi(4)).sum::<f64>() / n / var / var;
        assert!(
            mean.abs() < 0.05 && (var - 1.0).abs() < 0.1,
            "mean {mean} var {var}"
        );
        assert!((kurt - 3.0).abs() < 0.1, "kurtosis {kurt}");
        // Real and imaginary parts are independent fields.
        let c: f64 = boxes[0]
            .iter()
            .zip(&boxes[1])
            .map(|(a, b)| (a * b) as f64)
            .sum::<f64>()
            / v.len() as f64
            * 8.0;
        assert!(c.abs() < 0.02, "corr {c}");
    }

    #[test]
    fn synthesis_is_reproducible_and_works_at_any_box_size() {
        let m = model_from(wedge, 10.0, 8);
        let s = Synthesizer::new(&m, [17, 30, 23], 10.0).unwrap();
        assert_eq!(s.sample(5, 3), s.sample(5, 3));
        assert_ne!(s.sample(5, 3), s.sample(6, 3));
        assert_ne!(s.sample(5, 2), s.sample(5, 3));
        assert_eq!(s.sample(5, 0).len(), 17 * 30 * 23);
    }

    #[test]
    fn estimator_recovers_a_known_anisotropic_spectrum() {
        let vs = 10.0;
        let truth = model_from(
            |kxy, kz| (-(kxy * kxy + 4.0 * kz * kz) / (2.0 * 0.015f64.powi(2))).exp() + 0.1,
            vs,
            8,
        );
        let shape = [48, 96, 96];
        let s = Synthesizer::new(&truth, shape, vs).unwrap();
        let (a, b) = s.pair(1, 0, &mut Vec::new());
        let mk = |data: Vec<f32>| {
            let n = data.len();
            crate::source::Source {
                data,
                shape,
                mask: vec![false; n],
                info: load_info(),
            }
        };
        let srcs = [mk(a), mk(b)];
        let est = estimate(
            &srcs,
            &EstimateOptions {
                patch: 32,
                max_patches: 400,
                n_xy: 8,
                n_z: 8,
            },
            "test",
        )
        .unwrap();
        // Compare at bin centres after normalising both to the same mean over the table.
        let norm = |m: &NoiseModel| m.power.iter().flatten().sum::<f64>();
        let (ne, nt) = (norm(&est), norm(&truth));
        for iz in 0..6 {
            for ix in 0..6 {
                let (e, t) = (est.power[iz][ix] / ne, truth.power[iz][ix] / nt);
                assert!((e / t - 1.0).abs() < 0.2, "bin ({iz},{ix}): {e} vs {t}");
            }
        }
        // Anisotropy survives: power falls faster along k_z than along k_xy.
        assert!(est.power[3][0] < 0.7 * est.power[0][3], "{:?}", est.power);
    }

    fn load_info() -> SourceInfo {
        let s = load_source(&shared("13pf_MT.tif"), "x", &opts(10.52)).unwrap();
        s.info
    }

    #[test]
    fn real_tomogram_model_keeps_the_z_elongation() {
        let s = load_source(&shared("13pf_MT.tif"), "13pf_MT.tif", &opts(10.52)).unwrap();
        let m = estimate(
            &[s],
            &EstimateOptions {
                patch: 32,
                max_patches: 200,
                n_xy: 12,
                n_z: 12,
            },
            "test",
        )
        .unwrap();
        m.validate().unwrap();
        let json = serde_json::to_string(&m).unwrap();
        let back: NoiseModel = serde_json::from_str(&json).unwrap();
        for (a, b) in back.power.iter().flatten().zip(m.power.iter().flatten()) {
            assert!((a - b).abs() <= 1e-12 * b.abs());
        }
        // Real tomograms are elongated in z (missing wedge + anisotropic resolution): at equal
        // |k|, power along k_z is lower than along k_xy.
        let k = 0.6 * m.kz_max;
        let along_z = m.eval(0.0, k);
        let along_xy = m.eval(k, 0.0);
        eprintln!("P(0,k)={along_z} P(k,0)={along_xy} table={:?}", m.power);
        assert!(
            along_z < along_xy,
            "P along kz {along_z} vs along kxy {along_xy}"
        );
    }

    #[test]
    fn inverse_normal_cdf_is_accurate() {
        assert!(inv_norm_cdf(0.5).abs() < 1e-9);
        assert!((inv_norm_cdf(0.975) - 1.959963985).abs() < 1e-7);
        assert!((inv_norm_cdf(0.001) + 3.090232306).abs() < 1e-6);
        let t = normal_table();
        let var = t.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / t.len() as f64;
        assert!((var - 1.0).abs() < 1e-5);
    }
}
