//! Electron optics: relativistic wavelength, interaction constant, the contrast transfer
//! function with astigmatism and coherence envelopes, phase flipping, and radiation damage.
//!
//! Units: Å, kV, mm (Cs), mrad (illumination semi-angle), frequencies in cycles/Å. Defocus is
//! positive for **underfocus**. References: Frank, *Three-dimensional electron microscopy of
//! macromolecular assemblies* (2006), ch. 2 (CTF and envelopes); Kirkland, *Advanced computing
//! in electron microscopy* (2010) (wavelength, interaction constant); Grant & Grigorieff, eLife
//! 4:e06980 (2015) (critical exposure).

use crate::fft::{freq, Complex32};
use std::f64::consts::PI;

/// Relativistic electron wavelength in Å at accelerating voltage `kv` (kV):
/// `λ = 12.2643 / sqrt(V (1 + 0.978476e-6 V))`, V in volts (0.01969 Å at 300 kV).
pub fn wavelength_a(kv: f64) -> f64 {
    let v = kv * 1e3;
    12.264_3 / (v * (1.0 + 0.978_476e-6 * v)).sqrt()
}

/// Interaction constant σ = 2π m e λ / h² in rad/(V·Å) at `kv` (relativistic mass):
/// σ = 2π / (λ V) · (m0 c² + eV) / (2 m0 c² + eV) (Kirkland 2010, eq. 5.6); about 6.5e-4 at 300 kV.
pub fn interaction_constant(kv: f64) -> f64 {
    let v = kv * 1e3;
    let mc2 = 510_998.95; // electron rest energy in eV
    2.0 * PI / (wavelength_a(kv) * v) * (mc2 + v) / (2.0 * mc2 + v)
}

/// Microscope and acquisition parameters of a CTF.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CtfParams {
    /// Accelerating voltage (kV).
    pub voltage_kv: f64,
    /// Spherical aberration (mm).
    pub cs_mm: f64,
    /// Amplitude contrast fraction A (0..1; about 0.07 for vitreous ice).
    pub amplitude_contrast: f64,
    /// Defocus along the major axis (Å, underfocus positive).
    pub defocus_u_a: f64,
    /// Defocus along the minor axis (Å, underfocus positive).
    pub defocus_v_a: f64,
    /// Angle of the major axis from the x axis (degrees, counter-clockwise).
    pub astigmatism_angle_deg: f64,
    /// Illumination semi-angle (mrad) for the spatial-coherence envelope (0 = perfectly coherent).
    pub source_spread_mrad: f64,
    /// Focal spread δ (Å) for the temporal-coherence envelope (0 = none);
    /// δ = Cc sqrt((ΔE/E)² + (2ΔI/I)² + (ΔV/V)²).
    pub focal_spread_a: f64,
}

impl CtfParams {
    /// A round-beam, coherent CTF at `defocus_a` (Å, underfocus positive).
    pub fn simple(voltage_kv: f64, cs_mm: f64, amplitude_contrast: f64, defocus_a: f64) -> Self {
        CtfParams {
            voltage_kv,
            cs_mm,
            amplitude_contrast,
            defocus_u_a: defocus_a,
            defocus_v_a: defocus_a,
            astigmatism_angle_deg: 0.0,
            source_spread_mrad: 0.0,
            focal_spread_a: 0.0,
        }
    }

    /// Check ranges; the message names the offending field.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.voltage_kv.is_finite() && self.voltage_kv > 0.0) {
            return Err(format!("voltage must be > 0 kV, got {}", self.voltage_kv));
        }
        if !(self.cs_mm.is_finite() && self.cs_mm >= 0.0) {
            return Err(format!("Cs must be >= 0 mm, got {}", self.cs_mm));
        }
        if !(0.0..1.0).contains(&self.amplitude_contrast) {
            return Err(format!(
                "amplitude contrast must be in [0, 1), got {}",
                self.amplitude_contrast
            ));
        }
        if !(self.source_spread_mrad >= 0.0 && self.focal_spread_a >= 0.0) {
            return Err("source spread and focal spread must be >= 0".into());
        }
        Ok(())
    }

    /// Same parameters at another mean defocus (astigmatism kept).
    pub fn with_defocus(&self, defocus_a: f64) -> CtfParams {
        let half = (self.defocus_u_a - self.defocus_v_a) / 2.0;
        CtfParams {
            defocus_u_a: defocus_a + half,
            defocus_v_a: defocus_a - half,
            ..*self
        }
    }

    /// Mean defocus (Å).
    pub fn defocus_a(&self) -> f64 {
        (self.defocus_u_a + self.defocus_v_a) / 2.0
    }

    /// A precomputed evaluator.
    pub fn eval(&self) -> Ctf {
        Ctf {
            p: *self,
            lambda: wavelength_a(self.voltage_kv),
            cs: self.cs_mm * 1e7,
            a_phase: (1.0 - self.amplitude_contrast.powi(2)).sqrt(),
        }
    }
}

/// A CTF ready to evaluate at (kx, ky).
#[derive(Debug, Clone, Copy)]
pub struct Ctf {
    p: CtfParams,
    lambda: f64,
    cs: f64,
    a_phase: f64,
}

impl Ctf {
    /// Electron wavelength (Å).
    pub fn lambda(&self) -> f64 {
        self.lambda
    }

    /// Defocus (Å) in the direction of (kx, ky) (astigmatism).
    #[inline]
    pub fn defocus_at(&self, kx: f64, ky: f64) -> f64 {
        let p = &self.p;
        if p.defocus_u_a == p.defocus_v_a || (kx == 0.0 && ky == 0.0) {
            return p.defocus_u_a;
        }
        let a = ky.atan2(kx) - p.astigmatism_angle_deg.to_radians();
        0.5 * (p.defocus_u_a + p.defocus_v_a + (p.defocus_u_a - p.defocus_v_a) * (2.0 * a).cos())
    }

    /// Aberration phase χ(k) = π λ Δf k² − (π/2) Cs λ³ k⁴ (radians).
    #[inline]
    pub fn chi(&self, kx: f64, ky: f64) -> f64 {
        let k2 = kx * kx + ky * ky;
        let l = self.lambda;
        PI * l * self.defocus_at(kx, ky) * k2 - 0.5 * PI * self.cs * l * l * l * k2 * k2
    }

    /// Product of the spatial and temporal coherence envelopes at (kx, ky):
    /// E_s = exp(−(π α / λ)² (Cs λ³ k³ − Δf λ k)²), E_t = exp(−(π λ δ k²)² / 2).
    #[inline]
    pub fn envelope(&self, kx: f64, ky: f64) -> f64 {
        let k2 = kx * kx + ky * ky;
        let k = k2.sqrt();
        let l = self.lambda;
        let alpha = self.p.source_spread_mrad * 1e-3;
        let g = self.cs * l * l * l * k * k2 - self.defocus_at(kx, ky) * l * k;
        let es = (-(PI * alpha / l).powi(2) * g * g).exp();
        let et = (-0.5 * (PI * l * self.p.focal_spread_a * k2).powi(2)).exp();
        es * et
    }

    /// CTF(k) = −sqrt(1 − A²) sin χ − A cos χ (no envelope); negative at low k in underfocus,
    /// so that protein (positive potential) appears dark.
    #[inline]
    pub fn value(&self, kx: f64, ky: f64) -> f64 {
        let c = self.chi(kx, ky);
        -self.a_phase * c.sin() - self.p.amplitude_contrast * c.cos()
    }

    /// CTF times the envelopes.
    #[inline]
    pub fn value_with_envelope(&self, kx: f64, ky: f64) -> f64 {
        self.value(kx, ky) * self.envelope(kx, ky)
    }

    /// Wave aberration transfer `exp(iχ) E(k)` applied to an exit wave (the convention in
    /// which a weak phase object gives image contrast `2 CTF(k) φ(k)`).
    #[inline]
    pub fn wave_transfer(&self, kx: f64, ky: f64, envelope: bool) -> Complex32 {
        let c = self.chi(kx, ky);
        let e = if envelope { self.envelope(kx, ky) } else { 1.0 };
        Complex32::new((c.cos() * e) as f32, (c.sin() * e) as f32)
    }

    /// The CTF sampled on an `ny` x `nx` FFT grid of `pixel` Å (with envelopes if asked).
    pub fn grid(&self, ny: usize, nx: usize, pixel: f64, envelope: bool) -> Vec<f32> {
        let mut out = Vec::with_capacity(ny * nx);
        for y in 0..ny {
            let ky = freq(y, ny, pixel);
            for x in 0..nx {
                let kx = freq(x, nx, pixel);
                out.push(if envelope {
                    self.value_with_envelope(kx, ky)
                } else {
                    self.value(kx, ky)
                } as f32);
            }
        }
        out
    }
}

/// Phase flipping: multiply a spectrum (FFT grid of `pixel` Å) by the sign of the CTF, so that
/// every frequency ends up with positive contrast.
pub fn phase_flip(spectrum: &mut [Complex32], ny: usize, nx: usize, pixel: f64, ctf: &Ctf) {
    assert_eq!(spectrum.len(), ny * nx);
    for y in 0..ny {
        let ky = freq(y, ny, pixel);
        for (x, c) in spectrum[y * nx..(y + 1) * nx].iter_mut().enumerate() {
            if ctf.value(freq(x, nx, pixel), ky) < 0.0 {
                *c = -*c;
            }
        }
    }
}

/// Frequencies |k| (cycles/Å) of the first `n` CTF zeros of a round beam with defocus
/// `defocus_a`: the roots of −sqrt(1−A²) sin χ − A cos χ = 0, i.e. χ = mπ − atan(A/sqrt(1−A²))
/// for m = 1, 2, ..., solved for k² from the quadratic in χ(k).
pub fn ctf_zeros(p: &CtfParams, n: usize) -> Vec<f64> {
    let l = wavelength_a(p.voltage_kv);
    let cs = p.cs_mm * 1e7;
    let df = p.defocus_a();
    let a = p.amplitude_contrast;
    let shift = (a / (1.0 - a * a).sqrt()).atan();
    let mut out = Vec::new();
    let mut m = 0;
    while out.len() < n && m < 10 * n + 10 {
        let target = m as f64 * PI - shift;
        m += 1;
        if target <= 0.0 {
            continue;
        }
        // (π/2) Cs λ³ u² − π λ Δf u + χ = 0, u = k².
        let u = if cs == 0.0 {
            target / (PI * l * df)
        } else {
            let (qa, qb) = (0.5 * PI * cs * l * l * l, -PI * l * df);
            let disc = qb * qb - 4.0 * qa * target;
            if disc < 0.0 {
                break;
            }
            (-qb - disc.sqrt()) / (2.0 * qa)
        };
        if u > 0.0 {
            out.push(u.sqrt());
        }
    }
    out
}

/// Grant & Grigorieff (2015) critical exposure N_e(k) = 0.245 k^−1.665 + 2.81 e/Å² (k in 1/Å),
/// measured at 300 kV; scaled by 0.8 at 200 kV as in their paper.
pub fn critical_exposure(k: f64, kv: f64) -> f64 {
    let ne = 0.245 * k.max(1e-6).powf(-1.665) + 2.81;
    if kv < 250.0 {
        ne * 0.8
    } else {
        ne
    }
}

/// Amplitude attenuation exp(−N / (2 N_e(k))) of frequency `k` after accumulated exposure `n`
/// (e/Å²).
pub fn dose_filter(k: f64, n: f64, kv: f64) -> f64 {
    (-n / (2.0 * critical_exposure(k, kv))).exp()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wavelength_and_sigma_match_tables() {
        assert!((wavelength_a(300.0) - 0.019_687).abs() < 2e-5);
        assert!((wavelength_a(200.0) - 0.025_079).abs() < 2e-5);
        assert!((wavelength_a(100.0) - 0.037_014).abs() < 2e-5);
        let s = interaction_constant(300.0);
        assert!((s - 6.526e-4).abs() < 0.02e-4, "{s}");
    }

    #[test]
    fn ctf_zeros_at_analytic_frequencies() {
        for (kv, cs, a, df) in [
            (300.0, 2.7, 0.07, 20_000.0),
            (300.0, 0.0, 0.0, 30_000.0),
            (200.0, 2.0, 0.1, 15_000.0),
        ] {
            let p = CtfParams::simple(kv, cs, a, df);
            let c = p.eval();
            let zeros = ctf_zeros(&p, 6);
            assert_eq!(zeros.len(), 6);
            if cs == 0.0 && a == 0.0 {
                // k_n = sqrt(n / (λ Δf)) exactly.
                for (n, z) in zeros.iter().enumerate() {
                    let k = ((n + 1) as f64 / (wavelength_a(kv) * df)).sqrt();
                    assert!((z - k).abs() < 1e-9 * k);
                }
            }
            for (i, &k) in zeros.iter().enumerate() {
                let v = c.value(k, 0.0);
                assert!(v.abs() < 1e-6, "zero {i} at {k}: {v}");
                // A sign change across the zero, along both axes and diagonals.
                let d = 1e-4 * k;
                assert!(c.value(k - d, 0.0) * c.value(k + d, 0.0) < 0.0);
                let s = std::f64::consts::FRAC_1_SQRT_2;
                assert!(c.value(k * s, k * s).abs() < 1e-6);
            }
            // Underfocus: negative contrast at low frequency (protein dark).
            assert!(c.value(0.5 * zeros[0], 0.0) < 0.0);
        }
    }

    #[test]
    fn astigmatism_moves_zeros_with_direction() {
        let mut p = CtfParams::simple(300.0, 2.7, 0.07, 20_000.0);
        p.defocus_u_a = 22_000.0;
        p.defocus_v_a = 18_000.0;
        p.astigmatism_angle_deg = 30.0;
        let c = p.eval();
        let a = 30f64.to_radians();
        assert!((c.defocus_at(a.cos(), a.sin()) - 22_000.0).abs() < 1e-6);
        let b = a + std::f64::consts::FRAC_PI_2;
        assert!((c.defocus_at(b.cos(), b.sin()) - 18_000.0).abs() < 1e-6);
        let zu = ctf_zeros(&p.with_defocus(22_000.0).eval().p_round(22_000.0), 1)[0];
        assert!(c.value(zu * a.cos(), zu * a.sin()).abs() < 1e-6);
    }

    #[test]
    fn envelopes_decay_and_damage_filter() {
        let mut p = CtfParams::simple(300.0, 2.7, 0.07, 30_000.0);
        p.source_spread_mrad = 0.02;
        p.focal_spread_a = 60.0;
        let c = p.eval();
        assert!((c.envelope(0.0, 0.0) - 1.0).abs() < 1e-12);
        assert!(c.envelope(0.1, 0.0) < c.envelope(0.05, 0.0));
        assert!(c.envelope(0.3, 0.0) < 0.9);
        assert!(
            (critical_exposure(0.1, 300.0) - (0.245 * 0.1f64.powf(-1.665) + 2.81)).abs() < 1e-12
        );
        assert!(dose_filter(0.2, 50.0, 300.0) < dose_filter(0.05, 50.0, 300.0));
        assert_eq!(dose_filter(0.2, 0.0, 300.0), 1.0);
    }

    #[test]
    fn phase_flip_makes_contrast_positive() {
        let p = CtfParams::simple(300.0, 2.7, 0.07, 20_000.0);
        let c = p.eval();
        let (n, px) = (64, 4.0);
        let g = c.grid(n, n, px, false);
        let mut s: Vec<Complex32> = g.iter().map(|&v| Complex32::new(v, 0.0)).collect();
        phase_flip(&mut s, n, n, px, &c);
        assert!(s.iter().all(|v| v.re >= -1e-7));
    }

    impl Ctf {
        fn p_round(&self, df: f64) -> CtfParams {
            CtfParams::simple(
                self.p.voltage_kv,
                self.p.cs_mm,
                self.p.amplitude_contrast,
                df,
            )
        }
    }
}
