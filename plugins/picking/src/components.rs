//! Connected components of the argmax map, streamed plane by plane.
//!
//! A voxel belongs to class `c = argmax_k p_k` (first maximum) when `p_c >= threshold_c`;
//! components are 6-connected (faces, as `scipy.ndimage.label`'s default) sets of voxels of the
//! same class. Each component gives a pick at its probability-weighted centroid
//! `Σ p_c v / Σ p_c` (voxel coordinates) with score = its maximum probability; components with
//! fewer than `min_voxels` voxels are dropped. Union-find over the current and previous plane
//! only: a component is emitted when a plane no longer touches it, so memory is two planes
//! plus the open components.

/// One component.
#[derive(Debug, Clone, PartialEq)]
pub struct Component {
    /// Channel (class index).
    pub class: usize,
    /// Weighted centroid (z, y, x) in voxels.
    pub centroid: [f64; 3],
    /// Maximum probability.
    pub score: f32,
    /// Number of voxels.
    pub voxels: usize,
}

#[derive(Debug, Clone, Copy, Default)]
struct Acc {
    w: f64,
    wz: f64,
    wy: f64,
    wx: f64,
    max: f32,
    n: usize,
    class: usize,
    done: bool,
}

/// Streaming labeller; feed planes in order with [`Components::plane`].
pub struct Components {
    ny: usize,
    nx: usize,
    thresholds: Vec<f32>,
    min_voxels: usize,
    parent: Vec<u32>,
    acc: Vec<Acc>,
    prev_cls: Vec<u32>,
    prev_lab: Vec<u32>,
    z: usize,
    /// Finished components.
    pub out: Vec<Component>,
}

impl Components {
    /// A labeller for planes of `ny × nx` voxels and `thresholds.len()` classes.
    pub fn new(ny: usize, nx: usize, thresholds: Vec<f32>, min_voxels: usize) -> Components {
        Components {
            ny,
            nx,
            thresholds,
            min_voxels,
            parent: vec![0],
            acc: vec![Acc::default()],
            prev_cls: vec![0; ny * nx],
            prev_lab: vec![0; ny * nx],
            z: 0,
            out: Vec::new(),
        }
    }

    fn find(&mut self, mut x: u32) -> u32 {
        while self.parent[x as usize] != x {
            let g = self.parent[self.parent[x as usize] as usize];
            self.parent[x as usize] = g;
            x = g;
        }
        x
    }

    fn union(&mut self, a: u32, b: u32) -> u32 {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra == rb {
            return ra;
        }
        let (keep, gone) = if ra < rb { (ra, rb) } else { (rb, ra) };
        self.parent[gone as usize] = keep;
        let g = self.acc[gone as usize];
        let k = &mut self.acc[keep as usize];
        k.w += g.w;
        k.wz += g.wz;
        k.wy += g.wy;
        k.wx += g.wx;
        k.max = k.max.max(g.max);
        k.n += g.n;
        keep
    }

    /// Add the next plane: `probs` is `[K, ny, nx]`.
    pub fn plane(&mut self, probs: &[f32]) {
        let (ny, nx) = (self.ny, self.nx);
        let n = ny * nx;
        let k = self.thresholds.len();
        let mut cls = vec![0u32; n];
        let mut best = vec![0f32; n];
        for i in 0..n {
            let mut bc = 0;
            let mut bv = probs[i];
            for c in 1..k {
                let v = probs[c * n + i];
                if v > bv {
                    bv = v;
                    bc = c;
                }
            }
            if bv >= self.thresholds[bc] {
                cls[i] = bc as u32 + 1;
                best[i] = bv;
            }
        }
        let mut lab = vec![0u32; n];
        let z = self.z as f64;
        for y in 0..ny {
            for x in 0..nx {
                let i = y * nx + x;
                let c = cls[i];
                if c == 0 {
                    continue;
                }
                let mut l = 0u32;
                let mut neighbours = [0u32; 3];
                if x > 0 && cls[i - 1] == c {
                    neighbours[0] = lab[i - 1];
                }
                if y > 0 && cls[i - nx] == c {
                    neighbours[1] = lab[i - nx];
                }
                if self.prev_cls[i] == c {
                    neighbours[2] = self.prev_lab[i];
                }
                for &m in &neighbours {
                    if m != 0 {
                        l = if l == 0 {
                            self.find(m)
                        } else {
                            self.union(l, m)
                        };
                    }
                }
                if l == 0 {
                    l = self.parent.len() as u32;
                    self.parent.push(l);
                    self.acc.push(Acc {
                        class: c as usize - 1,
                        ..Acc::default()
                    });
                }
                let r = self.find(l);
                lab[i] = r;
                let p = best[i] as f64;
                let a = &mut self.acc[r as usize];
                a.w += p;
                a.wz += p * z;
                a.wy += p * y as f64;
                a.wx += p * x as f64;
                a.max = a.max.max(best[i]);
                a.n += 1;
            }
        }
        // components of the previous plane that the current plane does not continue are done
        let mut live = std::collections::HashSet::new();
        for &l in lab.iter().filter(|&&l| l != 0) {
            let r = self.find(l);
            live.insert(r);
        }
        let prev = std::mem::take(&mut self.prev_lab);
        for &l in prev.iter().filter(|&&l| l != 0) {
            let r = self.find(l);
            if !live.contains(&r) {
                self.emit(r);
            }
        }
        self.prev_lab = lab;
        self.prev_cls = cls;
        self.z += 1;
    }

    fn emit(&mut self, r: u32) {
        let a = &mut self.acc[r as usize];
        if a.done {
            return;
        }
        a.done = true;
        if a.n >= self.min_voxels && a.w > 0.0 {
            self.out.push(Component {
                class: a.class,
                centroid: [a.wz / a.w, a.wy / a.w, a.wx / a.w],
                score: a.max,
                voxels: a.n,
            });
        }
    }

    /// No more planes: emit the open components; return all, sorted by (class, z, y, x).
    pub fn finish(mut self) -> Vec<Component> {
        let prev = std::mem::take(&mut self.prev_lab);
        for &l in prev.iter().filter(|&&l| l != 0) {
            let r = self.find(l);
            self.emit(r);
        }
        let mut out = self.out;
        out.sort_by(|a, b| {
            a.class
                .cmp(&b.class)
                .then(a.centroid[0].total_cmp(&b.centroid[0]))
                .then(a.centroid[1].total_cmp(&b.centroid[1]))
                .then(a.centroid[2].total_cmp(&b.centroid[2]))
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_merge_across_planes_and_weight_centroids() {
        // 3 planes of 4 x 6, two classes. Class 0: a U shape joined only in the last plane.
        let (ny, nx) = (4, 6);
        let n = ny * nx;
        let mut planes = vec![vec![0f32; 2 * n]; 3];
        planes[0][1] = 0.9; // (0, 0, 1)
        planes[0][4] = 0.8; // (0, 0, 4)
        planes[1][1] = 0.9;
        planes[1][4] = 0.8;
        for v in &mut planes[2][1..=4] {
            *v = 0.7; // joins them in plane 2
        }
        // class 1 blob at (1, 3, 0..2) with weights 1 and 3 -> centroid x = 0.75
        planes[1][n + 3 * nx] = 0.6;
        planes[1][n + 3 * nx + 1] = 1.0;
        let mut c = Components::new(ny, nx, vec![0.5, 0.5], 1);
        for p in &planes {
            c.plane(p);
        }
        let out = c.finish();
        assert_eq!(out.len(), 2, "{out:?}");
        assert_eq!(out[0].class, 0);
        assert_eq!(out[0].voxels, 8);
        assert!((out[0].score - 0.9).abs() < 1e-6);
        assert_eq!(out[1].class, 1);
        assert!((out[1].centroid[2] - 1.0 / 1.6).abs() < 1e-6);
        assert_eq!(out[1].voxels, 2);
        // min_voxels drops the small one
        let mut c = Components::new(ny, nx, vec![0.5, 0.5], 3);
        for p in &planes {
            c.plane(p);
        }
        assert_eq!(c.finish().len(), 1);
    }
}
