//! Streaming statistics and a streaming histogram.
//!
//! [`RunningStats`] uses Welford's update in `f64`, one value at a time, so that the result
//! depends only on the order of the values, never on how they were cut into chunks. Two
//! accumulators can be [`merged`](RunningStats::merge) (Chan et al.), e.g. after a parallel pass;
//! merged results are stable for the same chunking.

use serde::Serialize;

/// Count, mean, variance, min and max of the finite values seen, plus the number of NaN/Inf.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RunningStats {
    /// Number of finite values.
    pub count: u64,
    /// Number of NaN or infinite values (ignored by every other field).
    pub non_finite: u64,
    mean: f64,
    m2: f64,
    min: f64,
    max: f64,
}

impl Default for RunningStats {
    fn default() -> Self {
        Self::new()
    }
}

impl RunningStats {
    /// An empty accumulator.
    pub fn new() -> RunningStats {
        RunningStats {
            count: 0,
            non_finite: 0,
            mean: 0.0,
            m2: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        }
    }

    /// Add one value.
    #[inline]
    pub fn push(&mut self, x: f64) {
        if !x.is_finite() {
            self.non_finite += 1;
            return;
        }
        self.count += 1;
        let d = x - self.mean;
        self.mean += d / self.count as f64;
        self.m2 += d * (x - self.mean);
        if x < self.min {
            self.min = x;
        }
        if x > self.max {
            self.max = x;
        }
    }

    /// Add every value of a slice, in order.
    pub fn push_slice<T: Copy + Into<f64>>(&mut self, xs: &[T]) {
        for &x in xs {
            self.push(x.into());
        }
    }

    /// Accumulator of a slice.
    pub fn of<T: Copy + Into<f64>>(xs: &[T]) -> RunningStats {
        let mut s = RunningStats::new();
        s.push_slice(xs);
        s
    }

    /// Fold another accumulator into this one (as if its values had been pushed here).
    pub fn merge(&mut self, o: &RunningStats) {
        self.non_finite += o.non_finite;
        if o.count == 0 {
            return;
        }
        if self.count == 0 {
            let nf = self.non_finite;
            *self = *o;
            self.non_finite = nf;
            return;
        }
        let n = (self.count + o.count) as f64;
        let d = o.mean - self.mean;
        self.mean += d * o.count as f64 / n;
        self.m2 += o.m2 + d * d * self.count as f64 * o.count as f64 / n;
        self.count += o.count;
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
    }

    /// Mean of the finite values (0 when there are none).
    pub fn mean(&self) -> f64 {
        self.mean
    }

    /// Population variance (divides by `count`; 0 when empty).
    pub fn variance(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            (self.m2 / self.count as f64).max(0.0)
        }
    }

    /// Population standard deviation (the MRC2014 `RMS` field).
    pub fn std(&self) -> f64 {
        self.variance().sqrt()
    }

    /// Smallest finite value (0 when there are none).
    pub fn min(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.min
        }
    }

    /// Largest finite value (0 when there are none).
    pub fn max(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.max
        }
    }
}

/// Number of bins of a [`StreamingHistogram`].
pub const HIST_BINS: usize = 64;

/// An exact-count histogram of [`HIST_BINS`] bins whose range grows as values arrive.
///
/// Bin width is a power of two and bin edges are multiples of it; when a value falls outside
/// the window, the window shifts or the width doubles (adjacent bins merge), so every count is
/// exact and no value needs to be seen twice. The edges therefore enclose `[min, max]` but are
/// not equal to them.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamingHistogram {
    width: f64,
    lo_idx: i64,
    occ: Option<(i64, i64)>,
    counts: [u64; HIST_BINS],
}

impl Default for StreamingHistogram {
    fn default() -> Self {
        Self::new()
    }
}

fn floor_div2(a: i64) -> i64 {
    a.div_euclid(2)
}

impl StreamingHistogram {
    /// An empty histogram; its width is chosen from the first values.
    pub fn new() -> StreamingHistogram {
        StreamingHistogram {
            width: 0.0,
            lo_idx: 0,
            occ: None,
            counts: [0; HIST_BINS],
        }
    }

    /// Choose the initial bin width from an expected value range (e.g. the first chunk's
    /// min and max). Only has an effect before the first value.
    pub fn hint_range(&mut self, min: f64, max: f64) {
        if self.occ.is_some() || !min.is_finite() || !max.is_finite() {
            return;
        }
        let span = (max - min).abs();
        let scale = if span > 0.0 {
            span / (HIST_BINS as f64 - 2.0)
        } else {
            min.abs().max(1e-30) * 1e-6
        };
        self.width = 2f64.powi(scale.log2().ceil() as i32);
    }

    /// Add a value (NaN and infinities are ignored).
    #[inline]
    pub fn push(&mut self, x: f64) {
        if !x.is_finite() {
            return;
        }
        if self.width == 0.0 {
            self.hint_range(x, x);
        }
        loop {
            let a = (x / self.width).floor() as i64;
            let rel = a - self.lo_idx;
            if self.occ.is_some() && (0..HIST_BINS as i64).contains(&rel) {
                self.counts[rel as usize] += 1;
                let (lo, hi) = self.occ.unwrap_or((a, a));
                self.occ = Some((lo.min(a), hi.max(a)));
                return;
            }
            let (lo, hi) = match self.occ {
                Some((lo, hi)) => (lo.min(a), hi.max(a)),
                None => (a, a),
            };
            if hi - lo < HIST_BINS as i64 {
                // Shift the window so that it covers [lo, hi].
                let new_lo = if a < self.lo_idx || self.occ.is_none() {
                    lo
                } else {
                    hi - (HIST_BINS as i64 - 1)
                };
                let mut counts = [0u64; HIST_BINS];
                for (i, &c) in self.counts.iter().enumerate() {
                    if c > 0 {
                        counts[(self.lo_idx + i as i64 - new_lo) as usize] += c;
                    }
                }
                self.counts = counts;
                self.lo_idx = new_lo;
                if self.occ.is_none() {
                    self.occ = Some((a, a));
                }
                continue;
            }
            // Double the width: merge pairs of bins.
            let new_lo = floor_div2(self.occ.map_or(a, |o| o.0));
            let mut counts = [0u64; HIST_BINS];
            for (i, &c) in self.counts.iter().enumerate() {
                if c > 0 {
                    counts[(floor_div2(self.lo_idx + i as i64) - new_lo) as usize] += c;
                }
            }
            self.counts = counts;
            self.lo_idx = new_lo;
            self.occ = self.occ.map(|(l, h)| (floor_div2(l), floor_div2(h)));
            self.width *= 2.0;
        }
    }

    /// Add every value of a slice.
    pub fn push_slice<T: Copy + Into<f64>>(&mut self, xs: &[T]) {
        if self.occ.is_none() {
            let s = RunningStats::of(xs);
            if s.count > 0 {
                self.hint_range(s.min(), s.max());
            }
        }
        for &x in xs {
            self.push(x.into());
        }
    }

    /// The `HIST_BINS + 1` bin edges.
    pub fn edges(&self) -> Vec<f64> {
        (0..=HIST_BINS as i64)
            .map(|i| (self.lo_idx + i) as f64 * self.width)
            .collect()
    }

    /// The bin counts; bin `i` holds values in `[edges[i], edges[i+1])`.
    pub fn counts(&self) -> &[u64; HIST_BINS] {
        &self.counts
    }

    /// Total number of values counted.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn welford_matches_two_pass_and_merge() {
        let xs: Vec<f64> = (0..1000)
            .map(|i| ((i * 37) % 101) as f64 * 0.5 - 7.0)
            .collect();
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64;
        let s = RunningStats::of(&xs);
        assert!((s.mean() - mean).abs() < 1e-12);
        assert!((s.variance() - var).abs() < 1e-9);
        let mut a = RunningStats::of(&xs[..333]);
        a.merge(&RunningStats::of(&xs[333..]));
        assert!((a.mean() - mean).abs() < 1e-12 && (a.variance() - var).abs() < 1e-9);
        assert_eq!(a.count, 1000);
        assert_eq!(a.min(), s.min());
        assert_eq!(a.max(), s.max());
    }

    #[test]
    fn non_finite_are_counted_apart() {
        let s = RunningStats::of(&[1.0f32, f32::NAN, 3.0, f32::INFINITY]);
        assert_eq!((s.count, s.non_finite), (2, 2));
        assert_eq!(s.mean(), 2.0);
    }

    #[test]
    fn histogram_counts_are_exact_and_cover_range() {
        let mut h = StreamingHistogram::new();
        let xs: Vec<f64> = (0..5000)
            .map(|i| (i as f64 * 0.731).sin() * 3.0 + i as f64 * 1e-3)
            .collect();
        for chunk in xs.chunks(700) {
            h.push_slice(chunk);
        }
        h.push(-100.0);
        h.push(f64::NAN);
        assert_eq!(h.total(), 5001);
        let e = h.edges();
        assert!(e[0] <= -100.0 && *e.last().unwrap() > 8.0);
        for (i, &c) in h.counts().iter().enumerate() {
            let n = xs
                .iter()
                .chain([-100.0].iter())
                .filter(|&&x| x >= e[i] && x < e[i + 1])
                .count() as u64;
            assert_eq!(c, n, "bin {i}");
        }
    }
}
