//! Mixing a clean signal with a background at a target SNR, measuring SNR, and choosing sources
//! for weighted training-set mixtures.
//!
//! **SNR** (docs/physics.md): SNR = var(s) / var(b) over the whole box, with s the clean
//! reconstructed signal and b the background as added. The mix is m = s + α·b̂, with b̂ the
//! background standardised over the box and α = sqrt(var(s) / SNR). It is measured without
//! knowing the decomposition by the two-realisation method (Frank & Al-Ali 1975): for two mixes
//! of the same signal with independent backgrounds, ρ = corr(m₁, m₂) and SNR = ρ / (1 − ρ).

use anyhow::{bail, Result};
use serde::Serialize;
use tomoflow_cryo::rng::Rng;

/// Mean and variance of a slice.
pub fn mean_var(x: &[f32]) -> (f64, f64) {
    let n = x.len().max(1) as f64;
    let m = x.iter().map(|&v| v as f64).sum::<f64>() / n;
    let v = x.iter().map(|&v| (v as f64 - m).powi(2)).sum::<f64>() / n;
    (m, v)
}

/// What a mix did (stored in the output metadata).
#[derive(Debug, Clone, Serialize)]
pub struct MixReport {
    /// SNR requested (var(signal)/var(background)).
    pub snr: f64,
    /// Variance of the clean signal over the box.
    pub signal_variance: f64,
    /// Mean of the signal (kept in the mix).
    pub signal_mean: f64,
    /// Background scale α (added background = α × standardised background).
    pub alpha: f64,
    /// Variance of the background as given (after removing the signal if it contained it).
    pub background_variance: f64,
}

/// m = s + α·(b − mean b)/std b with α = sqrt(var s / snr).
pub fn mix(signal: &[f32], background: &[f32], snr: f64) -> Result<(Vec<f32>, MixReport)> {
    if signal.len() != background.len() {
        bail!(
            "signal has {} voxels but the background {}",
            signal.len(),
            background.len()
        );
    }
    if !(snr.is_finite() && snr > 0.0) {
        bail!("SNR must be > 0, got {snr}");
    }
    let (sm, sv) = mean_var(signal);
    let (bm, bv) = mean_var(background);
    if sv <= 0.0 || sv.is_nan() {
        bail!("the signal is constant (variance {sv}); an SNR is undefined: is it the clean reconstruction of a sample with particles?");
    }
    if bv <= 0.0 || bv.is_nan() {
        bail!("the background is constant (variance {bv})");
    }
    let alpha = (sv / snr).sqrt();
    let k = (alpha / bv.sqrt()) as f32;
    let bm = bm as f32;
    let out = signal
        .iter()
        .zip(background)
        .map(|(&s, &b)| s + k * (b - bm))
        .collect();
    Ok((
        out,
        MixReport {
            snr,
            signal_variance: sv,
            signal_mean: sm,
            alpha,
            background_variance: bv,
        },
    ))
}

/// Pearson correlation of two equally long slices.
pub fn pearson(a: &[f32], b: &[f32]) -> f64 {
    let (ma, va) = mean_var(a);
    let (mb, vb) = mean_var(b);
    let c = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| (x as f64 - ma) * (y as f64 - mb))
        .sum::<f64>()
        / a.len().max(1) as f64;
    c / (va * vb).sqrt()
}

/// SNR from two mixes of one signal with independent backgrounds: ρ/(1 − ρ).
pub fn measured_snr(m1: &[f32], m2: &[f32]) -> f64 {
    let r = pearson(m1, m2);
    r / (1.0 - r)
}

/// Which source each of `count` replicates uses so that the fractions follow `weights`
/// exactly (largest remainder), in an order shuffled by `seed` (the same for all replicates).
pub fn allocate(weights: &[(String, f64)], count: usize, seed: u64) -> Result<Vec<String>> {
    if weights.is_empty() {
        bail!("no source weights given");
    }
    let total: f64 = weights.iter().map(|(_, w)| *w).sum();
    if weights.iter().any(|(_, w)| !(w.is_finite() && *w >= 0.0)) || total <= 0.0 || total.is_nan()
    {
        bail!("weights must be >= 0 with a positive sum, got {weights:?}");
    }
    if count == 0 {
        bail!("`count` must be >= 1");
    }
    let quotas: Vec<f64> = weights
        .iter()
        .map(|(_, w)| w / total * count as f64)
        .collect();
    let mut n: Vec<usize> = quotas.iter().map(|q| q.floor() as usize).collect();
    let mut rest = count - n.iter().sum::<usize>();
    let mut order: Vec<usize> = (0..weights.len()).collect();
    order.sort_by(|&a, &b| {
        (quotas[b] - quotas[b].floor())
            .partial_cmp(&(quotas[a] - quotas[a].floor()))
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(a.cmp(&b))
    });
    for &i in &order {
        if rest == 0 {
            break;
        }
        n[i] += 1;
        rest -= 1;
    }
    let mut list: Vec<String> = weights
        .iter()
        .zip(&n)
        .flat_map(|((name, _), &k)| std::iter::repeat_n(name.clone(), k))
        .collect();
    let mut rng = Rng::new(seed);
    for i in (1..list.len()).rev() {
        list.swap(i, rng.below(i as u64 + 1) as usize);
    }
    Ok(list)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spectral::{NoiseModel, Provenance, Synthesizer};

    fn smooth_signal(shape: [usize; 3]) -> Vec<f32> {
        // A few blobs: a particle-like clean signal.
        let [nz, ny, nx] = shape;
        let centres = [(10.0, 20.0, 20.0), (20.0, 40.0, 30.0), (16.0, 12.0, 48.0)];
        let mut v = vec![0.0f32; nz * ny * nx];
        for z in 0..nz {
            for y in 0..ny {
                for x in 0..nx {
                    let mut s = 0.0;
                    for &(cz, cy, cx) in &centres {
                        let d2 = (z as f64 - cz).powi(2)
                            + (y as f64 - cy).powi(2)
                            + (x as f64 - cx).powi(2);
                        s += (-d2 / 18.0).exp();
                    }
                    v[(z * ny + y) * nx + x] = s as f32;
                }
            }
        }
        v
    }

    #[test]
    fn measured_snr_of_the_mix_equals_the_requested_one() {
        let shape = [32, 64, 64];
        let sig = smooth_signal(shape);
        // Coloured (spectral) backgrounds, two independent realisations.
        let nb = 6;
        let m = NoiseModel {
            model: "anisotropic-power-spectrum".into(),
            version: 1,
            voxel_size: 10.0,
            kxy_max: 2f64.sqrt() / 20.0,
            kz_max: 0.05,
            power: (0..nb)
                .map(|iz| {
                    (0..nb)
                        .map(|ix| 1.0 / (1.0 + ix as f64 + 2.0 * iz as f64))
                        .collect()
                })
                .collect(),
            counts: vec![vec![1; nb]; nb],
            provenance: Provenance {
                fitted_by: "t".into(),
                sources: serde_json::Value::Null,
                patch: [0; 3],
                patches: 0,
            },
        };
        let s = Synthesizer::new(&m, shape, 10.0).unwrap();
        let (b1, b2) = s.pair(3, 0, &mut Vec::new());
        for snr in [0.1, 0.5, 2.0] {
            let (m1, r) = mix(&sig, &b1, snr).unwrap();
            let (m2, _) = mix(&sig, &b2, snr).unwrap();
            let got = measured_snr(&m1, &m2);
            assert!(
                (got / snr - 1.0).abs() < 0.1,
                "requested {snr}, measured {got}"
            );
            // And by the definition, with the decomposition known.
            let noise: Vec<f32> = m1.iter().zip(&sig).map(|(a, b)| a - b).collect();
            let direct = r.signal_variance / mean_var(&noise).1;
            assert!((direct / snr - 1.0).abs() < 1e-3, "{direct}");
        }
        assert!(mix(&sig, &b1, 0.0).is_err());
        assert!(mix(&vec![1.0; sig.len()], &b1, 1.0)
            .unwrap_err()
            .to_string()
            .contains("constant"));
        assert!(mix(&sig[1..], &b1, 1.0).is_err());
    }

    #[test]
    fn allocation_follows_the_weights_exactly() {
        let w = vec![
            ("synthetic".to_string(), 0.5),
            ("empirical".to_string(), 0.5),
        ];
        let a = allocate(&w, 10, 42).unwrap();
        assert_eq!(a.iter().filter(|s| *s == "synthetic").count(), 5);
        assert_eq!(a, allocate(&w, 10, 42).unwrap());
        let w3 = vec![
            ("a".to_string(), 1.0),
            ("b".to_string(), 1.0),
            ("c".to_string(), 2.0),
        ];
        let a = allocate(&w3, 7, 1).unwrap();
        let c = |n: &str| a.iter().filter(|s| *s == n).count();
        assert_eq!(c("a") + c("b") + c("c"), 7);
        assert!(c("c") == 3 || c("c") == 4);
        assert!(allocate(&[("a".into(), -1.0)], 3, 0).is_err());
    }
}
