//! Training data: normalised tomograms with their class-index maps, the class table, and patch
//! sampling (particle-centred or random, with augmentations that keep the missing wedge).

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use tomoflow_cryo::rng::Rng;

/// A foreground class: label value in the label maps, name, particle radius in Å.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Class {
    /// Label value in the label maps (and `rlnClassNumber` downstream).
    pub id: u32,
    /// Class name.
    pub name: String,
    /// Particle radius in Å (0 when unknown).
    #[serde(rename = "radius_A", alias = "radius_a", alias = "radius", default)]
    pub radius_a: f64,
}

/// How a tomogram's voxels are scaled before the network sees them (kept in the model file, so
/// that inference scales a new tomogram the same way).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
pub enum Normalisation {
    /// Mean 0 and standard deviation 1 over the whole tomogram.
    #[default]
    #[serde(rename = "zscore-per-tomogram")]
    Zscore,
    /// Median 0 and 1.4826 x median absolute deviation 1 over the tomogram's central region
    /// (the middle half along each axis, where the sample is; vacuum, edge artefacts and gold
    /// beads hardly move these statistics), then clipped to ±[`ROBUST_CLIP`].
    #[serde(rename = "robust-per-tomogram")]
    Robust,
}

/// Fills its buffer with planes `[z0, z1)` of a tomogram.
pub type PlaneSource<'a> = dyn FnMut(usize, usize, &mut Vec<f32>) -> Result<()> + 'a;

/// Normalised values beyond ± this are clipped by [`Normalisation::Robust`].
pub const ROBUST_CLIP: f32 = 5.0;

impl Normalisation {
    /// The name stored in model files.
    pub fn name(self) -> &'static str {
        match self {
            Normalisation::Zscore => "zscore-per-tomogram",
            Normalisation::Robust => "robust-per-tomogram",
        }
    }

    /// From a model file's name.
    pub fn from_name(name: &str) -> Result<Normalisation> {
        match name {
            "zscore-per-tomogram" => Ok(Normalisation::Zscore),
            "robust-per-tomogram" => Ok(Normalisation::Robust),
            other => bail!(
                "unknown input normalisation `{other}` (this build knows zscore-per-tomogram and robust-per-tomogram)"
            ),
        }
    }

    /// The centre and scale of a tomogram of `shape` (z, y, x); `planes(z0, z1, buf)` fills
    /// `buf` with planes `[z0, z1)`, read a band at a time.
    pub fn stats(self, shape: [usize; 3], planes: &mut PlaneSource) -> Result<(f64, f64)> {
        let [nz, ny, nx] = shape;
        let band = ((64 << 20) / (ny * nx * 4).max(1)).clamp(1, nz.max(1));
        let mut buf = Vec::new();
        match self {
            Normalisation::Zscore => {
                // Two passes in voxel order, exactly as `normalise` computes them.
                let n = (nz * ny * nx).max(1) as f64;
                let mut sum = 0f64;
                for z in (0..nz).step_by(band) {
                    planes(z, (z + band).min(nz), &mut buf)?;
                    sum += buf.iter().map(|&v| v as f64).sum::<f64>();
                }
                let mean = sum / n;
                let mut var = 0f64;
                for z in (0..nz).step_by(band) {
                    planes(z, (z + band).min(nz), &mut buf)?;
                    var += buf.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>();
                }
                Ok((mean, (var / n).sqrt().max(1e-12)))
            }
            Normalisation::Robust => {
                let mid = |n: usize| (n / 4, (n - n / 4).max(n / 4 + 1).min(n));
                let ((z0, z1), (y0, y1), (x0, x1)) = (mid(nz), mid(ny), mid(nx));
                let count = (z1 - z0) * (y1 - y0) * (x1 - x0);
                let step = count.div_ceil(1 << 20).max(1);
                let mut sample = Vec::with_capacity(count / step + 1);
                let mut i = 0usize;
                for zb in (z0..z1).step_by(band) {
                    let ze = (zb + band).min(z1);
                    planes(zb, ze, &mut buf)?;
                    for z in 0..ze - zb {
                        for y in y0..y1 {
                            for x in x0..x1 {
                                if i.is_multiple_of(step) {
                                    sample.push(buf[(z * ny + y) * nx + x]);
                                }
                                i += 1;
                            }
                        }
                    }
                }
                Ok(median_mad(&mut sample))
            }
        }
    }

    /// Normalise a whole tomogram in memory; returns its centre and scale. The z-score is
    /// [`normalise`], one pass in voxel order, as training has always computed it.
    pub fn apply(self, data: &mut [f32], shape: [usize; 3]) -> (f64, f64) {
        if self == Normalisation::Zscore {
            return normalise(data);
        }
        let plane = shape[1] * shape[2];
        let (c, s) = {
            let data = &*data;
            self.stats(shape, &mut |z0, z1, buf| {
                buf.clear();
                buf.extend_from_slice(&data[z0 * plane..z1 * plane]);
                Ok(())
            })
            .expect("in-memory planes")
        };
        for v in data.iter_mut() {
            *v = self.scale(*v, c, s);
        }
        (c, s)
    }

    /// One voxel, given the tomogram's centre and scale.
    #[inline]
    pub fn scale(self, v: f32, centre: f64, scale: f64) -> f32 {
        let x = ((v as f64 - centre) / scale) as f32;
        match self {
            Normalisation::Zscore => x,
            Normalisation::Robust => x.clamp(-ROBUST_CLIP, ROBUST_CLIP),
        }
    }
}

/// Median and 1.4826 x median absolute deviation of `v` (reordered); the scale is at least
/// 1e-12, and falls back to the standard deviation where more than half the values are equal.
fn median_mad(v: &mut [f32]) -> (f64, f64) {
    if v.is_empty() {
        return (0.0, 1.0);
    }
    let mid = v.len() / 2;
    let median = *v.select_nth_unstable_by(mid, f32::total_cmp).1 as f64;
    let mut dev: Vec<f32> = v
        .iter()
        .map(|&x| (x as f64 - median).abs() as f32)
        .collect();
    let mad = *dev.select_nth_unstable_by(mid, f32::total_cmp).1 as f64 * 1.4826;
    let scale = if mad > 0.0 {
        mad
    } else {
        let n = v.len() as f64;
        (v.iter().map(|&x| (x as f64 - median).powi(2)).sum::<f64>() / n).sqrt()
    };
    (median, scale.max(1e-12))
}

/// Mean and standard deviation normalisation of a whole tomogram.
pub fn normalise(data: &mut [f32]) -> (f64, f64) {
    let n = data.len().max(1) as f64;
    let mean = data.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = data.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
    let sd = var.sqrt().max(1e-12);
    for v in data.iter_mut() {
        *v = ((*v as f64 - mean) / sd) as f32;
    }
    (mean, sd)
}

/// One training tomogram: normalised voxels and class indices (0 = background, `k` = the
/// `k`-th class of the table) on the same grid.
#[derive(Debug, Clone)]
pub struct TrainingVolume {
    /// Where it came from (gather instance id), for messages.
    pub name: String,
    /// Background source (`meta.background.source`) if any.
    pub source: String,
    /// Normalised voxels, C order (z, y, x).
    pub data: Vec<f32>,
    /// Class index per voxel.
    pub classes: Vec<u8>,
    /// Shape (z, y, x).
    pub shape: [usize; 3],
    /// Voxel size in Å.
    pub voxel_size: f64,
    /// For each foreground class index `k ≥ 1`, linear indices of its voxels (every `stride`th,
    /// at most 200,000) for particle-centred sampling.
    pub centres: Vec<Vec<u32>>,
}

impl TrainingVolume {
    /// Build from raw voxels and label values, mapping labels through the class table, and
    /// normalise the voxels with `norm`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: &str,
        source: &str,
        mut data: Vec<f32>,
        labels: &[u32],
        shape: [usize; 3],
        voxel_size: f64,
        table: &[Class],
        norm: Normalisation,
    ) -> Result<TrainingVolume> {
        if data.len() != labels.len() {
            bail!("{name}: label map and tomogram differ in size");
        }
        if let Some(i) = data.iter().position(|v| !v.is_finite()) {
            bail!(
                "{name}: voxel {i} of the tomogram is {} (NaN/Inf voxels cannot be trained on)",
                data[i]
            );
        }
        let mut lut = std::collections::HashMap::new();
        lut.insert(0u32, 0u8);
        for (k, c) in table.iter().enumerate() {
            lut.insert(c.id, (k + 1) as u8);
        }
        let mut classes = Vec::with_capacity(labels.len());
        let mut counts = vec![0usize; table.len() + 1];
        for &l in labels {
            let Some(&k) = lut.get(&l) else {
                bail!(
                    "{name}: label {l} is not in the class table (ids: {}); list it in `classes:` or fix the label map",
                    table.iter().map(|c| c.id.to_string()).collect::<Vec<_>>().join(", ")
                );
            };
            counts[k as usize] += 1;
            classes.push(k);
        }
        norm.apply(&mut data, shape);
        let mut centres = vec![Vec::new(); table.len() + 1];
        for (k, list) in centres.iter_mut().enumerate().skip(1) {
            let stride = counts[k].div_ceil(200_000).max(1);
            let mut seen = 0usize;
            for (i, &c) in classes.iter().enumerate() {
                if c as usize == k {
                    if seen.is_multiple_of(stride) {
                        list.push(i as u32);
                    }
                    seen += 1;
                }
            }
        }
        Ok(TrainingVolume {
            name: name.into(),
            source: source.into(),
            data,
            classes,
            shape,
            voxel_size,
            centres,
        })
    }

    /// Fraction of voxels per class index.
    pub fn class_fractions(&self, k: usize) -> Vec<f64> {
        let mut c = vec![0f64; k];
        for &v in &self.classes {
            c[v as usize] += 1.0;
        }
        let n = self.classes.len().max(1) as f64;
        c.iter().map(|x| x / n).collect()
    }
}

/// How patches are drawn.
#[derive(Debug, Clone, Copy)]
pub struct Sampling {
    /// Patch edge lengths (z, y, x).
    pub patch: [usize; 3],
    /// Probability that a patch is centred (with jitter) on a voxel of a random foreground class.
    pub centred: f64,
    /// Flips and 90° rotations about z.
    pub augment: bool,
    /// Random contrast, offset, blur and noise per patch ([`Intensity`]), so that the network
    /// does not learn one microscope's resolution and signal-to-noise ratio.
    pub intensity: bool,
}

/// Ranges of the intensity augmentation: a patch `x` becomes `g * blur_s(x) + o + n * N(0, 1)`
/// with gain `g` log-uniform in `GAIN`, offset `o` uniform in ±`OFFSET`, a Gaussian blur of
/// sigma `s` uniform in `BLUR` voxels (half the patches unblurred) and noise of standard
/// deviation `n` uniform in `[0, NOISE]` (in units of the normalised tomogram).
pub struct Intensity;

impl Intensity {
    /// Gain range.
    pub const GAIN: [f64; 2] = [0.7, 1.4];
    /// Offset half-range.
    pub const OFFSET: f64 = 0.3;
    /// Blur sigma range in voxels.
    pub const BLUR: [f64; 2] = [0.4, 1.2];
    /// Largest added noise standard deviation.
    pub const NOISE: f64 = 0.6;
}

/// One patch: voxels and class indices, each `patch` in C order.
pub struct Patch {
    /// Normalised voxels.
    pub data: Vec<f32>,
    /// Class indices.
    pub classes: Vec<u8>,
}

/// Draw one patch from `v`. All randomness from `rng`.
pub fn draw_patch(v: &TrainingVolume, s: &Sampling, rng: &mut Rng) -> Patch {
    let [pz, py, px] = s.patch;
    let [nz, ny, nx] = v.shape;
    let fg: Vec<usize> = (1..v.centres.len())
        .filter(|&k| !v.centres[k].is_empty())
        .collect();
    let start = if !fg.is_empty() && rng.uniform() < s.centred {
        // Class-balanced: pick a class, then one of its voxels, then jitter by ±patch/4.
        let k = fg[rng.below(fg.len() as u64) as usize];
        let list = &v.centres[k];
        let i = list[rng.below(list.len() as u64) as usize] as usize;
        let c = [i / (ny * nx), (i / nx) % ny, i % nx];
        let mut o = [0usize; 3];
        for a in 0..3 {
            let p = s.patch[a] as i64;
            let j = (p / 4).max(1);
            let jitter = rng.below((2 * j + 1) as u64) as i64 - j;
            let lo = c[a] as i64 - p / 2 + jitter;
            o[a] = lo.clamp(0, v.shape[a] as i64 - p) as usize;
        }
        o
    } else {
        [
            rng.below((nz - pz + 1) as u64) as usize,
            rng.below((ny - py + 1) as u64) as usize,
            rng.below((nx - px + 1) as u64) as usize,
        ]
    };
    let (flip_z, flip_y, flip_x, rot) = if s.augment {
        let r = rng.next_u64();
        (r & 1 == 1, r & 2 == 2, r & 4 == 4, py == px && r & 8 == 8)
    } else {
        (false, false, false, false)
    };
    let n = pz * py * px;
    let mut data = vec![0f32; n];
    let mut classes = vec![0u8; n];
    for z in 0..pz {
        let sz = if flip_z { pz - 1 - z } else { z };
        for y in 0..py {
            for x in 0..px {
                // Output (y, x) reads source (y', x') after an optional transpose (rotation by
                // 90° = transpose + flip) and flips.
                let (mut sy, mut sx) = if rot { (x, y) } else { (y, x) };
                if flip_y {
                    sy = py - 1 - sy;
                }
                if flip_x {
                    sx = px - 1 - sx;
                }
                let src = ((start[0] + sz) * ny + start[1] + sy) * nx + start[2] + sx;
                let dst = (z * py + y) * px + x;
                data[dst] = v.data[src];
                classes[dst] = v.classes[src];
            }
        }
    }
    if s.intensity {
        augment_intensity(&mut data, s.patch, rng);
    }
    Patch { data, classes }
}

/// Apply [`Intensity`]'s random contrast, blur and noise to a patch of shape `patch`.
fn augment_intensity(data: &mut [f32], patch: [usize; 3], rng: &mut Rng) {
    let gain = (Intensity::GAIN[0].ln()
        + rng.uniform() * (Intensity::GAIN[1].ln() - Intensity::GAIN[0].ln()))
    .exp() as f32;
    let offset = rng.range(-Intensity::OFFSET, Intensity::OFFSET) as f32;
    let blur = if rng.uniform() < 0.5 {
        rng.range(Intensity::BLUR[0], Intensity::BLUR[1])
    } else {
        0.0
    };
    let noise = rng.range(0.0, Intensity::NOISE) as f32;
    if blur > 0.0 {
        gaussian_blur(data, patch, blur);
    }
    for v in data.iter_mut() {
        *v = gain * *v + offset + noise * rng.normal() as f32;
    }
}

/// Separable Gaussian blur of sigma `sigma` voxels, edges clamped.
fn gaussian_blur(data: &mut [f32], shape: [usize; 3], sigma: f64) {
    let r = (3.0 * sigma).ceil() as i64;
    let mut k: Vec<f32> = (-r..=r)
        .map(|i| (-(i * i) as f64 / (2.0 * sigma * sigma)).exp() as f32)
        .collect();
    let sum: f32 = k.iter().sum();
    k.iter_mut().for_each(|w| *w /= sum);
    let [nz, ny, nx] = shape;
    let strides = [ny * nx, nx, 1];
    let mut line = Vec::new();
    for axis in 0..3 {
        let n = shape[axis];
        let st = strides[axis];
        for base in 0..nz * ny * nx {
            // `base` is the start of a line along `axis` when its coordinate there is 0.
            if (base / st) % n != 0 {
                continue;
            }
            line.clear();
            line.extend((0..n).map(|i| data[base + i * st]));
            for i in 0..n {
                let mut acc = 0f32;
                for (j, w) in k.iter().enumerate() {
                    let at = (i as i64 + j as i64 - r).clamp(0, n as i64 - 1) as usize;
                    acc += w * line[at];
                }
                data[base + i * st] = acc;
            }
        }
    }
}

/// Hard Dice per foreground class from predicted and true class indices; `None` where a class
/// is absent from both.
pub fn dice(pred: &[u8], truth: &[u8], classes: usize) -> Vec<Option<f64>> {
    let mut inter = vec![0u64; classes];
    let mut np = vec![0u64; classes];
    let mut nt = vec![0u64; classes];
    for (&p, &t) in pred.iter().zip(truth) {
        np[p as usize] += 1;
        nt[t as usize] += 1;
        if p == t {
            inter[p as usize] += 1;
        }
    }
    (1..classes)
        .map(|k| {
            let d = np[k] + nt[k];
            (d > 0).then(|| 2.0 * inter[k] as f64 / d as f64)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vol() -> TrainingVolume {
        let shape = [8, 10, 10];
        let n = 800;
        let data: Vec<f32> = (0..n).map(|i| i as f32).collect();
        let labels: Vec<u32> = (0..n).map(|i| if i == 455 { 7 } else { 0 }).collect();
        let table = vec![Class {
            id: 7,
            name: "a".into(),
            radius_a: 10.0,
        }];
        TrainingVolume::new(
            "t",
            "",
            data,
            &labels,
            shape,
            10.0,
            &table,
            Normalisation::Zscore,
        )
        .unwrap()
    }

    #[test]
    fn normalised_and_mapped() {
        let v = vol();
        let mean: f64 = v.data.iter().map(|&x| x as f64).sum::<f64>() / 800.0;
        assert!(mean.abs() < 1e-6);
        assert_eq!(v.classes[455], 1);
        assert_eq!(v.centres[1], vec![455]);
    }

    #[test]
    fn unknown_label_is_an_error_naming_it() {
        let table = vec![Class {
            id: 1,
            name: "a".into(),
            radius_a: 1.0,
        }];
        let e = TrainingVolume::new(
            "t",
            "",
            vec![0.0; 2],
            &[0, 3],
            [1, 1, 2],
            1.0,
            &table,
            Normalisation::Zscore,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("label 3") && e.contains("ids: 1"), "{e}");
    }

    #[test]
    fn centred_patches_contain_their_class_and_augmentation_keeps_pairs() {
        let v = vol();
        let s = Sampling {
            patch: [4, 4, 4],
            centred: 1.0,
            augment: true,
            intensity: false,
        };
        let mut rng = Rng::new(3);
        for _ in 0..50 {
            let p = draw_patch(&v, &s, &mut rng);
            let at: Vec<usize> = (0..64).filter(|&i| p.classes[i] == 1).collect();
            assert_eq!(
                at.len(),
                1,
                "the one labelled voxel is in every centred patch"
            );
            // Voxel and label travel together: the labelled voxel keeps its value.
            assert_eq!(p.data[at[0]], v.data[455]);
        }
    }

    #[test]
    fn robust_normalisation_ignores_outliers_and_the_border() {
        // A noise-like centre, a huge bright blob at one corner (a gold bead, a border).
        let shape = [8, 16, 16];
        let mut rng = Rng::new(5);
        let mut data: Vec<f32> = (0..8 * 256)
            .map(|_| 3.0 + 2.0 * rng.normal() as f32)
            .collect();
        for z in 0..2 {
            for y in 0..4 {
                for x in 0..4 {
                    data[(z * 16 + y) * 16 + x] = 1e4;
                }
            }
        }
        let mut d = data.clone();
        let (c, s) = Normalisation::Robust.apply(&mut d, shape);
        assert!((c - 3.0).abs() < 0.5 && (s - 2.0).abs() < 0.5, "{c} {s}");
        assert_eq!(d[0], ROBUST_CLIP, "the outlier is clipped");
        let mut z = data.clone();
        let (_, sd) = Normalisation::Zscore.apply(&mut z, shape);
        assert!(sd > 100.0, "the z-score is dominated by the outlier: {sd}");
        let mut n = data.clone();
        assert_eq!(
            Normalisation::Zscore.apply(&mut n, shape),
            normalise(&mut data)
        );
        assert_eq!(n, data, "the z-score path equals the historical one");
    }

    #[test]
    fn intensity_augmentation_changes_contrast_and_keeps_labels() {
        let v = vol();
        let s = Sampling {
            patch: [4, 4, 4],
            centred: 1.0,
            augment: false,
            intensity: true,
        };
        let mut a = Rng::new(9);
        let mut b = Rng::new(9);
        let plain = Sampling {
            intensity: false,
            ..s
        };
        let p = draw_patch(&v, &s, &mut a);
        let q = draw_patch(&v, &plain, &mut b);
        assert_eq!(p.classes, q.classes);
        assert_ne!(p.data, q.data);
        assert!(p.data.iter().all(|x| x.is_finite()));
        // A blur keeps a constant patch constant and the mean of a patch.
        let mut c = vec![2.0f32; 64];
        gaussian_blur(&mut c, [4, 4, 4], 1.0);
        assert!(c.iter().all(|&x| (x - 2.0).abs() < 1e-5));
        // Away from the edges (no clamping within 3 sigma) the blur keeps an impulse's mass.
        let mut d: Vec<f32> = (0..729).map(|i| if i == 364 { 1.0 } else { 0.0 }).collect();
        gaussian_blur(&mut d, [9, 9, 9], 0.8);
        let total: f32 = d.iter().sum();
        assert!((total - 1.0).abs() < 1e-4, "{total}");
        assert!(d[364] < 0.5 && d[363] > 0.0);
    }

    #[test]
    fn dice_of_identical_maps_is_one() {
        let a = [0u8, 1, 1, 2, 0];
        assert_eq!(dice(&a, &a, 3), vec![Some(1.0), Some(1.0)]);
        let b = [0u8, 1, 0, 0, 0];
        assert_eq!(dice(&b, &a, 3)[0], Some(2.0 / 3.0));
        assert_eq!(dice(&b, &a, 3)[1], Some(0.0));
    }
}
