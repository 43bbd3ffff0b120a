//! Sliding-window inference: overlapping tiles, blended with a Gaussian or cosine window (or
//! cropped to their cores), optional test-time augmentation, and resampling between the
//! tomogram's grid and the model's voxel size.
//!
//! Tiles start on multiples of the network's granularity (`2^depth`) where they can, so the
//! pooling grid of every tile matches that of the whole volume: with a `margin` of at least the
//! receptive radius, tiled and whole-volume inference agree to rounding away from the volume's
//! borders (tested).

use crate::net::{Arch, UNet};
use crate::train::predict;
use anyhow::{bail, Result};
use burn::tensor::Device;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Blending window of a tile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Blend {
    /// Gaussian, σ = tile/8 (nnU-Net's choice).
    Gaussian,
    /// Raised cosine (Hann).
    Cosine,
    /// Flat: plain averaging of overlaps.
    None,
}

/// Tiling settings.
#[derive(Debug, Clone, Copy)]
pub struct Tiling {
    /// Tile edge in voxels (multiple of the granularity).
    pub tile: usize,
    /// Distance between tile starts (multiple of the granularity).
    pub stride: usize,
    /// Tile extent along z, when it differs from `tile`: inference holds this many planes of
    /// input and of each class, so a shallow tile bounds memory on large planes.
    pub tile_depth: Option<usize>,
    /// Distance between tile starts along z, when it differs from `stride`.
    pub stride_depth: Option<usize>,
    /// Voxels at each inner tile edge that get no weight.
    pub margin: usize,
    /// Window.
    pub blend: Blend,
    /// Average over the 8 symmetries of the xy square (rotations about z, flips).
    pub tta: bool,
    /// Tiles per forward pass.
    pub batch: usize,
}

impl Tiling {
    /// Check against the architecture.
    pub fn validate(&self, arch: &Arch) -> Result<()> {
        let g = arch.granularity();
        let z = self.axis(0);
        for (t, st, tname, sname) in [
            (self.tile, self.stride, "tile", "stride"),
            (z.0, z.1, "tile_depth", "stride_depth"),
        ] {
            if t == 0 || !t.is_multiple_of(g) {
                bail!(
                    "{tname} = {t} must be a positive multiple of {g} (2^{} downsamplings)",
                    arch.depth()
                );
            }
            if st == 0 || !st.is_multiple_of(g) {
                bail!("{sname} = {st} must be a positive multiple of {g}");
            }
            if 2 * self.margin >= t || st > t - 2 * self.margin {
                bail!(
                    "{sname} = {st} with margin = {} leaves voxels uncovered: need {sname} <= {tname} - 2 * margin = {}",
                    self.margin,
                    t as i64 - 2 * self.margin as i64
                );
            }
        }
        Ok(())
    }

    /// Tile edge and stride along `axis` (0 = z).
    pub fn axis(&self, axis: usize) -> (usize, usize) {
        if axis == 0 {
            (
                self.tile_depth.unwrap_or(self.tile),
                self.stride_depth.unwrap_or(self.stride),
            )
        } else {
            (self.tile, self.stride)
        }
    }
}

/// Tile starts along an axis of length `n` for tile edge `t`: multiples of `stride`, plus a
/// last tile flush with the end.
pub fn starts(n: usize, t: usize, stride: usize) -> Vec<usize> {
    if n <= t {
        return vec![0];
    }
    let mut v: Vec<usize> = (0..)
        .map(|i| i * stride)
        .take_while(|&s| s + t < n)
        .collect();
    v.push(n - t);
    v.dedup();
    v
}

/// Window weights along one axis of a tile starting at `s` (edge `t`, volume length `n`).
fn window(t: usize, s: usize, n: usize, margin: usize, blend: Blend) -> Vec<f32> {
    (0..t)
        .map(|i| {
            let inner_lo = s > 0 && i < margin;
            let inner_hi = s + t < n && i >= t - margin;
            if inner_lo || inner_hi {
                return 0.0;
            }
            let x = (i as f64 + 0.5) / t as f64;
            let w = match blend {
                Blend::Gaussian => {
                    let sigma = 0.125;
                    (-0.5 * ((x - 0.5) / sigma).powi(2)).exp()
                }
                Blend::Cosine => 0.5 - 0.5 * (2.0 * std::f64::consts::PI * x).cos(),
                Blend::None => 1.0,
            };
            w.max(1e-6) as f32
        })
        .collect()
}

/// The 8 symmetries of the xy square as (transpose, flip y, flip x).
const SYMMETRIES: [(bool, bool, bool); 8] = [
    (false, false, false),
    (false, false, true),
    (false, true, false),
    (false, true, true),
    (true, false, false),
    (true, false, true),
    (true, true, false),
    (true, true, true),
];

/// Apply a symmetry to a `[c, t, t, t]` block (`inverse` undoes it).
fn transform(
    src: &[f32],
    c: usize,
    t: [usize; 3],
    sym: (bool, bool, bool),
    inverse: bool,
) -> Vec<f32> {
    let [tz, ty, tx] = t;
    let (tr, fy, fx) = sym;
    let mut out = vec![0f32; src.len()];
    for k in 0..c {
        for z in 0..tz {
            for y in 0..ty {
                for x in 0..tx {
                    // forward: out(y, x) = src(map(y, x)), with map = transpose then flips.
                    let (mut sy, mut sx) = (y, x);
                    if !inverse {
                        if fy {
                            sy = ty - 1 - sy;
                        }
                        if fx {
                            sx = tx - 1 - sx;
                        }
                        if tr {
                            std::mem::swap(&mut sy, &mut sx);
                        }
                        let d = ((k * tz + z) * ty + y) * tx + x;
                        out[d] = src[((k * tz + z) * ty + sy) * tx + sx];
                    } else {
                        if fy {
                            sy = ty - 1 - sy;
                        }
                        if fx {
                            sx = tx - 1 - sx;
                        }
                        if tr {
                            std::mem::swap(&mut sy, &mut sx);
                        }
                        let d = ((k * tz + z) * ty + sy) * tx + sx;
                        out[d] = src[((k * tz + z) * ty + y) * tx + x];
                    }
                }
            }
        }
    }
    out
}

/// Per-class probabilities `[K, z, y, x]` (foreground classes only) of a normalised volume held
/// in memory: [`infer_streamed`] with the volume as the plane source.
/// `progress(done, total)` after each batch of tiles; `cancelled()` is polled between batches.
#[allow(clippy::too_many_arguments)]
pub fn infer(
    model: &UNet,
    arch: &Arch,
    vol: &[f32],
    shape: [usize; 3],
    tiling: &Tiling,
    device: &Device,
    progress: &mut dyn FnMut(u64, u64),
    cancelled: &dyn Fn() -> bool,
) -> Result<Vec<f32>> {
    let [nz, ny, nx] = shape;
    let (plane, nv) = (ny * nx, nz * ny * nx);
    let k = arch.classes - 1;
    let mut out = vec![0f32; k * nv];
    infer_streamed(
        model,
        arch,
        shape,
        tiling,
        device,
        &mut |z0, z1, buf| {
            buf.clear();
            buf.extend_from_slice(&vol[z0 * plane..z1 * plane]);
            Ok(())
        },
        &mut |z0, z1, block| {
            let n = (z1 - z0) * plane;
            for kk in 0..k {
                out[kk * nv + z0 * plane..kk * nv + z1 * plane]
                    .copy_from_slice(&block[kk * n..(kk + 1) * n]);
            }
            Ok(())
        },
        progress,
        cancelled,
    )?;
    Ok(out)
}

/// Fills the buffer with the normalised planes `[z0, z1)`.
pub type FetchPlanes<'a> = dyn FnMut(usize, usize, &mut Vec<f32>) -> Result<()> + 'a;
/// Receives finished planes `[z0, z1)` as `[K, z1 - z0, y, x]`.
pub type EmitPlanes<'a> = dyn FnMut(usize, usize, &[f32]) -> Result<()> + 'a;

/// Sliding-window inference of a volume of `shape` that never holds more than one tile's depth
/// of it: `fetch(z0, z1, buf)` fills `buf` with the normalised planes `[z0, z1)`; `emit(z0, z1,
/// block)` receives finished planes as `[K, z1 - z0, y, x]` (foreground classes), in order and
/// covering the volume once (one plane per call). Tiles are processed one row of z-starts at a
/// time; the planes before the next row's start are final once a row is done. Memory: one row
/// of input planes plus `K` accumulators of a tile's depth.
#[allow(clippy::too_many_arguments)]
pub fn infer_streamed(
    model: &UNet,
    arch: &Arch,
    shape: [usize; 3],
    tiling: &Tiling,
    device: &Device,
    fetch: &mut FetchPlanes,
    emit: &mut EmitPlanes,
    progress: &mut dyn FnMut(u64, u64),
    cancelled: &dyn Fn() -> bool,
) -> Result<()> {
    tiling.validate(arch)?;
    let g = arch.granularity();
    let c = arch.classes;
    let k = c - 1;
    // Tile edge per axis: the tile, or the axis rounded up to the granularity when shorter.
    let t: [usize; 3] = std::array::from_fn(|a| tiling.axis(a).0.min(shape[a].div_ceil(g) * g));
    let st: [Vec<usize>; 3] = std::array::from_fn(|a| starts(shape[a], t[a], tiling.axis(a).1));
    let [nz, ny, nx] = shape;
    let plane = ny * nx;
    let tv = t[0] * t[1] * t[2];
    let syms: Vec<(bool, bool, bool)> = if tiling.tta {
        SYMMETRIES
            .iter()
            .copied()
            .filter(|s| !s.0 || t[1] == t[2])
            .collect()
    } else {
        vec![SYMMETRIES[0]]
    };
    let row_tiles: Vec<[usize; 2]> = st[1]
        .iter()
        .flat_map(|&y| st[2].iter().map(move |&x| [y, x]))
        .collect();
    let total = (st[0].len() * row_tiles.len()) as u64;
    let mut done = 0u64;
    // Accumulators for planes [base, base + t[0]), plane-major: acc[(dz * k + kk) * plane + i].
    let mut acc = vec![0f32; t[0] * k * plane];
    // The window is a product of per-axis windows and the tiles form a grid, so the sum of the
    // weights at (z, y, x) is the product of per-axis sums: no weight volume is needed.
    let wsum: [Vec<f32>; 3] = std::array::from_fn(|a| {
        let mut w = vec![0f32; shape[a]];
        for &s in &st[a] {
            let win = window(t[a], s, shape[a], tiling.margin, tiling.blend);
            for (i, v) in win.iter().take(shape[a] - s).enumerate() {
                w[s + i] += v;
            }
        }
        w
    });
    let wyx: Vec<f32> = wsum[1]
        .iter()
        .flat_map(|&wy| wsum[2].iter().map(move |&wx| wy * wx))
        .collect();
    let mut input = Vec::new();
    for (ri, &zs) in st[0].iter().enumerate() {
        let z_end = (zs + t[0]).min(nz);
        fetch(zs, z_end, &mut input)?;
        if input.len() != (z_end - zs) * plane {
            bail!(
                "internal: planes {zs}..{z_end} came back with {} voxels",
                input.len()
            );
        }
        let wz = window(t[0], zs, nz, tiling.margin, tiling.blend);
        for group in row_tiles.chunks(tiling.batch.max(1)) {
            if cancelled() {
                bail!("inference cancelled");
            }
            let inputs: Vec<Vec<f32>> = group
                .iter()
                .map(|o| {
                    let mut b = vec![0f32; tv];
                    for z in 0..t[0].min(z_end - zs) {
                        for y in 0..t[1].min(ny - o[0]) {
                            let w = t[2].min(nx - o[1]);
                            let src = (z * ny + o[0] + y) * nx + o[1];
                            let dst = (z * t[1] + y) * t[2];
                            b[dst..dst + w].copy_from_slice(&input[src..src + w]);
                        }
                    }
                    b
                })
                .collect();
            let mut probs = vec![vec![0f32; c * tv]; group.len()];
            for &sym in &syms {
                let data: Vec<f32> = inputs
                    .iter()
                    .flat_map(|b| transform(b, 1, t, sym, false))
                    .collect();
                let p = predict(model, data, [group.len(), 1, t[0], t[1], t[2]], device);
                for (i, acc) in probs.iter_mut().enumerate() {
                    let back = transform(&p[i * c * tv..(i + 1) * c * tv], c, t, sym, true);
                    for (a, b) in acc.iter_mut().zip(back) {
                        *a += b / syms.len() as f32;
                    }
                }
            }
            #[allow(clippy::needless_range_loop)]
            for (o, p) in group.iter().zip(&probs) {
                let wy = window(t[1], o[0], ny, tiling.margin, tiling.blend);
                let wx = window(t[2], o[1], nx, tiling.margin, tiling.blend);
                for z in 0..t[0].min(z_end - zs) {
                    for y in 0..t[1].min(ny - o[0]) {
                        let wzy = wz[z] * wy[y];
                        for x in 0..t[2].min(nx - o[1]) {
                            let w = wzy * wx[x];
                            if w == 0.0 {
                                continue;
                            }
                            let i = (o[0] + y) * nx + o[1] + x;
                            let l = (z * t[1] + y) * t[2] + x;
                            for kk in 0..k {
                                acc[(z * k + kk) * plane + i] += w * p[(kk + 1) * tv + l];
                            }
                        }
                    }
                }
            }
            done += group.len() as u64;
            progress(done, total);
        }
        // Planes before the next row's start get no more contributions.
        let next = st[0].get(ri + 1).copied().unwrap_or(nz);
        let n = next - zs;
        // One plane at a time, so that nothing the size of a row is copied.
        let mut block = vec![0f32; k * plane];
        for dz in 0..n {
            let wz = wsum[0][zs + dz];
            for kk in 0..k {
                let a = &acc[(dz * k + kk) * plane..(dz * k + kk + 1) * plane];
                let o = &mut block[kk * plane..(kk + 1) * plane];
                for ((o, a), w) in o.iter_mut().zip(a).zip(&wyx) {
                    *o = a / (wz * w).max(1e-30);
                }
            }
            emit(zs + dz, zs + dz + 1, &block)?;
        }
        // Shift the accumulators so that they start at `next`.
        acc.copy_within(n * k * plane.., 0);
        acc[(t[0] - n) * k * plane..].fill(0.0);
    }
    Ok(())
}

/// Trilinear resampling of a `[c, z, y, x]` block from voxel size `from` to a grid of `to_shape`
/// with voxel size `to` (voxel 0 centres coincide).
pub fn resample(
    src: &[f32],
    c: usize,
    shape: [usize; 3],
    from: f64,
    to_shape: [usize; 3],
    to: f64,
) -> Vec<f32> {
    let [nz, ny, nx] = shape;
    let axis = |n_out: usize, n_in: usize| -> Vec<(usize, usize, f32)> {
        (0..n_out)
            .map(|i| {
                let p = (i as f64 * to / from).clamp(0.0, (n_in - 1) as f64);
                let i0 = p.floor() as usize;
                let i1 = (i0 + 1).min(n_in - 1);
                (i0, i1, (p - i0 as f64) as f32)
            })
            .collect()
    };
    let az = axis(to_shape[0], nz);
    let ay = axis(to_shape[1], ny);
    let ax = axis(to_shape[2], nx);
    let nv = to_shape.iter().product::<usize>();
    let mut out = vec![0f32; c * nv];
    for k in 0..c {
        let s = &src[k * nz * ny * nx..(k + 1) * nz * ny * nx];
        let at = |z: usize, y: usize, x: usize| s[(z * ny + y) * nx + x];
        for (oz, &(z0, z1, fz)) in az.iter().enumerate() {
            for (oy, &(y0, y1, fy)) in ay.iter().enumerate() {
                for (ox, &(x0, x1, fx)) in ax.iter().enumerate() {
                    let lerp = |a: f32, b: f32, f: f32| a + (b - a) * f;
                    let v0 = lerp(
                        lerp(at(z0, y0, x0), at(z0, y0, x1), fx),
                        lerp(at(z0, y1, x0), at(z0, y1, x1), fx),
                        fy,
                    );
                    let v1 = lerp(
                        lerp(at(z1, y0, x0), at(z1, y0, x1), fx),
                        lerp(at(z1, y1, x0), at(z1, y1, x1), fx),
                        fy,
                    );
                    out[k * nv + (oz * to_shape[1] + oy) * to_shape[2] + ox] = lerp(v0, v1, fz);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_cover_the_axis() {
        assert_eq!(starts(10, 16, 8), vec![0]);
        assert_eq!(starts(40, 16, 8), vec![0, 8, 16, 24]);
        assert_eq!(starts(42, 16, 8), vec![0, 8, 16, 24, 26]);
    }

    #[test]
    fn symmetries_invert() {
        let t = [2, 3, 3];
        let src: Vec<f32> = (0..2 * 18).map(|i| i as f32).collect();
        for s in SYMMETRIES {
            let f = transform(&src, 2, t, s, false);
            assert_eq!(transform(&f, 2, t, s, true), src, "{s:?}");
        }
    }

    #[test]
    fn resample_identity_and_linear_ramp() {
        let src: Vec<f32> = (0..4 * 4 * 8).map(|i| (i % 8) as f32).collect();
        assert_eq!(resample(&src, 1, [4, 4, 8], 10.0, [4, 4, 8], 10.0), src);
        let half = resample(&src, 1, [4, 4, 8], 10.0, [4, 4, 15], 5.0);
        for (x, v) in half.iter().enumerate().take(15) {
            assert!((v - x as f32 * 0.5).abs() < 1e-6);
        }
    }
}
