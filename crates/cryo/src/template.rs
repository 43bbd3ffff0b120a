//! Particle templates: a potential map (V) at the sample's voxel size, centred on the box's
//! centre voxel, with an occupancy mask (potential above a threshold) and radii.
//!
//! - From atomic models ([`Template::from_atoms`]): every atom's Peng et al. (1996) potential is
//!   integrated over the voxels (see [`crate::scattering`]); the box centre is the potential's
//!   centre of mass (f(0)-weighted centroid).
//! - From density maps ([`Template::from_map`]): the map's background (mean of its outer faces) is
//!   subtracted; if the voxel size differs from the target, the map is resampled by trilinear
//!   interpolation onto a grid centred on the density's centre of mass, after a Gaussian
//!   anti-aliasing prefilter of variance (t² − s²)/12 when coarsening from s to t Å; if the voxel
//!   size is the same, the map is only shifted by whole voxels (no interpolation) so that its
//!   centre of mass lies within half a voxel of the centre, and the residual offset is recorded.
//!   Map units are arbitrary, so the map is scaled to volts so that its integral equals that of
//!   protein of the given mass (or of the mask's volume at 1.35 g/cm³), see
//!   [`crate::scattering::protein_potential_per_dalton`].
//!
//! Convention: template arrays are (z, y, x); the template centre is voxel `(n-1)/2` on each axis
//! (boxes have odd edges); `com_offset_a` is the position (z, y, x) in Å of the potential's centre
//! of mass relative to that centre.

use crate::pdb::AtomModel;
use crate::scattering::{self, add_atom, Grid, SplatScratch};
use anyhow::{bail, Result};

/// Protein number density in Da/Å³ at 1.35 g/cm³.
pub const PROTEIN_DA_PER_A3: f64 = scattering::PROTEIN_DENSITY_G_CM3 * 0.602_214_076;

/// A particle template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    /// Class name.
    pub name: String,
    /// Label id (1-based class number in label maps).
    pub label: u32,
    /// Voxel edge (Å).
    pub voxel_size: f64,
    /// Shape (z, y, x); each edge odd.
    pub shape: [usize; 3],
    /// Potential in volts (voxel means), in vacuum (0 away from the particle).
    pub data: Vec<f32>,
    /// Occupancy mask: 1 where `data > threshold`.
    pub mask: Vec<u8>,
    /// Mask threshold (V).
    pub threshold: f32,
    /// Particle radius (Å): given, or the largest distance of a mask voxel from the centre.
    pub radius_a: f64,
    /// Radius (Å) from the centre beyond which the potential is negligible (< 1e-4 of its peak).
    pub support_radius_a: f64,
    /// Centre of mass of the potential relative to the box centre, (z, y, x) Å.
    pub com_offset_a: [f64; 3],
    /// Molecular mass (Da) when known.
    pub mass_da: Option<f64>,
    /// Where it came from.
    pub source: String,
}

/// Options of [`Template::from_atoms`].
#[derive(Debug, Clone, Default)]
pub struct AtomOptions {
    /// Replace every atom's B-factor by this value (Å²); `None` keeps the file's B-factors.
    pub b_factor: Option<f64>,
    /// Mask threshold (V); `None`: the level whose mask volume equals the molecular volume
    /// (mass / 0.813 Da/Å³).
    pub threshold: Option<f32>,
    /// Particle radius (Å); `None`: from the mask.
    pub radius_a: Option<f64>,
}

/// Options of [`Template::from_map`].
#[derive(Debug, Clone, Default)]
pub struct MapOptions {
    /// Mask threshold in the map's own units; `None`: background + 10% of (peak − background).
    pub threshold: Option<f32>,
    /// Molecular mass (kDa) used to scale the map to volts; `None`: mask volume × 0.813 Da/Å³.
    pub mass_kda: Option<f64>,
    /// Volts per map unit, overriding the mass-based scaling.
    pub scale: Option<f64>,
    /// The map has protein dark (negative): flip its sign.
    pub invert: bool,
    /// Particle radius (Å); `None`: from the mask.
    pub radius_a: Option<f64>,
}

/// Trilinear interpolation of a (z, y, x) array at fractional voxel coordinates; zero outside.
#[inline]
pub fn trilinear(data: &[f32], shape: [usize; 3], z: f64, y: f64, x: f64) -> f32 {
    let [nz, ny, nx] = shape;
    let (fz, fy, fx) = (z.floor(), y.floor(), x.floor());
    if fz < -1.0 || fy < -1.0 || fx < -1.0 || fz >= nz as f64 || fy >= ny as f64 || fx >= nx as f64
    {
        return 0.0;
    }
    let (iz, iy, ix) = (fz as isize, fy as isize, fx as isize);
    let (tz, ty, tx) = ((z - fz) as f32, (y - fy) as f32, (x - fx) as f32);
    let get = |z: isize, y: isize, x: isize| -> f32 {
        if z < 0 || y < 0 || x < 0 || z >= nz as isize || y >= ny as isize || x >= nx as isize {
            0.0
        } else {
            data[((z as usize) * ny + y as usize) * nx + x as usize]
        }
    };
    let interior = iz >= 0
        && iy >= 0
        && ix >= 0
        && iz + 1 < nz as isize
        && iy + 1 < ny as isize
        && ix + 1 < nx as isize;
    let (c000, c001, c010, c011, c100, c101, c110, c111) = if interior {
        let b = ((iz as usize) * ny + iy as usize) * nx + ix as usize;
        let (sy, sz) = (nx, ny * nx);
        (
            data[b],
            data[b + 1],
            data[b + sy],
            data[b + sy + 1],
            data[b + sz],
            data[b + sz + 1],
            data[b + sz + sy],
            data[b + sz + sy + 1],
        )
    } else {
        (
            get(iz, iy, ix),
            get(iz, iy, ix + 1),
            get(iz, iy + 1, ix),
            get(iz, iy + 1, ix + 1),
            get(iz + 1, iy, ix),
            get(iz + 1, iy, ix + 1),
            get(iz + 1, iy + 1, ix),
            get(iz + 1, iy + 1, ix + 1),
        )
    };
    let c00 = c000 + (c001 - c000) * tx;
    let c01 = c010 + (c011 - c010) * tx;
    let c10 = c100 + (c101 - c100) * tx;
    let c11 = c110 + (c111 - c110) * tx;
    let c0 = c00 + (c01 - c00) * ty;
    let c1 = c10 + (c11 - c10) * ty;
    c0 + (c1 - c0) * tz
}

/// Positive-weight centre of mass of a (z, y, x) array in voxel coordinates.
pub fn centre_of_mass(data: &[f32], shape: [usize; 3]) -> Option<[f64; 3]> {
    let [_, ny, nx] = shape;
    let mut s = [0.0f64; 3];
    let mut w = 0.0f64;
    for (i, &v) in data.iter().enumerate() {
        if v > 0.0 {
            let v = v as f64;
            let (z, y, x) = (i / (ny * nx), (i / nx) % ny, i % nx);
            s[0] += v * z as f64;
            s[1] += v * y as f64;
            s[2] += v * x as f64;
            w += v;
        }
    }
    (w > 0.0).then(|| s.map(|c| c / w))
}

fn gaussian_blur(data: &mut [f32], shape: [usize; 3], sigma_vox: f64) {
    if sigma_vox <= 1e-3 {
        return;
    }
    let r = (3.0 * sigma_vox).ceil() as isize;
    let k: Vec<f64> = (-r..=r)
        .map(|i| (-(i * i) as f64 / (2.0 * sigma_vox * sigma_vox)).exp())
        .collect();
    let norm: f64 = k.iter().sum();
    let k: Vec<f64> = k.iter().map(|v| v / norm).collect();
    let [nz, ny, nx] = shape;
    let strides = [ny * nx, nx, 1];
    for axis in 0..3 {
        let n = shape[axis] as isize;
        let st = strides[axis];
        let src = data.to_vec();
        for (i, out) in data.iter_mut().enumerate() {
            let pos = ((i / st) % shape[axis]) as isize;
            let mut acc = 0.0;
            for (j, &kv) in k.iter().enumerate() {
                let p = pos + j as isize - r;
                if p >= 0 && p < n {
                    acc += kv * src[(i as isize + (p - pos) * st as isize) as usize] as f64;
                }
            }
            *out = acc as f32;
        }
    }
    let _ = (nz, ny, nx);
}

impl Template {
    /// A template from an atomic model at `voxel_size` Å.
    pub fn from_atoms(
        name: &str,
        label: u32,
        model: &AtomModel,
        voxel_size: f64,
        opts: &AtomOptions,
    ) -> Result<Template> {
        if !(voxel_size.is_finite() && voxel_size > 0.0) {
            bail!("template {name}: voxel size must be > 0 Å, got {voxel_size}");
        }
        let c = model.potential_centre();
        let mut reach: f64 = 0.0;
        let mut bmax: f64 = 0.0;
        for a in &model.atoms {
            let d =
                ((a.pos[0] - c[0]).powi(2) + (a.pos[1] - c[1]).powi(2) + (a.pos[2] - c[2]).powi(2))
                    .sqrt();
            reach = reach.max(d);
            bmax = bmax.max(opts.b_factor.unwrap_or(a.b_factor));
        }
        // widest Gaussian: b ≈ 200 Å² (K) + B; 5 σ of it plus a voxel of margin
        let sigma = ((200.0 + bmax.max(0.0)) / (8.0 * std::f64::consts::PI.powi(2))).sqrt();
        let half = ((reach + 5.0 * sigma) / voxel_size).ceil() as usize + 1;
        let n = 2 * half + 1;
        if n > 1024 {
            bail!("template {name}: a {n}³ box at {voxel_size} Å is too large (model radius {reach:.0} Å); use a coarser voxel size");
        }
        let shape = [n, n, n];
        let origin = [
            c[2] - half as f64 * voxel_size,
            c[1] - half as f64 * voxel_size,
            c[0] - half as f64 * voxel_size,
        ];
        let g = Grid {
            shape,
            voxel_size,
            origin,
        };
        let mut data = vec![0f32; n * n * n];
        let mut scratch = SplatScratch::default();
        for a in &model.atoms {
            add_atom(
                &mut data,
                &g,
                a.element,
                a.pos,
                opts.b_factor.unwrap_or(a.b_factor),
                a.occupancy,
                &mut scratch,
            );
        }
        let mass = model.mass_da();
        let threshold = match opts.threshold {
            Some(t) => t,
            None => volume_threshold(&data, mass / PROTEIN_DA_PER_A3 / voxel_size.powi(3)),
        };
        let mut t = Template {
            name: name.to_string(),
            label,
            voxel_size,
            shape,
            data,
            mask: Vec::new(),
            threshold,
            radius_a: 0.0,
            support_radius_a: 0.0,
            com_offset_a: [0.0; 3],
            mass_da: Some(mass),
            source: model.source.clone(),
        };
        t.finish(opts.radius_a)?;
        Ok(t)
    }

    /// A template from a density map `data` (z, y, x) of `shape` at `voxel_in` Å, resampled to
    /// `voxel_size` Å.
    #[allow(clippy::too_many_arguments)]
    pub fn from_map(
        name: &str,
        label: u32,
        data: &[f32],
        shape: [usize; 3],
        voxel_in: f64,
        voxel_size: f64,
        source: &str,
        opts: &MapOptions,
    ) -> Result<Template> {
        if !(voxel_in.is_finite() && voxel_in > 0.0) {
            bail!(
                "template {name}: {source} has no usable voxel size in its header ({voxel_in} Å)"
            );
        }
        if !(voxel_size.is_finite() && voxel_size > 0.0) {
            bail!("template {name}: voxel size must be > 0 Å, got {voxel_size}");
        }
        if data.iter().any(|v| !v.is_finite()) {
            bail!("template {name}: {source} contains NaN or infinite values");
        }
        // background: mean of the six outer faces
        let [nz, ny, nx] = shape;
        let (mut bs, mut bn) = (0.0f64, 0usize);
        for z in 0..nz {
            for y in 0..ny {
                for x in 0..nx {
                    if z == 0 || y == 0 || x == 0 || z + 1 == nz || y + 1 == ny || x + 1 == nx {
                        bs += data[(z * ny + y) * nx + x] as f64;
                        bn += 1;
                    }
                }
            }
        }
        let bg = (bs / bn.max(1) as f64) as f32;
        let sign = if opts.invert { -1.0 } else { 1.0 };
        let mut d: Vec<f32> = data.iter().map(|&v| sign * (v - bg)).collect();
        let peak = d.iter().cloned().fold(f32::MIN, f32::max);
        if peak <= 0.0 {
            bail!(
                "template {name}: {source} has no density above its background{}",
                if opts.invert {
                    ""
                } else {
                    " (is protein dark? set invert: true)"
                }
            );
        }
        let thr_d = match opts.threshold {
            Some(t) => sign * (t - bg),
            None => 0.1 * peak,
        };
        if thr_d >= peak {
            bail!("template {name}: threshold {:?} is above the map's peak ({}) : nothing would be masked", opts.threshold, peak * sign + bg);
        }
        let com = centre_of_mass(&d, shape).unwrap_or([
            (nz as f64 - 1.0) / 2.0,
            (ny as f64 - 1.0) / 2.0,
            (nx as f64 - 1.0) / 2.0,
        ]);
        let rel = (voxel_size / voxel_in - 1.0).abs();
        let (out, oshape) = if rel < 1e-3 {
            // whole-voxel shift into an odd box centred on the voxel nearest the COM
            let k = com.map(|c| c.round() as isize);
            let half: [usize; 3] = std::array::from_fn(|a| {
                let ka = k[a].clamp(0, shape[a] as isize - 1) as usize;
                ka.max(shape[a] - 1 - ka)
            });
            let os = half.map(|h| 2 * h + 1);
            let mut o = vec![0f32; os.iter().product()];
            for z in 0..nz {
                for y in 0..ny {
                    for x in 0..nx {
                        let tz = z as isize - k[0] + half[0] as isize;
                        let ty = y as isize - k[1] + half[1] as isize;
                        let tx = x as isize - k[2] + half[2] as isize;
                        o[((tz as usize) * os[1] + ty as usize) * os[2] + tx as usize] =
                            d[(z * ny + y) * nx + x];
                    }
                }
            }
            (o, os)
        } else {
            if voxel_size > voxel_in {
                let sigma_a = ((voxel_size * voxel_size - voxel_in * voxel_in) / 12.0).sqrt();
                gaussian_blur(&mut d, shape, sigma_a / voxel_in);
            }
            // support radius around the COM (Å)
            let tiny = 1e-4 * peak;
            let mut r: f64 = 0.0;
            for (i, &v) in d.iter().enumerate() {
                if v.abs() > tiny {
                    let p = [
                        (i / (ny * nx)) as f64,
                        ((i / nx) % ny) as f64,
                        (i % nx) as f64,
                    ];
                    let dd: f64 = (0..3).map(|a| (p[a] - com[a]).powi(2)).sum::<f64>().sqrt();
                    r = r.max(dd);
                }
            }
            let half = ((r * voxel_in + voxel_in) / voxel_size).ceil() as usize + 1;
            let n = 2 * half + 1;
            if n > 1024 {
                bail!("template {name}: resampling to {voxel_size} Å needs a {n}³ box; use a coarser voxel size");
            }
            let f = voxel_size / voxel_in;
            let mut o = vec![0f32; n * n * n];
            for z in 0..n {
                for y in 0..n {
                    for x in 0..n {
                        let sz = com[0] + (z as f64 - half as f64) * f;
                        let sy = com[1] + (y as f64 - half as f64) * f;
                        let sx = com[2] + (x as f64 - half as f64) * f;
                        o[(z * n + y) * n + x] = trilinear(&d, shape, sz, sy, sx);
                    }
                }
            }
            (o, [n, n, n])
        };
        // scale to volts
        let vox3 = voxel_size.powi(3);
        let mask_vox = out.iter().filter(|&&v| v > thr_d).count();
        if mask_vox == 0 {
            bail!("template {name}: the mask is empty at {voxel_size} Å (threshold too high, or the particle is smaller than a voxel)");
        }
        let mass_da = opts
            .mass_kda
            .map(|m| m * 1000.0)
            .unwrap_or(mask_vox as f64 * vox3 * PROTEIN_DA_PER_A3);
        let sum: f64 = out.iter().map(|&v| v as f64).sum::<f64>() * vox3;
        let scale = match opts.scale {
            Some(s) => s * sign as f64,
            None => {
                mass_da * scattering::protein_potential_per_dalton() / sum.max(f64::MIN_POSITIVE)
            }
        };
        let data: Vec<f32> = out.iter().map(|&v| (v as f64 * scale) as f32).collect();
        let mut t = Template {
            name: name.to_string(),
            label,
            voxel_size,
            shape: oshape,
            data,
            mask: Vec::new(),
            threshold: (thr_d as f64 * scale) as f32,
            radius_a: 0.0,
            support_radius_a: 0.0,
            com_offset_a: [0.0; 3],
            mass_da: opts.mass_kda.map(|m| m * 1000.0),
            source: source.to_string(),
        };
        t.finish(opts.radius_a)?;
        Ok(t)
    }

    /// Compute mask, radii and centre-of-mass offset from `data` and `threshold`.
    pub fn finish(&mut self, radius_a: Option<f64>) -> Result<()> {
        let [nz, ny, nx] = self.shape;
        if self.shape.iter().any(|&n| n % 2 == 0) {
            bail!(
                "template {}: box {:?} must have odd edges",
                self.name,
                self.shape
            );
        }
        let c = [(nz / 2) as f64, (ny / 2) as f64, (nx / 2) as f64];
        self.mask = self
            .data
            .iter()
            .map(|&v| u8::from(v > self.threshold))
            .collect();
        let peak = self.data.iter().cloned().fold(0f32, f32::max);
        let tiny = 1e-4 * peak;
        let (mut rm, mut rs) = (0f64, 0f64);
        let mut any = false;
        for (i, &v) in self.data.iter().enumerate() {
            let p = [
                (i / (ny * nx)) as f64,
                ((i / nx) % ny) as f64,
                (i % nx) as f64,
            ];
            let d = (0..3).map(|a| (p[a] - c[a]).powi(2)).sum::<f64>().sqrt();
            if self.mask[i] != 0 {
                rm = rm.max(d);
                any = true;
            }
            if v.abs() > tiny {
                rs = rs.max(d);
            }
        }
        if !any {
            bail!(
                "template {}: the mask is empty (threshold {} V is above the peak {} V)",
                self.name,
                self.threshold,
                peak
            );
        }
        let h = self.voxel_size;
        self.radius_a = radius_a.unwrap_or(rm * h + 0.5 * h);
        self.support_radius_a = rs * h + 0.87 * h;
        let com = centre_of_mass(&self.data, self.shape).unwrap_or(c);
        self.com_offset_a = std::array::from_fn(|a| (com[a] - c[a]) * h);
        Ok(())
    }

    /// Number of mask voxels.
    pub fn mask_voxels(&self) -> usize {
        self.mask.iter().filter(|&&m| m != 0).count()
    }

    /// `Σ data × voxel volume` (V·Å³).
    pub fn integral(&self) -> f64 {
        self.data.iter().map(|&v| v as f64).sum::<f64>() * self.voxel_size.powi(3)
    }
}

/// The value `t` such that `#{v > t}` ≈ `n_voxels` (the iso-level enclosing a volume).
pub fn volume_threshold(data: &[f32], n_voxels: f64) -> f32 {
    let mut v: Vec<f32> = data.iter().cloned().filter(|&x| x > 0.0).collect();
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| b.total_cmp(a));
    let k = (n_voxels.round() as usize).clamp(1, v.len()) - 1;
    // strictly-greater mask: take the next lower value as threshold
    if k + 1 < v.len() {
        v[k + 1]
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pdb::{Atom, AtomModel};
    use crate::scattering::peng;

    fn shared(p: &str) -> std::path::PathBuf {
        std::path::PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/data/templates"
        ))
        .join(p)
    }

    fn toy_model() -> AtomModel {
        let mut atoms = Vec::new();
        for (i, el) in ["C", "N", "O", "S", "P", "H", "Fe", "C", "C", "O"]
            .iter()
            .enumerate()
        {
            let t = i as f64;
            atoms.push(Atom {
                pos: [
                    10.0 + 3.0 * t.sin() * t,
                    -4.0 + 2.0 * t.cos() * t,
                    7.0 + 0.7 * t,
                ],
                element: peng(el).unwrap(),
                b_factor: 10.0 + 5.0 * t,
                occupancy: 1.0,
            });
        }
        AtomModel {
            atoms,
            source: "toy".into(),
        }
    }

    #[test]
    fn pdb_template_integral_equals_sum_of_atom_integrals() {
        // Analytic check: the template's integral equals the sum of the atoms' potential
        // integrals within 1% (in practice far better), at several voxel sizes.
        let m = toy_model();
        for h in [1.0, 3.0, 5.0, 10.0] {
            let t = Template::from_atoms("toy", 1, &m, h, &AtomOptions::default()).unwrap();
            let want = m.potential_integral();
            let got = t.integral();
            assert!((got / want - 1.0).abs() < 0.01, "h={h}: {got} vs {want}");
            assert!(
                t.com_offset_a.iter().all(|c| c.abs() < 0.5 * h),
                "{:?}",
                t.com_offset_a
            );
        }
    }

    #[test]
    fn real_pdb_template_integral_and_radius() {
        let p = shared("pdbs/1s3x.pdb.gz");
        if !p.exists() {
            eprintln!("skipping: {} missing", p.display());
            return;
        }
        let m = crate::pdb::read_model(&p).unwrap();
        let t = Template::from_atoms("hsp70", 1, &m, 6.0, &AtomOptions::default()).unwrap();
        let (got, want) = (t.integral(), m.potential_integral());
        assert!((got / want - 1.0).abs() < 0.01, "{got} vs {want}");
        // mask volume ≈ molecular volume
        let vol = t.mask_voxels() as f64 * 216.0;
        let mol = m.mass_da() / PROTEIN_DA_PER_A3;
        assert!((vol / mol - 1.0).abs() < 0.1, "{vol} vs {mol}");
        assert!(t.radius_a > 20.0 && t.radius_a < 80.0, "{}", t.radius_a);
    }

    #[test]
    fn map_template_same_voxel_size_is_only_shifted() {
        // an off-centre Gaussian blob in a 21³ box
        let n = 21;
        let mut d = vec![0f32; n * n * n];
        for z in 0..n {
            for y in 0..n {
                for x in 0..n {
                    let r2 = ((z as f64 - 12.0).powi(2)
                        + (y as f64 - 9.0).powi(2)
                        + (x as f64 - 8.3).powi(2))
                        / 4.0;
                    d[(z * n + y) * n + x] = (-r2).exp() as f32 * 5.0 + 1.0;
                }
            }
        }
        let t = Template::from_map(
            "blob",
            2,
            &d,
            [n; 3],
            10.0,
            10.0,
            "mem",
            &MapOptions {
                mass_kda: Some(100.0),
                ..Default::default()
            },
        )
        .unwrap();
        assert!(t.shape.iter().all(|s| s % 2 == 1));
        // COM within half a voxel of the centre; the residual is recorded
        assert!(
            t.com_offset_a.iter().all(|c| c.abs() <= 5.0 + 1e-6),
            "{:?}",
            t.com_offset_a
        );
        assert!(
            (t.com_offset_a[2] - 3.0).abs() < 0.5,
            "{:?}",
            t.com_offset_a
        );
        // scaled to the protein potential of 100 kDa
        let want = 100_000.0 * scattering::protein_potential_per_dalton();
        assert!((t.integral() / want - 1.0).abs() < 1e-3);
        // only shifted, not interpolated: the residual offset is exactly what the input had
        assert!(
            (t.com_offset_a[2] - 3.0).abs() < 0.05,
            "{:?}",
            t.com_offset_a
        );
    }

    #[test]
    fn map_template_resampling_keeps_integral_and_centre() {
        let p = shared("mrcs_5A/3j9i.mrc");
        if !p.exists() {
            eprintln!("skipping: {} missing", p.display());
            return;
        }
        let (h, d) = crate::mrc::read_mrc(&p).unwrap();
        let opts = MapOptions {
            mass_kda: Some(700.0),
            ..Default::default()
        };
        let t10 = Template::from_map("p20s", 1, &d, h.shape, h.voxel_size[2], 10.0, "3j9i", &opts)
            .unwrap();
        let want = 700_000.0 * scattering::protein_potential_per_dalton();
        assert!((t10.integral() / want - 1.0).abs() < 1e-3);
        assert!(
            t10.com_offset_a.iter().all(|c| c.abs() < 2.5),
            "{:?}",
            t10.com_offset_a
        );
        assert!(
            t10.radius_a > 60.0 && t10.radius_a < 130.0,
            "{}",
            t10.radius_a
        );
    }

    #[test]
    fn bad_maps_are_clear_errors() {
        let d = vec![1f32; 27];
        let e = Template::from_map(
            "flat",
            1,
            &d,
            [3; 3],
            10.0,
            10.0,
            "flat.mrc",
            &MapOptions::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("no density above its background"), "{e}");
        let e = Template::from_map(
            "x",
            1,
            &d,
            [3; 3],
            0.0,
            10.0,
            "bad.mrc",
            &MapOptions::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("voxel size"), "{e}");
    }

    #[test]
    fn trilinear_is_exact_on_grid_and_linear_between() {
        let d: Vec<f32> = (0..27).map(|i| i as f32).collect();
        assert_eq!(trilinear(&d, [3; 3], 1.0, 1.0, 1.0), 13.0);
        assert!((trilinear(&d, [3; 3], 1.0, 1.0, 1.5) - 13.5).abs() < 1e-6);
        assert_eq!(trilinear(&d, [3; 3], 5.0, 1.0, 1.0), 0.0);
    }
}
