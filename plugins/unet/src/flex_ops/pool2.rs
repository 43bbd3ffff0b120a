//! 2×2×2 max pooling with stride 2 on `[volumes, d, h, w]` `f32` data (even edges), and its
//! gradient: each output's gradient goes to the first voxel of its block that holds the maximum.

use rayon::prelude::*;

/// The eight offsets of a 2×2×2 block in a `[d, h, w]` volume, in z, y, x order.
fn block([_, h, w]: [usize; 3]) -> [usize; 8] {
    let (sz, sy) = (h * w, w);
    [0, 1, sy, sy + 1, sz, sz + 1, sz + sy, sz + sy + 1]
}

/// Index (0..8) of the first maximum of the block at `base`.
fn arg_max(x: &[f32], base: usize, offsets: &[usize; 8]) -> usize {
    let mut best = 0;
    for (k, off) in offsets.iter().enumerate().skip(1) {
        if x[base + off] > x[base + offsets[best]] {
            best = k;
        }
    }
    best
}

fn check(len: usize, volumes: usize, [d, h, w]: [usize; 3]) {
    assert!(
        d % 2 == 0 && h % 2 == 0 && w % 2 == 0,
        "max pooling needs even edges, got {d} x {h} x {w}"
    );
    assert_eq!(len, volumes * d * h * w, "max pooling: input length");
}

/// `out[v, z, y, x] = max over the block at (2z, 2y, 2x)`.
pub fn forward(x: &[f32], volumes: usize, dims: [usize; 3]) -> Vec<f32> {
    check(x.len(), volumes, dims);
    let [d, h, w] = dims;
    let offsets = block(dims);
    let (oh, ow) = (h / 2, w / 2);
    let mut out = vec![0.0f32; volumes * (d / 2) * oh * ow];
    out.par_chunks_mut((oh * ow).max(1))
        .enumerate()
        .for_each(|(plane, o)| {
            let (v, z) = (plane / (d / 2), plane % (d / 2));
            let volume = v * d * h * w + 2 * z * h * w;
            for y in 0..oh {
                for xx in 0..ow {
                    let base = volume + 2 * y * w + 2 * xx;
                    o[y * ow + xx] = x[base + offsets[arg_max(x, base, &offsets)]];
                }
            }
        });
    out
}

/// Gradient with respect to the input, from the output gradient `grad`.
pub fn input_grad(x: &[f32], grad: &[f32], volumes: usize, dims: [usize; 3]) -> Vec<f32> {
    check(x.len(), volumes, dims);
    let [d, h, w] = dims;
    let offsets = block(dims);
    let (oh, ow) = (h / 2, w / 2);
    assert_eq!(
        grad.len(),
        volumes * (d / 2) * oh * ow,
        "max pooling: gradient length"
    );
    let mut dx = vec![0.0f32; x.len()];
    // Each task owns two input planes (one output plane).
    dx.par_chunks_mut((2 * h * w).max(1))
        .enumerate()
        .for_each(|(plane, out)| {
            let (v, z) = (plane / (d / 2), plane % (d / 2));
            let base_in = v * d * h * w + 2 * z * h * w;
            let base_out = plane * oh * ow;
            for y in 0..oh {
                for xx in 0..ow {
                    let local = 2 * y * w + 2 * xx;
                    let k = arg_max(x, base_in + local, &offsets);
                    out[local + offsets[k]] = grad[base_out + y * ow + xx];
                }
            }
        });
    dx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooling_and_its_gradient_follow_the_definition() {
        let dims = [4, 6, 2];
        let volumes = 3;
        let n = volumes * 4 * 6 * 2;
        // distinct values, so that every block has one maximum
        let x: Vec<f32> = (0..n).map(|i| ((i * 37) % n) as f32 - 20.0).collect();
        let y = forward(&x, volumes, dims);
        assert_eq!(y.len(), volumes * 2 * 3);
        let grad: Vec<f32> = (0..y.len()).map(|i| i as f32 + 1.0).collect();
        let dx = input_grad(&x, &grad, volumes, dims);
        for v in 0..volumes {
            for z in 0..2 {
                for yy in 0..3 {
                    let mut best = (f32::MIN, 0);
                    for dz in 0..2 {
                        for dy in 0..2 {
                            for dxx in 0..2 {
                                let i = ((v * 4 + 2 * z + dz) * 6 + 2 * yy + dy) * 2 + dxx;
                                if x[i] > best.0 {
                                    best = (x[i], i);
                                }
                            }
                        }
                    }
                    let o = (v * 2 + z) * 3 + yy;
                    assert_eq!(y[o], best.0);
                    assert_eq!(dx[best.1], grad[o]);
                }
            }
        }
        // everything else gets no gradient
        assert_eq!(dx.iter().filter(|v| **v != 0.0).count(), y.len());
    }
}
