//! Peak picking on probability maps: optional Gaussian smoothing, per-class local maxima in a
//! neighbourhood scaled to the class radius, per-class score thresholds, a minimum supporting
//! volume and greedy spherical non-maximum suppression across classes.
//!
//! Streaming: [`Picker`] receives z-slab chunks in any order and keeps only the planes it still
//! needs — `R_s` planes of context for the z pass of the smoothing and `k_z` planes for the
//! local-maximum test (the "halo"); a plane is detected as soon as every plane within
//! `k_z + R_s` of it has arrived, then dropped. Detection yields *candidates*, a few per
//! particle; the suppression, which can chain across the whole tomogram, runs on the candidate
//! list at the end. The picks are therefore identical whatever the chunking (tested), and the
//! memory is `O((2 (k_z + R_s) + slab) × plane)` plus the candidates.
//!
//! Definitions (voxel triples (z, y, x); positions `origin + i × voxel_size` in Å):
//! - neighbourhood of class `c`: the box of half-widths `k_a = floor(radius_fraction × r_c /
//!   voxel_a)` (the max-pool kernel `2k + 1` of the CZII solutions);
//! - a voxel is a peak of class `c` when its (smoothed) probability `p ≥ floor_c` and no voxel
//!   of the neighbourhood (clipped at the volume's faces) is strictly larger (plateaus give
//!   several peaks, which the suppression resolves);
//! - support: the number of voxels within `radius_fraction × r_c` Å of the peak with
//!   probability `≥ floor_c`; peaks with support `< min_voxels` are dropped;
//! - suppression: candidates sorted by score (descending; ties by z, y, x, class); a candidate
//!   is kept unless a kept pick lies at a distance `< nms_fraction × (r_i + r_j)` Å.

use crate::probmap::{ProbClass, ProbHeader};
use anyhow::{bail, Result};
use std::collections::BTreeMap;
use std::sync::Mutex;

/// A data-parallel executor: `par(n, f)` runs `f(i)` for every `i` in `0..n` (e.g. the host's
/// `Ctx::parallel_for`, a rayon pool, or [`serial`]).
pub type Par<'a> = &'a dyn Fn(usize, &(dyn Fn(usize) + Sync));

/// Run `f(0..n)` on the calling thread.
pub fn serial(n: usize, f: &(dyn Fn(usize) + Sync)) {
    for i in 0..n {
        f(i)
    }
}

/// Picking options.
#[derive(Debug, Clone)]
pub struct NmsOptions {
    /// Neighbourhood half-width as a fraction of the class radius (CZII solutions: 0.5).
    pub radius_fraction: f64,
    /// Two picks cannot be closer than `nms_fraction × (r_i + r_j)`.
    pub nms_fraction: f64,
    /// Gaussian smoothing sigma in Å (`None`: no smoothing).
    pub smooth_a: Option<f64>,
    /// Minimum supporting volume in voxels.
    pub min_voxels: usize,
    /// Detection threshold per class (channel order).
    pub floors: Vec<f32>,
    /// Place each pick at the probability-weighted centroid of its supporting voxels instead
    /// of the peak voxel (a plateau's maximum can sit anywhere on it).
    pub centroid: bool,
}

/// A local maximum before suppression.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    /// Channel (class index).
    pub class: usize,
    /// Voxel (z, y, x).
    pub voxel: [usize; 3],
    /// Probability at the voxel (after smoothing).
    pub score: f32,
    /// Supporting volume in voxels.
    pub support: u32,
    /// Where the pick is placed (z, y, x voxels): the peak voxel or, with
    /// [`NmsOptions::centroid`], the centroid of its support weighted by probability.
    pub centre: [f64; 3],
}

/// Gaussian kernel, half-width `R = ceil(3σ)`, unnormalised (normalised per position).
fn gauss(sigma: f64) -> Vec<f32> {
    if sigma <= 0.0 {
        return vec![1.0];
    }
    let r = (3.0 * sigma).ceil() as i64;
    (-r..=r)
        .map(|j| (-(j * j) as f64 / (2.0 * sigma * sigma)).exp() as f32)
        .collect()
}

/// 1-D convolution with a symmetric kernel, renormalised at the ends, strided.
fn conv1d(src: &[f32], dst: &mut [f32], n: usize, stride: usize, w: &[f32]) {
    let r = (w.len() / 2) as isize;
    for i in 0..n as isize {
        let mut s = 0f32;
        let mut ws = 0f32;
        for j in -r..=r {
            let k = i + j;
            if k >= 0 && k < n as isize {
                let wj = w[(j + r) as usize];
                s += wj * src[k as usize * stride];
                ws += wj;
            }
        }
        dst[i as usize * stride] = s / ws;
    }
}

/// Streaming peak detector; see the module documentation.
pub struct Picker {
    classes: Vec<ProbClass>,
    opts: NmsOptions,
    shape: [usize; 3],
    voxel: [f64; 3],
    origin: [f64; 3],
    tomogram: String,
    half: Vec<[usize; 3]>,
    hz: usize,
    kern: Option<[Vec<f32>; 3]>,
    rz: usize,
    raw: BTreeMap<usize, Vec<f32>>,
    sm: BTreeMap<usize, Vec<f32>>,
    next_sm: usize,
    next_det: usize,
    seen: Vec<bool>,
    candidates: Vec<Candidate>,
}

impl Picker {
    /// A picker for the volume and classes described by the first chunk's header.
    pub fn new(h: &ProbHeader, opts: NmsOptions) -> Result<Picker> {
        let k = h.classes.len();
        if opts.floors.len() != k {
            bail!("pick: {} thresholds for {} classes", opts.floors.len(), k);
        }
        if !(opts.radius_fraction >= 0.0 && opts.nms_fraction >= 0.0) {
            bail!("pick: radius_fraction and nms_fraction must be >= 0");
        }
        let vs = h.chunk.voxel_size;
        let half: Vec<[usize; 3]> = h
            .classes
            .iter()
            .map(|c| {
                let mut hw = [0usize; 3];
                for a in 0..3 {
                    hw[a] = (opts.radius_fraction * c.radius_a / vs[a]).floor().max(0.0) as usize;
                }
                hw
            })
            .collect();
        let hz = half.iter().map(|h| h[0]).max().unwrap_or(0);
        let kern = opts
            .smooth_a
            .filter(|s| *s > 0.0)
            .map(|s| [gauss(s / vs[0]), gauss(s / vs[1]), gauss(s / vs[2])]);
        let rz = kern.as_ref().map_or(0, |k| k[0].len() / 2);
        Ok(Picker {
            classes: h.classes.clone(),
            opts,
            shape: h.chunk.full_shape,
            voxel: vs,
            origin: h.chunk.origin,
            tomogram: h.tomogram.clone(),
            half,
            hz,
            kern,
            rz,
            raw: BTreeMap::new(),
            sm: BTreeMap::new(),
            next_sm: 0,
            next_det: 0,
            seen: vec![false; h.chunk.full_shape[0]],
            candidates: Vec::new(),
        })
    }

    /// Planes of context the picker needs on either side of a plane (`k_z + R_s`).
    pub fn halo(&self) -> usize {
        self.hz + self.rz
    }

    /// Number of planes currently buffered (raw plus smoothed).
    pub fn buffered_planes(&self) -> usize {
        self.raw.len() + self.sm.len()
    }

    /// The classes, in channel order.
    pub fn classes(&self) -> &[ProbClass] {
        &self.classes
    }

    /// Add one chunk (its core planes) and detect every plane that became complete.
    pub fn push(&mut self, h: &ProbHeader, data: &[f32], par: Par) -> Result<()> {
        let c = &h.chunk;
        if c.full_shape != self.shape || h.classes != self.classes {
            bail!(
                "pick: chunk of volume {:?} with classes {:?} does not belong to volume {:?} with classes {:?}",
                c.full_shape,
                h.classes.iter().map(|c| &c.name).collect::<Vec<_>>(),
                self.shape,
                self.classes.iter().map(|c| &c.name).collect::<Vec<_>>()
            );
        }
        if h.tomogram != self.tomogram {
            bail!(
                "pick: chunk of tomogram {:?} in the stream of {:?}",
                h.tomogram,
                self.tomogram
            );
        }
        if c.core_offset[1] != 0
            || c.core_offset[2] != 0
            || c.core_shape[1] != self.shape[1]
            || c.core_shape[2] != self.shape[2]
        {
            bail!(
                "pick: chunks must be z-slabs covering whole planes (got core {:?} at {:?})",
                c.core_shape,
                c.core_offset
            );
        }
        let [_, ny, nx] = self.shape;
        let plane = ny * nx;
        let k = self.classes.len();
        let [bz, by, bx] = c.shape;
        let block = bz * by * bx;
        let mut new = Vec::new();
        for z in c.core_offset[0]..c.core_offset[0] + c.core_shape[0] {
            if self.seen[z] {
                bail!("pick: plane {z} arrived twice");
            }
            self.seen[z] = true;
            new.push(z);
        }
        // copy the core planes out, class-major within the plane
        let lz0 = c.core_offset[0] - c.offset[0];
        let ly0 = c.core_offset[1] - c.offset[1];
        let lx0 = c.core_offset[2] - c.offset[2];
        let out: Vec<Mutex<Vec<f32>>> = new.iter().map(|_| Mutex::new(Vec::new())).collect();
        let kern = self.kern.as_ref();
        par(new.len() * k, &|i| {
            let (pi, ch) = (i / k, i % k);
            let lz = lz0 + pi;
            let mut p = vec![0f32; plane];
            for y in 0..ny {
                let s = ch * block + ((lz * by) + ly0 + y) * bx + lx0;
                p[y * nx..(y + 1) * nx].copy_from_slice(&data[s..s + nx]);
            }
            if let Some(kn) = kern {
                let mut t = vec![0f32; plane];
                for y in 0..ny {
                    conv1d(&p[y * nx..], &mut t[y * nx..], nx, 1, &kn[2]);
                }
                for x in 0..nx {
                    conv1d(&t[x..], &mut p[x..], ny, nx, &kn[1]);
                }
            }
            let mut o = out[pi].lock().expect("lock");
            if o.is_empty() {
                o.resize(k * plane, 0.0);
            }
            o[ch * plane..(ch + 1) * plane].copy_from_slice(&p);
        });
        for (z, o) in new.into_iter().zip(out) {
            self.raw.insert(z, o.into_inner().expect("lock"));
        }
        self.advance(par);
        Ok(())
    }

    /// First index `>= from` that `m` lacks (or `n`).
    fn run_end(m: &BTreeMap<usize, Vec<f32>>, from: usize, n: usize) -> usize {
        let mut e = from;
        while e < n && m.contains_key(&e) {
            e += 1;
        }
        e
    }

    fn advance(&mut self, par: Par) {
        let [nz, ny, nx] = self.shape;
        let plane = ny * nx;
        let k = self.classes.len();
        // z pass of the smoothing
        let e = Self::run_end(&self.raw, self.next_sm, nz);
        let ready = if e >= nz {
            nz
        } else {
            e.saturating_sub(self.rz)
        };
        if ready > self.next_sm {
            let zs: Vec<usize> = (self.next_sm..ready).collect();
            match &self.kern {
                None => {
                    for &z in &zs {
                        let p = self.raw.remove(&z).expect("plane present");
                        self.sm.insert(z, p);
                    }
                }
                Some(kn) => {
                    let w = &kn[0];
                    let r = self.rz as isize;
                    let raw = &self.raw;
                    let out: Vec<Mutex<Vec<f32>>> =
                        zs.iter().map(|_| Mutex::new(Vec::new())).collect();
                    par(zs.len() * k, &|i| {
                        let (pi, ch) = (i / k, i % k);
                        let z = zs[pi] as isize;
                        let mut acc = vec![0f32; plane];
                        let mut ws = 0f32;
                        for j in -r..=r {
                            let zz = z + j;
                            if zz < 0 || zz >= nz as isize {
                                continue;
                            }
                            let wj = w[(j + r) as usize];
                            ws += wj;
                            let src = &raw[&(zz as usize)][ch * plane..(ch + 1) * plane];
                            for (a, s) in acc.iter_mut().zip(src) {
                                *a += wj * s;
                            }
                        }
                        for a in acc.iter_mut() {
                            *a /= ws;
                        }
                        let mut o = out[pi].lock().expect("lock");
                        if o.is_empty() {
                            o.resize(k * plane, 0.0);
                        }
                        o[ch * plane..(ch + 1) * plane].copy_from_slice(&acc);
                    });
                    for (&z, o) in zs.iter().zip(out) {
                        self.sm.insert(z, o.into_inner().expect("lock"));
                    }
                    let keep_from = ready.saturating_sub(self.rz);
                    self.raw.retain(|&z, _| z >= keep_from);
                }
            }
            self.next_sm = ready;
        }
        // detection
        let e = Self::run_end(&self.sm, self.next_det, nz);
        let ready = if e >= nz {
            nz
        } else {
            e.saturating_sub(self.hz)
        };
        if ready > self.next_det {
            let zs: Vec<usize> = (self.next_det..ready).collect();
            let out: Vec<Mutex<Vec<Candidate>>> =
                (0..zs.len() * k).map(|_| Mutex::new(Vec::new())).collect();
            let this = &*self;
            par(zs.len() * k, &|i| {
                let c = this.detect_plane(zs[i / k], i % k);
                *out[i].lock().expect("lock") = c;
            });
            for o in out {
                self.candidates.extend(o.into_inner().expect("lock"));
            }
            self.next_det = ready;
            let keep_from = ready.saturating_sub(self.hz);
            self.sm.retain(|&z, _| z >= keep_from);
        }
    }

    /// Candidates of class `ch` in plane `z` (every plane within `k_z` must be smoothed).
    fn detect_plane(&self, z: usize, ch: usize) -> Vec<Candidate> {
        let [nz, ny, nx] = self.shape;
        let plane = ny * nx;
        let [hz, hy, hx] = self.half[ch];
        let floor = self.opts.floors[ch];
        let z0 = z.saturating_sub(hz);
        let z1 = (z + hz).min(nz - 1);
        let planes: Vec<&[f32]> = (z0..=z1)
            .map(|zz| &self.sm[&zz][ch * plane..(ch + 1) * plane])
            .collect();
        let cur = planes[z - z0];
        let ball = self.opts.radius_fraction * self.classes[ch].radius_a;
        let ball2 = ball * ball;
        let vs = self.voxel;
        let mut out = Vec::new();
        let greater =
            |zr: (usize, usize), yr: (usize, usize), xr: (usize, usize), v: f32| -> bool {
                for zz in zr.0..=zr.1 {
                    let p = planes[zz - z0];
                    for yy in yr.0..=yr.1 {
                        let row = &p[yy * nx + xr.0..=yy * nx + xr.1];
                        if row.iter().any(|&w| w > v) {
                            return true;
                        }
                    }
                }
                false
            };
        for y in 0..ny {
            let row = &cur[y * nx..(y + 1) * nx];
            for (x, &v) in row.iter().enumerate() {
                if v.is_nan() || v < floor {
                    continue;
                }
                // quick test on the immediate neighbours, then the whole neighbourhood
                let r1 = |c: usize, h: usize, n: usize| {
                    (c.saturating_sub(h.min(1)), (c + h.min(1)).min(n - 1))
                };
                if greater(r1(z, hz, nz), r1(y, hy, ny), r1(x, hx, nx), v) {
                    continue;
                }
                let rk = |c: usize, h: usize, n: usize| (c.saturating_sub(h), (c + h).min(n - 1));
                if greater((z0, z1), rk(y, hy, ny), rk(x, hx, nx), v) {
                    continue;
                }
                let mut support = 0u32;
                let (mut w, mut wz, mut wy, mut wx) = (0.0f64, 0.0, 0.0, 0.0);
                for zz in z0..=z1 {
                    let dz = (zz as f64 - z as f64) * vs[0];
                    let p = planes[zz - z0];
                    for yy in y.saturating_sub(hy)..=(y + hy).min(ny - 1) {
                        let dy = (yy as f64 - y as f64) * vs[1];
                        for xx in x.saturating_sub(hx)..=(x + hx).min(nx - 1) {
                            let dx = (xx as f64 - x as f64) * vs[2];
                            let q = p[yy * nx + xx];
                            if dz * dz + dy * dy + dx * dx <= ball2 && q >= floor {
                                support += 1;
                                let q = q as f64;
                                w += q;
                                wz += q * zz as f64;
                                wy += q * yy as f64;
                                wx += q * xx as f64;
                            }
                        }
                    }
                }
                let centre = if self.opts.centroid && w > 0.0 {
                    [wz / w, wy / w, wx / w]
                } else {
                    [z as f64, y as f64, x as f64]
                };
                out.push(Candidate {
                    class: ch,
                    voxel: [z, y, x],
                    score: v,
                    support,
                    centre,
                });
            }
        }
        out
    }

    /// All planes arrived: apply the final per-class thresholds (default: the detection
    /// floors) and the minimum support, suppress, and return the picks in score order.
    pub fn finish(self, thresholds: Option<&[f32]>) -> Result<Picks> {
        if let Some(z) = self.seen.iter().position(|s| !s) {
            bail!(
                "pick: the probability map is incomplete: plane {z} of {} never arrived",
                self.shape[0]
            );
        }
        let th: Vec<f32> = thresholds.map_or_else(|| self.opts.floors.clone(), |t| t.to_vec());
        let cands: Vec<Candidate> = self
            .candidates
            .iter()
            .filter(|c| c.score >= th[c.class] && c.support as usize >= self.opts.min_voxels)
            .copied()
            .collect();
        let radii: Vec<f64> = self.classes.iter().map(|c| c.radius_a).collect();
        let keep = greedy_nms(&cands, &radii, self.voxel, self.opts.nms_fraction);
        Ok(Picks {
            picks: keep.into_iter().map(|i| cands[i]).collect(),
            candidates: self.candidates.len(),
            classes: self.classes,
            shape: self.shape,
            voxel: self.voxel,
            origin: self.origin,
            tomogram: self.tomogram,
        })
    }
}

/// The result of picking one tomogram.
#[derive(Debug, Clone)]
pub struct Picks {
    /// Kept picks, by decreasing score.
    pub picks: Vec<Candidate>,
    /// Number of candidates before thresholds and suppression.
    pub candidates: usize,
    /// Classes in channel order.
    pub classes: Vec<ProbClass>,
    /// Volume shape (z, y, x).
    pub shape: [usize; 3],
    /// Voxel size (z, y, x) in Å.
    pub voxel: [f64; 3],
    /// Centre of voxel (0, 0, 0) in Å.
    pub origin: [f64; 3],
    /// Tomogram name.
    pub tomogram: String,
}

/// Greedy spherical suppression: indices of the kept candidates, by decreasing score (ties by
/// z, y, x, class). `j` suppresses `i` when their distance is `< f × (r_i + r_j)` Å.
pub fn greedy_nms(c: &[Candidate], radii: &[f64], voxel: [f64; 3], f: f64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..c.len()).collect();
    order.sort_by(|&a, &b| {
        let (ca, cb) = (&c[a], &c[b]);
        cb.score
            .total_cmp(&ca.score)
            .then(ca.voxel.cmp(&cb.voxel))
            .then(ca.class.cmp(&cb.class))
    });
    let pos = |i: usize| -> [f64; 3] { std::array::from_fn(|a| c[i].centre[a] * voxel[a]) };
    let rmax = radii.iter().copied().fold(0.0, f64::max);
    let limit = |i: usize, j: usize| f * (radii[c[i].class] + radii[c[j].class]);
    suppress_in_order(order, pos, limit, 2.0 * f * rmax)
}

/// Greedy suppression over items visited in `order` (best first): an item is kept unless a
/// kept one lies closer than `limit(i, j)` (e.g. `f × (r_i + r_j)`; positions `pos` in the
/// same unit). `reach` bounds every limit. Returns the kept items in visiting order.
/// Neighbours are looked up in a grid of cells of size `reach`, so it is linear in the number
/// of items.
pub fn suppress_in_order(
    order: Vec<usize>,
    pos: impl Fn(usize) -> [f64; 3],
    limit: impl Fn(usize, usize) -> f64,
    reach: f64,
) -> Vec<usize> {
    if reach <= 0.0 {
        return order;
    }
    let cell = |p: [f64; 3]| -> [i64; 3] { p.map(|v| (v / reach).floor() as i64) };
    let mut grid: std::collections::HashMap<[i64; 3], Vec<usize>> =
        std::collections::HashMap::new();
    let mut kept = Vec::new();
    for i in order {
        let p = pos(i);
        let g = cell(p);
        let mut ok = true;
        'outer: for dz in -1..=1 {
            for dy in -1..=1 {
                for dx in -1..=1 {
                    if let Some(v) = grid.get(&[g[0] + dz, g[1] + dy, g[2] + dx]) {
                        for &j in v {
                            let q = pos(j);
                            let d2 = (p[0] - q[0]).powi(2)
                                + (p[1] - q[1]).powi(2)
                                + (p[2] - q[2]).powi(2);
                            let lim = limit(i, j);
                            if d2 < lim * lim {
                                ok = false;
                                break 'outer;
                            }
                        }
                    }
                }
            }
        }
        if ok {
            grid.entry(g).or_default().push(i);
            kept.push(i);
        }
    }
    kept
}

/// Pick a whole volume held in memory (`data` = `[K, z, y, x]` for a chunk covering it).
pub fn pick_whole(h: &ProbHeader, data: &[f32], opts: NmsOptions, par: Par) -> Result<Picks> {
    let mut p = Picker::new(h, opts)?;
    p.push(h, data, par)?;
    p.finish(None)
}
