//! Deterministic random numbers for simulations: xoshiro256++ seeded through SplitMix64, and an
//! exact Poisson sampler (inversion for small means, Hörmann's PTRS transformed rejection,
//! Insurance: Math. Econ. 12:39, 1993, for means >= 10, as in NumPy).

/// xoshiro256++ (Blackman & Vigna): fast, 256-bit state, good statistical quality.
#[derive(Debug, Clone)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// A generator seeded from one 64-bit value (expanded with SplitMix64).
    pub fn new(seed: u64) -> Rng {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        Rng {
            s: [next(), next(), next(), next()],
        }
    }

    /// A generator for sub-stream `k` of `seed` (e.g. one per tilt), independent of the others.
    pub fn stream(seed: u64, k: u64) -> Rng {
        Rng::new(seed ^ k.wrapping_mul(0xD1B5_4A32_D192_ED03).rotate_left(17))
    }

    /// Next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let r = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        r
    }

    /// Uniform in [0, 1).
    #[inline]
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// A Poisson-distributed count of mean `mu` (>= 0; non-finite or negative means give 0).
    pub fn poisson(&mut self, mu: f64) -> f64 {
        if mu.is_nan() || mu <= 0.0 || !mu.is_finite() {
            return 0.0;
        }
        if mu < 10.0 {
            // Inversion by sequential search.
            let mut k = 0.0;
            let mut p = (-mu).exp();
            let mut f = p;
            let u = self.uniform();
            while u > f && k < 1000.0 {
                k += 1.0;
                p *= mu / k;
                f += p;
            }
            return k;
        }
        let slam = mu.sqrt();
        let loglam = mu.ln();
        let b = 0.931 + 2.53 * slam;
        let a = -0.059 + 0.02483 * b;
        let invalpha = 1.1239 + 1.1328 / (b - 3.4);
        let vr = 0.9277 - 3.6224 / (b - 2.0);
        loop {
            let u = self.uniform() - 0.5;
            let v = self.uniform();
            let us = 0.5 - u.abs();
            let k = ((2.0 * a / us + b) * u + mu + 0.43).floor();
            if us >= 0.07 && v <= vr {
                return k;
            }
            if k < 0.0 || (us < 0.013 && v > us) {
                continue;
            }
            if (v * invalpha / (a / (us * us) + b)).ln() <= -mu + k * loglam - ln_factorial(k) {
                return k;
            }
        }
    }
}

/// ln(k!) (exact sum below 20, Stirling series above).
pub fn ln_factorial(k: f64) -> f64 {
    if k < 20.0 {
        let mut s = 0.0;
        let mut i = 2.0;
        while i <= k {
            s += f64::ln(i);
            i += 1.0;
        }
        return s;
    }
    let x = k + 1.0;
    (x - 0.5) * x.ln() - x + 0.5 * (2.0 * std::f64::consts::PI).ln() + 1.0 / (12.0 * x)
        - 1.0 / (360.0 * x * x * x)
        + 1.0 / (1260.0 * x.powi(5))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shot_noise_variance_equals_mean() {
        let mut r = Rng::new(42);
        for mu in [0.3, 2.0, 9.5, 10.0, 37.0, 250.0, 4000.0] {
            let n = 200_000;
            let xs: Vec<f64> = (0..n).map(|_| r.poisson(mu)).collect();
            let m = xs.iter().sum::<f64>() / n as f64;
            let v = xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1) as f64;
            // Standard errors: sqrt(mu/n) for the mean, about mu*sqrt(2/n) for the variance.
            assert!(
                (m - mu).abs() < 5.0 * (mu / n as f64).sqrt(),
                "mean {m} for {mu}"
            );
            assert!(
                (v / mu - 1.0).abs() < 5.0 * (2.0 / n as f64).sqrt() + 0.01,
                "var {v} for {mu}"
            );
            assert!(xs.iter().all(|&x| x >= 0.0 && x.fract() == 0.0));
        }
        assert_eq!(r.poisson(0.0), 0.0);
    }

    #[test]
    fn streams_are_deterministic_and_distinct() {
        let a: Vec<u64> = (0..4).map(|_| Rng::stream(1, 2).next_u64()).collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        assert_ne!(Rng::stream(1, 2).next_u64(), Rng::stream(1, 3).next_u64());
        assert!((ln_factorial(25.0) - (1..=25).map(|i| (i as f64).ln()).sum::<f64>()).abs() < 1e-9);
    }
}
