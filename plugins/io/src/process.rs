//! Pure functions behind `normalize` and `volume-stats`.

use serde_json::{json, Value};
use tomoflow_cryo::stats::{RunningStats, StreamingHistogram};

/// How to normalise: `(x - mean) / std`, optionally negated, optionally clipped to ±`clip`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Normalizer {
    /// Mean subtracted.
    pub mean: f64,
    /// Divisor (the standard deviation, or 1 for a constant volume).
    pub scale: f64,
    /// Multiply by -1 after scaling.
    pub invert: bool,
    /// Clip the result to `[-clip, clip]` (in standard deviations).
    pub clip: Option<f64>,
}

impl Normalizer {
    /// From the statistics of the whole volume.
    pub fn new(stats: &RunningStats, invert: bool, clip: Option<f64>) -> Normalizer {
        let std = stats.std();
        Normalizer {
            mean: stats.mean(),
            scale: if std > 0.0 { std } else { 1.0 },
            invert,
            clip,
        }
    }

    /// Normalise values (non-finite values pass through unchanged).
    pub fn apply(&self, xs: &[f32]) -> Vec<f32> {
        let sign = if self.invert { -1.0 } else { 1.0 };
        let inv = sign / self.scale;
        xs.iter()
            .map(|&x| {
                if !x.is_finite() {
                    return x;
                }
                let mut y = (x as f64 - self.mean) * inv;
                if let Some(c) = self.clip {
                    y = y.clamp(-c, c);
                }
                y as f32
            })
            .collect()
    }
}

/// Accumulates the statistics `volume-stats` reports.
#[derive(Debug, Clone, Default)]
pub struct VolumeStats {
    /// Moments, extremes and counts.
    pub stats: RunningStats,
    /// 64-bin streaming histogram.
    pub hist: StreamingHistogram,
    /// Shape (z, y, x), once known.
    pub shape: Option<[usize; 3]>,
    /// Voxel size (z, y, x), once known.
    pub voxel_size: Option<[f64; 3]>,
}

impl VolumeStats {
    /// Add the core voxels of one chunk.
    pub fn add(&mut self, shape: [usize; 3], voxel_size: [f64; 3], core: &[f32]) {
        self.shape = Some(shape);
        self.voxel_size = Some(voxel_size);
        self.stats.push_slice(core);
        self.hist.push_slice(core);
    }

    /// The metrics document.
    pub fn to_json(&self) -> Value {
        json!({
            "shape": self.shape,
            "voxel_size": self.voxel_size,
            "count": self.stats.count,
            "non_finite": self.stats.non_finite,
            "mean": self.stats.mean(),
            "std": self.stats.std(),
            "min": self.stats.min(),
            "max": self.stats.max(),
            "histogram": {"edges": self.hist.edges(), "counts": self.hist.counts().to_vec()},
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_gives_zero_mean_unit_std() {
        let xs: Vec<f32> = (0..10_000)
            .map(|i| ((i * 7919) % 1000) as f32 * 0.37 + 55.0)
            .collect();
        let mut s = RunningStats::new();
        for c in xs.chunks(999) {
            s.merge(&RunningStats::of(c));
        }
        let n = Normalizer::new(&s, false, None);
        let ys = n.apply(&xs);
        let t = RunningStats::of(&ys);
        assert!(
            t.mean().abs() < 1e-5 && (t.std() - 1.0).abs() < 1e-5,
            "{} {}",
            t.mean(),
            t.std()
        );
        let inv = Normalizer::new(&s, true, Some(1.0)).apply(&xs);
        assert!(inv.iter().all(|v| (-1.0..=1.0).contains(v)));
        assert_eq!(inv[0], (-ys[0]).clamp(-1.0, 1.0));
        let c =
            Normalizer::new(&RunningStats::of(&[3.0f32; 5]), false, None).apply(&[3.0, f32::NAN]);
        assert_eq!(c[0], 0.0);
        assert!(c[1].is_nan());
    }

    #[test]
    fn stats_document() {
        let mut v = VolumeStats::default();
        v.add([1, 2, 2], [1.0; 3], &[1.0, 2.0, 3.0, f32::NAN]);
        let j = v.to_json();
        assert_eq!(j["count"], 3);
        assert_eq!(j["non_finite"], 1);
        assert_eq!(j["mean"], 2.0);
        assert_eq!(j["histogram"]["counts"].as_array().unwrap().len(), 64);
        assert_eq!(j["histogram"]["edges"].as_array().unwrap().len(), 65);
        assert_eq!(j["shape"], json!([1, 2, 2]));
    }
}
