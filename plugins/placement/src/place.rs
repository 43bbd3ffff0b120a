//! The packing algorithm and the rasterisation of the sample, independent of the plugin host.
//!
//! Geometry: the box is `shape` (z, y, x) voxels of `voxel_size` Å with voxel (0,0,0) centred at
//! the origin (0 Å). A particle is a template rotated by `R` about its centre and placed with its
//! centre at `p + δ` (voxel coordinates, `p` integer, `δ` ∈ [-½, ½)³). Voxel `v` belongs to the
//! particle's occupancy mask iff the trilinear interpolation of the template at
//! `c_t + Rᵀ (v − p − δ)` exceeds the template's threshold: the same function decides overlap
//! during packing and writes the label maps, so the ground truth is exact.
//!
//! Packing is random sequential addition: orientations uniform on SO(3), positions uniform in
//! the ice slab; a candidate is accepted iff none of its mask voxels is already occupied (a
//! bounding-sphere test first skips the voxel test when no neighbour is close). In clustered
//! mode particles grow as self-avoiding chains (PolNet-like): each next particle sits at contact
//! distance from the previous one, in a direction bent by at most `max_bend` degrees.

use crate::sample::{membrane_profile, MembraneParams};
use anyhow::{bail, Result};
use std::sync::Mutex;
use tomoflow_cryo::rng::Rng;
use tomoflow_cryo::rotation::{apply, relion_angles, transpose, Mat3, Quat};
use tomoflow_cryo::template::{trilinear, Template};

/// Data-parallel loop: `par(n, f)` calls `f(i)` for every `i` in `0..n`, on any threads.
pub type Par<'a> = &'a dyn Fn(usize, &(dyn Fn(usize) + Sync));

/// Serial [`Par`], for tests and tools.
pub fn serial(n: usize, f: &(dyn Fn(usize) + Sync)) {
    (0..n).for_each(f)
}

/// Packing mode.
#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    /// Independent uniform positions.
    Uniform,
    /// Self-avoiding chains.
    Clustered {
        /// Particles per chain (at most).
        chain_length: usize,
        /// Largest bend between consecutive steps (degrees).
        max_bend_deg: f64,
        /// Gap between the bounding spheres of neighbours (Å).
        gap_a: f64,
    },
}

/// Vesicle distractors.
#[derive(Debug, Clone, PartialEq)]
pub struct VesicleSpec {
    /// Number of vesicles.
    pub count: usize,
    /// Smallest outer radius (Å).
    pub radius_min_a: f64,
    /// Largest outer radius (Å).
    pub radius_max_a: f64,
    /// Largest relative deviation of the semi-axes from the mean radius (0 = spheres).
    pub ellipticity: f64,
    /// Bilayer profile.
    pub membrane: MembraneParams,
    /// Label id of membranes in the class label map.
    pub label: u32,
}

/// Everything the packing needs.
#[derive(Debug, Clone)]
pub struct PlaceConfig {
    /// Box shape (z, y, x) voxels.
    pub shape: [usize; 3],
    /// Voxel size (Å).
    pub voxel_size: f64,
    /// Ice slab thickness (Å), centred in z; `None`: the whole box height.
    pub ice_thickness_a: Option<f64>,
    /// Requested particles per template (same order as the templates).
    pub counts: Vec<usize>,
    /// Packing mode.
    pub mode: Mode,
    /// Vesicles.
    pub vesicles: Option<VesicleSpec>,
    /// Seed of every random draw.
    pub seed: u64,
    /// Attempts (candidate positions) per particle before giving up.
    pub max_attempts: usize,
    /// Report instead of failing when a count cannot be reached.
    pub allow_fewer: bool,
}

/// A placed particle.
#[derive(Debug, Clone, PartialEq)]
pub struct Placed {
    /// Index of its template.
    pub class: usize,
    /// Rotation (template → tomogram), (x, y, z) order.
    pub rot: Mat3,
    /// The same as a quaternion.
    pub q: Quat,
    /// Integer voxel (z, y, x) of its centre.
    pub p: [i64; 3],
    /// Sub-voxel shift (z, y, x).
    pub delta: [f64; 3],
    /// Mask voxels (the exact count in the label maps).
    pub mask_voxels: usize,
}

/// A placed vesicle.
#[derive(Debug, Clone, PartialEq)]
pub struct Vesicle {
    /// Centre (z, y, x) in voxels.
    pub centre: [f64; 3],
    /// Outer semi-axes (z, y, x) in Å.
    pub radii_a: [f64; 3],
}

/// Per-class outcome.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ClassReport {
    /// Class name.
    pub name: String,
    /// Requested count.
    pub requested: usize,
    /// Placed count.
    pub placed: usize,
}

/// The result of packing.
#[derive(Debug, Clone)]
pub struct Packing {
    /// Particles in placement order (instance id = index + 1).
    pub particles: Vec<Placed>,
    /// Vesicles (instance ids follow the particles').
    pub vesicles: Vec<Vesicle>,
    /// Per class requested/placed.
    pub report: Vec<ClassReport>,
    /// Fraction of the ice slab volume covered by particle masks and vesicles.
    pub occupancy: f64,
    /// Candidate positions tried.
    pub attempts: u64,
    /// Ice slab voxel range in z, `[lo, hi]` inclusive.
    pub slab: [i64; 2],
}

/// A template prepared for fast rotated sampling.
pub struct Prepared<'a> {
    /// The template.
    pub t: &'a Template,
    centre: [f64; 3],
    /// Radius (voxels) containing the mask, from the template centre.
    pub mask_r: f64,
    /// Radius (voxels) containing the non-negligible potential.
    pub support_r: f64,
    /// Smallest half-extent of the mask over the three axes (voxels).
    pub min_half_extent: f64,
}

impl<'a> Prepared<'a> {
    /// Prepare a template (voxel sizes must already match).
    pub fn new(t: &'a Template) -> Prepared<'a> {
        let [nz, ny, nx] = t.shape;
        let centre = [(nz / 2) as f64, (ny / 2) as f64, (nx / 2) as f64];
        let mut r: f64 = 0.0;
        let mut ext = [0f64; 3];
        for (i, &m) in t.mask.iter().enumerate() {
            if m != 0 {
                let p = [
                    (i / (ny * nx)) as f64,
                    ((i / nx) % ny) as f64,
                    (i % nx) as f64,
                ];
                let d: f64 = (0..3)
                    .map(|a| (p[a] - centre[a]).powi(2))
                    .sum::<f64>()
                    .sqrt();
                r = r.max(d);
                for a in 0..3 {
                    ext[a] = ext[a].max((p[a] - centre[a]).abs());
                }
            }
        }
        Prepared {
            t,
            centre,
            mask_r: r + 1.0,
            support_r: (t.support_radius_a / t.voxel_size).max(r + 1.0) + 1.0,
            min_half_extent: ext.iter().cloned().fold(f64::MAX, f64::min) + 0.5,
        }
    }

    /// Template value at tomogram offset `o` (z, y, x) from `p`, for rotation transpose `rt`.
    #[inline]
    pub fn sample(&self, rt: &Mat3, delta: &[f64; 3], o: [i64; 3]) -> f32 {
        let d = [
            o[2] as f64 - delta[2],
            o[1] as f64 - delta[1],
            o[0] as f64 - delta[0],
        ];
        let u = apply(rt, d);
        trilinear(
            &self.t.data,
            self.t.shape,
            self.centre[0] + u[2],
            self.centre[1] + u[1],
            self.centre[2] + u[0],
        )
    }

    /// Mask offsets (z, y, x) of the rotated template and their bounding box.
    pub fn stencil(&self, rot: &Mat3, delta: &[f64; 3]) -> Stencil {
        let rt = transpose(rot);
        let n = self.mask_r.ceil() as i64 + 1;
        let r2 = (self.mask_r + 1.0).powi(2);
        let thr = self.t.threshold;
        let mut offsets = Vec::new();
        let mut lo = [i64::MAX; 3];
        let mut hi = [i64::MIN; 3];
        for z in -n..=n {
            for y in -n..=n {
                for x in -n..=n {
                    let d2 = (z as f64 - delta[0]).powi(2)
                        + (y as f64 - delta[1]).powi(2)
                        + (x as f64 - delta[2]).powi(2);
                    if d2 > r2 {
                        continue;
                    }
                    if self.sample(&rt, delta, [z, y, x]) > thr {
                        offsets.push([z as i32, y as i32, x as i32]);
                        for (a, v) in [z, y, x].into_iter().enumerate() {
                            lo[a] = lo[a].min(v);
                            hi[a] = hi[a].max(v);
                        }
                    }
                }
            }
        }
        Stencil { offsets, lo, hi }
    }
}

/// The mask voxels of one rotated template.
#[derive(Debug, Clone)]
pub struct Stencil {
    /// Offsets (z, y, x) from the centre voxel.
    pub offsets: Vec<[i32; 3]>,
    /// Smallest offset per axis.
    pub lo: [i64; 3],
    /// Largest offset per axis.
    pub hi: [i64; 3],
}

/// Voxel range `[lo, hi]` (inclusive) of the ice slab in z.
pub fn slab_range(shape: [usize; 3], voxel_size: f64, thickness: Option<f64>) -> [i64; 2] {
    let nz = shape[0] as i64;
    match thickness {
        None => [0, nz - 1],
        Some(t) => {
            let zc = (nz as f64 - 1.0) / 2.0;
            let half = t / 2.0 / voxel_size;
            [
                ((zc - half).ceil() as i64).max(0),
                ((zc + half).floor() as i64).min(nz - 1),
            ]
        }
    }
}

struct Occupancy {
    shape: [usize; 3],
    bits: Vec<u8>,
}

impl Occupancy {
    #[inline]
    fn idx(&self, z: i64, y: i64, x: i64) -> usize {
        ((z as usize) * self.shape[1] + y as usize) * self.shape[2] + x as usize
    }
    fn free(&self, p: [i64; 3], s: &Stencil) -> bool {
        s.offsets.iter().all(|o| {
            self.bits[self.idx(p[0] + o[0] as i64, p[1] + o[1] as i64, p[2] + o[2] as i64)] == 0
        })
    }
    fn mark(&mut self, p: [i64; 3], s: &Stencil) {
        for o in &s.offsets {
            let i = self.idx(p[0] + o[0] as i64, p[1] + o[1] as i64, p[2] + o[2] as i64);
            self.bits[i] = 1;
        }
    }
}

/// Bounding spheres of placed objects in a uniform hash grid.
struct Spheres {
    cell: f64,
    dims: [usize; 3],
    cells: Vec<Vec<u32>>,
    items: Vec<([f64; 3], f64)>,
    big: Vec<u32>,
}

impl Spheres {
    fn new(shape: [usize; 3], cell: f64) -> Spheres {
        let dims = shape.map(|n| (n as f64 / cell).ceil() as usize + 1);
        Spheres {
            cell,
            dims,
            cells: vec![Vec::new(); dims.iter().product()],
            items: Vec::new(),
            big: Vec::new(),
        }
    }
    fn cell_of(&self, c: [f64; 3]) -> [usize; 3] {
        std::array::from_fn(|a| {
            ((c[a] / self.cell).floor().max(0.0) as usize).min(self.dims[a] - 1)
        })
    }
    fn add(&mut self, c: [f64; 3], r: f64) {
        let id = self.items.len() as u32;
        self.items.push((c, r));
        if r > self.cell / 2.0 {
            self.big.push(id);
            return;
        }
        let k = self.cell_of(c);
        let i = (k[0] * self.dims[1] + k[1]) * self.dims[2] + k[2];
        self.cells[i].push(id);
    }
    /// True if a sphere (c, r) may touch a placed one.
    fn near(&self, c: [f64; 3], r: f64) -> bool {
        let hit = |id: &u32| {
            let (cj, rj) = self.items[*id as usize];
            let d2: f64 = (0..3).map(|a| (c[a] - cj[a]).powi(2)).sum();
            d2 < (r + rj + 2.0).powi(2)
        };
        if self.big.iter().any(hit) {
            return true;
        }
        let reach = ((r + self.cell / 2.0) / self.cell).ceil() as i64 + 1;
        let k = self.cell_of(c);
        for dz in -reach..=reach {
            for dy in -reach..=reach {
                for dx in -reach..=reach {
                    let q = [k[0] as i64 + dz, k[1] as i64 + dy, k[2] as i64 + dx];
                    if (0..3).any(|a| q[a] < 0 || q[a] >= self.dims[a] as i64) {
                        continue;
                    }
                    let i = ((q[0] as usize) * self.dims[1] + q[1] as usize) * self.dims[2]
                        + q[2] as usize;
                    if self.cells[i].iter().any(hit) {
                        return true;
                    }
                }
            }
        }
        false
    }
}

/// Check what can be checked before packing: templates that cannot fit, occupancy above 100%.
pub fn precheck(cfg: &PlaceConfig, prepared: &[Prepared]) -> Result<()> {
    let h = cfg.voxel_size;
    let slab = slab_range(cfg.shape, h, cfg.ice_thickness_a);
    if slab[1] < slab[0] {
        bail!(
            "the ice slab of {:?} Å holds no voxel plane at {h} Å",
            cfg.ice_thickness_a
        );
    }
    let avail = [
        (slab[1] - slab[0] + 1) as f64,
        cfg.shape[1] as f64,
        cfg.shape[2] as f64,
    ];
    let slab_vox = avail.iter().product::<f64>();
    let mut need = 0.0;
    for (p, &n) in prepared.iter().zip(&cfg.counts) {
        if n == 0 {
            continue;
        }
        let d = 2.0 * p.min_half_extent;
        let min_avail = avail.iter().cloned().fold(f64::MAX, f64::min);
        if d > min_avail {
            bail!(
                "template {} (at least {:.0} Å across in every direction) does not fit in the sample: the box is {:?} voxels \
                 (z, y, x) at {h} Å and the ice slab is {:.0} Å thick; enlarge the box, thicken the ice or remove the class",
                p.t.name,
                d * h,
                cfg.shape,
                avail[0] * h
            );
        }
        need += n as f64 * p.t.mask_voxels() as f64;
    }
    if let Some(v) = &cfg.vesicles {
        let r = (v.radius_min_a + v.radius_max_a) / 2.0 / h;
        need += v.count as f64 * 4.0 / 3.0 * std::f64::consts::PI * r.powi(3);
        if 2.0 * v.radius_min_a / h > avail.iter().cloned().fold(f64::MAX, f64::min) {
            bail!(
                "vesicles of radius {} Å do not fit in the ice slab/box",
                v.radius_min_a
            );
        }
    }
    if need > slab_vox {
        bail!(
            "the requested particles would fill {:.0}% of the ice volume ({:.3e} of {:.3e} voxels): that cannot fit; \
             random packing of particles jams near 30–40%; lower the counts/occupancy or enlarge the sample",
            100.0 * need / slab_vox,
            need,
            slab_vox
        );
    }
    Ok(())
}

/// Pack particles (and vesicles) as configured. Deterministic for a seed.
pub fn pack(cfg: &PlaceConfig, prepared: &[Prepared]) -> Result<Packing> {
    precheck(cfg, prepared)?;
    let [nz, ny, nx] = cfg.shape;
    let h = cfg.voxel_size;
    let slab = slab_range(cfg.shape, h, cfg.ice_thickness_a);
    let mut occ = Occupancy {
        shape: cfg.shape,
        bits: vec![0u8; nz * ny * nx],
    };
    let rmax = prepared.iter().map(|p| p.mask_r).fold(1.0, f64::max);
    let mut spheres = Spheres::new(cfg.shape, 2.0 * rmax);
    let mut rng = Rng::derive(cfg.seed, 0x0070_6c61_6365);
    let mut attempts: u64 = 0;
    let mut vesicles = Vec::new();
    let mut covered = 0usize;

    // 1. vesicles
    if let Some(v) = &cfg.vesicles {
        for k in 0..v.count {
            let mut done = false;
            for _ in 0..cfg.max_attempts.max(1) {
                attempts += 1;
                let r = rng.range(v.radius_min_a, v.radius_max_a);
                let radii: [f64; 3] =
                    std::array::from_fn(|_| r * (1.0 + v.ellipticity * rng.range(-1.0, 1.0)));
                let rv = radii.map(|x| x / h);
                let rm = rv.iter().cloned().fold(0.0, f64::max);
                let lo = [slab[0] as f64 + rv[0], rv[1], rv[2]];
                let hi = [
                    slab[1] as f64 - rv[0],
                    ny as f64 - 1.0 - rv[1],
                    nx as f64 - 1.0 - rv[2],
                ];
                if (0..3).any(|a| hi[a] < lo[a]) {
                    continue;
                }
                let c: [f64; 3] = std::array::from_fn(|a| rng.range(lo[a], hi[a]));
                if spheres.near(c, rm) {
                    continue;
                }
                // the whole ball is excluded for particles (lumen included)
                let st = ball_stencil(c, rv);
                let p = [0, 0, 0];
                if !occ.free(p, &st) {
                    continue;
                }
                occ.mark(p, &st);
                covered += st.offsets.len();
                spheres.add(c, rm);
                vesicles.push(Vesicle {
                    centre: c,
                    radii_a: radii,
                });
                done = true;
                break;
            }
            if !done {
                if cfg.allow_fewer {
                    break;
                }
                bail!(
                    "placed {k} of {} vesicles: no free room after {} attempts; lower vesicles.count or their radii, or set allow_fewer: true",
                    v.count, cfg.max_attempts
                );
            }
        }
    }

    // 2. particles, largest classes first
    let mut order: Vec<usize> = (0..prepared.len()).collect();
    order.sort_by(|&a, &b| {
        prepared[b]
            .t
            .mask_voxels()
            .cmp(&prepared[a].t.mask_voxels())
            .then(a.cmp(&b))
    });
    let mut particles: Vec<Placed> = Vec::new();
    let mut report: Vec<ClassReport> = prepared
        .iter()
        .zip(&cfg.counts)
        .map(|(p, &n)| ClassReport {
            name: p.t.name.clone(),
            requested: n,
            placed: 0,
        })
        .collect();
    const POSITIONS_PER_ROTATION: usize = 8;
    for &ci in &order {
        let pr = &prepared[ci];
        let want = cfg.counts[ci];
        let mut chain: Option<([f64; 3], [f64; 3], f64, usize)> = None; // (centre, direction, radius, length)
        while report[ci].placed < want {
            let mut placed = false;
            let mut tries = 0usize;
            while tries < cfg.max_attempts && !placed {
                let q = Quat::random(&mut rng);
                let rot = q.to_matrix();
                // chain continuation: a target centre at contact distance from the previous one
                let target = match (&cfg.mode, &chain) {
                    (
                        Mode::Clustered {
                            max_bend_deg,
                            gap_a,
                            ..
                        },
                        Some((c0, dir, r0, _)),
                    ) => {
                        let nd = bend(dir, *max_bend_deg, &mut rng);
                        let dist = r0 + pr.mask_r + gap_a / h;
                        Some((
                            [
                                c0[0] + nd[0] * dist,
                                c0[1] + nd[1] * dist,
                                c0[2] + nd[2] * dist,
                            ],
                            nd,
                        ))
                    }
                    _ => None,
                };
                let delta: [f64; 3] = match &target {
                    Some((c, _)) => c.map(|v| v - v.round()),
                    None => std::array::from_fn(|_| rng.range(-0.5, 0.5)),
                };
                let st = pr.stencil(&rot, &delta);
                if st.offsets.is_empty() {
                    tries += 1;
                    continue;
                }
                let lo = [slab[0] - st.lo[0], -st.lo[1], -st.lo[2]];
                let hi = [
                    slab[1] - st.hi[0],
                    ny as i64 - 1 - st.hi[1],
                    nx as i64 - 1 - st.hi[2],
                ];
                let positions = if target.is_some() {
                    1
                } else {
                    POSITIONS_PER_ROTATION
                };
                for _ in 0..positions {
                    tries += 1;
                    attempts += 1;
                    let p: [i64; 3] = match &target {
                        Some((c, _)) => c.map(|v| v.round() as i64),
                        None => {
                            if (0..3).any(|a| hi[a] < lo[a]) {
                                break;
                            }
                            std::array::from_fn(|a| {
                                lo[a] + rng.below((hi[a] - lo[a] + 1) as u64) as i64
                            })
                        }
                    };
                    if (0..3).any(|a| p[a] < lo[a] || p[a] > hi[a]) {
                        break;
                    }
                    let c = [
                        p[0] as f64 + delta[0],
                        p[1] as f64 + delta[1],
                        p[2] as f64 + delta[2],
                    ];
                    if spheres.near(c, pr.mask_r) && !occ.free(p, &st) {
                        continue;
                    }
                    occ.mark(p, &st);
                    covered += st.offsets.len();
                    spheres.add(c, pr.mask_r);
                    particles.push(Placed {
                        class: ci,
                        rot,
                        q,
                        p,
                        delta,
                        mask_voxels: st.offsets.len(),
                    });
                    report[ci].placed += 1;
                    placed = true;
                    if let Mode::Clustered { chain_length, .. } = &cfg.mode {
                        let len = chain.as_ref().map_or(0, |c| c.3) + 1;
                        let dir = match &target {
                            Some((_, d)) => *d,
                            None => random_unit(&mut rng),
                        };
                        chain = (len < *chain_length).then_some((c, dir, pr.mask_r, len));
                    }
                    break;
                }
                // a chain that cannot grow here restarts elsewhere
                if !placed && chain.is_some() && tries >= cfg.max_attempts / 4 {
                    chain = None;
                }
            }
            if !placed {
                if cfg.allow_fewer {
                    break;
                }
                let slab_vox = ((slab[1] - slab[0] + 1) as usize * ny * nx) as f64;
                bail!(
                    "placed only {} of {} {} particles (class {}) after {} attempts for the next one; the ice slab is {:.1}% \
                     occupied ({} particles and {} vesicles so far). Lower the count or occupancy, enlarge the box, \
                     thicken the ice, raise max_attempts, or set allow_fewer: true to accept fewer (reported in the particle table)",
                    report[ci].placed,
                    want,
                    pr.t.name,
                    pr.t.label,
                    cfg.max_attempts,
                    100.0 * covered as f64 / slab_vox,
                    particles.len(),
                    vesicles.len()
                );
            }
        }
    }
    let slab_vox = ((slab[1] - slab[0] + 1) as usize * ny * nx) as f64;
    Ok(Packing {
        particles,
        vesicles,
        report,
        occupancy: covered as f64 / slab_vox,
        attempts,
        slab,
    })
}

fn random_unit(rng: &mut Rng) -> [f64; 3] {
    let z = rng.range(-1.0, 1.0);
    let phi = rng.range(0.0, std::f64::consts::TAU);
    let s = (1.0 - z * z).sqrt();
    [z, s * phi.sin(), s * phi.cos()]
}

/// A unit vector at an angle of at most `max_deg` from `dir` (uniform on the spherical cap).
fn bend(dir: &[f64; 3], max_deg: f64, rng: &mut Rng) -> [f64; 3] {
    let cmax = max_deg.to_radians().cos();
    let ct = rng.range(cmax, 1.0);
    let st = (1.0 - ct * ct).sqrt();
    let phi = rng.range(0.0, std::f64::consts::TAU);
    // orthonormal basis around dir
    let a = if dir[0].abs() < 0.9 {
        [1.0, 0.0, 0.0]
    } else {
        [0.0, 1.0, 0.0]
    };
    let cross = |u: [f64; 3], v: [f64; 3]| {
        [
            u[1] * v[2] - u[2] * v[1],
            u[2] * v[0] - u[0] * v[2],
            u[0] * v[1] - u[1] * v[0],
        ]
    };
    let norm = |u: [f64; 3]| {
        let n = (u[0] * u[0] + u[1] * u[1] + u[2] * u[2]).sqrt();
        u.map(|x| x / n)
    };
    let e1 = norm(cross(*dir, a));
    let e2 = cross(*dir, e1);
    norm(std::array::from_fn(|i| {
        ct * dir[i] + st * (phi.cos() * e1[i] + phi.sin() * e2[i])
    }))
}

/// The voxels of an ellipsoid (centre and semi-axes in voxels, (z, y, x)) as absolute offsets.
fn ball_stencil(c: [f64; 3], r: [f64; 3]) -> Stencil {
    let mut offsets = Vec::new();
    let lo: [i64; 3] = std::array::from_fn(|a| (c[a] - r[a]).floor() as i64);
    let hi: [i64; 3] = std::array::from_fn(|a| (c[a] + r[a]).ceil() as i64);
    for z in lo[0]..=hi[0] {
        for y in lo[1]..=hi[1] {
            for x in lo[2]..=hi[2] {
                let rho = ((z as f64 - c[0]) / r[0]).powi(2)
                    + ((y as f64 - c[1]) / r[1]).powi(2)
                    + ((x as f64 - c[2]) / r[2]).powi(2);
                if rho <= 1.0 {
                    offsets.push([z as i32, y as i32, x as i32]);
                }
            }
        }
    }
    Stencil { offsets, lo, hi }
}

/// Physical constants of the rendered sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Physics {
    /// Mean inner potential of the ice (V).
    pub ice_v: f64,
    /// Mean inner potential of protein (V), for solvent displacement.
    pub protein_v: f64,
}

/// One z-slab of the rendered sample.
pub struct SlabOut {
    /// Potential (V), planes `[z0, z1)`.
    pub potential: Vec<f32>,
    /// Class labels.
    pub labels: Vec<u16>,
    /// Instance ids.
    pub instances: Vec<u32>,
}

/// Renders planes of the sample from a packing.
pub struct Renderer<'a> {
    cfg: &'a PlaceConfig,
    prepared: &'a [Prepared<'a>],
    packing: &'a Packing,
    physics: Physics,
    by_plane: Vec<Vec<u32>>,
    rts: Vec<Mat3>,
}

impl<'a> Renderer<'a> {
    /// Index the particles by the planes they touch.
    pub fn new(
        cfg: &'a PlaceConfig,
        prepared: &'a [Prepared<'a>],
        packing: &'a Packing,
        physics: Physics,
    ) -> Renderer<'a> {
        let nz = cfg.shape[0];
        let mut by_plane = vec![Vec::new(); nz];
        for (i, pl) in packing.particles.iter().enumerate() {
            let r = prepared[pl.class].support_r.ceil() as i64 + 1;
            for z in (pl.p[0] - r).max(0)..=(pl.p[0] + r).min(nz as i64 - 1) {
                by_plane[z as usize].push(i as u32);
            }
        }
        let rts = packing
            .particles
            .iter()
            .map(|p| transpose(&p.rot))
            .collect();
        Renderer {
            cfg,
            prepared,
            packing,
            physics,
            by_plane,
            rts,
        }
    }

    /// Ice fraction of plane `z` (the slab's edges are antialiased).
    fn ice_fraction(&self, z: usize) -> f64 {
        let nz = self.cfg.shape[0] as f64;
        match self.cfg.ice_thickness_a {
            None => 1.0,
            Some(t) => {
                let zc = (nz - 1.0) / 2.0;
                let half = t / 2.0 / self.cfg.voxel_size;
                let (a, b) = (z as f64 - 0.5, z as f64 + 0.5);
                (b.min(zc + half) - a.max(zc - half)).clamp(0.0, 1.0)
            }
        }
    }

    /// Render plane `z` into the given buffers (each `ny * nx`).
    pub fn plane(&self, z: usize, pot: &mut [f32], lab: &mut [u16], ins: &mut [u32]) {
        let [_, ny, nx] = self.cfg.shape;
        let h = self.cfg.voxel_size;
        let mut prot = vec![0f32; ny * nx];
        let mut memb = vec![0f32; ny * nx];
        let mut mcov = vec![0f32; ny * nx];
        lab.iter_mut().for_each(|v| *v = 0);
        ins.iter_mut().for_each(|v| *v = 0);
        let n_part = self.packing.particles.len() as u32;
        // vesicles
        if let Some(vs) = &self.cfg.vesicles {
            for (k, v) in self.packing.vesicles.iter().enumerate() {
                let id = n_part + 1 + k as u32;
                let rv = v.radii_a.map(|r| r / h);
                let dz = z as f64 - v.centre[0];
                if dz.abs() > rv[0] + 1.0 {
                    continue;
                }
                let reff = (v.radii_a[0] * v.radii_a[1] * v.radii_a[2]).cbrt();
                let t = vs.membrane.thickness_a;
                let y0 = ((v.centre[1] - rv[1] - 1.0).floor().max(0.0)) as usize;
                let y1 = ((v.centre[1] + rv[1] + 1.0).ceil() as usize).min(ny - 1);
                let x0 = ((v.centre[2] - rv[2] - 1.0).floor().max(0.0)) as usize;
                let x1 = ((v.centre[2] + rv[2] + 1.0).ceil() as usize).min(nx - 1);
                for y in y0..=y1 {
                    for x in x0..=x1 {
                        // 2x2x2 supersampling of the bilayer profile
                        let (mut acc, mut cov) = (0.0, 0.0);
                        for s in 0..8 {
                            let o = [
                                ((s >> 2) & 1) as f64 - 0.5,
                                ((s >> 1) & 1) as f64 - 0.5,
                                (s & 1) as f64 - 0.5,
                            ]
                            .map(|v| v * 0.5);
                            let p = [
                                z as f64 + o[0] - v.centre[0],
                                y as f64 + o[1] - v.centre[1],
                                x as f64 + o[2] - v.centre[2],
                            ];
                            let rho = (0..3).map(|a| (p[a] / rv[a]).powi(2)).sum::<f64>().sqrt();
                            // signed distance (Å) from the bilayer mid-surface (outer radius minus t/2)
                            let d = (rho - 1.0) * reff + t / 2.0;
                            if d.abs() <= t / 2.0 {
                                acc += membrane_profile(&vs.membrane, d);
                                cov += 1.0;
                            }
                        }
                        if cov > 0.0 {
                            let i = y * nx + x;
                            memb[i] += (acc / 8.0) as f32;
                            mcov[i] += (cov / 8.0) as f32;
                            if cov >= 4.0 {
                                lab[i] = vs.label as u16;
                                ins[i] = id;
                            }
                        }
                    }
                }
            }
        }
        // particles, in placement order
        for &pi in &self.by_plane[z] {
            let pl = &self.packing.particles[pi as usize];
            let pr = &self.prepared[pl.class];
            let rt = &self.rts[pi as usize];
            let oz = z as i64 - pl.p[0];
            let r = pr.support_r;
            let rz2 = r * r - (oz as f64 - pl.delta[0]).powi(2);
            if rz2 < 0.0 {
                continue;
            }
            let ry = rz2.sqrt().ceil() as i64 + 1;
            let thr = pr.t.threshold;
            let label = pr.t.label as u16;
            for oy in -ry..=ry {
                let y = pl.p[1] + oy;
                if y < 0 || y >= ny as i64 {
                    continue;
                }
                for ox in -ry..=ry {
                    let x = pl.p[2] + ox;
                    if x < 0 || x >= nx as i64 {
                        continue;
                    }
                    let v = pr.sample(rt, &pl.delta, [oz, oy, ox]);
                    if v == 0.0 {
                        continue;
                    }
                    let i = y as usize * nx + x as usize;
                    prot[i] += v;
                    if v > thr {
                        lab[i] = label;
                        ins[i] = pi + 1;
                    }
                }
            }
        }
        let ice = (self.physics.ice_v * self.ice_fraction(z)) as f32;
        let pv = self.physics.protein_v as f32;
        for i in 0..ny * nx {
            let displaced = (prot[i].max(0.0) / pv).min(1.0);
            let water = (1.0 - mcov[i]).max(0.0) * (1.0 - displaced);
            pot[i] = ice * water + memb[i] + prot[i];
        }
    }

    /// Render planes `[z0, z1)` with `par` (bit-identical whatever the threads).
    pub fn slab(&self, z0: usize, z1: usize, par: Par) -> SlabOut {
        let [_, ny, nx] = self.cfg.shape;
        let plane = ny * nx;
        let n = z1 - z0;
        type Planes = Vec<Option<(Vec<f32>, Vec<u16>, Vec<u32>)>>;
        let out: Mutex<Planes> = Mutex::new(vec![None; n]);
        par(n, &|k| {
            let mut p = vec![0f32; plane];
            let mut l = vec![0u16; plane];
            let mut s = vec![0u32; plane];
            self.plane(z0 + k, &mut p, &mut l, &mut s);
            if let Ok(mut g) = out.lock() {
                g[k] = Some((p, l, s));
            }
        });
        let planes = out.into_inner().unwrap_or_default();
        let mut res = SlabOut {
            potential: Vec::with_capacity(n * plane),
            labels: Vec::with_capacity(n * plane),
            instances: Vec::with_capacity(n * plane),
        };
        for (k, p) in planes.into_iter().enumerate() {
            let (p, l, s) = p.unwrap_or_else(|| panic!("plane {} was not rendered", z0 + k));
            res.potential.extend_from_slice(&p);
            res.labels.extend_from_slice(&l);
            res.instances.extend_from_slice(&s);
        }
        res
    }

    /// Recorded position (z, y, x) in voxels of a particle: its template's centre of mass.
    pub fn com_voxels(&self, i: usize) -> [f64; 3] {
        let pl = &self.packing.particles[i];
        let t = self.prepared[pl.class].t;
        let h = t.voxel_size;
        let off = [
            t.com_offset_a[2] / h,
            t.com_offset_a[1] / h,
            t.com_offset_a[0] / h,
        ];
        let r = apply(&pl.rot, off);
        [
            pl.p[0] as f64 + pl.delta[0] + r[2],
            pl.p[1] as f64 + pl.delta[1] + r[1],
            pl.p[2] as f64 + pl.delta[2] + r[0],
        ]
    }

    /// RELION angles of a particle.
    pub fn angles(&self, i: usize) -> (f64, f64, f64) {
        relion_angles(&self.packing.particles[i].rot)
    }
}
