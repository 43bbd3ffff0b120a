//! Phantom rasterisation: spheres, ellipsoids and boxes with anti-aliased edges.
//!
//! Coordinates are in Å relative to the volume centre: the centre of voxel `i` along an axis of
//! `n` voxels lies at `(i - (n-1)/2) * voxel_size`. A voxel's value is `background` plus, for
//! each object, `density × (fraction of the voxel inside the object)`. For ellipsoids the
//! fraction is exactly 0 or 1 when the voxel's bounding sphere lies wholly outside or inside
//! (in the ellipsoid's normalised coordinates) and is estimated by 4×4×4 supersampling only for
//! voxels that straddle the surface; for (axis-aligned) boxes it is computed exactly. A voxel
//! is labelled with an object's label when at least half of it lies inside (later objects win).

use anyhow::{bail, Result};
use schemars::JsonSchema;
use serde::Deserialize;

/// Shape of an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ObjectKind {
    /// A ball of radius `radius`.
    Sphere,
    /// An axis-aligned ellipsoid with semi-axes `radii`.
    Ellipsoid,
    /// An axis-aligned box with half-sizes `radii`.
    Box,
}

fn one() -> f32 {
    1.0
}
fn label_one() -> u16 {
    1
}

/// One object of a phantom.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ObjectSpec {
    /// Shape: `sphere`, `ellipsoid` or `box`.
    pub kind: ObjectKind,
    /// Centre [z, y, x] in Å relative to the volume centre.
    #[serde(default)]
    pub center: [f64; 3],
    /// Radius in Å (spheres).
    #[serde(default)]
    pub radius: Option<f64>,
    /// Semi-axes (ellipsoids) or half-sizes (boxes) [z, y, x] in Å.
    #[serde(default)]
    pub radii: Option<[f64; 3]>,
    /// Density added inside the object.
    #[serde(default = "one")]
    pub density: f32,
    /// Label written to the `labels` output where the object covers at least half a voxel (0 = none).
    #[serde(default = "label_one")]
    pub label: u16,
}

/// Randomly placed, non-overlapping spheres.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RandomSpheres {
    /// Number of spheres.
    #[schemars(range(min = 1, max = 100000))]
    pub count: usize,
    /// Smallest radius in Å.
    pub radius_min: f64,
    /// Largest radius in Å.
    pub radius_max: f64,
    /// Density added inside each sphere.
    #[serde(default = "one")]
    pub density: f32,
    /// Label of every sphere (0 = none).
    #[serde(default = "label_one")]
    pub label: u16,
}

/// A solid ready to rasterise.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Solid {
    /// `true` for a box, `false` for an ellipsoid (spheres are ellipsoids).
    pub is_box: bool,
    /// Centre (z, y, x) in Å relative to the volume centre.
    pub center: [f64; 3],
    /// Semi-axes or half-sizes (z, y, x) in Å.
    pub radii: [f64; 3],
    /// Density added inside.
    pub density: f32,
    /// Label (0 = none).
    pub label: u16,
}

impl Solid {
    /// Convert a user object, checking its fields (`what` names it in errors).
    pub fn from_spec(o: &ObjectSpec, what: &str) -> Result<Solid> {
        let radii = match (o.kind, o.radius, o.radii) {
            (ObjectKind::Sphere, Some(r), None) => [r; 3],
            (ObjectKind::Sphere, _, _) => {
                bail!("{what}: a sphere needs `radius` (Å) and no `radii`")
            }
            (_, None, Some(r)) => r,
            (k, _, _) => bail!("{what}: a {k:?} needs `radii` [z, y, x] (Å) and no `radius`"),
        };
        if radii.iter().any(|r| !r.is_finite() || *r <= 0.0) {
            bail!("{what}: radii must be positive, got {radii:?}");
        }
        if o.center.iter().any(|c| !c.is_finite()) {
            bail!("{what}: center must be finite, got {:?}", o.center);
        }
        Ok(Solid {
            is_box: o.kind == ObjectKind::Box,
            center: o.center,
            radii,
            density: o.density,
            label: o.label,
        })
    }

    /// Fraction of the cubic voxel of edge `vs` centred at `p` (Å, volume-centred) inside.
    pub fn fraction(&self, p: [f64; 3], vs: f64) -> f64 {
        let d = [
            p[0] - self.center[0],
            p[1] - self.center[1],
            p[2] - self.center[2],
        ];
        if self.is_box {
            let mut f = 1.0;
            for (da, ra) in d.iter().zip(self.radii) {
                let lo = (da - vs / 2.0).max(-ra);
                let hi = (da + vs / 2.0).min(ra);
                f *= ((hi - lo) / vs).max(0.0);
            }
            return f;
        }
        let q2: f64 = (0..3).map(|a| (d[a] / self.radii[a]).powi(2)).sum();
        let q = q2.sqrt();
        let h = 0.5 * vs * (0..3).map(|a| self.radii[a].powi(-2)).sum::<f64>().sqrt();
        if q + h <= 1.0 {
            return 1.0;
        }
        if q - h >= 1.0 {
            return 0.0;
        }
        let mut inside = 0u32;
        for i in 0..4 {
            let oz = d[0] + ((i as f64 + 0.5) / 4.0 - 0.5) * vs;
            for j in 0..4 {
                let oy = d[1] + ((j as f64 + 0.5) / 4.0 - 0.5) * vs;
                for k in 0..4 {
                    let ox = d[2] + ((k as f64 + 0.5) / 4.0 - 0.5) * vs;
                    let s = (oz / self.radii[0]).powi(2)
                        + (oy / self.radii[1]).powi(2)
                        + (ox / self.radii[2]).powi(2);
                    if s <= 1.0 {
                        inside += 1;
                    }
                }
            }
        }
        inside as f64 / 64.0
    }
}

/// Position (Å, relative to the volume centre) of the centre of voxel `i` of `n`.
#[inline]
pub fn voxel_center(i: usize, n: usize, vs: f64) -> f64 {
    (i as f64 - (n as f64 - 1.0) / 2.0) * vs
}

/// Index range `[lo, hi)` of the voxels whose cells may touch `[c - r, c + r]`.
fn index_range(c: f64, r: f64, n: usize, vs: f64) -> (usize, usize) {
    let mid = (n as f64 - 1.0) / 2.0;
    let lo = ((c - r) / vs + mid - 0.5).floor().max(0.0);
    let hi = ((c + r) / vs + mid + 1.5).ceil().min(n as f64);
    if hi <= lo {
        (0, 0)
    } else {
        (lo as usize, hi as usize)
    }
}

/// A phantom: geometry plus solids.
#[derive(Debug, Clone, PartialEq)]
pub struct PhantomSpec {
    /// Shape (z, y, x).
    pub shape: [usize; 3],
    /// Isotropic voxel size in Å.
    pub voxel_size: f64,
    /// Background density.
    pub background: f32,
    /// Objects, rasterised in order.
    pub solids: Vec<Solid>,
}

impl PhantomSpec {
    /// Rasterise plane `z` into `density` and `labels` (each NY*NX, overwritten).
    pub fn plane(&self, z: usize, density: &mut [f32], labels: &mut [u16]) {
        let [nz, ny, nx] = self.shape;
        let vs = self.voxel_size;
        density.fill(self.background);
        labels.fill(0);
        let pz = voxel_center(z, nz, vs);
        for s in &self.solids {
            let (z0, z1) = index_range(s.center[0], s.radii[0], nz, vs);
            if z < z0 || z >= z1 {
                continue;
            }
            let (y0, y1) = index_range(s.center[1], s.radii[1], ny, vs);
            let (x0, x1) = index_range(s.center[2], s.radii[2], nx, vs);
            for y in y0..y1 {
                let py = voxel_center(y, ny, vs);
                for x in x0..x1 {
                    let f = s.fraction([pz, py, voxel_center(x, nx, vs)], vs);
                    if f > 0.0 {
                        let i = y * nx + x;
                        density[i] += (s.density as f64 * f) as f32;
                        if f >= 0.5 && s.label != 0 {
                            labels[i] = s.label;
                        }
                    }
                }
            }
        }
    }

    /// Rasterise the whole volume (for tests and small phantoms).
    pub fn render(&self) -> (Vec<f32>, Vec<u16>) {
        let plane = self.shape[1] * self.shape[2];
        let mut d = vec![0f32; plane * self.shape[0]];
        let mut l = vec![0u16; plane * self.shape[0]];
        for z in 0..self.shape[0] {
            self.plane(
                z,
                &mut d[z * plane..(z + 1) * plane],
                &mut l[z * plane..(z + 1) * plane],
            );
        }
        (d, l)
    }
}

/// SplitMix64: a tiny, deterministic, well-mixed PRNG.
#[derive(Debug, Clone)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
    /// Uniform in `[a, b)`.
    pub fn uniform(&mut self, a: f64, b: f64) -> f64 {
        a + (b - a) * self.next_f64()
    }
}

/// Place `spec.count` non-overlapping spheres fully inside a volume of `shape` voxels of `vs` Å,
/// deterministically for `seed` (rejection sampling; an error if they do not fit).
pub fn place_random_spheres(
    spec: &RandomSpheres,
    shape: [usize; 3],
    vs: f64,
    seed: u64,
) -> Result<Vec<Solid>> {
    let (rmin, rmax) = (spec.radius_min, spec.radius_max);
    if !(rmin.is_finite() && rmax.is_finite() && rmin > 0.0 && rmin <= rmax) {
        bail!("random_spheres: need 0 < radius_min <= radius_max (Å), got {rmin} and {rmax}");
    }
    let half: Vec<f64> = shape.iter().map(|&n| n as f64 * vs / 2.0).collect();
    if half.iter().any(|&h| h < rmax) {
        bail!(
            "random_spheres: radius_max {rmax} Å does not fit in the volume ({} x {} x {} Å); lower radius_max or enlarge `shape`",
            2.0 * half[0],
            2.0 * half[1],
            2.0 * half[2]
        );
    }
    let mut rng = SplitMix64(seed ^ 0x5EED_5EED_5EED);
    let mut out: Vec<Solid> = Vec::with_capacity(spec.count);
    let max_attempts = 1000 * spec.count as u64 + 10_000;
    let mut attempts = 0u64;
    while out.len() < spec.count {
        if attempts >= max_attempts {
            bail!(
                "random_spheres: could place only {} of {} non-overlapping spheres (radius {rmin}..{rmax} Å) in {} x {} x {} Å \
                 after {attempts} attempts; lower `count` or `radius_max`, or enlarge `shape`",
                out.len(),
                spec.count,
                2.0 * half[0],
                2.0 * half[1],
                2.0 * half[2]
            );
        }
        attempts += 1;
        let r = if rmax > rmin {
            rng.uniform(rmin, rmax)
        } else {
            rmin
        };
        let c = [
            rng.uniform(-half[0] + r, half[0] - r),
            rng.uniform(-half[1] + r, half[1] - r),
            rng.uniform(-half[2] + r, half[2] - r),
        ];
        let free = out.iter().all(|s| {
            let d2: f64 = (0..3).map(|a| (s.center[a] - c[a]).powi(2)).sum();
            d2 >= (s.radii[0] + r).powi(2)
        });
        if free {
            out.push(Solid {
                is_box: false,
                center: c,
                radii: [r; 3],
                density: spec.density,
                label: spec.label,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(shape: [usize; 3], solids: Vec<Solid>) -> PhantomSpec {
        PhantomSpec {
            shape,
            voxel_size: 10.0,
            background: 0.0,
            solids,
        }
    }

    #[test]
    fn sphere_volume_within_one_percent() {
        // r = 8 voxels, off-grid centre.
        let s = Solid {
            is_box: false,
            center: [3.0, -7.0, 1.5],
            radii: [80.0; 3],
            density: 2.0,
            label: 3,
        };
        let (d, l) = spec([24, 24, 24], vec![s]).render();
        let sum: f64 = d.iter().map(|&v| v as f64).sum();
        let expect = 4.0 / 3.0 * std::f64::consts::PI * 8f64.powi(3) * 2.0;
        assert!((sum / expect - 1.0).abs() < 0.01, "{sum} vs {expect}");
        let labelled = l.iter().filter(|&&v| v == 3).count() as f64;
        assert!((labelled / (expect / 2.0) - 1.0).abs() < 0.03);
        assert!(l.iter().all(|&v| v == 0 || v == 3));
        assert!(d.iter().all(|&v| (0.0..=2.0).contains(&v)));
    }

    #[test]
    fn ellipsoid_and_box_volumes() {
        let e = Solid {
            is_box: false,
            center: [0.0; 3],
            radii: [60.0, 90.0, 120.0],
            density: 1.0,
            label: 1,
        };
        let (d, _) = spec([20, 26, 32], vec![e]).render();
        let sum: f64 = d.iter().map(|&v| v as f64).sum();
        let expect = 4.0 / 3.0 * std::f64::consts::PI * 6.0 * 9.0 * 12.0;
        assert!((sum / expect - 1.0).abs() < 0.01, "{sum} vs {expect}");
        let b = Solid {
            is_box: true,
            center: [2.5, 0.0, -3.0],
            radii: [33.0, 41.0, 27.0],
            density: 1.0,
            label: 1,
        };
        let (d, _) = spec([20, 20, 20], vec![b]).render();
        let sum: f64 = d.iter().map(|&v| v as f64).sum();
        assert!((sum - 6.6 * 8.2 * 5.4).abs() < 1e-3, "{sum}");
    }

    #[test]
    fn voxel_centres_are_symmetric() {
        assert_eq!(voxel_center(0, 3, 10.0), -10.0);
        assert_eq!(voxel_center(1, 3, 10.0), 0.0);
        assert_eq!(voxel_center(0, 4, 10.0), -15.0);
        // A centred sphere in an even box is mirror-symmetric.
        let s = Solid {
            is_box: false,
            center: [0.0; 3],
            radii: [33.0; 3],
            density: 1.0,
            label: 1,
        };
        let (d, _) = spec([8, 8, 8], vec![s]).render();
        for z in 0..8 {
            for y in 0..8 {
                for x in 0..8 {
                    assert_eq!(d[(z * 8 + y) * 8 + x], d[((7 - z) * 8 + y) * 8 + (7 - x)]);
                }
            }
        }
    }

    #[test]
    fn random_spheres_fit_do_not_overlap_and_are_deterministic() {
        let rs = RandomSpheres {
            count: 20,
            radius_min: 20.0,
            radius_max: 40.0,
            density: 1.0,
            label: 2,
        };
        let a = place_random_spheres(&rs, [32, 40, 48], 10.0, 7).unwrap();
        let b = place_random_spheres(&rs, [32, 40, 48], 10.0, 7).unwrap();
        let c = place_random_spheres(&rs, [32, 40, 48], 10.0, 8).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.len(), 20);
        let half = [160.0, 200.0, 240.0];
        for (i, s) in a.iter().enumerate() {
            let r = s.radii[0];
            assert!((20.0..=40.0).contains(&r));
            for (c, h) in s.center.iter().zip(half) {
                assert!(c.abs() + r <= h + 1e-9);
            }
            for t in &a[i + 1..] {
                let d = (0..3)
                    .map(|ax| (s.center[ax] - t.center[ax]).powi(2))
                    .sum::<f64>()
                    .sqrt();
                assert!(d >= r + t.radii[0]);
            }
        }
        let too_many = RandomSpheres { count: 500, ..rs };
        let e = place_random_spheres(&too_many, [32, 40, 48], 10.0, 7)
            .unwrap_err()
            .to_string();
        assert!(e.contains("could place only"), "{e}");
        let too_big = RandomSpheres {
            radius_max: 200.0,
            ..rs
        };
        assert!(place_random_spheres(&too_big, [32, 40, 48], 10.0, 7).is_err());
    }

    #[test]
    fn object_specs_are_checked() {
        let o: ObjectSpec =
            serde_json::from_value(serde_json::json!({"kind": "sphere", "radius": 5.0})).unwrap();
        assert_eq!(Solid::from_spec(&o, "objects[0]").unwrap().radii, [5.0; 3]);
        let o: ObjectSpec =
            serde_json::from_value(serde_json::json!({"kind": "box", "radius": 5.0})).unwrap();
        assert!(Solid::from_spec(&o, "objects[1]")
            .unwrap_err()
            .to_string()
            .contains("objects[1]"));
        assert!(serde_json::from_value::<ObjectSpec>(serde_json::json!({"kind": "cone"})).is_err());
    }
}
