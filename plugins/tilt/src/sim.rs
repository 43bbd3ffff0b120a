//! Image formation for one tilt: projection approximation or multislice, radiation damage,
//! CTF with the defocus gradient, inelastic loss, detector MTF/DQE and shot noise.
//! Pure functions, unit-tested without a host (docs/physics.md, "Image formation: tilt series").

use tomoflow_cryo::ctf::{dose_filter, interaction_constant, wavelength_a, CtfParams};
use tomoflow_cryo::fft::{freq, transpose, Complex32, Fft2};
use tomoflow_cryo::poisson::Rng;
use tomoflow_cryo::projector::{
    forward, forward_slabs, layers_integral, split_uniform_layers, Geometry,
};
use tomoflow_cryo::tiltgeom::{column_defocus, rotate_image, strip_count};

/// Radiation-damage model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Damage {
    /// No damage.
    None,
    /// Grant & Grigorieff (2015) critical exposure: amplitudes × exp(−N / (2 N_e(k))).
    GrantGrigorieff,
    /// A B-factor growing with exposure: amplitudes × exp(−b N k² / 4), `b` in Å² per e/Å².
    BFactor(f64),
}

/// Everything about the simulated acquisition except the tilt itself.
#[derive(Debug, Clone)]
pub struct Model {
    /// Projector geometry (volume shape, voxel size = pixel size).
    pub geom: Geometry,
    /// Optics; its mean defocus is overridden per tilt.
    pub ctf: CtfParams,
    /// Apply the CTF (false: perfect in-focus imaging, amplitude contrast only).
    pub apply_ctf: bool,
    /// Apply the coherence envelopes.
    pub envelopes: bool,
    /// Input values are multiplied by this to get the potential in V.
    pub potential_scale: f64,
    /// Radiation damage.
    pub damage: Damage,
    /// Ice thickness (Å) for inelastic loss (0 = none).
    pub ice_thickness_a: f64,
    /// Inelastic mean free path (Å).
    pub inelastic_mfp_a: f64,
    /// Detector MTF of a counting detector, sinc(π k p) (false: ideal).
    pub mtf: bool,
    /// DQE at zero frequency (1 = ideal).
    pub dqe0: f64,
    /// Draw Poisson shot noise.
    pub noise: bool,
    /// Tilt-axis angle (degrees, counter-clockwise from the image y axis).
    pub tilt_axis_deg: f64,
    /// Multislice slice thickness (Å); `None` = projection approximation.
    pub slice_a: Option<f64>,
    /// Largest defocus change (Å) between strips in the projection approximation.
    pub strip_step_a: f64,
    /// Line integral (input units · Å, at normal incidence) of the laterally uniform layers
    /// split off the volume ([`tomoflow_cryo::projector::split_uniform_layers`]: the ice slab).
    /// They extend beyond the box, so at tilt θ every ray crosses `layers_a / cos θ`: a constant
    /// phase, which leaves |ψ|² unchanged but for its amplitude-contrast attenuation.
    pub layers_a: f64,
}

/// The acquisition of one image.
#[derive(Debug, Clone, Copy)]
pub struct TiltShot {
    /// Tilt angle (degrees).
    pub angle_deg: f64,
    /// Exposure (e/Å²).
    pub dose: f64,
    /// Exposure before it (e/Å²).
    pub prior_dose: f64,
    /// Defocus on the tilt axis (Å, underfocus positive).
    pub defocus_a: f64,
    /// Seed of its noise.
    pub seed: u64,
}

/// Amplitude-contrast ratio a = A / sqrt(1 − A²): the imaginary (absorptive) part of the
/// potential relative to the real part, giving a weak-object contrast of −sqrt(1−A²) sin χ − A cos χ.
fn absorption_ratio(a: f64) -> f64 {
    a / (1.0 - a * a).sqrt()
}

/// Damage filter in place on a spectrum of a (ny, nx) image.
fn apply_damage(spec: &mut [Complex32], ny: usize, nx: usize, px: f64, model: &Model, n: f64) {
    if model.damage == Damage::None || n <= 0.0 {
        return;
    }
    let kv = model.ctf.voltage_kv;
    for y in 0..ny {
        let ky = freq(y, ny, px);
        for x in 0..nx {
            let kx = freq(x, nx, px);
            let k2 = kx * kx + ky * ky;
            let f = match model.damage {
                Damage::None => 1.0,
                Damage::GrantGrigorieff => {
                    if k2 == 0.0 {
                        1.0
                    } else {
                        dose_filter(k2.sqrt(), n, kv)
                    }
                }
                Damage::BFactor(b) => (-b * n * k2 / 4.0).exp(),
            };
            spec[y * nx + x] *= f as f32;
        }
    }
}

/// (u, y) projection -> (y, u) image.
fn to_image(p_uy: &[f32], g: &Geometry) -> Vec<f32> {
    let mut img = vec![0f32; p_uy.len()];
    transpose(p_uy, &mut img, g.nu, g.ny);
    img
}

/// Band limit used by multislice (2/3 of Nyquist, Kirkland 2010) as a mask.
fn bandlimit(ny: usize, nx: usize, px: f64) -> Vec<f32> {
    let kmax = 2.0 / 3.0 * 0.5 / px;
    let mut m = vec![0f32; ny * nx];
    for y in 0..ny {
        let ky = freq(y, ny, px);
        for x in 0..nx {
            let kx = freq(x, nx, px);
            m[y * nx + x] = if kx * kx + ky * ky <= kmax * kmax {
                1.0
            } else {
                0.0
            };
        }
    }
    m
}

/// Split the laterally uniform layers (the ice slab) off a (z, x, y) volume into
/// `model.layers_a`, leaving in the volume only what differs from them.
pub fn split_layers(model: &mut Model, vol_zxy: &mut [f32]) {
    let levels = split_uniform_layers(vol_zxy, model.geom.nz);
    model.layers_a = layers_integral(&levels, model.geom.voxel_a);
}

/// Exit-wave intensity |ψ|² (relative to the vacuum beam, before inelastic loss) in the
/// detector frame of the tilt axis, i.e. before the in-plane rotation.
pub fn intensity(model: &Model, vol_zxy: &[f32], shot: &TiltShot) -> Vec<f32> {
    let mut out = box_intensity(model, vol_zxy, shot);
    if model.layers_a != 0.0 {
        // ψ = ψ_box · exp((i − a) φ_layers): only the amplitude term changes |ψ|².
        let sigma = interaction_constant(model.ctf.voltage_kv) * model.potential_scale;
        let cos = shot.angle_deg.to_radians().cos().abs().max(1e-3);
        let phase = sigma * model.layers_a / cos;
        let f = (-2.0 * absorption_ratio(model.ctf.amplitude_contrast) * phase).exp() as f32;
        for v in out.iter_mut() {
            *v *= f;
        }
    }
    out
}

/// [`intensity`] of what the box holds (the volume without its uniform layers).
fn box_intensity(model: &Model, vol_zxy: &[f32], shot: &TiltShot) -> Vec<f32> {
    let g = &model.geom;
    let (ny, nx, px) = (g.ny, g.nu, g.voxel_a);
    let fft = Fft2::new(ny, nx);
    let sigma = interaction_constant(model.ctf.voltage_kv) * model.potential_scale;
    let ab = absorption_ratio(model.ctf.amplitude_contrast);
    let theta = shot.angle_deg.to_radians();
    // Damage at the middle of this exposure.
    let n_dose = shot.prior_dose + 0.5 * shot.dose;
    let transmit = |phase: f32| {
        let amp = (-(ab as f32) * phase).exp();
        Complex32::new(amp * phase.cos(), amp * phase.sin())
    };
    let ctfp = model.ctf.with_defocus(shot.defocus_a);
    let (wave_spec, exit_depth_a) = match model.slice_a {
        None => {
            let mut p = vec![0f32; g.projection_len()];
            forward(g, vol_zxy, theta, &mut p);
            let mut phi = fft.forward_real(&to_image(&p, g));
            apply_damage(&mut phi, ny, nx, px, model, n_dose);
            fft.inverse(&mut phi);
            let mut psi: Vec<Complex32> =
                phi.iter().map(|c| transmit(c.re * sigma as f32)).collect();
            fft.forward(&mut psi);
            (psi, 0.0)
        }
        Some(dz) => {
            let wmax = tomoflow_cryo::projector::max_depth(g, theta) + 1.0;
            let n = ((2.0 * wmax * px / dz).ceil() as usize).max(1);
            let pl = g.projection_len();
            let mut slabs = vec![0f32; n * pl];
            let thick = forward_slabs(g, vol_zxy, theta, n, &mut slabs);
            let lambda = wavelength_a(model.ctf.voltage_kv);
            let mask = bandlimit(ny, nx, px);
            // Fresnel propagator over one slice: exp(iπλΔz k²), band-limited.
            let mut prop = vec![Complex32::default(); ny * nx];
            for y in 0..ny {
                let ky = freq(y, ny, px);
                for x in 0..nx {
                    let kx = freq(x, nx, px);
                    let ph = std::f64::consts::PI * lambda * thick * (kx * kx + ky * ky);
                    let m = mask[y * nx + x];
                    prop[y * nx + x] = Complex32::new(ph.cos() as f32 * m, ph.sin() as f32 * m);
                }
            }
            let mut psi = vec![Complex32::new(1.0, 0.0); ny * nx];
            for k in 0..n {
                let mut v = fft.forward_real(&to_image(&slabs[k * pl..(k + 1) * pl], g));
                apply_damage(&mut v, ny, nx, px, model, n_dose);
                for (c, m) in v.iter_mut().zip(&mask) {
                    *c *= *m;
                }
                fft.inverse(&mut v);
                for (w, c) in psi.iter_mut().zip(&v) {
                    *w *= transmit(c.re * sigma as f32);
                }
                fft.forward(&mut psi);
                if k + 1 < n {
                    for (w, p) in psi.iter_mut().zip(&prop) {
                        *w *= *p;
                    }
                    fft.inverse(&mut psi);
                }
            }
            // Slab k's potential sits at its centre depth; the wave is now at the last centre.
            let last_centre = (-wmax + (n as f64 - 0.5) * thick / px) * px;
            (psi, last_centre)
        }
    };
    let strips = if model.apply_ctf && model.slice_a.is_none() {
        strip_count(nx, px, shot.angle_deg, model.strip_step_a, 32)
    } else {
        1
    };
    let mut out = vec![0f32; ny * nx];
    if !model.apply_ctf {
        let mut w = wave_spec;
        fft.inverse(&mut w);
        for (o, c) in out.iter_mut().zip(&w) {
            *o = c.norm_sqr();
        }
        return out;
    }
    // |ψ|² is not linear in ψ: filter per strip, take the intensity, blend intensities.
    let tilt_for_strips = if model.slice_a.is_some() {
        0.0
    } else {
        shot.angle_deg
    };
    let mut intensities: Vec<Vec<f32>> = Vec::with_capacity(strips);
    for j in 0..strips {
        let centre = (j as f64 + 0.5) * nx as f64 / strips as f64 - 0.5;
        let df = column_defocus(shot.defocus_a, centre, nx, px, tilt_for_strips) - exit_depth_a;
        let c = ctfp.with_defocus(df).eval();
        let mut w = wave_spec.clone();
        for y in 0..ny {
            let ky = freq(y, ny, px);
            for x in 0..nx {
                w[y * nx + x] *= c.wave_transfer(freq(x, nx, px), ky, model.envelopes);
            }
        }
        fft.inverse(&mut w);
        intensities.push(w.iter().map(|c| c.norm_sqr()).collect());
    }
    let width = nx as f64 / strips as f64;
    for (j, im) in intensities.iter().enumerate() {
        let centre = (j as f64 + 0.5) * width - 0.5;
        for x in 0..nx {
            let xf = x as f64;
            let w = if strips == 1 || (j == 0 && xf < centre) || (j == strips - 1 && xf > centre) {
                1.0
            } else {
                (1.0 - (xf - centre).abs() / width).max(0.0)
            } as f32;
            if w == 0.0 {
                continue;
            }
            for y in 0..ny {
                out[y * nx + x] += w * im[y * nx + x];
            }
        }
    }
    out
}

/// The recorded image of one tilt in electrons per pixel: intensity, in-plane rotation by the
/// tilt-axis angle, inelastic loss, exposure, detector MTF and (optionally) Poisson noise.
pub fn simulate_tilt(model: &Model, vol_zxy: &[f32], shot: &TiltShot) -> Vec<f32> {
    let g = &model.geom;
    let (ny, nx, px) = (g.ny, g.nu, g.voxel_a);
    let i = intensity(model, vol_zxy, shot);
    let mean = i.iter().map(|&v| v as f64).sum::<f64>() / i.len().max(1) as f64;
    let i = rotate_image(&i, ny, nx, model.tilt_axis_deg, mean as f32);
    let cos = shot.angle_deg.to_radians().cos().abs().max(1e-3);
    let zero_loss = if model.inelastic_mfp_a > 0.0 {
        (-model.ice_thickness_a / (model.inelastic_mfp_a * cos)).exp()
    } else {
        1.0
    };
    let electrons = shot.dose * px * px * zero_loss;
    let mut e: Vec<f32> = i.iter().map(|&v| (v as f64 * electrons) as f32).collect();
    if model.mtf {
        let fft = Fft2::new(ny, nx);
        let mut s = fft.forward_real(&e);
        for y in 0..ny {
            let ky = freq(y, ny, px);
            for x in 0..nx {
                let kx = freq(x, nx, px);
                s[y * nx + x] *= (sinc(kx * px) * sinc(ky * px)) as f32;
            }
        }
        e = fft.inverse_real(s);
    }
    if model.noise {
        let mut rng = Rng::new(shot.seed);
        let q = model.dqe0.clamp(1e-3, 1.0);
        for v in e.iter_mut() {
            *v = (rng.poisson(q * (*v).max(0.0) as f64) / q) as f32;
        }
    }
    e
}

/// sin(πx)/(πx): the pixel-aperture MTF of a counting detector at x = k × pixel.
fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        1.0
    } else {
        let a = std::f64::consts::PI * x;
        a.sin() / a
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tomoflow_cryo::projector::to_zxy;

    fn model(shape: [usize; 3], vs: f64) -> Model {
        Model {
            geom: Geometry::new(shape, vs),
            ctf: CtfParams::simple(300.0, 2.7, 0.07, 20_000.0),
            apply_ctf: true,
            envelopes: false,
            potential_scale: 1.0,
            damage: Damage::None,
            ice_thickness_a: 0.0,
            inelastic_mfp_a: 0.0,
            mtf: false,
            dqe0: 1.0,
            noise: false,
            tilt_axis_deg: 0.0,
            slice_a: None,
            strip_step_a: 500.0,
            layers_a: 0.0,
        }
    }

    #[test]
    fn an_ice_slab_images_flat_to_the_edges_at_high_tilt() {
        // Ice filling the box's depth: inside the box, rays near the x edges at 60° would cross
        // less of it; split off as a laterally infinite layer, the image is flat.
        let shape = [16, 4, 48];
        let mut m = model(shape, 10.0);
        let slab = vec![4.5f32; 16 * 4 * 48];
        let spread = |img: &[f32]| {
            let mean = img.iter().sum::<f32>() / img.len() as f32;
            let max = img.iter().map(|v| (v - mean).abs()).fold(0.0, f32::max);
            (mean, max / mean)
        };
        let boxed = intensity(&m, &to_zxy(&slab, shape), &shot(60.0));
        let mut vol = to_zxy(&slab, shape);
        split_layers(&mut m, &mut vol);
        assert!((m.layers_a - 16.0 * 10.0 * 4.5).abs() < 1e-6);
        let infinite = intensity(&m, &vol, &shot(60.0));
        let (mean_box, spread_box) = spread(&boxed);
        let (mean_inf, spread_inf) = spread(&infinite);
        assert!(
            spread_box > 1e-3,
            "the boxed slab should show its edges: {spread_box}"
        );
        assert!(spread_inf < 1e-5, "the infinite slab is flat: {spread_inf}");
        // Amplitude contrast of 320 Å of ice over cos 60°: the flat level is below the vacuum
        // beam, and at the box's centre both agree.
        assert!(mean_inf < 1.0 && mean_inf > 0.5, "{mean_inf}");
        let centre = boxed[2 * 48 + 24];
        assert!(
            (centre - mean_inf).abs() < 0.02 * mean_inf,
            "{centre} vs {mean_inf} ({mean_box})"
        );
    }

    fn shot(angle: f64) -> TiltShot {
        TiltShot {
            angle_deg: angle,
            dose: 3.0,
            prior_dose: 0.0,
            defocus_a: 20_000.0,
            seed: 1,
        }
    }

    /// A thin, weak disc in the middle plane.
    fn thin_object(shape: [usize; 3]) -> Vec<f32> {
        let [nz, ny, nx] = shape;
        let mut v = vec![0f32; nz * ny * nx];
        let z = nz / 2;
        for y in 0..ny {
            for x in 0..nx {
                let (dy, dx) = (y as f64 - ny as f64 / 2.0, x as f64 - nx as f64 / 2.0);
                if dy * dy + dx * dx < 64.0 {
                    v[(z * ny + y) * nx + x] = 0.5;
                }
            }
        }
        v
    }

    #[test]
    fn protein_is_dark_in_underfocus() {
        let shape = [8, 48, 48];
        let m = model(shape, 4.0);
        let vol = to_zxy(&thin_object(shape), shape);
        let i = intensity(&m, &vol, &shot(0.0));
        let centre = i[24 * 48 + 24];
        let far = i[2 * 48 + 2];
        assert!(centre < far, "centre {centre} vs background {far}");
    }

    /// A thin, weak, smooth (band-limited) Gaussian blob in one plane.
    fn thin_blob(shape: [usize; 3]) -> Vec<f32> {
        let [nz, ny, nx] = shape;
        let mut v = vec![0f32; nz * ny * nx];
        let z = nz / 2;
        for y in 0..ny {
            for x in 0..nx {
                let (dy, dx) = (y as f64 - ny as f64 / 2.0, x as f64 - nx as f64 / 2.0);
                v[(z * ny + y) * nx + x] = (0.5 * (-(dy * dy + dx * dx) / 18.0).exp()) as f32;
            }
        }
        v
    }

    #[test]
    fn multislice_agrees_with_projection_for_a_thin_weak_phase_object() {
        let shape = [8, 64, 64];
        let vol = to_zxy(&thin_blob(shape), shape);
        let mut m = model(shape, 4.0);
        // Peak phase σ × 10 V × 4 Å ≈ 0.026 rad: a weak phase object.
        m.potential_scale = 20.0;
        let a = intensity(&m, &vol, &shot(0.0));
        m.slice_a = Some(8.0);
        let b = intensity(&m, &vol, &shot(0.0));
        let mean = a.iter().sum::<f32>() / a.len() as f32;
        let ca: Vec<f32> = a.iter().map(|v| v - mean).collect();
        let cb: Vec<f32> = b.iter().map(|v| v - mean).collect();
        let num: f32 = ca.iter().zip(&cb).map(|(x, y)| (x - y).powi(2)).sum();
        let den: f32 = ca.iter().map(|x| x * x).sum();
        let rel = (num / den).sqrt();
        assert!(rel < 0.05, "relative difference of the contrast {rel}");
        // Contrast is weak (weak-phase regime) but present.
        assert!(den.sqrt() / (a.len() as f32).sqrt() > 1e-4);
    }

    #[test]
    fn shot_noise_has_poisson_statistics_at_the_dose() {
        let shape = [4, 64, 64];
        let mut m = model(shape, 2.0);
        m.apply_ctf = false;
        m.noise = true;
        let vol = vec![0f32; 4 * 64 * 64];
        let img = simulate_tilt(&m, &vol, &shot(0.0));
        let n = img.len() as f64;
        let mean = img.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = img.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / (n - 1.0);
        // 3 e/Å² on (2 Å)² pixels: 12 electrons per pixel.
        assert!((mean - 12.0).abs() < 0.2, "mean {mean}");
        assert!(
            (var / mean - 1.0).abs() < 0.06,
            "variance {var} vs mean {mean}"
        );
        // DQE < 1 adds noise; the MTF smooths it.
        m.dqe0 = 0.5;
        let img = simulate_tilt(&m, &vol, &shot(0.0));
        let var2 = img.iter().map(|&v| (v as f64 - 12.0).powi(2)).sum::<f64>() / n;
        assert!((var2 / 24.0 - 1.0).abs() < 0.08, "{var2}");
    }

    #[test]
    fn inelastic_loss_and_damage_reduce_signal() {
        let shape = [8, 32, 32];
        let mut m = model(shape, 4.0);
        m.apply_ctf = false;
        m.ice_thickness_a = 1000.0;
        m.inelastic_mfp_a = 3800.0;
        let vol = vec![0f32; 8 * 32 * 32];
        let a = simulate_tilt(&m, &vol, &shot(0.0))[0];
        let b = simulate_tilt(&m, &vol, &shot(60.0))[0];
        assert!((a as f64 / (3.0 * 16.0) - (-1000.0f64 / 3800.0).exp()).abs() < 1e-4);
        assert!((b as f64 / (3.0 * 16.0) - (-2000.0f64 / 3800.0).exp()).abs() < 1e-4);
        // Damage lowers the contrast of a high-resolution object.
        let v = to_zxy(&thin_object(shape), shape);
        let mut m = model(shape, 4.0);
        let c0 = contrast(&intensity(&m, &v, &shot(0.0)));
        m.damage = Damage::GrantGrigorieff;
        let mut late = shot(0.0);
        late.prior_dose = 100.0;
        let c1 = contrast(&intensity(&m, &v, &late));
        assert!(c1 < 0.9 * c0, "{c1} vs {c0}");
    }

    fn contrast(i: &[f32]) -> f32 {
        let m = i.iter().sum::<f32>() / i.len() as f32;
        (i.iter().map(|v| (v - m).powi(2)).sum::<f32>() / i.len() as f32).sqrt()
    }
}
