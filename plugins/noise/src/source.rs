//! Real tomograms as background sources: read (MRC or TIFF, any dtype), check, invert, resample to
//! the target voxel size (Fourier cropping / zero padding), mask structure, normalise.
//!
//! Order of operations (docs/physics.md, "Backgrounds"):
//! 1. read: MRC through `tomoflow_cryo::mrc`, TIFF through `tomoflow_cryo::tiff` (voxel size from
//!    the header / ImageJ metadata unless overridden); NaN/±Inf voxels are an error, or masked
//!    with `non_finite: mask`;
//! 2. `invert` multiplies by −1 (tomoflow's convention is protein **bright**, as `recon-*` writes);
//! 3. resample to the target voxel size per axis by Fourier cropping/padding ([`resample`]);
//! 4. mask: the union of a given mask file (non-zero = exclude; nearest-neighbour resampled),
//!    non-finite voxels and the automatic mask ([`auto_mask`]), dilated by `margin` Å;
//! 5. normalise to zero mean and unit variance over the unmasked (background) voxels.

use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::path::Path;
use tomoflow_cryo::fft::Complex32;

use crate::fft3d::fft3;

/// A volume as read from disk, before any processing.
#[derive(Debug, Clone)]
pub struct RawVolume {
    /// Voxels as f32, C order (z, y, x).
    pub data: Vec<f32>,
    /// Shape (z, y, x).
    pub shape: [usize; 3],
    /// Voxel size (z, y, x) in Å.
    pub voxel_size: [f64; 3],
    /// Storage type in the file (e.g. `mrc mode 2`, `tiff Gray(8)`).
    pub dtype: String,
}

/// Read an MRC (`.mrc .map .rec .st .mrcs .ali`) or TIFF (`.tif .tiff`) volume as f32.
/// `voxel_size` overrides the header's; without it a file that defines none is an error.
pub fn read_volume(path: &Path, voxel_size: Option<f64>) -> Result<RawVolume> {
    let name = path.display().to_string();
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    let (data, shape, header_vs, dtype) = match ext.as_str() {
        "mrc" | "map" | "rec" | "st" | "mrcs" | "ali" | "ccp4" => {
            let (h, data) = tomoflow_cryo::mrc::read_mrc(path)
                .with_context(|| format!("cannot read MRC file {name}"))?;
            (data, h.shape, Some(h.voxel_size), format!("mrc {:?}", h.mode))
        }
        "tif" | "tiff" => {
            let info = tomoflow_cryo::tiff::inspect(path)?;
            let mut r = tomoflow_cryo::tiff::PageReader::open(path)?;
            let mut data = Vec::with_capacity(info.shape.iter().product());
            for _ in 0..info.shape[0] {
                r.read_next(&mut data)?;
            }
            (data, info.shape, info.voxel_size, format!("tiff {}", info.color))
        }
        _ => bail!(
            "{name}: unknown tomogram format `.{ext}`; use MRC (.mrc, .map, .rec, .st) or TIFF (.tif, .tiff)"
        ),
    };
    let vs = match voxel_size {
        Some(v) if v.is_finite() && v > 0.0 => [v; 3],
        Some(v) => bail!("`voxel_size` must be > 0 Å, got {v}"),
        None => match header_vs {
            Some(h) if h.iter().all(|v| v.is_finite() && *v > 0.0) => h,
            h => bail!(
                "{name}: the file defines no voxel size ({h:?}); set the `voxel_size` parameter (Å)"
            ),
        },
    };
    if shape.contains(&0) {
        bail!("{name}: empty volume {shape:?}");
    }
    Ok(RawVolume {
        data,
        shape,
        voxel_size: vs,
        dtype,
    })
}

/// What to do with NaN/±Inf voxels in a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum NonFinite {
    /// Refuse the file (default), naming the first bad voxel.
    Error,
    /// Exclude them (and the `margin` around them) like structure.
    Mask,
}

/// Shape after resampling `shape` from voxel size `from` to `to` (per axis, rounded).
pub fn resampled_shape(shape: [usize; 3], from: [f64; 3], to: f64) -> [usize; 3] {
    let mut out = [0; 3];
    for a in 0..3 {
        out[a] = ((shape[a] as f64 * from[a] / to).round() as usize).max(1);
    }
    out
}

/// Source index of signed frequency `f` on an axis of `n` samples.
fn src_index(f: i64, n: usize) -> usize {
    if f >= 0 {
        f as usize
    } else {
        (n as i64 + f) as usize
    }
}

/// Resample a volume to `new_shape` by Fourier cropping (coarser) or zero padding (finer):
/// frequencies with |f| ≤ (m − 1)/2 cycles per box are kept, m = min(old, new) per axis (the
/// Nyquist term of an even axis is dropped, so the result stays real), values are preserved
/// (mean and band-limited content unchanged).
pub fn resample(data: &[f32], shape: [usize; 3], new_shape: [usize; 3]) -> Vec<f32> {
    if shape == new_shape {
        return data.to_vec();
    }
    let mut spec: Vec<Complex32> = data.iter().map(|&v| Complex32::new(v, 0.0)).collect();
    fft3(&mut spec, shape, false);
    let n_old: usize = shape.iter().product();
    let n_new: usize = new_shape.iter().product();
    let mut out = vec![Complex32::default(); n_new];
    let keep: Vec<i64> = (0..3)
        .map(|a| ((shape[a].min(new_shape[a]) as i64) - 1) / 2)
        .collect();
    let axis = |a: usize| -> Vec<(usize, usize)> {
        (-keep[a]..=keep[a])
            .map(|f| (src_index(f, new_shape[a]), src_index(f, shape[a])))
            .collect()
    };
    let (az, ay, ax) = (axis(0), axis(1), axis(2));
    let scale = n_new as f32 / n_old as f32;
    for &(dz, sz) in &az {
        for &(dy, sy) in &ay {
            for &(dx, sx) in &ax {
                out[(dz * new_shape[1] + dy) * new_shape[2] + dx] =
                    spec[(sz * shape[1] + sy) * shape[2] + sx] * scale;
            }
        }
    }
    fft3(&mut out, new_shape, true);
    out.iter().map(|c| c.re).collect()
}

/// Gaussian smoothing with standard deviation `sigma` voxels (separable, mirrored borders).
pub fn gaussian_smooth(data: &[f32], shape: [usize; 3], sigma: f64) -> Vec<f32> {
    if sigma <= 0.0 {
        return data.to_vec();
    }
    let r = (3.0 * sigma).ceil() as i64;
    let k: Vec<f32> = (-r..=r)
        .map(|i| (-(i * i) as f64 / (2.0 * sigma * sigma)).exp() as f32)
        .collect();
    let ks: f32 = k.iter().sum();
    let k: Vec<f32> = k.iter().map(|v| v / ks).collect();
    let mut cur = data.to_vec();
    let strides = [shape[1] * shape[2], shape[2], 1];
    for a in 0..3 {
        let n = shape[a] as i64;
        let st = strides[a];
        let mut next = vec![0.0f32; cur.len()];
        for (i, o) in next.iter_mut().enumerate() {
            let pos = ((i / st) % shape[a]) as i64;
            let base = i - pos as usize * st;
            let mut acc = 0.0;
            for (j, w) in k.iter().enumerate() {
                let p = reflect(pos + j as i64 - r, n);
                acc += w * cur[base + p * st];
            }
            *o = acc;
        }
        cur = next;
    }
    cur
}

/// Mirror index `p` into `0..n` (…2 1 0 | 0 1 2 … n−1 | n−1 n−2…).
pub fn reflect(mut p: i64, n: i64) -> usize {
    if n == 1 {
        return 0;
    }
    let period = 2 * n;
    p = p.rem_euclid(period);
    if p >= n {
        p = period - 1 - p;
    }
    p as usize
}

/// Dilate a boolean mask by `r` voxels along each axis (a cube of half-edge `r`).
pub fn dilate(mask: &[bool], shape: [usize; 3], r: usize) -> Vec<bool> {
    if r == 0 {
        return mask.to_vec();
    }
    let strides = [shape[1] * shape[2], shape[2], 1];
    let mut cur = mask.to_vec();
    for a in 0..3 {
        let st = strides[a];
        let n = shape[a];
        let mut next = vec![false; cur.len()];
        for (i, &m) in cur.iter().enumerate() {
            if !m {
                continue;
            }
            let pos = (i / st) % n;
            let base = i - pos * st;
            for p in pos.saturating_sub(r)..(pos + r + 1).min(n) {
                next[base + p * st] = true;
            }
        }
        cur = next;
    }
    cur
}

/// Mean and standard deviation of the voxels where `mask` is false.
pub fn masked_stats(data: &[f32], mask: &[bool]) -> (f64, f64, usize) {
    let (mut s, mut s2, mut n) = (0.0f64, 0.0f64, 0usize);
    for (&v, &m) in data.iter().zip(mask) {
        if !m {
            s += v as f64;
            s2 += v as f64 * v as f64;
            n += 1;
        }
    }
    if n == 0 {
        return (0.0, 0.0, 0);
    }
    let mean = s / n as f64;
    (mean, (s2 / n as f64 - mean * mean).max(0.0).sqrt(), n)
}

/// Automatic structure mask: smooth by a Gaussian of `sigma` voxels, z-score the smoothed volume
/// against the statistics of its own unmasked voxels (three rounds of k-sigma clipping, so that
/// the structure does not inflate the scale), mark |z| > `k`. Also returns the number of
/// marked voxels that are brighter (z > k) and darker (z < −k) than the background.
pub fn auto_mask(data: &[f32], shape: [usize; 3], sigma: f64, k: f64) -> (Vec<bool>, usize, usize) {
    let sm = gaussian_smooth(data, shape, sigma);
    let mut mask = vec![false; sm.len()];
    let (mut pos, mut neg) = (0, 0);
    for _ in 0..3 {
        let (m, s, n) = masked_stats(&sm, &mask);
        if n == 0 || s == 0.0 {
            break;
        }
        (pos, neg) = (0, 0);
        for (o, &v) in mask.iter_mut().zip(&sm) {
            let z = (v as f64 - m) / s;
            *o = z.abs() > k;
            pos += (z > k) as usize;
            neg += (z < -k) as usize;
        }
    }
    (mask, pos, neg)
}

/// How structure is excluded.
#[derive(Debug, Clone, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MaskParams {
    /// Mask file (MRC or TIFF, same shape as the tomogram, non-zero = structure to exclude).
    /// Used together with the automatic mask unless `auto` is false.
    #[serde(default)]
    pub file: Option<String>,
    /// Automatic mask of strong features: |z-score| of the smoothed volume above `k`.
    #[serde(default = "d_true")]
    pub auto: bool,
    /// Gaussian smoothing (σ, Å) before the automatic mask's z-score.
    #[serde(default = "d_smooth")]
    #[schemars(range(min = 0.0, max = 10000.0))]
    pub smooth: f64,
    /// Threshold of the automatic mask, in standard deviations of the smoothed background.
    #[serde(default = "d_k")]
    #[schemars(range(min = 0.5, max = 100.0))]
    pub k: f64,
    /// Safety margin (Å) by which every excluded region is dilated.
    #[serde(default = "d_margin")]
    #[schemars(range(min = 0.0, max = 10000.0))]
    pub margin: f64,
}

fn d_true() -> bool {
    true
}
fn d_smooth() -> f64 {
    40.0
}
fn d_k() -> f64 {
    2.5
}
fn d_margin() -> f64 {
    30.0
}

impl Default for MaskParams {
    fn default() -> Self {
        MaskParams {
            file: None,
            auto: true,
            smooth: d_smooth(),
            k: d_k(),
            margin: d_margin(),
        }
    }
}

/// Options for turning a real tomogram into a background source.
#[derive(Debug, Clone)]
pub struct SourceOptions {
    /// Target voxel size (Å, isotropic).
    pub voxel_size: f64,
    /// Override of the file's voxel size (Å).
    pub source_voxel_size: Option<f64>,
    /// Multiply by −1 (for protein-dark data).
    pub invert: bool,
    /// Structure exclusion.
    pub mask: MaskParams,
    /// NaN/Inf handling.
    pub non_finite: NonFinite,
}

/// Provenance and statistics of a loaded source (goes into output metadata).
#[derive(Debug, Clone, Serialize)]
pub struct SourceInfo {
    /// File as given.
    pub path: String,
    /// Storage type.
    pub dtype: String,
    /// Shape in the file (z, y, x).
    pub file_shape: [usize; 3],
    /// Voxel size in the file (z, y, x), Å.
    pub file_voxel_size: [f64; 3],
    /// Shape after resampling (z, y, x).
    pub shape: [usize; 3],
    /// Voxel size after resampling, Å.
    pub voxel_size: f64,
    /// Whether the contrast was inverted.
    pub inverted: bool,
    /// Mean and standard deviation of the background before normalisation.
    pub raw_background_mean: f64,
    /// See `raw_background_mean`.
    pub raw_background_std: f64,
    /// Fraction of voxels excluded (structure, margin, non-finite).
    pub masked_fraction: f64,
    /// Non-finite voxels found (and masked).
    pub non_finite: usize,
    /// Mean of the masked (structure) voxels after normalisation, in background σ.
    pub structure_mean: f64,
    /// Of the voxels the automatic mask marks (before the margin), the fraction brighter than
    /// the background: > 0.5 when strong structure is bright (protein-bright data).
    pub bright_fraction: f64,
    /// The data's own SNR: (var(all voxels) − var(background)) / var(background) after
    /// normalisation (docs/physics.md).
    pub measured_snr: f64,
}

/// A normalised background source with its exclusion mask.
#[derive(Debug, Clone)]
pub struct Source {
    /// Normalised voxels (background: mean 0, variance 1), (z, y, x).
    pub data: Vec<f32>,
    /// Shape (z, y, x).
    pub shape: [usize; 3],
    /// True where a voxel must never be sampled.
    pub mask: Vec<bool>,
    /// Provenance and statistics.
    pub info: SourceInfo,
}

/// Load and prepare one background source (see the module documentation).
pub fn load_source(path: &Path, shown: &str, o: &SourceOptions) -> Result<Source> {
    let raw = read_volume(path, o.source_voxel_size)?;
    let mask_raw = match &o.mask.file {
        Some(f) => Some(read_mask(Path::new(f), raw.shape)?),
        None => None,
    };
    prepare(raw, mask_raw, shown, o)
}

/// Read a mask file (non-zero = exclude); it must have the tomogram's shape.
fn read_mask(path: &Path, shape: [usize; 3]) -> Result<Vec<bool>> {
    let m = read_volume(path, Some(1.0))?;
    if m.shape != shape {
        bail!(
            "mask {} has shape {:?} but the tomogram has {shape:?} (z, y, x); a mask must cover the tomogram voxel for voxel",
            path.display(),
            m.shape
        );
    }
    Ok(m.data.iter().map(|&v| v != 0.0).collect())
}

/// Nearest-neighbour resampling of a mask to `new_shape` (voxel centres mapped proportionally).
fn resample_mask(mask: &[bool], shape: [usize; 3], new_shape: [usize; 3]) -> Vec<bool> {
    if shape == new_shape {
        return mask.to_vec();
    }
    let map = |a: usize| -> Vec<usize> {
        (0..new_shape[a])
            .map(|i| {
                let s = ((i as f64 + 0.5) * shape[a] as f64 / new_shape[a] as f64) as usize;
                s.min(shape[a] - 1)
            })
            .collect()
    };
    let (mz, my, mx) = (map(0), map(1), map(2));
    let mut out = Vec::with_capacity(new_shape.iter().product());
    for &z in &mz {
        for &y in &my {
            for &x in &mx {
                out.push(mask[(z * shape[1] + y) * shape[2] + x]);
            }
        }
    }
    out
}

/// Process a raw volume into a [`Source`] (steps 1–5 of the module documentation).
pub fn prepare(
    raw: RawVolume,
    mask_file: Option<Vec<bool>>,
    shown: &str,
    o: &SourceOptions,
) -> Result<Source> {
    if !(o.voxel_size.is_finite() && o.voxel_size > 0.0) {
        bail!("target voxel size must be > 0 Å, got {}", o.voxel_size);
    }
    let RawVolume {
        mut data,
        shape,
        voxel_size,
        dtype,
    } = raw;
    // Non-finite voxels.
    let bad: Vec<bool> = data.iter().map(|v| !v.is_finite()).collect();
    let n_bad = bad.iter().filter(|&&b| b).count();
    if n_bad > 0 {
        let first = bad.iter().position(|&b| b).unwrap_or(0);
        let (z, y, x) = (
            first / (shape[1] * shape[2]),
            (first / shape[2]) % shape[1],
            first % shape[2],
        );
        if o.non_finite == NonFinite::Error {
            bail!(
                "{shown}: {n_bad} of {} voxels are NaN or infinite (the first at z={z}, y={y}, x={x}); fix the file, \
                 or set `non_finite: mask` to exclude them (and `mask.margin` around them) from sampling",
                data.len()
            );
        }
        let finite: Vec<f32> = data.iter().copied().filter(|v| v.is_finite()).collect();
        if finite.is_empty() {
            bail!("{shown}: no finite voxel");
        }
        let mean = finite.iter().map(|&v| v as f64).sum::<f64>() / finite.len() as f64;
        for v in data.iter_mut().filter(|v| !v.is_finite()) {
            *v = mean as f32;
        }
    }
    if o.invert {
        data.iter_mut().for_each(|v| *v = -*v);
    }
    // Resample.
    let new_shape = resampled_shape(shape, voxel_size, o.voxel_size);
    let data = resample(&data, shape, new_shape);
    let mut excl = vec![false; data.len()];
    if let Some(m) = mask_file {
        for (e, m) in excl.iter_mut().zip(resample_mask(&m, shape, new_shape)) {
            *e |= m;
        }
    }
    if n_bad > 0 {
        for (e, m) in excl.iter_mut().zip(resample_mask(&bad, shape, new_shape)) {
            *e |= m;
        }
    }
    // Standardise globally before the automatic mask (so its threshold is scale-free).
    let (m0, s0, _) = masked_stats(&data, &vec![false; data.len()]);
    if s0 == 0.0 {
        bail!("{shown}: the tomogram is constant ({m0}); it holds no background to sample");
    }
    let mut bright_fraction = 0.5;
    if o.mask.auto {
        let z: Vec<f32> = data
            .iter()
            .map(|&v| ((v as f64 - m0) / s0) as f32)
            .collect();
        let (am, pos, neg) = auto_mask(&z, new_shape, o.mask.smooth / o.voxel_size, o.mask.k);
        if pos + neg > 0 {
            bright_fraction = pos as f64 / (pos + neg) as f64;
        }
        for (e, m) in excl.iter_mut().zip(am) {
            *e |= m;
        }
    }
    let margin = (o.mask.margin / o.voxel_size).round() as usize;
    let excl = dilate(&excl, new_shape, margin);
    let (mean, std, n_bg) = masked_stats(&data, &excl);
    if n_bg == 0 || std == 0.0 {
        bail!(
            "{shown}: the mask excludes every voxel (or the background is constant); lower `mask.k`/`mask.margin` or give another mask"
        );
    }
    let data: Vec<f32> = data
        .iter()
        .map(|&v| ((v as f64 - mean) / std) as f32)
        .collect();
    let inv: Vec<bool> = excl.iter().map(|&b| !b).collect();
    let (structure_mean, _, n_struct) = masked_stats(&data, &inv);
    let (_, all_std, _) = masked_stats(&data, &vec![false; data.len()]);
    let masked_fraction = n_struct as f64 / data.len() as f64;
    Ok(Source {
        info: SourceInfo {
            path: shown.to_string(),
            dtype,
            file_shape: shape,
            file_voxel_size: voxel_size,
            shape: new_shape,
            voxel_size: o.voxel_size,
            inverted: o.invert,
            raw_background_mean: mean,
            raw_background_std: std,
            masked_fraction,
            non_finite: n_bad,
            structure_mean: if n_struct > 0 { structure_mean } else { 0.0 },
            bright_fraction,
            measured_snr: all_std * all_std - 1.0,
        },
        data,
        shape: new_shape,
        mask: excl,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::path::PathBuf;

    pub fn shared(name: &str) -> PathBuf {
        let d = PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/data/real-tomograms"
        ));
        assert!(d.is_dir(), "shared test data missing at {}", d.display());
        d.join(name)
    }

    pub fn opts(vs: f64) -> SourceOptions {
        SourceOptions {
            voxel_size: vs,
            source_voxel_size: None,
            invert: false,
            mask: MaskParams::default(),
            non_finite: NonFinite::Error,
        }
    }

    #[test]
    fn real_tomogram_loads_with_its_voxel_size_and_polarity() {
        let p = shared("13pf_MT.tif");
        let raw = read_volume(&p, None).unwrap();
        assert_eq!(raw.shape, [36, 206, 94]);
        for v in raw.voxel_size {
            assert!((v - 10.52).abs() < 1e-3, "{:?}", raw.voxel_size);
        }
        let s = load_source(&p, "13pf_MT.tif", &opts(10.52)).unwrap();
        assert_eq!(
            s.shape,
            [36, 206, 94],
            "no resampling at the native voxel size"
        );
        let (m, sd, _) = masked_stats(&s.data, &s.mask);
        assert!(m.abs() < 1e-6 && (sd - 1.0).abs() < 1e-6);
        // Strong structure (the microtubule) is bright: protein-bright data, tomoflow's convention.
        assert!(s.info.bright_fraction > 0.6, "{:?}", s.info);
        assert!(
            s.info.masked_fraction > 0.1 && s.info.masked_fraction < 0.7,
            "{:?}",
            s.info
        );
        let mut o = opts(10.52);
        o.invert = true;
        let si = load_source(&p, "x", &o).unwrap();
        assert!(si.info.bright_fraction < 0.4, "{:?}", si.info);
        // The MRC twin gives the same source.
        let sm = load_source(&shared("13pf_MT.derived_float32.mrc"), "x", &opts(10.52)).unwrap();
        assert_eq!(sm.data, s.data);
        assert_eq!(sm.mask, s.mask);
    }

    #[test]
    fn microtubule_and_other_strong_features_are_masked() {
        let s = load_source(&shared("13pf_MT.tif"), "x", &opts(10.52)).unwrap();
        // The strongest features at the microtubule's scale (smoothed 20 Å): the top and
        // bottom 0.5 % are all excluded.
        let sm = gaussian_smooth(&s.data, s.shape, 2.0);
        let mut order: Vec<usize> = (0..sm.len()).collect();
        order.sort_by(|&a, &b| sm[a].total_cmp(&sm[b]));
        let k = sm.len() / 200;
        for (name, idx) in [
            ("brightest", &order[sm.len() - k..]),
            ("darkest", &order[..k]),
        ] {
            let masked = idx.iter().filter(|&&i| s.mask[i]).count();
            assert!(
                masked as f64 >= 0.99 * k as f64,
                "{name}: {masked} of {k} masked"
            );
        }
        // The brightest voxels form a long object: they span most of the y extent (the
        // microtubule crosses the crop).
        let ys: Vec<usize> = order[sm.len() - k..]
            .iter()
            .map(|&i| (i / s.shape[2]) % s.shape[1])
            .collect();
        let span = ys.iter().max().unwrap() - ys.iter().min().unwrap();
        assert!(span as f64 > 0.8 * s.shape[1] as f64, "{span}");
    }

    #[test]
    fn other_voxel_size_is_resampled_in_fourier_space() {
        let p = shared("13pf_MT.tif");
        let s = load_source(&p, "x", &opts(20.0)).unwrap();
        assert_eq!(s.shape, [19, 108, 49]);
        for v in s.info.file_voxel_size {
            assert!((v - 10.52).abs() < 1e-3);
        }
        let (m, sd, _) = masked_stats(&s.data, &s.mask);
        assert!(m.abs() < 1e-6 && (sd - 1.0).abs() < 1e-6);
        // A band-limited test pattern survives resampling exactly (up to float error).
        let shape = [8, 12, 10];
        let f = |z: f64, y: f64, x: f64, n: [usize; 3]| {
            (std::f64::consts::TAU * (z / n[0] as f64 + 2.0 * y / n[1] as f64)).cos()
                + 0.5 * (std::f64::consts::TAU * 3.0 * x / n[2] as f64).sin()
        };
        let data: Vec<f32> = (0..960)
            .map(|i| {
                f(
                    (i / 120) as f64,
                    ((i / 10) % 12) as f64,
                    (i % 10) as f64,
                    shape,
                ) as f32
            })
            .collect();
        let up = [16, 24, 20];
        let r = resample(&data, shape, up);
        for (i, v) in r.iter().enumerate() {
            let (z, y, x) = (
                (i / 480) as f64 / 2.0,
                ((i / 20) % 24) as f64 / 2.0,
                (i % 20) as f64 / 2.0,
            );
            assert!((*v as f64 - f(z, y, x, shape)).abs() < 1e-4, "{i}: {v}");
        }
        let back = resample(&r, up, shape);
        for (a, b) in back.iter().zip(&data) {
            assert!((a - b).abs() < 1e-4);
        }
    }

    #[test]
    fn non_finite_voxels_are_a_clear_error_or_masked() {
        let mut data: Vec<f32> = (0..4096).map(|i| ((i * 7919) % 101) as f32).collect();
        data[2 * 256 + 3 * 16 + 5] = f32::NAN;
        let raw = RawVolume {
            data,
            shape: [16, 16, 16],
            voxel_size: [10.0; 3],
            dtype: "f32".into(),
        };
        let e = prepare(raw.clone(), None, "bad.mrc", &opts(10.0))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("bad.mrc") && e.contains("z=2, y=3, x=5") && e.contains("non_finite: mask"),
            "{e}"
        );
        let mut o = opts(10.0);
        o.non_finite = NonFinite::Mask;
        o.mask.auto = false;
        o.mask.margin = 10.0;
        let s = prepare(raw, None, "bad.mrc", &o).unwrap();
        assert!(s.mask[2 * 256 + 3 * 16 + 5] && s.mask[3 * 256 + 4 * 16 + 6]);
        assert!(!s.mask[10 * 256]);
        assert_eq!(s.info.non_finite, 1);
        assert!(s.data.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn unknown_format_and_wrong_mask_shape_are_clear_errors() {
        let e = read_volume(Path::new("x.png"), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown tomogram format"), "{e}");
        let mut o = opts(10.52);
        o.mask.file = Some(shared("beta-tubulin.mrc").display().to_string());
        let e = load_source(&shared("13pf_MT.tif"), "x", &o)
            .unwrap_err()
            .to_string();
        assert!(e.contains("shape") && e.contains("[20, 20, 20]"), "{e}");
    }
}
