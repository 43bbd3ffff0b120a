//! A second-stage classifier of picks by the shape of the density around them.
//!
//! A segmentation network finds particles well but can confuse two classes of similar size
//! (β-galactosidase and thyroglobulin at 10 Å: docs/picking.md). The density itself separates
//! them: this module describes the density around a pick by rotation-invariant features and
//! classifies them with a linear discriminant learned from simulated tomograms with known truth.
//!
//! Features of a start position (a pick, in voxels):
//! 1. **Centring.** In the tomogram smoothed by a Gaussian of `sigma` voxels (and standardised
//!    again), the centroid of the positive density within a ball of `window` voxels, iterated
//!    `iterations` times from the start. Picks from a network sit 2–3 voxels from the true
//!    centre; a radial profile taken there is blurred beyond use, the centroid is about 1 voxel
//!    off.
//! 2. **Moments** of that density about the centroid: ln of its mass, its radius of gyration,
//!    the square roots of the three eigenvalues of its second-moment tensor (ascending: the
//!    particle's extent along its three axes, whatever its orientation) and its z variance
//!    (the missing wedge stretches particles along z).
//! 3. **Radial profiles** of the standardised (unsmoothed) tomogram about the centroid, in
//!    shells of one voxel out to `profile_radius`, separately for directions within 60° of z
//!    and the rest (the missing wedge makes the two differ).
//!
//! Outside the tomogram the standardised density is taken as its mean, 0.

use anyhow::{bail, Result};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// How features are computed, in voxels.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ShapeOptions {
    /// Radius of the ball of the centroid and the moments, voxels.
    pub window: f64,
    /// Gaussian smoothing sigma for the centroid and moments, voxels.
    pub sigma: f64,
    /// Outer radius of the radial profiles, voxels.
    pub profile_radius: usize,
    /// Centroid iterations.
    pub iterations: usize,
}

impl ShapeOptions {
    /// Number of features.
    pub fn dims(&self) -> usize {
        6 + 2 * (self.profile_radius + 1)
    }
}

/// A tomogram ready for feature extraction: standardised, and a smoothed copy.
pub struct Prepared {
    shape: [usize; 3],
    raw: Vec<f32>,
    smooth: Vec<f32>,
}

/// Standardise in place to mean 0, standard deviation 1 (a constant volume becomes 0).
fn standardise(v: &mut [f32]) {
    let n = v.len().max(1) as f64;
    let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
    let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
    let inv = if var > 0.0 { 1.0 / var.sqrt() } else { 0.0 };
    for x in v.iter_mut() {
        *x = ((*x as f64 - mean) * inv) as f32;
    }
}

/// Separable Gaussian smoothing (sigma in voxels), zero outside the volume.
pub fn gaussian(v: &[f32], shape: [usize; 3], sigma: f64) -> Vec<f32> {
    if sigma <= 0.0 {
        return v.to_vec();
    }
    let r = (3.0 * sigma).ceil() as isize;
    let k: Vec<f64> = (-r..=r)
        .map(|i| (-(i * i) as f64 / (2.0 * sigma * sigma)).exp())
        .collect();
    let s: f64 = k.iter().sum();
    let k: Vec<f32> = k.iter().map(|w| (w / s) as f32).collect();
    let [_, ny, nx] = shape;
    let strides = [ny * nx, nx, 1];
    let mut cur = v.to_vec();
    for (axis, &n) in shape.iter().enumerate() {
        let st = strides[axis];
        let mut out = vec![0f32; cur.len()];
        for (i, o) in out.iter_mut().enumerate() {
            let pos = (i / st % n) as isize;
            let mut acc = 0f32;
            for (j, w) in k.iter().enumerate() {
                let q = pos + j as isize - r;
                if q >= 0 && q < n as isize {
                    acc += w * cur[(i as isize + (q - pos) * st as isize) as usize];
                }
            }
            *o = acc;
        }
        cur = out;
    }
    cur
}

impl Prepared {
    /// Standardise `data` (shape z, y, x) and smooth a copy by `sigma` voxels.
    pub fn new(mut data: Vec<f32>, shape: [usize; 3], sigma: f64) -> Result<Prepared> {
        if data.len() != shape.iter().product::<usize>() {
            bail!(
                "volume has {} voxels, its shape {shape:?} says otherwise",
                data.len()
            );
        }
        if data.iter().any(|x| !x.is_finite()) {
            bail!("the tomogram contains NaN or infinite values");
        }
        standardise(&mut data);
        let mut smooth = gaussian(&data, shape, sigma);
        standardise(&mut smooth);
        Ok(Prepared {
            shape,
            raw: data,
            smooth,
        })
    }

    /// Shape (z, y, x).
    pub fn shape(&self) -> [usize; 3] {
        self.shape
    }

    fn at(v: &[f32], shape: [usize; 3], z: isize, y: isize, x: isize) -> f64 {
        let [nz, ny, nx] = shape;
        if z < 0 || y < 0 || x < 0 || z >= nz as isize || y >= ny as isize || x >= nx as isize {
            return 0.0;
        }
        v[(z as usize * ny + y as usize) * nx + x as usize] as f64
    }

    /// Centroid, mass and second-moment tensor of the positive smoothed density in the ball of
    /// radius `w` around the voxel nearest `c`.
    fn moments(&self, c: [f64; 3], w: f64) -> (f64, [f64; 3], [[f64; 3]; 3]) {
        let s = c.map(|v| v.round() as isize);
        let f = [c[0] - s[0] as f64, c[1] - s[1] as f64, c[2] - s[2] as f64];
        let r = w.floor() as isize;
        let (mut m, mut sum) = (0.0, [0.0; 3]);
        let mut pts = Vec::new();
        for dz in -r..=r {
            for dy in -r..=r {
                for dx in -r..=r {
                    let d2 = (dz * dz + dy * dy + dx * dx) as f64;
                    if d2 > w * w {
                        continue;
                    }
                    let v = Self::at(&self.smooth, self.shape, s[0] + dz, s[1] + dy, s[2] + dx);
                    if v > 0.0 {
                        let g = [dz as f64, dy as f64, dx as f64];
                        m += v;
                        for a in 0..3 {
                            sum[a] += v * g[a];
                        }
                        pts.push((v, g));
                    }
                }
            }
        }
        if m <= 0.0 {
            return (0.0, c, [[0.0; 3]; 3]);
        }
        let centroid = [
            s[0] as f64 + sum[0] / m,
            s[1] as f64 + sum[1] / m,
            s[2] as f64 + sum[2] / m,
        ];
        // Second moments about the centre `c` asked for (not the new centroid): the caller
        // asks at the converged centroid.
        let mut cov = [[0.0; 3]; 3];
        for (v, g) in &pts {
            let d = [g[0] - f[0], g[1] - f[1], g[2] - f[2]];
            for a in 0..3 {
                for b in 0..3 {
                    cov[a][b] += v * d[a] * d[b];
                }
            }
        }
        for row in cov.iter_mut() {
            for x in row.iter_mut() {
                *x /= m;
            }
        }
        (m, centroid, cov)
    }

    /// The particle's centre found from `start` (z, y, x voxels) and its features.
    pub fn features(&self, start: [f64; 3], o: &ShapeOptions) -> ([f64; 3], Vec<f64>) {
        let mut c = start;
        for _ in 0..o.iterations {
            let (m, next, _) = self.moments(c, o.window);
            if m <= 0.0 {
                break;
            }
            c = next;
        }
        let (m, _, cov) = self.moments(c, o.window);
        let ev = sym3_eigenvalues(cov);
        let mut feat = Vec::with_capacity(o.dims());
        feat.push((m + 1e-6).ln());
        feat.push((ev[0] + ev[1] + ev[2]).max(0.0).sqrt());
        feat.extend(ev.iter().map(|e| e.max(0.0).sqrt()));
        feat.push(cov[0][0]);
        feat.extend(self.profiles(c, o.profile_radius));
        (c, feat)
    }

    /// Mean standardised density in shells of one voxel around `c`, out to `r`: first for
    /// directions within 60° of z, then for the others.
    fn profiles(&self, c: [f64; 3], r: usize) -> Vec<f64> {
        let s = c.map(|v| v.round() as isize);
        let f = [c[0] - s[0] as f64, c[1] - s[1] as f64, c[2] - s[2] as f64];
        let n = r + 1;
        let (mut sum, mut cnt) = (vec![0.0; 2 * n], vec![0u32; 2 * n]);
        let ri = r as isize;
        for dz in -ri..=ri {
            for dy in -ri..=ri {
                for dx in -ri..=ri {
                    let d = [dz as f64 - f[0], dy as f64 - f[1], dx as f64 - f[2]];
                    let rr = (d[0] * d[0] + d[1] * d[1] + d[2] * d[2]).sqrt();
                    let shell = rr.round() as usize;
                    if shell > r {
                        continue;
                    }
                    let polar = rr > 0.0 && d[0].abs() > 0.5 * rr;
                    let i = if polar { shell } else { n + shell };
                    sum[i] += Self::at(&self.raw, self.shape, s[0] + dz, s[1] + dy, s[2] + dx);
                    cnt[i] += 1;
                }
            }
        }
        sum.iter()
            .zip(&cnt)
            .map(|(s, &c)| if c > 0 { s / c as f64 } else { 0.0 })
            .collect()
    }
}

/// A class template for matching: its density low-passed, on the tomogram's voxel grid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MatchTemplate {
    /// Class name.
    pub name: String,
    /// Box shape (z, y, x); the centre is voxel `(n - 1) / 2`.
    pub shape: [usize; 3],
    /// Density, low-passed.
    pub data: Vec<f32>,
    /// Radius of the ball compared, voxels.
    pub radius: f64,
    /// Radius in voxels of the ball on which a search places the template (its own size,
    /// so that neighbours do not pull it off centre); 0 or ≥ `radius`: the compared ball.
    #[serde(default)]
    pub locate_radius: f64,
}

/// How templates are matched.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MatchOptions {
    /// Orientations tried, uniform on SO(3).
    pub orientations: usize,
    /// Seed of the orientations.
    pub seed: u64,
    /// Translations tried: every offset within `shift` voxels per axis of the centre.
    pub shift: usize,
    /// Radius in voxels of a search around the start itself (the pick), used instead of
    /// `shift` about the density's centroid when > 0: the offsets of a step-2 lattice within
    /// the ball, then every offset within one voxel of each template's best one.
    #[serde(default)]
    pub search: usize,
    /// What the microscope did to the templates' density in the tomograms (`None`: nothing).
    #[serde(default)]
    pub transfer: Option<Transfer>,
    /// How the orientations cover SO(3); classifiers saved before `spiral` keep `random`.
    #[serde(default)]
    pub sampling: Sampling,
}

/// Rotation `i` of `n` on a super-Fibonacci spiral (Alexa, CVPR 2022): a deterministic,
/// low-discrepancy covering of SO(3). With `n` = 1000 the mean angle from a random rotation
/// to the nearest sample is 11.7° (13.6° for 1000 random draws) and the largest 21° (31°).
pub fn super_fibonacci(i: usize, n: usize) -> tomoflow_cryo::rotation::Quat {
    const PHI: f64 = std::f64::consts::SQRT_2;
    const PSI: f64 = 1.533_751_168_755_204_3;
    let s = i as f64 + 0.5;
    let (r, big_r) = ((s / n as f64).sqrt(), (1.0 - s / n as f64).sqrt());
    let (a, b) = (
        std::f64::consts::TAU * s / PHI,
        std::f64::consts::TAU * s / PSI,
    );
    tomoflow_cryo::rotation::Quat {
        w: r * a.sin(),
        x: r * a.cos(),
        y: big_r * b.sin(),
        z: big_r * b.cos(),
    }
    .canonical()
}

/// How a matcher lays out its orientations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Sampling {
    /// Uniform random draws from the options' `seed`.
    #[default]
    Random,
    /// A super-Fibonacci spiral: the same number covers SO(3) more evenly (mean distance to
    /// the nearest orientation 11.7° instead of 13.6° at 1000).
    Spiral,
}

/// The microscope, as far as a template's appearance in a tomogram depends on it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Microscope {
    /// Accelerating voltage (kV).
    #[serde(default = "kv300")]
    pub voltage: f64,
    /// Spherical aberration Cs (mm).
    #[serde(default = "cs")]
    pub cs: f64,
    /// Amplitude contrast fraction (0..1).
    #[serde(default = "amplitude")]
    pub amplitude_contrast: f64,
    /// Defocus (µm, underfocus positive).
    pub defocus: f64,
}

fn kv300() -> f64 {
    300.0
}
fn cs() -> f64 {
    2.7
}
fn amplitude() -> f64 {
    0.07
}

impl Microscope {
    /// Check ranges; the message names the field.
    pub fn validate(&self) -> Result<()> {
        let p = self.ctf();
        p.validate().map_err(|e| anyhow::anyhow!("ctf: {e}"))?;
        if !(self.defocus.is_finite() && self.defocus.abs() <= 100.0) {
            bail!(
                "ctf: defocus must be in µm within ±100, got {}",
                self.defocus
            );
        }
        Ok(())
    }

    fn ctf(&self) -> tomoflow_cryo::ctf::CtfParams {
        tomoflow_cryo::ctf::CtfParams::simple(
            self.voltage,
            self.cs,
            self.amplitude_contrast,
            self.defocus * 1e4,
        )
    }
}

/// The transfer of density into a tomogram, applied to every rotated template before it is
/// compared: the CTF (isotropic; |CTF| for a phase-flipped reconstruction, else −CTF, so that
/// positive density stays positive at low frequency, as the templates are) and the missing
/// wedge of a series tilted about y.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Transfer {
    /// Voxel size (Å).
    pub voxel_size: f64,
    /// The CTF's microscope (`None`: no CTF).
    pub ctf: Option<Microscope>,
    /// The reconstruction was phase-flipped (`recon-*`'s default `ctf_correction`).
    #[serde(default = "yes")]
    pub phase_flipped: bool,
    /// Tilt range (degrees, about y): a frequency (kx, ky, kz) is measured when the angle of
    /// (kx, kz) from the x axis, taken in (−90°, 90°], lies within it (`None`: all are).
    pub tilt_range: Option<[f64; 2]>,
}

fn yes() -> bool {
    true
}

impl Transfer {
    /// The filter on the FFT grid of a cube of side `m`.
    pub fn grid(&self, m: usize) -> Vec<f32> {
        use tomoflow_cryo::fft::freq;
        let ctf = self.ctf.map(|c| c.ctf().eval());
        let f: Vec<f64> = (0..m).map(|i| freq(i, m, self.voxel_size)).collect();
        let mut h = Vec::with_capacity(m * m * m);
        for &kz in &f {
            for &ky in &f {
                for &kx in &f {
                    let mut v = 1.0;
                    if let Some(c) = &ctf {
                        let ctf = c.value((kx * kx + ky * ky + kz * kz).sqrt(), 0.0);
                        v *= if self.phase_flipped { ctf.abs() } else { -ctf };
                    }
                    if let Some([lo, hi]) = self.tilt_range {
                        if kx != 0.0 || kz != 0.0 {
                            let mut phi = kz.atan2(kx).to_degrees();
                            if phi > 90.0 {
                                phi -= 180.0;
                            } else if phi <= -90.0 {
                                phi += 180.0;
                            }
                            // ±90° is one direction (the beam at 0°), folded to +90°.
                            let at_pole = phi >= 90.0 - 1e-9 && lo <= -90.0 + 1e-9;
                            if (phi < lo - 1e-9 || phi > hi + 1e-9) && !at_pole {
                                v = 0.0;
                            }
                        }
                    }
                    h.push(v as f32);
                }
            }
        }
        h
    }

    /// Filter a cube of side `n` (z, y, x): zero-padded to a fast size of at least `2n` (no
    /// wrap-around), multiplied by [`Transfer::grid`] of that size (`h`, side `m`), cropped.
    pub fn apply(cube: &[f32], n: usize, h: &[f32], m: usize) -> Vec<f32> {
        use tomoflow_cryo::fft::{fft3, Complex32};
        let mut c = vec![Complex32::default(); m * m * m];
        for z in 0..n {
            for y in 0..n {
                for x in 0..n {
                    c[(z * m + y) * m + x].re = cube[(z * n + y) * n + x];
                }
            }
        }
        fft3(&mut c, [m; 3], false);
        for (v, w) in c.iter_mut().zip(h) {
            *v *= *w;
        }
        fft3(&mut c, [m; 3], true);
        let mut out = Vec::with_capacity(n * n * n);
        for z in 0..n {
            for y in 0..n {
                for x in 0..n {
                    out.push(c[(z * m + y) * m + x].re);
                }
            }
        }
        out
    }
}

/// Every orientation of every template, ready to correlate: the voxel offsets of one ball
/// (the largest template radius) and, per template, one zero-mean, unit-norm row per
/// orientation.
pub struct Matcher {
    /// The ball's offsets, nearest the centre first.
    offs: Vec<[isize; 3]>,
    banks: Vec<Vec<f32>>,
    /// Per template with a smaller `locate_radius`: how many of `offs` it covers and the
    /// rotated rows normalised on them.
    locate: Vec<Option<(usize, Vec<f32>)>>,
    shift: isize,
    search: isize,
}

impl Matcher {
    /// Rotate and sample every template (trilinear) on the ball.
    pub fn new(templates: &[MatchTemplate], o: &MatchOptions) -> Matcher {
        use tomoflow_cryo::rotation::{apply, transpose, Quat};
        let mut rng = tomoflow_cryo::rng::Rng::new(o.seed);
        let rots: Vec<_> = (0..o.orientations)
            .map(|i| match o.sampling {
                Sampling::Random => Quat::random(&mut rng),
                Sampling::Spiral => super_fibonacci(i, o.orientations),
            })
            .map(|q| transpose(&q.to_matrix()))
            .collect();
        let r = templates.iter().map(|t| t.radius).fold(0.0, f64::max);
        let n = r.ceil() as isize;
        let mut offs = Vec::new();
        for z in -n..=n {
            for y in -n..=n {
                for x in -n..=n {
                    if ((z * z + y * y + x * x) as f64) <= r * r {
                        offs.push([z, y, x]);
                    }
                }
            }
        }
        let d2 = |o: &[isize; 3]| o[0] * o[0] + o[1] * o[1] + o[2] * o[2];
        offs.sort_by_key(d2);
        // How many offsets a template's own locating ball covers, when it is the smaller.
        let covers: Vec<Option<usize>> = templates
            .iter()
            .map(|t| {
                let k = offs
                    .iter()
                    .take_while(|o| d2(o) as f64 <= t.locate_radius * t.locate_radius)
                    .count();
                (t.locate_radius > 0.0 && k < offs.len()).then_some(k)
            })
            .collect();
        // With a transfer: rotate onto the ball's bounding cube, filter, take the ball.
        let side = (2 * n + 1) as usize;
        let filter = o.transfer.map(|t| {
            let m = tomoflow_cryo::fft::good_size(2 * side);
            (t.grid(m), m)
        });
        let (banks, locate) = templates
            .iter()
            .zip(&covers)
            .map(|(t, &cover)| {
                let c = t.shape.map(|n| (n as f64 - 1.0) / 2.0);
                // Template → tomogram rotation R: value at d is t(R^T d), (x, y, z).
                let sample = |rt: &[[f64; 3]; 3], o: [isize; 3]| {
                    let u = apply(rt, [o[2] as f64, o[1] as f64, o[0] as f64]);
                    tomoflow_cryo::template::trilinear(
                        &t.data,
                        t.shape,
                        c[0] + u[2],
                        c[1] + u[1],
                        c[2] + u[0],
                    ) as f64
                };
                let rows: Vec<(Vec<f32>, Vec<f32>)> = rots
                    .par_iter()
                    .map(|rt| {
                        let mut row: Vec<f64> = match &filter {
                            None => offs.iter().map(|&o| sample(rt, o)).collect(),
                            Some((h, m)) => {
                                let mut cube = Vec::with_capacity(side * side * side);
                                for z in -n..=n {
                                    for y in -n..=n {
                                        for x in -n..=n {
                                            cube.push(sample(rt, [z, y, x]) as f32);
                                        }
                                    }
                                }
                                let f = Transfer::apply(&cube, side, h, *m);
                                let at = |o: &[isize; 3]| {
                                    let [z, y, x] = o.map(|v| (v + n) as usize);
                                    f[(z * side + y) * side + x] as f64
                                };
                                offs.iter().map(at).collect()
                            }
                        };
                        let mut own = cover.map_or(Vec::new(), |k| row[..k].to_vec());
                        normalise(&mut row);
                        normalise(&mut own);
                        let f32s = |v: &[f64]| v.iter().map(|&v| v as f32).collect();
                        (f32s(&row), f32s(&own))
                    })
                    .collect();
                let (full, own): (Vec<_>, Vec<_>) = rows.into_iter().unzip();
                (full.concat(), cover.map(|k| (k, own.concat())))
            })
            .unzip();
        Matcher {
            offs,
            banks,
            locate,
            shift: o.shift as isize,
            search: o.search as isize,
        }
    }

    /// The tomogram on the ball at integer position `s`, as it is (nearest the centre first:
    /// a locating ball's voxels are a prefix).
    fn gather(&self, p: &Prepared, s: [isize; 3], raw: &mut Vec<f64>) {
        raw.clear();
        raw.extend(
            self.offs
                .iter()
                .map(|o| Prepared::at(&p.raw, p.shape, s[0] + o[0], s[1] + o[1], s[2] + o[2])),
        );
    }

    /// `raw` zero-mean and unit-norm, as `f32` (`tmp`: scratch).
    fn prepare(raw: &[f64], tmp: &mut Vec<f64>, out: &mut Vec<f32>) {
        tmp.clear();
        tmp.extend_from_slice(raw);
        normalise(tmp);
        out.clear();
        out.extend(tmp.iter().map(|&v| v as f32));
    }

    /// The best correlation over orientations of a bank of rotated rows with a prepared patch
    /// of the rows' length.
    fn best_orientation(&self, bank: &[f32], patch: &[f32]) -> f64 {
        bank.chunks_exact(patch.len())
            .map(|row| dot(row, patch))
            .fold(f32::NEG_INFINITY, f32::max) as f64
    }

    /// Per template, the best normalised cross-correlation with the tomogram over orientations
    /// and translations, and the position it was found at. Translations: with `search`,
    /// around `start`; otherwise ±`shift` about `centre`.
    pub fn best(&self, p: &Prepared, centre: [f64; 3], start: [f64; 3]) -> Vec<Fit> {
        let (mut raw, mut tmp, mut patch, mut own) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut best = vec![(f64::NEG_INFINITY, [0isize; 3]); self.banks.len()];
        // Where each template fits best on its locating ball.
        let mut visit = |s: [isize; 3], which: &[usize], best: &mut Vec<(f64, [isize; 3])>| {
            self.gather(p, s, &mut raw);
            let mut full = false;
            for &t in which {
                let cc = match &self.locate[t] {
                    None => {
                        if !full {
                            Self::prepare(&raw, &mut tmp, &mut patch);
                            full = true;
                        }
                        self.best_orientation(&self.banks[t], &patch)
                    }
                    Some((k, bank)) => {
                        Self::prepare(&raw[..*k], &mut tmp, &mut own);
                        self.best_orientation(bank, &own)
                    }
                };
                if cc > best[t].0 {
                    best[t] = (cc, s);
                }
            }
        };
        let all: Vec<usize> = (0..self.banks.len()).collect();
        if self.search > 0 {
            let s0 = start.map(|v| v.round() as isize);
            let r = self.search;
            // Even offsets, so that the start itself is on the lattice (radius 1: only it).
            let even = || (-(r / 2)..=r / 2).map(|i| 2 * i);
            for dz in even() {
                for dy in even() {
                    for dx in even() {
                        if dz * dz + dy * dy + dx * dx <= r * r {
                            visit([s0[0] + dz, s0[1] + dy, s0[2] + dx], &all, &mut best);
                        }
                    }
                }
            }
            // Refine each template about its own best lattice point.
            for t in 0..self.banks.len() {
                let c = best[t].1;
                for dz in -1..=1 {
                    for dy in -1..=1 {
                        for dx in -1..=1 {
                            if (dz, dy, dx) != (0, 0, 0) {
                                visit([c[0] + dz, c[1] + dy, c[2] + dx], &[t], &mut best);
                            }
                        }
                    }
                }
            }
        } else {
            let s = centre.map(|v| v.round() as isize);
            let sh = self.shift;
            for dz in -sh..=sh {
                for dy in -sh..=sh {
                    for dx in -sh..=sh {
                        visit([s[0] + dz, s[1] + dy, s[2] + dx], &all, &mut best);
                    }
                }
            }
        }
        // Templates placed on their own ball are compared on the common one where they sit.
        best.into_iter()
            .enumerate()
            .map(|(t, (cc, s))| {
                let common = match self.locate[t] {
                    None => cc,
                    Some(_) => {
                        self.gather(p, s, &mut raw);
                        Self::prepare(&raw, &mut tmp, &mut patch);
                        self.best_orientation(&self.banks[t], &patch)
                    }
                };
                Fit {
                    cc: common,
                    local_cc: cc,
                    at: s.map(|v| v as f64),
                }
            })
            .collect()
    }

    /// Per template, the best correlation (see [`Matcher::best`]) about `centre`.
    pub fn scores(&self, p: &Prepared, centre: [f64; 3]) -> Vec<f64> {
        self.best(p, centre, centre)
            .into_iter()
            .map(|b| b.cc)
            .collect()
    }
}

/// Where a template fits best and how well.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fit {
    /// Normalised cross-correlation on the common ball (comparable between templates).
    pub cc: f64,
    /// Normalised cross-correlation on the template's own locating ball (`cc` for templates
    /// without one): the local correlation of template matching under a particle mask.
    pub local_cc: f64,
    /// Position (z, y, x voxels).
    pub at: [f64; 3],
}

/// Dot product in eight independent lanes (vectorisable).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Subtract the mean and scale to unit norm (a constant vector becomes 0).
fn normalise(v: &mut [f64]) {
    let n = v.len().max(1) as f64;
    let mean = v.iter().sum::<f64>() / n;
    let norm = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>().sqrt();
    let inv = if norm > 0.0 { 1.0 / norm } else { 0.0 };
    for x in v.iter_mut() {
        *x = (*x - mean) * inv;
    }
}

/// Eigenvalues of a symmetric 3 x 3 matrix, ascending (cyclic Jacobi rotations).
pub fn sym3_eigenvalues(m: [[f64; 3]; 3]) -> [f64; 3] {
    let mut a = m;
    for _ in 0..50 {
        let off = a[0][1].powi(2) + a[0][2].powi(2) + a[1][2].powi(2);
        if off <= 1e-30 * (a[0][0].powi(2) + a[1][1].powi(2) + a[2][2].powi(2)).max(1e-300) {
            break;
        }
        for (p, q) in [(0, 1), (0, 2), (1, 2)] {
            if a[p][q] == 0.0 {
                continue;
            }
            let theta = (a[q][q] - a[p][p]) / (2.0 * a[p][q]);
            let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
            let c = 1.0 / (t * t + 1.0).sqrt();
            let s = t * c;
            // A <- J^T A J with J the rotation in the (p, q) plane.
            for row in a.iter_mut() {
                let (akp, akq) = (row[p], row[q]);
                row[p] = c * akp - s * akq;
                row[q] = s * akp + c * akq;
            }
            let (rp, rq) = (a[p], a[q]);
            for k in 0..3 {
                a[p][k] = c * rp[k] - s * rq[k];
                a[q][k] = s * rp[k] + c * rq[k];
            }
        }
    }
    let mut e = [a[0][0], a[1][1], a[2][2]];
    e.sort_by(f64::total_cmp);
    e
}

/// A linear discriminant: features standardised, class means, and the inverse of the pooled
/// within-class covariance (with a ridge of `ridge` x its mean variance on the diagonal).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lda {
    /// Mean of each feature over the training set.
    pub centre: Vec<f64>,
    /// Standard deviation of each feature (1 where constant).
    pub scale: Vec<f64>,
    /// Class means in standardised units, one row per class.
    pub means: Vec<Vec<f64>>,
    /// Inverse pooled covariance, row-major d x d.
    pub precision: Vec<f64>,
}

impl Lda {
    /// Fit to samples `x` with class indices `y` (0..k); every class needs a sample, and there
    /// must be more samples than classes.
    pub fn fit(x: &[Vec<f64>], y: &[usize], k: usize, ridge: f64) -> Result<Lda> {
        let n = x.len();
        if n != y.len() || n <= k || k == 0 {
            bail!(
                "linear discriminant: {n} samples for {k} classes; need more samples than classes"
            );
        }
        let d = x[0].len();
        let mut counts = vec![0usize; k];
        for &c in y {
            if c >= k {
                bail!("class index {c} out of range 0..{k}");
            }
            counts[c] += 1;
        }
        if let Some(c) = counts.iter().position(|&c| c == 0) {
            bail!("linear discriminant: class {c} has no training sample");
        }
        let centre: Vec<f64> = (0..d)
            .map(|j| x.iter().map(|r| r[j]).sum::<f64>() / n as f64)
            .collect();
        let scale: Vec<f64> = (0..d)
            .map(|j| {
                let v = x.iter().map(|r| (r[j] - centre[j]).powi(2)).sum::<f64>() / n as f64;
                if v > 1e-24 {
                    v.sqrt()
                } else {
                    1.0
                }
            })
            .collect();
        let z: Vec<Vec<f64>> = x
            .iter()
            .map(|r| (0..d).map(|j| (r[j] - centre[j]) / scale[j]).collect())
            .collect();
        let mut means = vec![vec![0.0; d]; k];
        for (r, &c) in z.iter().zip(y) {
            for j in 0..d {
                means[c][j] += r[j] / counts[c] as f64;
            }
        }
        let mut cov = vec![0.0; d * d];
        for (r, &c) in z.iter().zip(y) {
            let e: Vec<f64> = (0..d).map(|j| r[j] - means[c][j]).collect();
            for a in 0..d {
                for b in 0..d {
                    cov[a * d + b] += e[a] * e[b];
                }
            }
        }
        let dof = (n - k) as f64;
        cov.iter_mut().for_each(|v| *v /= dof);
        let tr = (0..d).map(|a| cov[a * d + a]).sum::<f64>() / d as f64;
        for a in 0..d {
            cov[a * d + a] += ridge * tr.max(1e-12);
        }
        let precision = invert_spd(&cov, d)?;
        Ok(Lda {
            centre,
            scale,
            means,
            precision,
        })
    }

    /// Squared Mahalanobis distance of `x` to every class mean.
    pub fn distances(&self, x: &[f64]) -> Vec<f64> {
        let d = self.centre.len();
        let z: Vec<f64> = (0..d)
            .map(|j| (x[j] - self.centre[j]) / self.scale[j])
            .collect();
        self.means
            .iter()
            .map(|m| {
                let e: Vec<f64> = (0..d).map(|j| z[j] - m[j]).collect();
                let mut s = 0.0;
                for a in 0..d {
                    let row = &self.precision[a * d..(a + 1) * d];
                    s += e[a] * row.iter().zip(&e).map(|(p, v)| p * v).sum::<f64>();
                }
                s
            })
            .collect()
    }

    /// The nearest class among `allowed` (indices), and the posterior probabilities of the
    /// allowed classes (equal priors), in the order of `allowed`.
    pub fn classify(&self, x: &[f64], allowed: &[usize]) -> (usize, Vec<f64>) {
        let d = self.distances(x);
        let best = allowed
            .iter()
            .copied()
            .min_by(|&a, &b| d[a].total_cmp(&d[b]))
            .expect("at least one allowed class");
        let lo = d[best];
        let w: Vec<f64> = allowed
            .iter()
            .map(|&c| (-(d[c] - lo) / 2.0).exp())
            .collect();
        let s: f64 = w.iter().sum();
        (best, w.iter().map(|v| v / s).collect())
    }
}

/// Inverse of a symmetric positive definite d x d matrix (Cholesky).
fn invert_spd(a: &[f64], d: usize) -> Result<Vec<f64>> {
    let mut l = vec![0.0; d * d];
    for i in 0..d {
        for j in 0..=i {
            let s: f64 = a[i * d + j] - (0..j).map(|k| l[i * d + k] * l[j * d + k]).sum::<f64>();
            if i == j {
                if s <= 0.0 || !s.is_finite() {
                    bail!("linear discriminant: the pooled covariance is singular (too few or identical samples)");
                }
                l[i * d + i] = s.sqrt();
            } else {
                l[i * d + j] = s / l[j * d + j];
            }
        }
    }
    // Solve L L^T X = I column by column.
    let mut inv = vec![0.0; d * d];
    for col in 0..d {
        let mut y = vec![0.0; d];
        for i in 0..d {
            let b = if i == col { 1.0 } else { 0.0 };
            y[i] = (b - (0..i).map(|k| l[i * d + k] * y[k]).sum::<f64>()) / l[i * d + i];
        }
        let mut x = vec![0.0; d];
        for i in (0..d).rev() {
            x[i] = (y[i] - (i + 1..d).map(|k| l[k * d + i] * x[k]).sum::<f64>()) / l[i * d + i];
        }
        for i in 0..d {
            inv[i * d + col] = x[i];
        }
    }
    Ok(inv)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use tomoflow_cryo::rng::Rng;

    /// The super-Fibonacci spiral covers SO(3) more evenly than random draws of the same
    /// number: a smaller mean and largest angle from probe rotations to the nearest sample.
    #[test]
    fn super_fibonacci_covers_better_than_random() {
        use tomoflow_cryo::rotation::Quat;
        let n = 1000;
        let mut rng = Rng::new(7);
        let random: Vec<Quat> = (0..n).map(|_| Quat::random(&mut rng)).collect();
        let spiral: Vec<Quat> = (0..n).map(|i| super_fibonacci(i, n)).collect();
        assert!(spiral.iter().all(|q| (q.norm() - 1.0).abs() < 1e-12));
        let mut probe = Rng::new(11);
        let probes: Vec<Quat> = (0..1000).map(|_| Quat::random(&mut probe)).collect();
        let cover = |set: &[Quat]| {
            let d: Vec<f64> = probes
                .iter()
                .map(|p| set.iter().map(|q| p.angle_to(q)).fold(f64::MAX, f64::min))
                .collect();
            (
                d.iter().sum::<f64>() / d.len() as f64,
                d.iter().copied().fold(0.0, f64::max),
            )
        };
        let ((rm, rx), (sm, sx)) = (cover(&random), cover(&spiral));
        assert!(
            sm < 0.9 * rm && sx < 0.8 * rx,
            "spiral {sm:.1}/{sx:.1}°, random {rm:.1}/{rx:.1}°"
        );
    }

    #[test]
    fn eigenvalues_of_a_rotated_diagonal_matrix() {
        // R diag(1, 4, 9) R^T for a rotation about (1, 1, 1).
        let (c, s) = (0.3f64.cos(), 0.3f64.sin());
        let u = [1.0 / 3f64.sqrt(); 3];
        let mut r = [[0.0; 3]; 3];
        for i in 0..3 {
            for j in 0..3 {
                let k = [[0.0, -u[2], u[1]], [u[2], 0.0, -u[0]], [-u[1], u[0], 0.0]][i][j];
                r[i][j] = if i == j { c } else { 0.0 } + (1.0 - c) * u[i] * u[j] + s * k;
            }
        }
        let dg = [1.0, 4.0, 9.0];
        let mut m = [[0.0; 3]; 3];
        for i in 0..3 {
            for j in 0..3 {
                m[i][j] = (0..3).map(|k| r[i][k] * dg[k] * r[j][k]).sum();
            }
        }
        let e = sym3_eigenvalues(m);
        for (a, b) in e.iter().zip(dg) {
            assert!((a - b).abs() < 1e-9, "{e:?}");
        }
    }

    #[test]
    fn spd_inverse_times_matrix_is_identity() {
        let a = [4.0, 1.0, 0.5, 1.0, 3.0, 0.2, 0.5, 0.2, 2.0];
        let inv = invert_spd(&a, 3).unwrap();
        for i in 0..3 {
            for j in 0..3 {
                let v: f64 = (0..3).map(|k| a[i * 3 + k] * inv[k * 3 + j]).sum();
                assert!((v - if i == j { 1.0 } else { 0.0 }).abs() < 1e-12);
            }
        }
        assert!(invert_spd(&[1.0, 1.0, 1.0, 1.0], 2).is_err());
    }

    #[test]
    fn lda_separates_two_gaussian_clouds_and_posteriors_sum_to_one() {
        let mut rng = Rng::new(3);
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for i in 0..400 {
            let c = i % 2;
            let shift = if c == 0 { -1.5 } else { 1.5 };
            x.push(vec![
                shift + rng.normal(),
                rng.normal() * 5.0,
                2.0 * rng.normal(),
            ]);
            y.push(c);
        }
        let lda = Lda::fit(&x, &y, 2, 1e-3).unwrap();
        let right = x
            .iter()
            .zip(&y)
            .filter(|(r, &c)| lda.classify(r, &[0, 1]).0 == c)
            .count();
        // Bayes accuracy of a 3-sigma separation: Phi(1.5) = 0.933.
        assert!(right as f64 / 400.0 > 0.88, "{right}");
        let (_, p) = lda.classify(&[0.1, 0.0, 0.0], &[0, 1]);
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert_eq!(
            lda.classify(&[-3.0, 0.0, 0.0], &[1]).0,
            1,
            "restricted to class 1"
        );
        assert!(Lda::fit(&x[..1], &y[..1], 2, 1e-3).is_err());
    }

    /// A volume of noise with solid balls of radius `r` at `centres` (z, y, x).
    pub(crate) fn balls(shape: [usize; 3], centres: &[([f64; 3], f64)], seed: u64) -> Vec<f32> {
        let [nz, ny, nx] = shape;
        let mut rng = Rng::new(seed);
        let mut v = vec![0f32; nz * ny * nx];
        for z in 0..nz {
            for y in 0..ny {
                for x in 0..nx {
                    let mut s = 0.3 * rng.normal();
                    for (c, r) in centres {
                        let d2 = (z as f64 - c[0]).powi(2)
                            + (y as f64 - c[1]).powi(2)
                            + (x as f64 - c[2]).powi(2);
                        if d2 <= r * r {
                            s += 1.0;
                        }
                    }
                    v[(z * ny + y) * nx + x] = s as f32;
                }
            }
        }
        v
    }

    /// A search places a template on its own ball: a bright neighbour inside the common ball
    /// does not pull it off its particle.
    #[test]
    fn a_template_is_placed_on_its_own_ball() {
        let shape = [32, 32, 32];
        // A bright neighbour (twice the density) whose edge lies 3 voxels from the particle.
        let n = ([16.0, 16.0, 24.0], 5.0);
        let v = balls(shape, &[([16.0; 3], 3.3), n, n], 4);
        let p = Prepared::new(v, shape, 1.0).unwrap();
        let place = |locate_radius: f64| {
            let mut t = templates();
            t[1].locate_radius = locate_radius;
            let m = Matcher::new(
                &t,
                &MatchOptions {
                    orientations: 50,
                    seed: 1,
                    shift: 0,
                    search: 4,
                    transfer: None,
                    sampling: Sampling::Spiral,
                },
            );
            let f = m.best(&p, [0.0; 3], [16.0, 16.0, 15.0])[1];
            (f.local_cc, f.at)
        };
        // On the common ball the neighbour's variance pushes the best place away from it.
        let (cc_common, common) = place(0.0);
        let (cc_own, own) = place(4.5);
        assert_eq!(own, [16.0, 16.0, 16.0]);
        assert!(common[2] < 16.0, "{common:?}");
        // Its own ball leaves the neighbour out: the local correlation there is the higher.
        assert!(
            cc_own > cc_common + 0.05,
            "own {cc_own:.3}, common {cc_common:.3}"
        );
    }

    #[test]
    fn centring_finds_a_ball_from_three_voxels_away() {
        let shape = [40, 40, 40];
        let centre = [20.3, 19.6, 20.0];
        let p = Prepared::new(balls(shape, &[(centre, 4.0)], 1), shape, 1.0).unwrap();
        let o = ShapeOptions {
            window: 6.0,
            sigma: 1.0,
            profile_radius: 8,
            iterations: 4,
        };
        let (c, f) = p.features([22.0, 17.5, 21.5], &o);
        let err =
            ((c[0] - centre[0]).powi(2) + (c[1] - centre[1]).powi(2) + (c[2] - centre[2]).powi(2))
                .sqrt();
        assert!(err < 0.6, "centre {c:?}, truth {centre:?}");
        assert_eq!(f.len(), o.dims());
        // Inside the ball the profile is high, outside low, in both direction sets (shell 0
        // holds the one voxel nearest the centre, in either set).
        let n = o.profile_radius + 1;
        assert!(
            f[6 + 1] > 1.0 && f[6 + n + 1] > 1.0 && f[6 + 7] < 0.5 && f[6 + n + 7] < 0.5,
            "{f:?}"
        );
    }

    /// An ellipsoid template (semi-axes 6, 3, 2 voxels along z, y, x) and a ball of the same
    /// volume.
    fn templates() -> Vec<MatchTemplate> {
        let n = 17;
        let mk = |name: &str, f: &dyn Fn(f64, f64, f64) -> bool| MatchTemplate {
            name: name.into(),
            shape: [n; 3],
            data: (0..n * n * n)
                .map(|i| {
                    let (z, y, x) = (i / (n * n), i / n % n, i % n);
                    let c = |v: usize| v as f64 - 8.0;
                    if f(c(z), c(y), c(x)) {
                        1.0
                    } else {
                        0.0
                    }
                })
                .collect(),
            radius: 7.0,
            locate_radius: 0.0,
        };
        vec![
            mk("rod", &|z, y, x| {
                (z / 6.0).powi(2) + (y / 3.0).powi(2) + (x / 2.0).powi(2) <= 1.0
            }),
            mk("ball", &|z, y, x| z * z + y * y + x * x <= 3.3f64.powi(2)),
        ]
    }

    #[test]
    fn matching_finds_a_rotated_rod_and_tells_it_from_a_ball() {
        use tomoflow_cryo::rotation::{apply, transpose, Quat};
        let t = templates();
        let m = Matcher::new(
            &t,
            &MatchOptions {
                orientations: 400,
                seed: 1,
                shift: 1,
                search: 0,
                transfer: None,
                sampling: Sampling::Random,
            },
        );
        // The rod rotated by a random rotation, at (16, 16, 16) of a noisy volume.
        let r = Quat::random(&mut Rng::new(9)).to_matrix();
        let rt = transpose(&r);
        let shape = [32, 32, 32];
        let mut v = balls(shape, &[], 4);
        for (i, o) in v.iter_mut().enumerate() {
            let d = [
                (i % 32) as f64 - 16.0,
                (i / 32 % 32) as f64 - 16.0,
                (i / 1024) as f64 - 16.0,
            ];
            let u = apply(&rt, d);
            *o += tomoflow_cryo::template::trilinear(
                &t[0].data,
                t[0].shape,
                8.0 + u[2],
                8.0 + u[1],
                8.0 + u[0],
            );
        }
        let p = Prepared::new(v, shape, 1.0).unwrap();
        let cc = m.scores(&p, [16.0, 16.0, 16.0]);
        assert!(
            cc[0] > 0.6 && cc[0] > cc[1] + 0.1,
            "rod {:.3}, ball {:.3}",
            cc[0],
            cc[1]
        );
        assert!(cc.iter().all(|c| *c <= 1.0 + 1e-5));
        // Far from it, in noise, nothing correlates.
        let far = m.scores(&p, [5.0, 5.0, 26.0]);
        assert!(far[0] < 0.3, "{far:?}");
        // A search from three voxels away finds the rod where it is, and still prefers it.
        let searching = Matcher::new(
            &t,
            &MatchOptions {
                orientations: 400,
                seed: 1,
                shift: 0,
                search: 4,
                transfer: None,
                sampling: Sampling::Random,
            },
        );
        let found = searching.best(&p, [0.0; 3], [18.0, 14.0, 17.0]);
        let Fit { cc, at, .. } = found[0];
        assert!(
            at.iter().all(|v| (v - 16.0).abs() <= 1.0) && cc > found[1].cc + 0.1,
            "{found:?}"
        );
        assert!(cc > 0.6, "{found:?}");
        // A search of radius 1 visits the start and its neighbours, nothing far away.
        let one = Matcher::new(
            &t,
            &MatchOptions {
                orientations: 400,
                seed: 1,
                shift: 0,
                search: 1,
                transfer: None,
                sampling: Sampling::Random,
            },
        );
        let Fit { cc, at, .. } = one.best(&p, [0.0; 3], [16.0, 16.0, 17.0])[0];
        assert!(
            at.iter().all(|v| (v - 16.0).abs() <= 1.0) && cc > 0.6,
            "{at:?} {cc}"
        );
    }

    #[test]
    fn dot_matches_the_plain_sum() {
        let a: Vec<f32> = (0..29).map(|i| i as f32 * 0.5).collect();
        let b: Vec<f32> = (0..29).map(|i| 1.0 - i as f32 * 0.1).collect();
        let plain: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot(&a, &b) - plain).abs() < 1e-3);
    }

    #[test]
    fn nan_volumes_are_refused() {
        let mut v = vec![0f32; 8];
        v[3] = f32::NAN;
        assert!(Prepared::new(v, [2, 2, 2], 1.0).is_err());
        assert!(Prepared::new(vec![0.0; 7], [2, 2, 2], 1.0).is_err());
    }

    #[test]
    fn gaussian_preserves_a_constant_interior_and_mass_of_an_impulse() {
        let shape = [21, 21, 21];
        let mut v = vec![0f32; 21 * 21 * 21];
        v[(10 * 21 + 10) * 21 + 10] = 1.0;
        let g = gaussian(&v, shape, 1.5);
        let s: f32 = g.iter().sum();
        assert!((s - 1.0).abs() < 1e-4, "{s}");
        let c = gaussian(&vec![2.0; 21 * 21 * 21], shape, 1.5);
        assert!((c[(10 * 21 + 10) * 21 + 10] - 2.0).abs() < 1e-5);
    }

    fn microscope() -> Microscope {
        Microscope {
            voltage: 300.0,
            cs: 2.7,
            amplitude_contrast: 0.07,
            defocus: 3.0,
        }
    }

    #[test]
    fn transfer_is_minus_the_ctf_with_its_zeros_and_removes_the_missing_wedge() {
        let m = 32;
        let t = Transfer {
            voxel_size: 5.0,
            ctf: Some(microscope()),
            phase_flipped: false,
            tilt_range: Some([-60.0, 60.0]),
        };
        let h = t.grid(m);
        let at = |z: usize, y: usize, x: usize| h[(z * m + y) * m + x] as f64;
        // Along x (measured at every tilt): −CTF(k), positive at low frequency (+A at k = 0).
        let ctf = microscope().ctf().eval();
        assert!((at(0, 0, 0) - 0.07).abs() < 1e-6);
        for i in 1..m / 2 {
            let k = tomoflow_cryo::fft::freq(i, m, 5.0);
            assert!((at(0, 0, i) + ctf.value(k, 0.0)).abs() < 1e-6);
            // Along y (the tilt axis) it is the same: the CTF is isotropic.
            assert!((at(0, i, 0) - at(0, 0, i)).abs() < 1e-6);
        }
        // First zero of the CTF: χ = π − atan(A / sqrt(1 − A²)), k² = χ / (π λ Δf) (Cs
        // negligible there); the sampled transfer changes sign across it along x.
        let lambda = tomoflow_cryo::ctf::wavelength_a(300.0);
        let chi0 = std::f64::consts::PI - (0.07f64 / (1.0 - 0.0049f64).sqrt()).atan();
        let k0 = (chi0 / (std::f64::consts::PI * lambda * 3.0e4)).sqrt();
        let i0 = (k0 * m as f64 * 5.0).floor() as usize;
        assert!(i0 + 1 < m / 2, "the zero lies inside the grid");
        assert!(
            at(0, 0, i0) > 0.0 && at(0, 0, i0 + 1) < 0.0,
            "zero at {k0} 1/Å"
        );
        // Along z (the beam at 0°) and within 30° of it: the missing wedge, zero. At 45° from
        // x (tilt 45°): measured.
        for i in 1..m / 2 {
            assert_eq!(at(i, 0, 0), 0.0);
            assert_eq!(at(i, 3, i / 2), 0.0, "angle atan(2) = 63° > 60°");
        }
        assert!(at(3, 0, 3).abs() > 0.0 && at(m - 3, 0, 3).abs() > 0.0);
        // Phase-flipped (recon-*'s default): |CTF|, never negative.
        let flipped = Transfer {
            phase_flipped: true,
            ..t
        }
        .grid(m);
        for (a, b) in flipped.iter().zip(&h) {
            assert!((a - b.abs()).abs() < 1e-6);
        }
        // A range reaching −90° keeps the beam direction (kz alone), folded to +90°.
        let full = Transfer {
            ctf: None,
            tilt_range: Some([-90.0, 60.0]),
            ..t
        }
        .grid(m);
        assert_eq!(full[(3 * m) * m], 1.0);
    }

    /// A plate one voxel thick has its spectrum on the axis normal to it: normal to z, inside
    /// the missing wedge, it is removed; normal to x it passes.
    #[test]
    fn the_missing_wedge_removes_a_plate_normal_to_the_beam_and_keeps_one_normal_to_x() {
        let n = 15;
        let wedge = Transfer {
            voxel_size: 10.0,
            ctf: None,
            phase_flipped: true,
            tilt_range: Some([-60.0, 60.0]),
        };
        let m = tomoflow_cryo::fft::good_size(2 * n);
        let h = wedge.grid(m);
        let plate = |normal: usize| -> Vec<f32> {
            (0..n * n * n)
                .map(|i| {
                    let zyx = [i / (n * n), i / n % n, i % n];
                    f32::from(zyx[normal] == n / 2)
                })
                .collect()
        };
        let energy = |v: &[f32]| v.iter().map(|x| (x * x) as f64).sum::<f64>();
        let e = energy(&plate(0));
        // Normal to z: only the part of its spectrum that the finite plate spreads beyond
        // 30° from the kz axis survives (about a tenth).
        let z = energy(&Transfer::apply(&plate(0), n, &h, m));
        assert!(z < 0.25 * e, "plate normal to z keeps {:.3}", z / e);
        let x = energy(&Transfer::apply(&plate(2), n, &h, m));
        assert!(x > 0.5 * e, "plate normal to x keeps {:.3}", x / e);
        // Without a transfer, nothing changes (apply with a grid of ones).
        let ones = vec![1f32; m * m * m];
        let same = Transfer::apply(&plate(1), n, &ones, m);
        assert!(same.iter().zip(plate(1)).all(|(a, b)| (a - b).abs() < 1e-5));
    }
}
