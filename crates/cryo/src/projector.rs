//! Parallel-beam tomographic projector for single-axis tilt series, its exact adjoint, and a
//! voxel-driven back-projector for weighted back-projection.
//!
//! Geometry: the volume is tilted by θ about its y axis (the tilt axis); the beam runs along z.
//! In voxel units relative to the centres (`x_c = x − (nx−1)/2`, same for z and the detector
//! coordinate u), a point projects to `u_c = x_c cos θ + z_c sin θ` at depth
//! `w = −x_c sin θ + z_c cos θ` (larger w = further downstream). Detector row y is volume row y;
//! the detector pixel equals the voxel size.
//!
//! Forward projection uses Joseph's method (Joseph, IEEE TMI 1:192, 1982): each ray is sampled
//! once per z plane (|θ| ≤ 45°) or per x column (|θ| > 45°) with linear interpolation, weighted
//! by the path length through that plane (`voxel / |cos θ|` or `voxel / |sin θ|`), so that a
//! projection is a line integral in value·Å. The adjoint applies exactly the transposed
//! weights. Because the weights do not depend on y, every tap is an AXPY over a whole row of y
//! values: the working layout is **(z, x, y)** for volumes and **(u, y)** for projections
//! ([`to_zxy`], [`from_zxy`]), and the inner loops are contiguous, bounds-check free and
//! vectorised (AVX2+FMA when the CPU has it).

use crate::fft::transpose;

/// Volume and detector sizes (voxels) and the voxel size (Å).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Geometry {
    /// Volume depth (z, along the beam at 0°).
    pub nz: usize,
    /// Volume height (y, along the tilt axis) = detector rows.
    pub ny: usize,
    /// Volume width (x).
    pub nx: usize,
    /// Detector width (u).
    pub nu: usize,
    /// Voxel size = detector pixel size (Å).
    pub voxel_a: f64,
}

impl Geometry {
    /// A geometry with a detector as wide as the volume.
    pub fn new(shape: [usize; 3], voxel_a: f64) -> Geometry {
        Geometry {
            nz: shape[0],
            ny: shape[1],
            nx: shape[2],
            nu: shape[2],
            voxel_a,
        }
    }

    /// Voxels in the volume.
    pub fn volume_len(&self) -> usize {
        self.nz * self.ny * self.nx
    }

    /// Pixels in one projection.
    pub fn projection_len(&self) -> usize {
        self.nu * self.ny
    }

    /// Errors for empty sizes or a non-positive voxel size.
    pub fn validate(&self) -> Result<(), String> {
        if self.nz == 0 || self.ny == 0 || self.nx == 0 || self.nu == 0 {
            return Err(format!("empty projector geometry {self:?}"));
        }
        if !(self.voxel_a.is_finite() && self.voxel_a > 0.0) {
            return Err(format!("voxel size must be > 0 Å, got {}", self.voxel_a));
        }
        Ok(())
    }
}

/// Reorder a (z, y, x) volume into the projector's (z, x, y) layout.
pub fn to_zxy(v: &[f32], shape: [usize; 3]) -> Vec<f32> {
    let [nz, ny, nx] = shape;
    let mut out = vec![0f32; nz * ny * nx];
    for z in 0..nz {
        let p = ny * nx;
        transpose(&v[z * p..(z + 1) * p], &mut out[z * p..(z + 1) * p], ny, nx);
    }
    out
}

/// [`to_zxy`] in place, with one plane of scratch: a large volume is never held twice.
pub fn to_zxy_in_place(v: &mut [f32], shape: [usize; 3]) {
    let p = shape[1] * shape[2];
    let mut plane = vec![0f32; p];
    for dst in v.chunks_exact_mut(p.max(1)) {
        plane.copy_from_slice(dst);
        transpose(&plane, dst, shape[1], shape[2]);
    }
}

/// Reorder planes `(z, x, y)` back into `(z, y, x)` (any number of whole planes).
pub fn from_zxy(v: &[f32], ny: usize, nx: usize) -> Vec<f32> {
    let p = ny * nx;
    let mut out = vec![0f32; v.len()];
    for (src, dst) in v.chunks_exact(p).zip(out.chunks_exact_mut(p)) {
        transpose(src, dst, nx, ny);
    }
    out
}

/// `out += a x + b y` (contiguous, vectorised).
#[inline(always)]
fn axpy2_generic(out: &mut [f32], a: f32, x: &[f32], b: f32, y: &[f32]) {
    for ((o, &p), &q) in out.iter_mut().zip(x).zip(y) {
        *o += a * p + b * q;
    }
}

/// `out += a x` (contiguous, vectorised).
#[inline(always)]
fn axpy_generic(out: &mut [f32], a: f32, x: &[f32]) {
    for (o, &p) in out.iter_mut().zip(x) {
        *o += a * p;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn axpy2_avx2(out: &mut [f32], a: f32, x: &[f32], b: f32, y: &[f32]) {
    axpy2_generic(out, a, x, b, y)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn axpy_avx2(out: &mut [f32], a: f32, x: &[f32]) {
    axpy_generic(out, a, x)
}

#[inline]
fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `out += a x + b y` over equal-length rows.
#[inline]
pub fn axpy2(out: &mut [f32], a: f32, x: &[f32], b: f32, y: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU supports AVX2 and FMA (checked above).
        unsafe { axpy2_avx2(out, a, x, b, y) };
        return;
    }
    axpy2_generic(out, a, x, b, y)
}

/// `out += a x` over equal-length rows.
#[inline]
pub fn axpy(out: &mut [f32], a: f32, x: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU supports AVX2 and FMA (checked above).
        unsafe { axpy_avx2(out, a, x) };
        return;
    }
    axpy_generic(out, a, x)
}

/// One sample of a ray: detector column `u`, the two interpolated rows (index `z * nx + x` in the
/// (z, x, y) layout, `None` outside the volume) with their weights, and the sample's depth
/// (voxels, relative to the centre).
#[derive(Debug, Clone, Copy)]
struct Tap {
    u: usize,
    r0: Option<usize>,
    w0: f32,
    r1: Option<usize>,
    w1: f32,
    depth: f64,
}

/// The ray samples of tilt `theta` (radians) restricted to volume planes `[z0, z1)`, in a fixed
/// order (the same for the forward projector and its adjoint).
fn for_each_tap(g: &Geometry, theta: f64, z0: usize, z1: usize, mut f: impl FnMut(Tap)) {
    let (s, c) = theta.sin_cos();
    let (mx, mz, mu) = (
        (g.nx as f64 - 1.0) / 2.0,
        (g.nz as f64 - 1.0) / 2.0,
        (g.nu as f64 - 1.0) / 2.0,
    );
    let vs = g.voxel_a;
    if c.abs() >= s.abs() {
        // z-driven: one sample per plane.
        let w = vs / c.abs();
        for z in z0..z1.min(g.nz) {
            let zc = z as f64 - mz;
            // x(u) = (u - mu - zc s) / c + mx, linear in u.
            for u in 0..g.nu {
                let x = (u as f64 - mu - zc * s) / c + mx;
                let i = x.floor();
                if i < -1.0 || i > g.nx as f64 - 1.0 {
                    continue;
                }
                let fr = x - i;
                let i = i as isize;
                let row = |k: isize| -> Option<usize> {
                    (k >= 0 && (k as usize) < g.nx).then(|| z * g.nx + k as usize)
                };
                f(Tap {
                    u,
                    r0: row(i),
                    w0: (w * (1.0 - fr)) as f32,
                    r1: row(i + 1),
                    w1: (w * fr) as f32,
                    depth: -(x - mx) * s + zc * c,
                });
            }
        }
    } else {
        // x-driven: one sample per column; only planes [z0, z1) are touched.
        let w = vs / s.abs();
        for x in 0..g.nx {
            let xc = x as f64 - mx;
            // z(u) = (u - mu - xc c) / s + mz; keep u whose z lies in [z0 - 1, z1].
            let ua = (z0 as f64 - 1.0 - mz) * s + xc * c + mu;
            let ub = (z1 as f64 - mz) * s + xc * c + mu;
            let (lo, hi) = (ua.min(ub).floor() - 1.0, ua.max(ub).ceil() + 1.0);
            let lo = lo.max(0.0) as usize;
            let hi = (hi.min(g.nu as f64 - 1.0)).max(-1.0);
            if hi < 0.0 {
                continue;
            }
            for u in lo..=hi as usize {
                let z = (u as f64 - mu - xc * c) / s + mz;
                let i = z.floor();
                if i < z0 as f64 - 1.0 || i > z1.min(g.nz) as f64 - 1.0 {
                    continue;
                }
                let fr = z - i;
                let i = i as isize;
                let row = |k: isize| -> Option<usize> {
                    (k >= z0 as isize && (k as usize) < z1.min(g.nz)).then(|| k as usize * g.nx + x)
                };
                let (r0, r1) = (row(i), row(i + 1));
                if r0.is_none() && r1.is_none() {
                    continue;
                }
                f(Tap {
                    u,
                    r0,
                    w0: (w * (1.0 - fr)) as f32,
                    r1,
                    w1: (w * fr) as f32,
                    depth: -xc * s + (z - mz) * c,
                });
            }
        }
    }
}

/// Forward-project a (z, x, y) volume at tilt `theta` (radians): adds line integrals
/// (value·Å) to `out`, laid out (u, y).
pub fn forward(g: &Geometry, vol_zxy: &[f32], theta: f64, out_uy: &mut [f32]) {
    let ny = g.ny;
    assert_eq!(vol_zxy.len(), g.volume_len(), "forward: volume size");
    assert_eq!(out_uy.len(), g.projection_len(), "forward: projection size");
    for_each_tap(g, theta, 0, g.nz, |t| {
        let o = &mut out_uy[t.u * ny..(t.u + 1) * ny];
        match (t.r0, t.r1) {
            (Some(a), Some(b)) => axpy2(
                o,
                t.w0,
                &vol_zxy[a * ny..(a + 1) * ny],
                t.w1,
                &vol_zxy[b * ny..(b + 1) * ny],
            ),
            (Some(a), None) => axpy(o, t.w0, &vol_zxy[a * ny..(a + 1) * ny]),
            (None, Some(b)) => axpy(o, t.w1, &vol_zxy[b * ny..(b + 1) * ny]),
            (None, None) => {}
        }
    });
}

/// Split off each z plane's laterally uniform part: its most frequent value, where at least a
/// quarter of the plane holds exactly that value (an ice slab, vacuum), else 0. The value is
/// subtracted from the plane in place and returned per plane (a (z, x, y) or (z, y, x) volume
/// alike: a plane is `len / nz` contiguous values).
///
/// Why: a specimen's ice extends far beyond the field of view, but a projector only sees the
/// box. Tilted rays near the box's x edges leave it through the side, cross less ice and darken
/// the image edges, and weighted back-projection turns that step into bright stripes along the
/// edges of the tomogram. Projecting only what is left and adding the layers as laterally
/// infinite ([`layers_integral`]` / cos θ` on every ray) is exact for a layered background.
pub fn split_uniform_layers(vol: &mut [f32], nz: usize) -> Vec<f32> {
    if nz == 0 || vol.is_empty() {
        return Vec::new();
    }
    let plane = vol.len() / nz;
    vol.chunks_mut(plane)
        .map(|p| {
            // The mode of an even sample of at most 4096 values is the candidate; the whole
            // plane is counted for it below.
            let stride = p.len().div_ceil(4096).max(1);
            let mut bits: Vec<u32> = p.iter().step_by(stride).map(|v| v.to_bits()).collect();
            bits.sort_unstable();
            let (mut best, mut best_n, mut i) = (0u32, 0usize, 0usize);
            while i < bits.len() {
                let j = i + bits[i..].partition_point(|&b| b == bits[i]);
                if j - i > best_n {
                    (best, best_n) = (bits[i], j - i);
                }
                i = j;
            }
            let level = f32::from_bits(best);
            let held = p.iter().filter(|v| v.to_bits() == best).count();
            if best_n == 0 || held * 4 < plane || !level.is_finite() || level == 0.0 {
                return 0.0;
            }
            for v in p.iter_mut() {
                *v -= level;
            }
            level
        })
        .collect()
}

/// Line integral (value·Å) at normal incidence through planes of uniform `levels`, `voxel_a` thick.
pub fn layers_integral(levels: &[f32], voxel_a: f64) -> f64 {
    levels.iter().map(|&l| l as f64).sum::<f64>() * voxel_a
}

/// Depth extent of the tilted volume: the largest |w| (voxels) of any voxel centre.
pub fn max_depth(g: &Geometry, theta: f64) -> f64 {
    let (s, c) = theta.sin_cos();
    (g.nx as f64 - 1.0) / 2.0 * s.abs() + (g.nz as f64 - 1.0) / 2.0 * c.abs()
}

/// Forward-project into `n_slabs` depth slabs of equal thickness spanning `[-wmax, wmax]`
/// (`wmax` = [`max_depth`] + 1 voxel): `out_uy` holds `n_slabs` projections (u, y), slab 0 the
/// most upstream. Their sum is [`forward`]. Returns the slab thickness in Å.
pub fn forward_slabs(
    g: &Geometry,
    vol_zxy: &[f32],
    theta: f64,
    n_slabs: usize,
    out_uy: &mut [f32],
) -> f64 {
    let ny = g.ny;
    let n = n_slabs.max(1);
    let pl = g.projection_len();
    assert_eq!(out_uy.len(), n * pl, "forward_slabs: output size");
    let wmax = max_depth(g, theta) + 1.0;
    let dw = 2.0 * wmax / n as f64;
    for_each_tap(g, theta, 0, g.nz, |t| {
        let k = (((t.depth + wmax) / dw) as usize).min(n - 1);
        let o = &mut out_uy[k * pl + t.u * ny..k * pl + (t.u + 1) * ny];
        if let Some(a) = t.r0 {
            axpy(o, t.w0, &vol_zxy[a * ny..(a + 1) * ny]);
        }
        if let Some(b) = t.r1 {
            axpy(o, t.w1, &vol_zxy[b * ny..(b + 1) * ny]);
        }
    });
    dw * g.voxel_a
}

/// Exact adjoint of [`forward`] restricted to planes `[z0, z1)`: adds `Aᵀ p` to `planes_zxy`,
/// which holds planes z0..z1 in (z, x, y) layout.
pub fn adjoint(
    g: &Geometry,
    proj_uy: &[f32],
    theta: f64,
    z0: usize,
    z1: usize,
    planes_zxy: &mut [f32],
) {
    let ny = g.ny;
    let base = z0 * g.nx;
    assert_eq!(
        proj_uy.len(),
        g.projection_len(),
        "adjoint: projection size"
    );
    assert_eq!(
        planes_zxy.len(),
        (z1 - z0) * g.nx * ny,
        "adjoint: output size"
    );
    for_each_tap(g, theta, z0, z1, |t| {
        let p = &proj_uy[t.u * ny..(t.u + 1) * ny];
        if let Some(a) = t.r0 {
            let a = a - base;
            axpy(&mut planes_zxy[a * ny..(a + 1) * ny], t.w0, p);
        }
        if let Some(b) = t.r1 {
            let b = b - base;
            axpy(&mut planes_zxy[b * ny..(b + 1) * ny], t.w1, p);
        }
    });
}

/// Voxel-driven back-projection for WBP: for every voxel of planes `[z0, z1)`, adds
/// `weight × p(u)` with `u = x_c cos θ + z_c sin θ` linearly interpolated (zero outside the
/// detector). `planes_zxy` holds planes z0..z1 in (z, x, y) layout, `proj_uy` is (u, y).
pub fn backproject_voxel(
    g: &Geometry,
    proj_uy: &[f32],
    theta: f64,
    weight: f32,
    z0: usize,
    z1: usize,
    planes_zxy: &mut [f32],
) {
    let ny = g.ny;
    assert_eq!(
        proj_uy.len(),
        g.projection_len(),
        "backproject: projection size"
    );
    assert_eq!(
        planes_zxy.len(),
        (z1 - z0) * g.nx * ny,
        "backproject: output size"
    );
    let (s, c) = theta.sin_cos();
    let (mx, mz, mu) = (
        (g.nx as f64 - 1.0) / 2.0,
        (g.nz as f64 - 1.0) / 2.0,
        (g.nu as f64 - 1.0) / 2.0,
    );
    for z in z0..z1 {
        let zc = z as f64 - mz;
        for x in 0..g.nx {
            let u = (x as f64 - mx) * c + zc * s + mu;
            let j = u.floor();
            if j < -1.0 || j > g.nu as f64 - 1.0 {
                continue;
            }
            let f = (u - j) as f32;
            let j = j as isize;
            let r = ((z - z0) * g.nx + x) * ny;
            let o = &mut planes_zxy[r..r + ny];
            let row = |k: isize| -> Option<&[f32]> {
                (k >= 0 && (k as usize) < g.nu)
                    .then(|| &proj_uy[k as usize * ny..(k as usize + 1) * ny])
            };
            match (row(j), row(j + 1)) {
                (Some(a), Some(b)) => axpy2(o, weight * (1.0 - f), a, weight * f, b),
                (Some(a), None) => axpy(o, weight * (1.0 - f), a),
                (None, Some(b)) => axpy(o, weight * f, b),
                (None, None) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A uniform ball of radius `r` voxels at the centre, anti-aliased by 6³ supersampling.
    fn ball(shape: [usize; 3], r: f64) -> Vec<f32> {
        let [nz, ny, nx] = shape;
        let m = |n: usize| (n as f64 - 1.0) / 2.0;
        let mut v = vec![0f32; nz * ny * nx];
        let ss = 6;
        for z in 0..nz {
            for y in 0..ny {
                for x in 0..nx {
                    let (dz, dy, dx) = (z as f64 - m(nz), y as f64 - m(ny), x as f64 - m(nx));
                    let d = (dz * dz + dy * dy + dx * dx).sqrt();
                    let val = if d + 0.9 < r {
                        1.0
                    } else if d - 0.9 > r {
                        0.0
                    } else {
                        let mut n = 0;
                        for a in 0..ss {
                            for b in 0..ss {
                                for c in 0..ss {
                                    let o = |k: usize| (k as f64 + 0.5) / ss as f64 - 0.5;
                                    let q = (dz + o(a)).powi(2)
                                        + (dy + o(b)).powi(2)
                                        + (dx + o(c)).powi(2);
                                    if q <= r * r {
                                        n += 1;
                                    }
                                }
                            }
                        }
                        n as f64 / (ss * ss * ss) as f64
                    };
                    v[(z * ny + y) * nx + x] = val as f32;
                }
            }
        }
        v
    }

    #[test]
    fn sphere_projection_equals_chord_length() {
        let shape = [48, 9, 64];
        let (r, vs) = (18.0, 2.5);
        let vol = to_zxy(&ball(shape, r), shape);
        let g = Geometry::new(shape, vs);
        let yc = 4; // central row: the ball's equator
        let ry2 = r * r - (yc as f64 - 4.0).powi(2);
        for deg in [0.0f64, 17.0, 30.0, 44.0, 46.0, 60.0, -52.0, 75.0] {
            let mut p = vec![0f32; g.projection_len()];
            forward(&g, &vol, deg.to_radians(), &mut p);
            let mut worst = 0f64;
            for u in 0..g.nu {
                let d = u as f64 - (g.nu as f64 - 1.0) / 2.0;
                if d.abs() > 0.8 * r {
                    continue;
                }
                let chord = 2.0 * (ry2 - d * d).sqrt() * vs;
                let got = p[u * g.ny + yc] as f64;
                worst = worst.max((got / chord - 1.0).abs());
            }
            assert!(worst < 0.01, "tilt {deg}°: chord error {worst}");
        }
    }

    fn lcg(seed: &mut u64) -> f32 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((*seed >> 40) as f32 / (1u64 << 24) as f32) - 0.5
    }

    #[test]
    fn adjoint_is_exact() {
        let g = Geometry {
            nz: 13,
            ny: 5,
            nx: 21,
            nu: 25,
            voxel_a: 3.0,
        };
        let mut s = 7u64;
        let x: Vec<f32> = (0..g.volume_len()).map(|_| lcg(&mut s)).collect();
        for deg in [0.0f64, 10.0, -33.0, 45.0, 50.0, -61.0, 80.0] {
            let th = deg.to_radians();
            let y: Vec<f32> = (0..g.projection_len()).map(|_| lcg(&mut s)).collect();
            let mut ax = vec![0f32; g.projection_len()];
            forward(&g, &x, th, &mut ax);
            // Adjoint computed in three blocks of planes.
            let mut aty = vec![0f32; g.volume_len()];
            let pl = g.nx * g.ny;
            for (z0, z1) in [(0, 4), (4, 5), (5, 13)] {
                adjoint(&g, &y, th, z0, z1, &mut aty[z0 * pl..z1 * pl]);
            }
            let lhs: f64 = ax.iter().zip(&y).map(|(a, b)| *a as f64 * *b as f64).sum();
            let rhs: f64 = x.iter().zip(&aty).map(|(a, b)| *a as f64 * *b as f64).sum();
            let scale: f64 = ax.iter().map(|a| (*a as f64).abs()).sum::<f64>() * 0.5;
            assert!(
                (lhs - rhs).abs() <= 1e-4 * lhs.abs().max(scale),
                "tilt {deg}: {lhs} vs {rhs}"
            );
        }
    }

    #[test]
    fn slabs_sum_to_the_projection_and_layouts_roundtrip() {
        let shape = [10, 3, 12];
        let mut s = 3u64;
        let v: Vec<f32> = (0..360).map(|_| lcg(&mut s)).collect();
        let zxy = to_zxy(&v, shape);
        assert_eq!(from_zxy(&zxy, 3, 12), v);
        let mut inplace = v.clone();
        to_zxy_in_place(&mut inplace, shape);
        assert_eq!(inplace, zxy);
        let g = Geometry::new(shape, 1.0);
        for deg in [0.0f64, 35.0, -70.0] {
            let th = deg.to_radians();
            let mut p = vec![0f32; g.projection_len()];
            forward(&g, &zxy, th, &mut p);
            let mut sl = vec![0f32; 4 * g.projection_len()];
            forward_slabs(&g, &zxy, th, 4, &mut sl);
            for i in 0..p.len() {
                let sum: f32 = (0..4).map(|k| sl[k * p.len() + i]).sum();
                assert!((sum - p[i]).abs() < 1e-4);
            }
        }
    }

    #[test]
    fn uniform_layers_split_off_exactly_and_particles_stay() {
        // Vacuum, three ice planes with a "particle" in one, vacuum.
        let (nz, plane) = (5, 64);
        let mut v = vec![0f32; nz * plane];
        for z in 1..4 {
            v[z * plane..(z + 1) * plane].fill(4.5);
        }
        v[2 * plane + 10] = 7.0;
        v[2 * plane + 11] = 6.0;
        // A plane that is mostly structure keeps everything (no value holds a quarter of it).
        for (i, x) in v[4 * plane..].iter_mut().enumerate() {
            *x = i as f32;
        }
        let kept = v.clone();
        let levels = split_uniform_layers(&mut v, nz);
        assert_eq!(levels, vec![0.0, 4.5, 4.5, 4.5, 0.0]);
        assert_eq!(v[2 * plane + 10], 2.5);
        assert_eq!(v[2 * plane + 11], 1.5);
        assert!(v[plane..2 * plane].iter().all(|&x| x == 0.0));
        assert_eq!(v[4 * plane..], kept[4 * plane..]);
        assert_eq!(layers_integral(&levels, 10.0), 135.0);
    }

    #[test]
    fn a_tilted_slab_darkens_the_box_edges_that_an_infinite_slab_does_not() {
        // The reason for split_uniform_layers: projected inside the box, a slab filling the
        // box's depth loses path length near the edges at 60°; its laterally infinite
        // integral, t / cos θ, is the same on every ray.
        let shape = [8, 2, 32];
        let g = Geometry::new(shape, 1.0);
        let zxy = to_zxy(&vec![1f32; 8 * 2 * 32], shape);
        let th = 60f64.to_radians();
        let mut p = vec![0f32; g.projection_len()];
        forward(&g, &zxy, th, &mut p);
        let infinite = layers_integral(&[1.0; 8], 1.0) / th.cos();
        let centre = p[16 * 2] as f64;
        let edge = p[0] as f64;
        assert!(
            (centre - infinite).abs() < 1e-2 * infinite,
            "{centre} vs {infinite}"
        );
        assert!(edge < 0.8 * infinite, "edge {edge} vs {infinite}");
    }
}
