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

/// Mean and standard deviation normalisation of a whole tomogram (what the model expects).
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
    /// Build from raw voxels and label values, mapping labels through the class table.
    pub fn new(
        name: &str,
        source: &str,
        mut data: Vec<f32>,
        labels: &[u32],
        shape: [usize; 3],
        voxel_size: f64,
        table: &[Class],
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
        normalise(&mut data);
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
    Patch { data, classes }
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
        TrainingVolume::new("t", "", data, &labels, shape, 10.0, &table).unwrap()
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
        let e = TrainingVolume::new("t", "", vec![0.0; 2], &[0, 3], [1, 1, 2], 1.0, &table)
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
    fn dice_of_identical_maps_is_one() {
        let a = [0u8, 1, 1, 2, 0];
        assert_eq!(dice(&a, &a, 3), vec![Some(1.0), Some(1.0)]);
        let b = [0u8, 1, 0, 0, 0];
        assert_eq!(dice(&b, &a, 3)[0], Some(2.0 / 3.0));
        assert_eq!(dice(&b, &a, 3)[1], Some(0.0));
    }
}
