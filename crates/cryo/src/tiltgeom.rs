//! Tilt-series image geometry shared by simulators and reconstructors: in-plane rotation by the
//! tilt-axis angle, the defocus gradient across a tilted specimen, and strip-wise CTF operations.
//!
//! Conventions: images are (y, x) row-major with x fastest; the tilt axis is the image y axis
//! rotated by `tilt_axis_deg` counter-clockwise (seen with x right, y up). A point at lateral
//! position `x_c` (Å from the image centre, perpendicular to the axis) on the specimen's mid-plane
//! at tilt θ lies `x_c tan θ` further upstream, so its defocus (underfocus positive) is
//! `Δf + x_c tan θ`.

use crate::ctf::CtfParams;
use crate::fft::{Complex32, Fft2};

/// Rotate an image by `deg` (counter-clockwise) about its centre with bilinear interpolation;
/// pixels that come from outside get `fill`.
pub fn rotate_image(img: &[f32], ny: usize, nx: usize, deg: f64, fill: f32) -> Vec<f32> {
    if deg == 0.0 {
        return img.to_vec();
    }
    let (s, c) = deg.to_radians().sin_cos();
    let (my, mx) = ((ny as f64 - 1.0) / 2.0, (nx as f64 - 1.0) / 2.0);
    let mut out = vec![fill; ny * nx];
    for y in 0..ny {
        let yc = y as f64 - my;
        for x in 0..nx {
            let xc = x as f64 - mx;
            // Inverse map: rotate the output position by -deg.
            let sx = c * xc + s * yc + mx;
            let sy = -s * xc + c * yc + my;
            let (x0, y0) = (sx.floor(), sy.floor());
            if x0 < 0.0 || y0 < 0.0 || x0 + 1.0 > nx as f64 - 1.0 || y0 + 1.0 > ny as f64 - 1.0 {
                continue;
            }
            let (fx, fy) = ((sx - x0) as f32, (sy - y0) as f32);
            let i = y0 as usize * nx + x0 as usize;
            let v = (1.0 - fy) * ((1.0 - fx) * img[i] + fx * img[i + 1])
                + fy * ((1.0 - fx) * img[i + nx] + fx * img[i + nx + 1]);
            out[y * nx + x] = v;
        }
    }
    out
}

/// Defocus (Å, underfocus positive) at column `x` of an `nx`-wide image of `pixel` Å for a
/// specimen tilted by `tilt_deg` with defocus `defocus_a` on the tilt axis.
pub fn column_defocus(defocus_a: f64, x: f64, nx: usize, pixel: f64, tilt_deg: f64) -> f64 {
    defocus_a + (x - (nx as f64 - 1.0) / 2.0) * pixel * tilt_deg.to_radians().tan()
}

/// Number of strips needed so that the defocus changes by at most `max_step_a` (Å) from one
/// strip centre to the next (at least 1, at most `cap`).
pub fn strip_count(nx: usize, pixel: f64, tilt_deg: f64, max_step_a: f64, cap: usize) -> usize {
    let span = nx as f64 * pixel * tilt_deg.to_radians().tan().abs();
    ((span / max_step_a.max(1.0)).ceil() as usize).clamp(1, cap.max(1))
}

/// Apply a per-strip operation to the spectrum of an image and blend the results with linear
/// weights between strip centres along x: `op(strip_defocus, spectrum)` modifies a copy of the
/// spectrum; the results are inverse-transformed and blended. With one strip this is a plain
/// filter at the axis defocus.
#[allow(clippy::too_many_arguments)]
pub fn strip_filter(
    spectrum: &[Complex32],
    ny: usize,
    nx: usize,
    pixel: f64,
    tilt_deg: f64,
    defocus_a: f64,
    strips: usize,
    fft: &Fft2,
    mut op: impl FnMut(f64, &mut [Complex32]),
) -> Vec<f32> {
    let n = strips.max(1);
    let centre = |j: usize| (j as f64 + 0.5) * nx as f64 / n as f64 - 0.5;
    let mut out = vec![0f32; ny * nx];
    // One spectrum copy and one FFT work buffer for all strips.
    let (mut s, mut work) = (spectrum.to_vec(), Vec::new());
    for j in 0..n {
        if j > 0 {
            s.copy_from_slice(spectrum);
        }
        op(
            column_defocus(defocus_a, centre(j), nx, pixel, tilt_deg),
            &mut s,
        );
        fft.inverse_with(&mut s, &mut work);
        // Hat weight of strip j at column x.
        let width = nx as f64 / n as f64;
        for x in 0..nx {
            let d = (x as f64 - centre(j)).abs() / width;
            let w = if n == 1
                || (j == 0 && (x as f64) < centre(0))
                || (j == n - 1 && x as f64 > centre(n - 1))
            {
                1.0
            } else {
                (1.0 - d).max(0.0)
            } as f32;
            if w == 0.0 {
                continue;
            }
            for y in 0..ny {
                out[y * nx + x] += w * s[y * nx + x].re;
            }
        }
    }
    out
}

/// Strip-wise CTF phase flipping of a real image (Å pixels) of a specimen at `tilt_deg`, with
/// the CTF `p` whose mean defocus is the defocus on the tilt axis.
pub fn phase_flip_tilted(
    img: &[f32],
    ny: usize,
    nx: usize,
    pixel: f64,
    tilt_deg: f64,
    p: &CtfParams,
    strips: usize,
) -> Vec<f32> {
    let fft = Fft2::new(ny, nx);
    let spec = fft.forward_real(img);
    strip_filter(
        &spec,
        ny,
        nx,
        pixel,
        tilt_deg,
        p.defocus_a(),
        strips,
        &fft,
        |df, s| {
            let c = p.with_defocus(df).eval();
            crate::ctf::phase_flip(s, ny, nx, pixel, &c);
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_by_90_maps_axes() {
        let (ny, nx) = (5, 5);
        let mut img = vec![0f32; 25];
        img[2 * nx + 4] = 1.0; // right of centre
        let r = rotate_image(&img, ny, nx, 90.0, 0.0);
        // Counter-clockwise with y up = towards larger y index here (y down in memory)...
        let hit: Vec<usize> = (0..25).filter(|&i| r[i] > 0.5).collect();
        assert_eq!(
            hit.len(),
            0,
            "edge pixels fall outside the bilinear support"
        );
        img[2 * nx + 4] = 0.0;
        img[2 * nx + 3] = 1.0;
        let r = rotate_image(&img, ny, nx, 90.0, 0.0);
        let hit: Vec<usize> = (0..25).filter(|&i| r[i] > 0.5).collect();
        assert!(hit == vec![3 * nx + 2] || hit == vec![nx + 2], "{hit:?}");
        let back = rotate_image(&r, ny, nx, -90.0, 0.0);
        assert!(back[2 * nx + 3] > 0.99);
    }

    #[test]
    fn defocus_gradient_and_strips() {
        assert_eq!(column_defocus(20000.0, 49.5, 100, 10.0, 30.0), 20000.0);
        let d = column_defocus(20000.0, 99.0, 100, 10.0, 45.0);
        assert!((d - (20000.0 + 495.0)).abs() < 1e-6);
        assert_eq!(strip_count(256, 10.0, 0.0, 200.0, 16), 1);
        assert_eq!(strip_count(256, 10.0, 60.0, 500.0, 16), 9);
        // One strip and an identity op reproduce the image.
        let img: Vec<f32> = (0..64).map(|i| (i % 7) as f32).collect();
        let f = Fft2::new(8, 8);
        let s = f.forward_real(&img);
        let out = strip_filter(&s, 8, 8, 1.0, 40.0, 1e4, 3, &f, |_, _| {});
        for (a, b) in img.iter().zip(&out) {
            assert!((a - b).abs() < 1e-4);
        }
    }
}
