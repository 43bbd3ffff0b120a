//! The three passes of a 3×3×3 convolution with stride 1 and zero padding 1, on plain `f32`
//! slices in burn's `[batch, channel, z, y, x]` layout, without im2col.
//!
//! The trick: in a zero-padded volume of `(d+2) × (h+2) × (w+2)` voxels, the 27 neighbours of
//! output voxel `q = z·sz + y·sy + x` (`sy = w+2`, `sz = (h+2)·sy`) sit at `q + off_k`, where
//! `off_k = kz·sz + ky·sy + kx`. So for a run of consecutive `q` the input seen by tap `k` is a
//! plain offset view of the padded volume, and each tap is one GEMM on strided views:
//!
//! - forward:       `out[o, q]  = Σ_k Σ_i W[o, i, k] · xp[i, q + off_k]`
//! - input grad:    the forward pass on the padded output gradient with the kernel flipped
//!   and its channel axes swapped;
//! - weight grad:   `dW[o, i, k] = Σ_q g[o, q] · xp[i, q + off_k]`, with `g` the padded output
//!   gradient read at `q + off_centre` (its zero border makes the positions of a run that fall
//!   between rows contribute nothing).
//!
//! Runs of `q` cross the two padding columns at the end of each row; those outputs are computed
//! and dropped (4 % extra work at 48 voxels a row). Every reduction has a fixed order, so the
//! results do not depend on the number of threads.

use super::{matmul, ordered_sum, taps_first, taps_last, SendPtr};
use rayon::prelude::*;

/// Number of taps of a 3×3×3 kernel.
pub const TAPS: usize = 27;

/// Shape of one convolution: a batch of `batch` volumes of `d × h × w` voxels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// Volumes in the batch.
    pub batch: usize,
    /// Input channels.
    pub cin: usize,
    /// Output channels.
    pub cout: usize,
    /// Volume extent `[d, h, w]` (input and output: "same" padding).
    pub dims: [usize; 3],
}

/// Strides of the zero-padded layout.
#[derive(Clone, Copy, Debug)]
struct Padded {
    sy: usize,
    sz: usize,
    /// Voxels of one padded volume.
    vol: usize,
}

impl Padded {
    fn new([d, h, w]: [usize; 3]) -> Padded {
        let sy = w + 2;
        let sz = (h + 2) * sy;
        Padded {
            sy,
            sz,
            vol: (d + 2) * sz,
        }
    }

    /// Offset of tap `k` (`k = kz·9 + ky·3 + kx`).
    fn offset(&self, k: usize) -> usize {
        (k / 9) * self.sz + (k / 3 % 3) * self.sy + k % 3
    }
}

/// Copies `volumes` volumes of `dims` voxels into a zero border of one voxel.
pub fn pad(x: &[f32], volumes: usize, dims: [usize; 3]) -> Vec<f32> {
    let [d, h, w] = dims;
    let p = Padded::new(dims);
    assert_eq!(x.len(), volumes * d * h * w, "pad: input length");
    let mut out = vec![0.0f32; volumes * p.vol];
    if d * h * w == 0 {
        return out;
    }
    out.par_chunks_mut(p.vol)
        .zip(x.par_chunks(d * h * w))
        .for_each(|(o, i)| {
            for z in 0..d {
                for y in 0..h {
                    let dst = (z + 1) * p.sz + (y + 1) * p.sy + 1;
                    o[dst..dst + w].copy_from_slice(&i[(z * h + y) * w..][..w]);
                }
            }
        });
    out
}

/// Rows of output computed per GEMM block: about 768 voxels of a run.
fn rows_per_block(p: &Padded, h: usize) -> usize {
    (768 / p.sy).clamp(1, h.max(1))
}

/// `out[b, o, z, y, x] = Σ_k Σ_i taps[k, o, i] · src[b, i, (z, y, x) + k]`, with `src` padded
/// (`[batch, cin, d+2, h+2, w+2]`) and `taps` laid out `[27, cout, cin]`. The forward pass
/// (taps = the kernel) and the input gradient (taps = the flipped, transposed kernel) are both
/// this correlation.
pub fn correlate(src: &[f32], taps: &[f32], g: Geometry) -> Vec<f32> {
    let Geometry {
        batch,
        cin,
        cout,
        dims: [d, h, w],
    } = g;
    let p = Padded::new(g.dims);
    assert_eq!(src.len(), batch * cin * p.vol, "correlate: source length");
    assert_eq!(taps.len(), TAPS * cout * cin, "correlate: taps length");
    let plane = h * w;
    let mut out = vec![0.0f32; batch * cout * d * plane];
    if out.is_empty() || cin == 0 {
        return out;
    }
    let rows = rows_per_block(&p, h);
    let blocks_per_plane = h.div_ceil(rows);
    let tasks = batch * d * blocks_per_plane;
    let out_ptr = SendPtr(out.as_mut_ptr());
    (0..tasks).into_par_iter().for_each_init(
        || vec![0.0f32; cout * ((rows - 1) * p.sy + w)],
        |scratch, t| {
            let b = t / (d * blocks_per_plane);
            let z = t / blocks_per_plane % d;
            let y0 = t % blocks_per_plane * rows;
            let nrows = rows.min(h - y0);
            let run = (nrows - 1) * p.sy + w;
            let q0 = z * p.sz + y0 * p.sy;
            let src_b = &src[b * cin * p.vol..][..cin * p.vol];
            for k in 0..TAPS {
                let off = q0 + p.offset(k);
                // SAFETY: dst is `cout × run` inside `scratch` (row stride `run`); lhs is the
                // `cout × cin` tap; rhs is `cin × run` with row stride `vol`, whose last
                // element `(cin-1)·vol + q0 + off_k + run - 1 < cin·vol` (the run ends at
                // an interior voxel of the last row, and the largest offset reaches the far
                // corner of the padded volume).
                unsafe {
                    matmul(
                        [cout, run, cin],
                        (scratch.as_mut_ptr(), [run, 1]),
                        k > 0,
                        (taps.as_ptr().add(k * cout * cin), [cin, 1]),
                        (src_b.as_ptr().add(off), [p.vol, 1]),
                    );
                }
            }
            for o in 0..cout {
                for r in 0..nrows {
                    let from = &scratch[o * run + r * p.sy..][..w];
                    let at = ((b * cout + o) * d + z) * plane + (y0 + r) * w;
                    // SAFETY: task (b, z, y0) alone writes rows y0..y0+nrows of plane z of
                    // every output channel of volume b, and `at + w <= out.len()`.
                    unsafe {
                        std::ptr::copy_nonoverlapping(from.as_ptr(), out_ptr.get().add(at), w);
                    }
                }
            }
        },
    );
    out
}

/// The kernel `[cout, cin, 27]` as forward taps `[27, cout, cin]`.
pub fn forward_taps(weight: &[f32], cout: usize, cin: usize) -> Vec<f32> {
    taps_first(weight, [cout, cin, TAPS])
}

/// The kernel `[cout, cin, 27]` flipped and transposed, as taps `[27, cin, cout]` of the
/// input-gradient correlation.
pub fn gradient_taps(weight: &[f32], cout: usize, cin: usize) -> Vec<f32> {
    let mut taps = vec![0.0f32; weight.len()];
    for o in 0..cout {
        for i in 0..cin {
            for k in 0..TAPS {
                taps[(k * cin + i) * cout + o] = weight[(o * cin + i) * TAPS + (TAPS - 1 - k)];
            }
        }
    }
    taps
}

/// Output convolution: `x` `[batch, cin, d, h, w]`, `weight` `[cout, cin, 3, 3, 3]` →
/// `[batch, cout, d, h, w]` (no bias).
pub fn forward(x: &[f32], weight: &[f32], g: Geometry) -> Vec<f32> {
    let xp = pad(x, g.batch * g.cin, g.dims);
    correlate(&xp, &forward_taps(weight, g.cout, g.cin), g)
}

/// Gradient with respect to the input, from the output gradient `grad` `[batch, cout, d, h, w]`.
pub fn input_grad(grad: &[f32], weight: &[f32], g: Geometry) -> Vec<f32> {
    let gp = pad(grad, g.batch * g.cout, g.dims);
    let swapped = Geometry {
        cin: g.cout,
        cout: g.cin,
        ..g
    };
    correlate(&gp, &gradient_taps(weight, g.cout, g.cin), swapped)
}

/// Gradient with respect to the kernel, `[cout, cin, 3, 3, 3]`, from the input `x` and the
/// output gradient `grad`.
pub fn weight_grad(x: &[f32], grad: &[f32], g: Geometry) -> Vec<f32> {
    let Geometry {
        batch,
        cin,
        cout,
        dims: [d, h, w],
    } = g;
    let p = Padded::new(g.dims);
    let xp = pad(x, batch * cin, g.dims);
    let gp = pad(grad, batch * cout, g.dims);
    let taps_len = TAPS * cout * cin;
    let planes = batch * d;
    if planes * h * w == 0 {
        return vec![0.0; taps_len];
    }
    let run = (h - 1) * p.sy + w;
    let centre = p.offset(13);
    // [27, cout, cin]
    let taps = ordered_sum(
        planes,
        taps_len,
        || (),
        |_, plane, acc| {
            let (b, z) = (plane / d, plane % d);
            let q0 = z * p.sz;
            let x_b = &xp[b * cin * p.vol..][..cin * p.vol];
            let g_b = &gp[b * cout * p.vol..][..cout * p.vol];
            for k in 0..TAPS {
                // SAFETY: dst is the `cout × cin` block k of `acc`; lhs is `cout × run` (row
                // stride `vol`) starting at `q0 + centre`; rhs is `run × cin` (column stride
                // `vol`) starting at `q0 + off_k`; both end inside their channel's padded
                // volume (see `correlate`).
                unsafe {
                    matmul(
                        [cout, cin, run],
                        (acc.as_mut_ptr().add(k * cout * cin), [cin, 1]),
                        true,
                        (g_b.as_ptr().add(q0 + centre), [p.vol, 1]),
                        (x_b.as_ptr().add(q0 + p.offset(k)), [1, p.vol]),
                    );
                }
            }
        },
    );
    taps_last(&taps, [cout, cin, TAPS])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flex_ops::test_values as values;

    /// The definition, voxel by voxel.
    fn naive(x: &[f32], weight: &[f32], g: Geometry) -> Vec<f32> {
        let [d, h, w] = g.dims;
        let mut out = vec![0.0f32; g.batch * g.cout * d * h * w];
        for b in 0..g.batch {
            for o in 0..g.cout {
                for z in 0..d {
                    for y in 0..h {
                        for xx in 0..w {
                            let mut s = 0.0f64;
                            for i in 0..g.cin {
                                for k in 0..TAPS {
                                    let (zz, yy, xi) = (
                                        z as isize + (k / 9) as isize - 1,
                                        y as isize + (k / 3 % 3) as isize - 1,
                                        xx as isize + (k % 3) as isize - 1,
                                    );
                                    if zz < 0
                                        || yy < 0
                                        || xi < 0
                                        || zz >= d as isize
                                        || yy >= h as isize
                                        || xi >= w as isize
                                    {
                                        continue;
                                    }
                                    let v = x[(((b * g.cin + i) * d + zz as usize) * h
                                        + yy as usize)
                                        * w
                                        + xi as usize];
                                    s += (v * weight[(o * g.cin + i) * TAPS + k]) as f64;
                                }
                            }
                            out[(((b * g.cout + o) * d + z) * h + y) * w + xx] = s as f32;
                        }
                    }
                }
            }
        }
        out
    }

    fn close(a: &[f32], b: &[f32], tol: f32) {
        assert_eq!(a.len(), b.len());
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() <= tol, "element {i}: {x} vs {y}");
        }
    }

    /// Σ_out grad · conv(x) is bilinear: its derivatives are the two gradients, checked here by
    /// the identities <grad, conv(x, W)> = <input_grad(grad), x> = <weight_grad(x, grad), W>.
    #[test]
    fn all_three_passes_match_the_definition() {
        for g in [
            Geometry {
                batch: 2,
                cin: 3,
                cout: 5,
                dims: [4, 6, 7],
            },
            Geometry {
                batch: 1,
                cin: 1,
                cout: 2,
                dims: [1, 1, 1],
            },
            Geometry {
                batch: 1,
                cin: 4,
                cout: 3,
                dims: [3, 40, 2],
            },
        ] {
            let [d, h, w] = g.dims;
            let x = values(g.batch * g.cin * d * h * w, 1);
            let wt = values(g.cout * g.cin * TAPS, 2);
            let gr = values(g.batch * g.cout * d * h * w, 3);
            let y = forward(&x, &wt, g);
            close(&y, &naive(&x, &wt, g), 1e-5);
            let dot = |a: &[f32], b: &[f32]| -> f64 {
                a.iter()
                    .zip(b)
                    .map(|(p, q)| (*p as f64) * (*q as f64))
                    .sum()
            };
            let reference = dot(&gr, &y);
            let dx = input_grad(&gr, &wt, g);
            let dw = weight_grad(&x, &gr, g);
            assert!((dot(&dx, &x) - reference).abs() < 1e-4, "input gradient");
            assert!((dot(&dw, &wt) - reference).abs() < 1e-4, "weight gradient");
            // and voxel by voxel: dx is the correlation with the flipped transposed kernel
            let mut flipped = vec![0.0f32; wt.len()];
            for o in 0..g.cout {
                for i in 0..g.cin {
                    for k in 0..TAPS {
                        flipped[(i * g.cout + o) * TAPS + k] = wt[(o * g.cin + i) * TAPS + 26 - k];
                    }
                }
            }
            let swapped = Geometry {
                cin: g.cout,
                cout: g.cin,
                ..g
            };
            close(&dx, &naive(&gr, &flipped, swapped), 1e-5);
        }
    }

    #[test]
    fn weight_gradient_is_the_same_whatever_the_thread_count() {
        let g = Geometry {
            batch: 3,
            cin: 4,
            cout: 4,
            dims: [7, 9, 11],
        };
        let [d, h, w] = g.dims;
        let x = values(g.batch * g.cin * d * h * w, 4);
        let gr = values(g.batch * g.cout * d * h * w, 5);
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap()
            .install(|| weight_grad(&x, &gr, g));
        let many = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap()
            .install(|| weight_grad(&x, &gr, g));
        assert_eq!(one, many);
    }
}
