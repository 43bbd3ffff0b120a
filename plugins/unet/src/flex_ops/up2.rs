//! The 2×2×2 transposed convolution with stride 2 (the U-Net's upsampling) on `f32` slices:
//! `x` `[batch, cin, d, h, w]`, weight `[cin, cout, 2, 2, 2]` (burn's layout) →
//! `[batch, cout, 2d, 2h, 2w]`, with
//! `out[b, o, 2z+a, 2y+p, 2x+q] = Σ_i W[i, o, a, p, q] · x[b, i, z, y, x]`.
//!
//! The eight taps do not overlap, so each is one GEMM per input plane; the passes differ only in
//! which operand is gathered from or scattered to the interleaved output grid.

use super::{matmul, ordered_sum, taps_last, SendPtr};
use rayon::prelude::*;

/// Taps of a 2×2×2 kernel.
const TAPS: usize = 8;

/// Shape of one up-convolution: `batch` volumes of `d × h × w` input voxels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// Volumes in the batch.
    pub batch: usize,
    /// Input channels.
    pub cin: usize,
    /// Output channels.
    pub cout: usize,
    /// Input extent `[d, h, w]`; the output is twice as large along each axis.
    pub dims: [usize; 3],
}

impl Geometry {
    fn plane(&self) -> usize {
        self.dims[1] * self.dims[2]
    }
}

/// Offset of tap `t` (`t = a·4 + p·2 + q`) of input voxel `(y, x)` inside the two output planes
/// `2z, 2z+1` of one channel.
fn out_offset(t: usize, y: usize, x: usize, [_, h, w]: [usize; 3]) -> usize {
    let (a, p, q) = (t / 4, t / 2 % 2, t % 2);
    a * 4 * h * w + (2 * y + p) * 2 * w + 2 * x + q
}

/// The forward pass (no bias).
pub fn forward(x: &[f32], weight: &[f32], g: Geometry) -> Vec<f32> {
    let Geometry {
        batch,
        cin,
        cout,
        dims: [d, h, w],
    } = g;
    let hw = g.plane();
    assert_eq!(
        x.len(),
        batch * cin * d * hw,
        "up-convolution: input length"
    );
    assert_eq!(
        weight.len(),
        cin * cout * TAPS,
        "up-convolution: weight length"
    );
    let out_volume = 8 * d * hw;
    let mut out = vec![0.0f32; batch * cout * out_volume];
    if out.is_empty() {
        return out;
    }
    let out_ptr = SendPtr(out.as_mut_ptr());
    (0..batch * d).into_par_iter().for_each_init(
        || vec![0.0f32; cout * hw],
        |scratch, task| {
            let (b, z) = (task / d, task % d);
            let x_plane = &x[(b * cin * d + z) * hw..];
            for t in 0..TAPS {
                // SAFETY: dst `cout × hw` is `scratch`; lhs (o, i) = W[i, o, t] lies inside
                // `weight`; rhs (i, p) = x[b, i, z, p] (row stride d·hw) ends inside `x`.
                unsafe {
                    matmul(
                        [cout, hw, cin],
                        (scratch.as_mut_ptr(), [hw, 1]),
                        false,
                        (weight.as_ptr().add(t), [TAPS, cout * TAPS]),
                        (x_plane.as_ptr(), [d * hw, 1]),
                    );
                }
                for o in 0..cout {
                    let base = (b * cout + o) * out_volume + 2 * z * 4 * hw;
                    for y in 0..h {
                        for xx in 0..w {
                            // SAFETY: task (b, z) alone writes output planes 2z and 2z+1 of
                            // volume b, and the index is inside them.
                            unsafe {
                                *out_ptr.get().add(base + out_offset(t, y, xx, g.dims)) =
                                    scratch[o * hw + y * w + xx];
                            }
                        }
                    }
                }
            }
        },
    );
    out
}

/// Copies tap `t` of output-gradient planes `2z, 2z+1` of volume `b` into `dst` (`[cout, hw]`).
fn gather(grad: &[f32], g: Geometry, b: usize, z: usize, t: usize, dst: &mut [f32]) {
    let [d, h, w] = g.dims;
    let hw = g.plane();
    for o in 0..g.cout {
        let base = (b * g.cout + o) * 8 * d * hw + 2 * z * 4 * hw;
        for y in 0..h {
            for x in 0..w {
                dst[o * hw + y * w + x] = grad[base + out_offset(t, y, x, g.dims)];
            }
        }
    }
}

/// Gradient with respect to the input, from the output gradient `grad`.
pub fn input_grad(grad: &[f32], weight: &[f32], g: Geometry) -> Vec<f32> {
    let Geometry {
        batch,
        cin,
        cout,
        dims: [d, ..],
    } = g;
    let hw = g.plane();
    assert_eq!(
        grad.len(),
        batch * cout * 8 * d * hw,
        "up-convolution: gradient length"
    );
    let mut dx = vec![0.0f32; batch * cin * d * hw];
    if dx.is_empty() {
        return dx;
    }
    let dx_ptr = SendPtr(dx.as_mut_ptr());
    (0..batch * d).into_par_iter().for_each_init(
        || vec![0.0f32; cout * hw],
        |scratch, task| {
            let (b, z) = (task / d, task % d);
            for t in 0..TAPS {
                gather(grad, g, b, z, t, scratch);
                // SAFETY: dst (i, p) = dx[b, i, z, p]: task (b, z) alone writes plane z of
                // every channel of volume b; lhs (i, o) = W[i, o, t]; rhs is `scratch`.
                unsafe {
                    matmul(
                        [cin, hw, cout],
                        (dx_ptr.get().add((b * cin * d + z) * hw), [d * hw, 1]),
                        t > 0,
                        (weight.as_ptr().add(t), [cout * TAPS, TAPS]),
                        (scratch.as_ptr(), [hw, 1]),
                    );
                }
            }
        },
    );
    dx
}

/// Gradient with respect to the weight `[cin, cout, 2, 2, 2]`.
pub fn weight_grad(x: &[f32], grad: &[f32], g: Geometry) -> Vec<f32> {
    let Geometry {
        batch,
        cin,
        cout,
        dims: [d, ..],
    } = g;
    let hw = g.plane();
    let len = cin * cout * TAPS;
    let planes = batch * d;
    if planes * hw == 0 {
        return vec![0.0; len];
    }
    // [taps, cin, cout]
    let taps = ordered_sum(
        planes,
        len,
        || vec![0.0f32; cout * hw],
        |scratch, task, acc| {
            let (b, z) = (task / d, task % d);
            let x_plane = &x[(b * cin * d + z) * hw..];
            for t in 0..TAPS {
                gather(grad, g, b, z, t, scratch);
                // SAFETY: dst is block t (`cin × cout`) of `acc`; lhs (i, p) = x[b, i, z, p]
                // (row stride d·hw); rhs (p, o) = scratch[o·hw + p].
                unsafe {
                    matmul(
                        [cin, cout, hw],
                        (acc.as_mut_ptr().add(t * cin * cout), [cout, 1]),
                        true,
                        (x_plane.as_ptr(), [d * hw, 1]),
                        (scratch.as_ptr(), [1, hw]),
                    );
                }
            }
        },
    );
    taps_last(&taps, [cin, cout, TAPS])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flex_ops::test_values as values;

    /// The forward pass against the definition; the gradients through the identities
    /// <grad, up(x, W)> = <input_grad(grad), x> = <weight_grad(x, grad), W>.
    #[test]
    fn all_three_passes_match_the_definition() {
        let g = Geometry {
            batch: 2,
            cin: 3,
            cout: 5,
            dims: [2, 3, 4],
        };
        let [d, h, w] = g.dims;
        let x = values(g.batch * g.cin * d * h * w, 1);
        let wt = values(g.cin * g.cout * 8, 2);
        let y = forward(&x, &wt, g);
        for b in 0..g.batch {
            for o in 0..g.cout {
                for z in 0..2 * d {
                    for yy in 0..2 * h {
                        for xx in 0..2 * w {
                            let t = (z % 2) * 4 + (yy % 2) * 2 + xx % 2;
                            let mut s = 0.0f32;
                            for i in 0..g.cin {
                                s += wt[(i * g.cout + o) * 8 + t]
                                    * x[(((b * g.cin + i) * d + z / 2) * h + yy / 2) * w + xx / 2];
                            }
                            let got = y[(((b * g.cout + o) * 2 * d + z) * 2 * h + yy) * 2 * w + xx];
                            assert!((got - s).abs() < 1e-5, "{got} vs {s}");
                        }
                    }
                }
            }
        }
        let gr = values(y.len(), 3);
        let dot = |a: &[f32], b: &[f32]| -> f64 {
            a.iter()
                .zip(b)
                .map(|(p, q)| (*p as f64) * (*q as f64))
                .sum()
        };
        let reference = dot(&gr, &y);
        assert!((dot(&input_grad(&gr, &wt, g), &x) - reference).abs() < 1e-4);
        assert!((dot(&weight_grad(&x, &gr, g), &wt) - reference).abs() < 1e-4);
    }
}
