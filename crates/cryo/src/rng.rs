//! A small, fast, seedable random number generator with a frozen output sequence.
//!
//! tomoflow promises "same seed, same output, bit for bit" across releases and platforms, so the
//! generator is implemented here rather than taken from a crate whose stream may change between
//! versions: xoshiro256** (Blackman & Vigna, 2018) seeded through SplitMix64.

/// xoshiro256** generator. Not cryptographic; statistically excellent for simulation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rng {
    s: [u64; 4],
}

fn splitmix64(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Rng {
    /// A generator whose whole stream is determined by `seed`.
    pub fn new(seed: u64) -> Rng {
        let mut x = seed;
        let s = [
            splitmix64(&mut x),
            splitmix64(&mut x),
            splitmix64(&mut x),
            splitmix64(&mut x),
        ];
        Rng { s }
    }

    /// An independent generator for sub-stream `stream` of `seed` (e.g. one per class).
    pub fn derive(seed: u64, stream: u64) -> Rng {
        let mut x = seed ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03);
        Rng::new(splitmix64(&mut x))
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1) with 53 bits of resolution.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in [lo, hi).
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.uniform()
    }

    /// Uniform integer in `0..n` (`n > 0`), without modulo bias (Lemire's method).
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "Rng::below(0)");
        loop {
            let m = (self.next_u64() as u128) * (n as u128);
            let lo = m as u64;
            if lo >= n.wrapping_neg() % n {
                return (m >> 64) as u64;
            }
        }
    }

    /// Standard normal deviate (Box–Muller; one value per call).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform();
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_is_frozen_and_seed_dependent() {
        let mut a = Rng::new(42);
        let first: Vec<u64> = (0..3).map(|_| a.next_u64()).collect();
        let mut b = Rng::new(42);
        assert_eq!(first, (0..3).map(|_| b.next_u64()).collect::<Vec<_>>());
        let mut c = Rng::new(43);
        assert_ne!(first[0], c.next_u64());
        assert_ne!(Rng::derive(1, 0), Rng::derive(1, 1));
    }

    #[test]
    fn uniform_and_below_are_in_range_and_unbiased_enough() {
        let mut r = Rng::new(7);
        let mut counts = [0usize; 10];
        let n = 100_000;
        for _ in 0..n {
            let u = r.uniform();
            assert!((0.0..1.0).contains(&u));
            counts[r.below(10) as usize] += 1;
        }
        for c in counts {
            assert!((c as f64 - n as f64 / 10.0).abs() < 0.03 * n as f64 / 10.0 * 10.0);
        }
        let mean: f64 = (0..n).map(|_| r.normal()).sum::<f64>() / n as f64;
        assert!(mean.abs() < 0.02, "{mean}");
    }
}
