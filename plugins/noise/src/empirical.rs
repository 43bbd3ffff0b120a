//! Sampling background boxes from masked, normalised sources.
//!
//! A box is cut in one piece when a structure-free block of its size exists in the sources (at
//! least [`SampleOptions::min_positions`] positions). Otherwise it is **assembled from patches**:
//! the largest patch size that has enough structure-free positions is found (shrinking the axis
//! that gains most positions, greedily), the box is covered by a grid of patches overlapping by
//! `overlap` voxels, every patch is drawn at a random structure-free position, randomly flipped
//! along z, y and x (mirroring; a flip keeps the missing wedge where it is) and, with
//! `quarter_turns`, transposed in xy (a 90° turn about z, which swaps the tilt axis between x
//! and y), and the patches are cross-faded with weights cos θ / sin θ (θ from 0 to π/2 across the
//! overlap) whose squares sum to one. For independent patches of unit variance this keeps the
//! variance (and the local spectrum) constant through the seams: no visible seam (tested by the
//! gradient energy at seams vs elsewhere).
//!
//! A sampled voxel is a weighted sum of source voxels that are all unmasked: masked voxels can
//! never leak into a box (tested with NaN-filled masks).

use crate::source::Source;
use anyhow::{bail, Result};
use serde::Serialize;
use tomoflow_cryo::rng::Rng;

/// How to sample boxes.
#[derive(Debug, Clone)]
pub struct SampleOptions {
    /// Box shape (z, y, x).
    pub shape: [usize; 3],
    /// Cross-fade overlap between patches (voxels).
    pub overlap: usize,
    /// Allow 90° turns about z (xy transposes), which move the tilt axis from y to x.
    pub quarter_turns: bool,
    /// Fewest structure-free positions a patch size must have to be used.
    pub min_positions: usize,
}

/// How boxes are assembled (logged and stored in the output metadata).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Layout {
    /// Patch shape (z, y, x) in voxels.
    pub patch: [usize; 3],
    /// Patches per axis.
    pub tiles: [usize; 3],
    /// Overlap per axis (voxels).
    pub overlap: [usize; 3],
    /// Structure-free patch positions over all sources.
    pub positions: usize,
}

impl Layout {
    /// True when a box is one patch (no seams).
    pub fn is_single(&self) -> bool {
        self.tiles == [1, 1, 1]
    }
}

/// Samples boxes from a set of sources.
#[derive(Debug)]
pub struct Sampler<'a> {
    sources: &'a [Source],
    opts: SampleOptions,
    layout: Layout,
    /// (source, linear index of the patch corner).
    valid: Vec<(u32, u32)>,
}

/// Prefix sums of a mask, (nz+1)(ny+1)(nx+1).
pub(crate) fn prefix(mask: &[bool], s: [usize; 3]) -> Vec<u32> {
    let (py, px) = (s[1] + 1, s[2] + 1);
    let mut p = vec![0u32; (s[0] + 1) * py * px];
    for z in 0..s[0] {
        for y in 0..s[1] {
            for x in 0..s[2] {
                let m = mask[(z * s[1] + y) * s[2] + x] as u32;
                let i = |a: usize, b: usize, c: usize| (a * py + b) * px + c;
                p[i(z + 1, y + 1, x + 1)] =
                    m + p[i(z, y + 1, x + 1)] + p[i(z + 1, y, x + 1)] + p[i(z + 1, y + 1, x)]
                        - p[i(z, y, x + 1)]
                        - p[i(z, y + 1, x)]
                        - p[i(z + 1, y, x)]
                        + p[i(z, y, x)];
            }
        }
    }
    p
}

/// Corners of all mask-free blocks of shape `b` in a source.
pub(crate) fn free_positions(
    pre: &[u32],
    s: [usize; 3],
    b: [usize; 3],
    src: u32,
    out: &mut Vec<(u32, u32)>,
) {
    if (0..3).any(|a| b[a] > s[a]) {
        return;
    }
    let (py, px) = (s[1] + 1, s[2] + 1);
    let i = |a: usize, bb: usize, c: usize| (a * py + bb) * px + c;
    for z in 0..=s[0] - b[0] {
        for y in 0..=s[1] - b[1] {
            for x in 0..=s[2] - b[2] {
                let (z1, y1, x1) = (z + b[0], y + b[1], x + b[2]);
                let n = pre[i(z1, y1, x1)] as i64
                    - pre[i(z, y1, x1)] as i64
                    - pre[i(z1, y, x1)] as i64
                    - pre[i(z1, y1, x)] as i64
                    + pre[i(z, y, x1)] as i64
                    + pre[i(z, y1, x)] as i64
                    + pre[i(z1, y, x)] as i64
                    - pre[i(z, y, x)] as i64;
                if n == 0 {
                    out.push((src, ((z * s[1] + y) * s[2] + x) as u32));
                }
            }
        }
    }
}

fn count_free(pre: &[Vec<u32>], sources: &[Source], b: [usize; 3]) -> Vec<(u32, u32)> {
    let mut v = Vec::new();
    for (k, (p, s)) in pre.iter().zip(sources).enumerate() {
        free_positions(p, s.shape, b, k as u32, &mut v);
    }
    v
}

/// A patch shape and its structure-free positions.
type Candidate = ([usize; 3], Vec<(u32, u32)>);

/// Tiles along an axis of `n` voxels with patches of `p` and overlap `o`.
fn tiles(n: usize, p: usize, o: usize) -> usize {
    if p >= n {
        1
    } else {
        (n - o).div_ceil(p - o)
    }
}

impl<'a> Sampler<'a> {
    /// Work out the layout for `opts.shape` over `sources` (an error when not even the smallest
    /// patch has a structure-free position).
    pub fn new(sources: &'a [Source], opts: SampleOptions) -> Result<Sampler<'a>> {
        if sources.is_empty() {
            bail!("no background source");
        }
        if opts.shape.contains(&0) {
            bail!("box shape {:?} has an empty axis", opts.shape);
        }
        let pre: Vec<Vec<u32>> = sources.iter().map(|s| prefix(&s.mask, s.shape)).collect();
        let max_src = [0, 1, 2].map(|a| sources.iter().map(|s| s.shape[a]).max().unwrap_or(0));
        let min_edge = (2 * opts.overlap + 2).max(4);
        let mut p = [0, 1, 2].map(|a| opts.shape[a].min(max_src[a]));
        if opts.quarter_turns {
            let m = p[1].min(p[2]);
            p[1] = m;
            p[2] = m;
        }
        let need = opts.min_positions.max(1);
        let mut valid = count_free(&pre, sources, p);
        while valid.len() < need {
            // Shrink the axis (or the xy pair) that gains most positions.
            let mut best: Option<Candidate> = None;
            let cands: Vec<Vec<usize>> = if opts.quarter_turns {
                vec![vec![0], vec![1, 2]]
            } else {
                vec![vec![0], vec![1], vec![2]]
            };
            for axes in cands {
                let mut q = p;
                let mut changed = false;
                for &a in &axes {
                    let lo = min_edge.min(opts.shape[a]);
                    let n = ((q[a] as f64 * 0.85) as usize).max(lo);
                    if n < q[a] {
                        q[a] = n;
                        changed = true;
                    }
                }
                if !changed {
                    continue;
                }
                let v = count_free(&pre, sources, q);
                if best.as_ref().is_none_or(|(_, bv)| v.len() > bv.len()) {
                    best = Some((q, v));
                }
            }
            match best {
                Some((q, v)) => {
                    p = q;
                    valid = v;
                }
                None => bail!(
                    "the sources have no structure-free block of {p:?} voxels (only {} positions, need {need}); \
                     lower `mask.k` or `mask.margin`, give larger sources, or a smaller `overlap`",
                    valid.len()
                ),
            }
        }
        let overlap = [0, 1, 2].map(|a| {
            if p[a] >= opts.shape[a] {
                0
            } else {
                opts.overlap.min(p[a] / 2)
            }
        });
        let tiles = [0, 1, 2].map(|a| tiles(opts.shape[a], p[a], overlap[a]));
        // A single tile along an axis only needs the box's extent.
        let layout = Layout {
            patch: p,
            tiles,
            overlap,
            positions: valid.len(),
        };
        Ok(Sampler {
            sources,
            opts,
            layout,
            valid,
        })
    }

    /// The layout boxes are assembled with.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Box number `index` from `seed` (reproducible: the same seed and index give the same box).
    pub fn sample(&self, seed: u64, index: u64) -> Vec<f32> {
        let mut rng = Rng::derive(seed, index);
        let b = self.opts.shape;
        let l = &self.layout;
        let mut out = vec![0.0f32; b.iter().product()];
        // Per-axis weights of a tile t (index into the patch).
        let weights = |a: usize, t: usize| -> Vec<f32> {
            let (p, o, n) = (l.patch[a], l.overlap[a], l.tiles[a]);
            (0..p)
                .map(|i| {
                    let h = std::f64::consts::FRAC_PI_2;
                    if o > 0 && t > 0 && i < o {
                        (h * (i as f64 + 0.5) / o as f64).sin() as f32
                    } else if o > 0 && t + 1 < n && i >= p - o {
                        (h * ((i - (p - o)) as f64 + 0.5) / o as f64).cos() as f32
                    } else {
                        1.0
                    }
                })
                .collect()
        };
        let stride = [0, 1, 2].map(|a| l.patch[a] - l.overlap[a]);
        for tz in 0..l.tiles[0] {
            let wz = weights(0, tz);
            for ty in 0..l.tiles[1] {
                let wy = weights(1, ty);
                for tx in 0..l.tiles[2] {
                    let wx = weights(2, tx);
                    let (src, corner) = self.valid[rng.below(self.valid.len() as u64) as usize];
                    let flip = [rng.below(2) == 1, rng.below(2) == 1, rng.below(2) == 1];
                    let turn = self.opts.quarter_turns && rng.below(2) == 1;
                    let s = &self.sources[src as usize];
                    let [_, sy, sx] = s.shape;
                    let corner = corner as usize;
                    let (cz, cy, cx) = (corner / (sy * sx), (corner / sx) % sy, corner % sx);
                    let o0 = [tz * stride[0], ty * stride[1], tx * stride[2]];
                    let [pz, py, px] = l.patch;
                    let nz = pz.min(b[0].saturating_sub(o0[0]));
                    let ny = py.min(b[1].saturating_sub(o0[1]));
                    for (i, &wzi) in wz.iter().enumerate().take(nz) {
                        let si = if flip[0] { pz - 1 - i } else { i };
                        for (j, &wyj) in wy.iter().enumerate().take(ny) {
                            let sj = if flip[1] { py - 1 - j } else { j };
                            let wzy = wzi * wyj;
                            let row = ((o0[0] + i) * b[1] + o0[1] + j) * b[2] + o0[2];
                            let nxk = px.min(b[2].saturating_sub(o0[2]));
                            for k in 0..nxk {
                                let sk = if flip[2] { px - 1 - k } else { k };
                                let (yy, xx) = if turn { (sk, sj) } else { (sj, sk) };
                                let v = s.data[((cz + si) * sy + cy + yy) * sx + cx + xx];
                                out[row + k] += wzy * wx[k] * v;
                            }
                        }
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::tests::{opts, shared};
    use crate::source::{load_source, masked_stats, SourceInfo};

    fn fake_source(shape: [usize; 3], seed: u64, corr: bool) -> Source {
        let n: usize = shape.iter().product();
        let mut r = Rng::new(seed);
        let mut data: Vec<f32> = (0..n).map(|_| r.normal() as f32).collect();
        if corr {
            data = crate::source::gaussian_smooth(&data, shape, 1.0);
            let (m, s, _) = masked_stats(&data, &vec![false; n]);
            data.iter_mut()
                .for_each(|v| *v = ((*v as f64 - m) / s) as f32);
        }
        Source {
            data,
            shape,
            mask: vec![false; n],
            info: SourceInfo {
                path: "fake".into(),
                dtype: "f32".into(),
                file_shape: shape,
                file_voxel_size: [10.0; 3],
                shape,
                voxel_size: 10.0,
                inverted: false,
                raw_background_mean: 0.0,
                raw_background_std: 1.0,
                masked_fraction: 0.0,
                non_finite: 0,
                structure_mean: 0.0,
                bright_fraction: 0.5,
                measured_snr: 0.0,
            },
        }
    }

    fn so(shape: [usize; 3]) -> SampleOptions {
        SampleOptions {
            shape,
            overlap: 8,
            quarter_turns: false,
            min_positions: 8,
        }
    }

    #[test]
    fn masked_voxels_never_reach_a_box() {
        // The real tomogram with its microtubule mask: poison the masked voxels with NaN.
        let mut s = load_source(&shared("13pf_MT.tif"), "x", &opts(10.0)).unwrap();
        for (v, &m) in s.data.iter_mut().zip(&s.mask) {
            if m {
                *v = f32::NAN;
            }
        }
        let srcs = [s];
        for quarter in [false, true] {
            let mut o = so([64, 128, 128]);
            o.quarter_turns = quarter;
            let sm = Sampler::new(&srcs, o).unwrap();
            assert!(!sm.layout().is_single(), "{:?}", sm.layout());
            for i in 0..6 {
                let b = sm.sample(7, i);
                assert!(
                    b.iter().all(|v| v.is_finite()),
                    "a masked voxel leaked into box {i}"
                );
            }
        }
        // A small box fits in one piece, still never masked.
        let sm = Sampler::new(&srcs, so([16, 32, 16])).unwrap();
        assert!(sm.layout().is_single(), "{:?}", sm.layout());
        for i in 0..20 {
            assert!(sm.sample(1, i).iter().all(|v| v.is_finite()));
        }
    }

    #[test]
    fn sampling_is_reproducible_from_the_seed() {
        let srcs = [fake_source([20, 40, 40], 3, false)];
        let sm = Sampler::new(&srcs, so([32, 48, 48])).unwrap();
        assert_eq!(sm.sample(42, 0), sm.sample(42, 0));
        assert_ne!(sm.sample(42, 0), sm.sample(43, 0));
        assert_ne!(sm.sample(42, 0), sm.sample(42, 1));
    }

    #[test]
    fn tiled_boxes_have_no_seams() {
        // Correlated unit-variance noise, box much larger than the source along x.
        let srcs = [fake_source([24, 40, 40], 5, true)];
        let shape = [16, 16, 160];
        let measure = |overlap: usize| -> (f64, f64, f64) {
            let mut o = so(shape);
            o.overlap = overlap;
            o.min_positions = 1;
            let sm = Sampler::new(&srcs, o).unwrap();
            let l = sm.layout().clone();
            assert!(l.tiles[2] >= 4, "{l:?}");
            let stride = l.patch[2] - l.overlap[2];
            // x positions of the seams (the gradient between x and x+1 crosses a seam).
            let seam: Vec<usize> = (1..l.tiles[2])
                .flat_map(|t| {
                    let a = t * stride;
                    if l.overlap[2] == 0 {
                        vec![a - 1]
                    } else {
                        (a..a + l.overlap[2] - 1).collect()
                    }
                })
                .filter(|&x| x + 1 < shape[2])
                .collect();
            let (mut gs, mut ns, mut ge, mut ne, mut var) = (0.0, 0, 0.0, 0, 0.0);
            let mut vs = (0.0, 0);
            for rep in 0..8 {
                let b = sm.sample(11, rep);
                for z in 0..shape[0] {
                    for y in 0..shape[1] {
                        let r = &b[(z * shape[1] + y) * shape[2]..][..shape[2]];
                        for x in 0..shape[2] - 1 {
                            let g = (r[x + 1] - r[x]) as f64;
                            if seam.contains(&x) {
                                gs += g * g;
                                ns += 1;
                                vs.0 += (r[x] as f64).powi(2);
                                vs.1 += 1;
                            } else {
                                ge += g * g;
                                ne += 1;
                                var += (r[x] as f64).powi(2);
                            }
                        }
                    }
                }
            }
            (
                gs / ns as f64 / (ge / ne as f64),
                vs.0 / vs.1 as f64,
                var / ne as f64,
            )
        };
        let (ratio, var_seam, var_else) = measure(8);
        assert!(
            (ratio - 1.0).abs() < 0.1,
            "gradient energy at seams / elsewhere = {ratio}"
        );
        assert!(
            (var_seam / var_else - 1.0).abs() < 0.15,
            "{var_seam} vs {var_else}"
        );
        // The same measure catches hard seams (no cross-fade).
        let (hard, _, _) = measure(0);
        assert!(hard > 1.3, "hard seams should show: {hard}");
    }

    #[test]
    fn impossible_masks_are_a_clear_error() {
        let mut s = fake_source([8, 8, 8], 1, false);
        s.mask.iter_mut().for_each(|m| *m = true);
        let srcs = [s];
        let e = Sampler::new(&srcs, so([16, 16, 16]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("structure-free"), "{e}");
    }
}
