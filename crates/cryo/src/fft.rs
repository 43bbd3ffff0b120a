//! FFT helpers on top of `rustfft`: cached plans, 2D/3D complex transforms in place, real <->
//! complex conversion and frequency grids in 1/Å.
//!
//! Conventions: forward transforms are unnormalised, `inverse` divides by the number of
//! elements, so `inverse(forward(x)) == x`. Arrays are C order, the last axis fastest. Frequency
//! index `i` of an axis of `n` samples of `pixel` Å is `(i if i <= n/2 else i - n) / (n * pixel)`
//! cycles per Å.

use rustfft::{Fft, FftDirection, FftPlanner};
use std::sync::{Arc, Mutex, OnceLock};

pub use rustfft::num_complex::Complex32;

/// A cached 1D plan of length `n` (plans are shared across threads and reused).
pub fn plan(n: usize, inverse: bool) -> Arc<dyn Fft<f32>> {
    static PLANNER: OnceLock<Mutex<FftPlanner<f32>>> = OnceLock::new();
    let p = PLANNER.get_or_init(|| Mutex::new(FftPlanner::new()));
    let mut g = p.lock().unwrap_or_else(|e| e.into_inner());
    g.plan_fft(
        n,
        if inverse {
            FftDirection::Inverse
        } else {
            FftDirection::Forward
        },
    )
}

/// Frequency in cycles/Å of index `i` along an axis of `n` samples spaced `pixel` Å.
#[inline]
pub fn freq(i: usize, n: usize, pixel: f64) -> f64 {
    let k = if i <= n / 2 {
        i as f64
    } else {
        i as f64 - n as f64
    };
    k / (n as f64 * pixel)
}

/// Smallest length >= `n` whose only prime factors are 2, 3 and 5 (fast FFT sizes).
pub fn good_size(n: usize) -> usize {
    let mut m = n.max(1);
    loop {
        let mut r = m;
        for p in [2, 3, 5] {
            while r.is_multiple_of(p) {
                r /= p;
            }
        }
        if r == 1 {
            return m;
        }
        m += 1;
    }
}

/// A real array as complex numbers.
pub fn to_complex(x: &[f32]) -> Vec<Complex32> {
    x.iter().map(|&v| Complex32::new(v, 0.0)).collect()
}

/// Real parts of a complex array.
pub fn real_part(x: &[Complex32]) -> Vec<f32> {
    x.iter().map(|c| c.re).collect()
}

/// A 2D transform of `ny` x `nx` (rows of `nx`), with cached plans and scratch space.
pub struct Fft2 {
    ny: usize,
    nx: usize,
    fx: Arc<dyn Fft<f32>>,
    ix: Arc<dyn Fft<f32>>,
    fy: Arc<dyn Fft<f32>>,
    iy: Arc<dyn Fft<f32>>,
}

impl Fft2 {
    /// Plans for images of `ny` rows of `nx` samples.
    pub fn new(ny: usize, nx: usize) -> Fft2 {
        Fft2 {
            ny,
            nx,
            fx: plan(nx, false),
            ix: plan(nx, true),
            fy: plan(ny, false),
            iy: plan(ny, true),
        }
    }

    /// Shape (ny, nx).
    pub fn shape(&self) -> (usize, usize) {
        (self.ny, self.nx)
    }

    fn run(
        &self,
        data: &mut [Complex32],
        rows: &Arc<dyn Fft<f32>>,
        cols: &Arc<dyn Fft<f32>>,
        work: &mut Vec<Complex32>,
    ) {
        let (ny, nx) = (self.ny, self.nx);
        assert_eq!(
            data.len(),
            ny * nx,
            "Fft2: data length does not match shape"
        );
        let mut scratch = vec![
            Complex32::default();
            rows.get_inplace_scratch_len()
                .max(cols.get_inplace_scratch_len())
        ];
        rows.process_with_scratch(data, &mut scratch);
        // Columns: transpose, transform rows, transpose back.
        work.resize(ny * nx, Complex32::default());
        transpose(data, work, ny, nx);
        cols.process_with_scratch(work, &mut scratch);
        transpose(work, data, nx, ny);
    }

    /// Forward transform in place (unnormalised).
    pub fn forward(&self, data: &mut [Complex32]) {
        self.run(data, &self.fx, &self.fy, &mut Vec::new());
    }

    /// Inverse transform in place, normalised by `1 / (ny nx)`.
    pub fn inverse(&self, data: &mut [Complex32]) {
        self.inverse_with(data, &mut Vec::new());
    }

    /// [`Fft2::inverse`] with a caller-kept work buffer (resized as needed), for loops that
    /// transform many images of one shape without allocating each time.
    pub fn inverse_with(&self, data: &mut [Complex32], work: &mut Vec<Complex32>) {
        self.run(data, &self.ix, &self.iy, work);
        let s = 1.0 / (self.ny * self.nx) as f32;
        data.iter_mut().for_each(|c| *c *= s);
    }

    /// Forward transform of a real image.
    pub fn forward_real(&self, x: &[f32]) -> Vec<Complex32> {
        let mut c = to_complex(x);
        self.forward(&mut c);
        c
    }

    /// Inverse transform keeping the real part.
    pub fn inverse_real(&self, mut c: Vec<Complex32>) -> Vec<f32> {
        self.inverse(&mut c);
        real_part(&c)
    }
}

/// Transpose a `rows` x `cols` array into `out` (`cols` x `rows`), in cache-friendly blocks.
pub fn transpose<T: Copy>(a: &[T], out: &mut [T], rows: usize, cols: usize) {
    const B: usize = 32;
    assert!(a.len() >= rows * cols && out.len() >= rows * cols);
    for r0 in (0..rows).step_by(B) {
        for c0 in (0..cols).step_by(B) {
            for r in r0..(r0 + B).min(rows) {
                for c in c0..(c0 + B).min(cols) {
                    out[c * rows + r] = a[r * cols + c];
                }
            }
        }
    }
}

/// 3D complex transform in place of a (z, y, x) array; `inverse` normalises by the size.
pub fn fft3(data: &mut [Complex32], shape: [usize; 3], inverse: bool) {
    let [nz, ny, nx] = shape;
    assert_eq!(
        data.len(),
        nz * ny * nx,
        "fft3: data length does not match shape"
    );
    let f2 = Fft2::new(ny, nx);
    for plane in data.chunks_exact_mut(ny * nx) {
        if inverse {
            f2.inverse(plane);
        } else {
            f2.forward(plane);
        }
    }
    let pz = plan(nz, inverse);
    let mut line = vec![Complex32::default(); nz];
    let mut scratch = vec![Complex32::default(); pz.get_inplace_scratch_len()];
    let plane = ny * nx;
    let s = if inverse { 1.0 / nz as f32 } else { 1.0 };
    for i in 0..plane {
        for (z, l) in line.iter_mut().enumerate() {
            *l = data[z * plane + i];
        }
        pz.process_with_scratch(&mut line, &mut scratch);
        for (z, l) in line.iter().enumerate() {
            data[z * plane + i] = *l * s;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_2d_and_3d() {
        let (ny, nx) = (12, 20);
        let x: Vec<f32> = (0..ny * nx).map(|i| ((i * 37) % 11) as f32 - 3.0).collect();
        let f = Fft2::new(ny, nx);
        let c = f.forward_real(&x);
        // DC term is the sum.
        let sum: f32 = x.iter().sum();
        assert!((c[0].re - sum).abs() < 1e-3);
        let back = f.inverse_real(c);
        for (a, b) in x.iter().zip(&back) {
            assert!((a - b).abs() < 1e-4);
        }
        let shape = [6, 8, 10];
        let n: usize = shape.iter().product();
        let x: Vec<f32> = (0..n).map(|i| ((i * 13) % 7) as f32).collect();
        let mut c = to_complex(&x);
        fft3(&mut c, shape, false);
        assert!((c[0].re - x.iter().sum::<f32>()).abs() < 1e-2);
        fft3(&mut c, shape, true);
        for (a, b) in x.iter().zip(&c) {
            assert!((a - b.re).abs() < 1e-4 && b.im.abs() < 1e-4);
        }
    }

    #[test]
    fn single_frequency_lands_in_its_bin() {
        // cos(2 pi 3 x / n) along x -> peaks at kx = +-3.
        let (ny, nx) = (4, 16);
        let x: Vec<f32> = (0..ny * nx)
            .map(|i| (2.0 * std::f32::consts::PI * 3.0 * (i % nx) as f32 / nx as f32).cos())
            .collect();
        let c = Fft2::new(ny, nx).forward_real(&x);
        let peak = c[3].norm();
        assert!((peak - (ny * nx) as f32 / 2.0).abs() < 1e-3);
        assert!(c[5].norm() < 1e-3);
        assert!((freq(3, 16, 2.0) - 3.0 / 32.0).abs() < 1e-12);
        assert!((freq(13, 16, 2.0) + 3.0 / 32.0).abs() < 1e-12);
        assert_eq!(good_size(257), 270);
    }
}
