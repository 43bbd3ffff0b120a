//! Tilt schemes: angles, acquisition order and dose, from a range, an explicit list, an IMOD
//! `.tlt` file or a SerialEM `.mdoc`.
//!
//! Orders: `unidirectional` (min to max), `bidirectional` (from a start angle to one end, then
//! from the start back to the other end) and `dose-symmetric` (Hagen, Wan & Briggs, J. Struct.
//! Biol. 197:191, 2017: start at 0°, then alternate sides in groups so that the low tilts get
//! the least accumulated dose: 0, +3, −3, −6, +6, +9, −9, ... for groups of 2).
//! Doses are in e/Å²: `dose` is the exposure of one image, `prior_dose` what the specimen
//! received before it (in acquisition order).

use anyhow::{bail, Context, Result};
use std::path::Path;

/// Acquisition order of a tilt series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TiltOrder {
    /// From the lowest angle to the highest.
    Unidirectional,
    /// From the start angle to the maximum, then from below the start to the minimum.
    Bidirectional,
    /// Hagen dose-symmetric: from the start angle, alternating sides in groups.
    DoseSymmetric,
}

/// One tilt of a scheme.
#[derive(Debug, Clone, PartialEq)]
pub struct Tilt {
    /// Stage tilt angle (degrees).
    pub angle_deg: f64,
    /// Position in acquisition order (0 = first exposed).
    pub order: usize,
    /// Exposure of this image (e/Å²).
    pub dose: f64,
    /// Exposure the specimen received before this image (e/Å²).
    pub prior_dose: f64,
    /// Nominal defocus (µm, underfocus positive) if the source gives one.
    pub defocus_um: Option<f64>,
}

/// A tilt series' acquisition: tilts in acquisition order.
#[derive(Debug, Clone, PartialEq)]
pub struct TiltScheme {
    /// Tilts in acquisition order (`tilts[i].order == i`).
    pub tilts: Vec<Tilt>,
}

/// Most tilts a scheme may have (real schemes have tens; this bounds what a typo can allocate).
pub const MAX_TILTS: usize = 10_000;

/// Angles from `min` to `max` (inclusive, degrees) every `step`; errors (naming the tilt nodes'
/// parameters `tilt_min`, `tilt_max`, `tilt_step`) for a zero or negative step, an empty range,
/// angles beyond ±90° or more than [`MAX_TILTS`] tilts, before anything is allocated.
pub fn angle_range(min: f64, max: f64, step: f64) -> Result<Vec<f64>> {
    if !(step.is_finite() && step > 0.0) {
        bail!("`tilt_step` must be > 0°, got {step}");
    }
    for (name, v) in [("tilt_min", min), ("tilt_max", max)] {
        if !(v.is_finite() && v.abs() < 90.0) {
            bail!("`{name}` = {v}° is outside the open range (-90°, 90°)");
        }
    }
    if min > max {
        bail!("`tilt_min` ({min}°) must be <= `tilt_max` ({max}°)");
    }
    let n = ((max - min) / step + 1e-6).floor() as usize + 1;
    if n > MAX_TILTS {
        bail!("`tilt_min` {min}° to `tilt_max` {max}° every `tilt_step` {step}° gives {n} tilts; at most {MAX_TILTS}");
    }
    let a: Vec<f64> = (0..n).map(|i| min + i as f64 * step).collect();
    check_angles(&a)?;
    Ok(a)
}

/// Errors for an empty list, non-finite angles, |angle| >= 90° or duplicates.
pub fn check_angles(a: &[f64]) -> Result<()> {
    if a.is_empty() {
        bail!("a tilt scheme needs at least one angle");
    }
    for &t in a {
        if !t.is_finite() || t.abs() >= 90.0 {
            bail!("tilt angle {t}° is outside the open range (-90°, 90°)");
        }
    }
    let mut s = a.to_vec();
    s.sort_by(f64::total_cmp);
    if s.windows(2).any(|w| (w[1] - w[0]).abs() < 1e-6) {
        bail!("tilt angles contain duplicates");
    }
    Ok(())
}

/// Indices of `angles` in acquisition order. For the dose-symmetric order, `group` images are
/// taken on each side before switching; when `start_in_group` the start image counts as part
/// of the first (positive) group, as in Hagen et al. (0, +3, −3, −6, +6, ...), otherwise a full
/// group follows it, as in SerialEM (8, +10, +12, +6, +4, ...).
pub fn acquisition_order(
    angles: &[f64],
    order: TiltOrder,
    start_deg: f64,
    group: usize,
    start_in_group: bool,
) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..angles.len()).collect();
    idx.sort_by(|&a, &b| angles[a].total_cmp(&angles[b]));
    if order == TiltOrder::Unidirectional || idx.is_empty() {
        return idx;
    }
    // The angle closest to the start.
    let s = (0..idx.len())
        .min_by(|&a, &b| {
            (angles[idx[a]] - start_deg)
                .abs()
                .total_cmp(&(angles[idx[b]] - start_deg).abs())
        })
        .unwrap_or(0);
    let pos: Vec<usize> = idx[s + 1..].to_vec();
    let neg: Vec<usize> = idx[..s].iter().rev().copied().collect();
    let mut out = vec![idx[s]];
    match order {
        TiltOrder::Bidirectional => {
            out.extend(pos);
            out.extend(neg);
        }
        _ => {
            let g = group.max(1);
            let (mut p, mut n) = (pos.into_iter(), neg.into_iter());
            // The start image counts as part of the first positive group.
            let mut take = if start_in_group {
                g.saturating_sub(1).max(1)
            } else {
                g
            };
            let mut positive = true;
            loop {
                let side = if positive { &mut p } else { &mut n };
                let got: Vec<usize> = side.by_ref().take(take).collect();
                let empty = got.is_empty();
                out.extend(got);
                if empty && p.len() == 0 && n.len() == 0 {
                    break;
                }
                positive = !positive;
                take = g;
            }
        }
    }
    out
}

impl TiltScheme {
    /// A scheme from angles, an order (see [`acquisition_order`]) and a total dose spread
    /// equally over the images.
    pub fn new(
        angles: &[f64],
        order: TiltOrder,
        start_deg: f64,
        group: usize,
        start_in_group: bool,
        total_dose: f64,
    ) -> Result<TiltScheme> {
        check_angles(angles)?;
        if !(total_dose.is_finite() && total_dose >= 0.0) {
            bail!("total dose must be >= 0 e/Å², got {total_dose}");
        }
        let per = total_dose / angles.len() as f64;
        let tilts = acquisition_order(angles, order, start_deg, group, start_in_group)
            .into_iter()
            .enumerate()
            .map(|(o, i)| Tilt {
                angle_deg: angles[i],
                order: o,
                dose: per,
                prior_dose: per * o as f64,
                defocus_um: None,
            })
            .collect();
        Ok(TiltScheme { tilts })
    }

    /// Number of tilts.
    pub fn len(&self) -> usize {
        self.tilts.len()
    }

    /// True for an empty scheme.
    pub fn is_empty(&self) -> bool {
        self.tilts.is_empty()
    }

    /// Angles in acquisition order.
    pub fn angles(&self) -> Vec<f64> {
        self.tilts.iter().map(|t| t.angle_deg).collect()
    }

    /// Total exposure (e/Å²).
    pub fn total_dose(&self) -> f64 {
        self.tilts.iter().map(|t| t.dose).sum()
    }

    /// Scale doses so that they add up to `total` (e/Å²), keeping their ratios.
    pub fn rescale_dose(&mut self, total: f64) {
        let t = self.total_dose();
        let n = self.tilts.len().max(1) as f64;
        let mut acc = 0.0;
        for tl in &mut self.tilts {
            tl.dose = if t > 0.0 {
                tl.dose * total / t
            } else {
                total / n
            };
            tl.prior_dose = acc;
            acc += tl.dose;
        }
    }

    /// For each tilt (acquisition order), its position in the stack sorted by angle.
    pub fn stack_indices(&self) -> Vec<usize> {
        let mut by_angle: Vec<usize> = (0..self.tilts.len()).collect();
        by_angle.sort_by(|&a, &b| self.tilts[a].angle_deg.total_cmp(&self.tilts[b].angle_deg));
        let mut index = vec![0; by_angle.len()];
        for (i, &o) in by_angle.iter().enumerate() {
            index[o] = i;
        }
        index
    }

    /// Tilts sorted by angle (the order of an IMOD stack and `.tlt`).
    pub fn sorted_by_angle(&self) -> Vec<Tilt> {
        let mut t = self.tilts.clone();
        t.sort_by(|a, b| a.angle_deg.total_cmp(&b.angle_deg));
        t
    }
}

/// A metadata file's text and its name for errors (`kind` says what it was meant to be).
fn read_text(path: &Path, kind: &str) -> Result<(String, String)> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {kind} {}", path.display()))?;
    Ok((text, path.display().to_string()))
}

/// Read the angles of an IMOD `.tlt` file (one angle per line, stack order).
pub fn read_tlt(path: impl AsRef<Path>) -> Result<Vec<f64>> {
    let (text, what) = read_text(path.as_ref(), "tilt file")?;
    parse_tlt(&text, &what)
}

/// Parse the text of a `.tlt` file; `what` names it in errors.
pub fn parse_tlt(text: &str, what: &str) -> Result<Vec<f64>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let v: f64 = l
            .split_whitespace()
            .next()
            .unwrap_or("")
            .parse()
            .with_context(|| format!("{what}:{}: not an angle: {l:?}", i + 1))?;
        out.push(v);
    }
    check_angles(&out).with_context(|| format!("in {what}"))?;
    Ok(out)
}

/// What a SerialEM `.mdoc` says about a tilt series.
#[derive(Debug, Clone, PartialEq)]
pub struct Mdoc {
    /// The scheme, in acquisition order.
    pub scheme: TiltScheme,
    /// Stack index (ZValue) of each tilt of `scheme.tilts`.
    pub zvalues: Vec<usize>,
    /// Pixel size (Å) if given.
    pub pixel_size_a: Option<f64>,
    /// Voltage (kV) if given.
    pub voltage_kv: Option<f64>,
    /// Tilt-axis angle (degrees) from the `Tilt axis angle = ...` title line, if given.
    pub tilt_axis_deg: Option<f64>,
    /// True when the image doses come from the file (`ExposureDose` > 0).
    pub has_dose: bool,
}

#[derive(Default)]
struct Section {
    z: usize,
    angle: Option<f64>,
    dose: Option<f64>,
    prior: Option<f64>,
    target_defocus: Option<f64>,
    time: Option<(u32, u32, u32, u32, u32, u32)>,
}

fn parse_datetime(s: &str) -> Option<(u32, u32, u32, u32, u32, u32)> {
    // "30-Nov-15  15:21:38"
    let mut it = s.split_whitespace();
    let date = it.next()?;
    let time = it.next()?;
    let d: Vec<&str> = date.split('-').collect();
    let t: Vec<&str> = time.split(':').collect();
    if d.len() != 3 || t.len() != 3 {
        return None;
    }
    const MONTHS: [&str; 12] = [
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ];
    let mon = MONTHS.iter().position(|m| d[1].eq_ignore_ascii_case(m))? as u32;
    Some((
        d[2].parse().ok()?,
        mon,
        d[0].parse().ok()?,
        t[0].parse().ok()?,
        t[1].parse().ok()?,
        t[2].parse().ok()?,
    ))
}

/// Read a SerialEM `.mdoc`. Acquisition order comes from `DateTime` (else `PriorRecordDose`,
/// else the ZValue order); doses from `ExposureDose` when positive, else `total_dose` (e/Å²)
/// is spread equally; the defocus from `TargetDefocus` (SerialEM: negative = underfocus).
pub fn read_mdoc(path: impl AsRef<Path>, total_dose: f64) -> Result<Mdoc> {
    let (text, what) = read_text(path.as_ref(), "mdoc")?;
    parse_mdoc(&text, &what, total_dose)
}

/// Parse the text of a `.mdoc` (see [`read_mdoc`]); `what` names it in errors.
pub fn parse_mdoc(text: &str, what: &str, total_dose: f64) -> Result<Mdoc> {
    let mut pixel = None;
    let mut voltage = None;
    let mut axis = None;
    let mut secs: Vec<Section> = Vec::new();
    for (ln, line) in text.lines().enumerate() {
        let l = line.trim();
        if let Some(rest) = l.strip_prefix('[') {
            let rest = rest.trim_end_matches(']');
            if let Some(z) = rest.strip_prefix("ZValue") {
                let z = z.trim_start_matches([' ', '=']).trim();
                secs.push(Section {
                    z: z.parse()
                        .with_context(|| format!("{what}:{}: bad ZValue {z:?}", ln + 1))?,
                    ..Default::default()
                });
            } else if let Some(i) = rest.find("Tilt axis angle") {
                let v = rest[i..].split('=').nth(1).and_then(|s| {
                    s.split([',', ' '])
                        .find(|t| !t.is_empty())
                        .and_then(|t| t.parse().ok())
                });
                axis = axis.or(v);
            }
            continue;
        }
        let Some((k, v)) = l.split_once('=') else {
            continue;
        };
        let (k, v) = (k.trim(), v.trim());
        let value = v
            .split_whitespace()
            .next()
            .and_then(|t| t.parse::<f64>().ok());
        let num = || in_range(value, k, &format!("{what}:{}", ln + 1));
        match secs.last_mut() {
            None => match k {
                "PixelSpacing" => pixel = num()?,
                "Voltage" => voltage = num()?,
                _ => {}
            },
            Some(s) => match k {
                "TiltAngle" => s.angle = num()?,
                "ExposureDose" => s.dose = num()?,
                "PriorRecordDose" => s.prior = num()?,
                "TargetDefocus" => s.target_defocus = num()?,
                "DateTime" => s.time = parse_datetime(v),
                "PixelSpacing" if pixel.is_none() => pixel = num()?,
                "Voltage" if voltage.is_none() => voltage = num()?,
                _ => {}
            },
        }
    }
    if secs.is_empty() {
        bail!("{what}: no [ZValue = ...] sections: not a tilt-series mdoc");
    }
    let mut angles = Vec::with_capacity(secs.len());
    for s in &secs {
        angles.push(
            s.angle
                .with_context(|| format!("{what}: section ZValue = {} has no TiltAngle", s.z))?,
        );
    }
    check_angles(&angles).with_context(|| format!("in {what}"))?;
    let mut idx: Vec<usize> = (0..secs.len()).collect();
    if secs.iter().all(|s| s.time.is_some()) {
        idx.sort_by_key(|&i| (secs[i].time, secs[i].z));
    } else if secs.iter().all(|s| s.prior.is_some()) {
        idx.sort_by(|&a, &b| {
            secs[a]
                .prior
                .unwrap_or(0.0)
                .total_cmp(&secs[b].prior.unwrap_or(0.0))
        });
    } else {
        idx.sort_by_key(|&i| secs[i].z);
    }
    let has_dose = secs.iter().all(|s| s.dose.is_some_and(|d| d > 0.0));
    let per = total_dose / secs.len() as f64;
    let mut acc = 0.0;
    let mut tilts = Vec::with_capacity(secs.len());
    for (o, &i) in idx.iter().enumerate() {
        let s = &secs[i];
        let dose = if has_dose { s.dose.unwrap_or(per) } else { per };
        tilts.push(Tilt {
            angle_deg: angles[i],
            order: o,
            dose,
            prior_dose: acc,
            defocus_um: s.target_defocus.map(|d| -d),
        });
        acc += dose;
    }
    Ok(Mdoc {
        scheme: TiltScheme { tilts },
        zvalues: idx.iter().map(|&i| secs[i].z).collect(),
        pixel_size_a: pixel,
        voltage_kv: voltage,
        tilt_axis_deg: axis,
        has_dose,
    })
}

/// The allowed range of a tilt-metadata value, by its mdoc key or STAR column: pixel sizes and
/// voltages > 0, exposures >= 0, the amplitude contrast in [0, 1), everything else finite
/// (angles are range-checked by [`check_angles`]).
fn allowed(key: &str) -> (fn(f64) -> bool, &'static str) {
    match key {
        "PixelSpacing" | "rlnMicrographOriginalPixelSize" | "rlnTomoTiltSeriesPixelSize" => {
            (|x| x > 0.0 && x < 1e5, "a pixel size in Å, > 0")
        }
        "Voltage" | "rlnVoltage" => (|x| x > 0.0 && x <= 5000.0, "kV, > 0 (e.g. 300)"),
        "ExposureDose" | "PriorRecordDose" | "rlnMicrographPreExposure" => {
            (|x| (0.0..1e6).contains(&x), "e/Å², >= 0")
        }
        "rlnAmplitudeContrast" => (|x| (0.0..1.0).contains(&x), "a fraction in [0, 1)"),
        _ => (|x| x.abs() < 1e12, "a finite number"),
    }
}

/// `v` when it is absent or in the range [`allowed`] gives `key`, else an error naming `at`
/// (file and line, or file and row), the key, the value and the range.
fn in_range(v: Option<f64>, key: &str, at: &str) -> Result<Option<f64>> {
    let (ok, range) = allowed(key);
    match v {
        Some(x) if !ok(x) => bail!("{at}: {key} = {x} is out of range: {range}"),
        _ => Ok(v),
    }
}

/// Every value of a STAR column (when present) in its allowed range.
fn column_in_range(col: Option<Vec<f64>>, key: &str, what: &str) -> Result<Option<Vec<f64>>> {
    if let Some(c) = &col {
        for (row, &x) in c.iter().enumerate() {
            in_range(Some(x), key, &format!("{what}: row {}", row + 1))?;
        }
    }
    Ok(col)
}

/// What a RELION 5 tilt-series STAR file (`_rlnTomoNominalStageTiltAngle` per tilt) says.
#[derive(Debug, Clone, PartialEq)]
pub struct RelionTilts {
    /// The scheme, in acquisition order (ascending `_rlnMicrographPreExposure`).
    pub scheme: TiltScheme,
    /// Row of each tilt of `scheme.tilts` in the file.
    pub rows: Vec<usize>,
    /// Image of each tilt of `scheme.tilts` in the stack (0-based): `N − 1` from the
    /// `N@stack.mrcs` of `_rlnMicrographName` where every row has one, else the row.
    pub stack: Vec<usize>,
    /// Tilt-axis angle (degrees) from `_rlnTomoNominalTiltAxisAngle`, if given.
    pub tilt_axis_deg: Option<f64>,
    /// True when the doses come from the file's pre-exposures.
    pub has_dose: bool,
    /// Per tilt of `scheme.tilts`: defocus U and V (µm, underfocus positive) and the
    /// astigmatism angle (degrees) from `_rlnDefocusU/V/Angle`, when the file has U and V.
    pub astigmatism: Option<Vec<[f64; 3]>>,
    /// Optics of the first row, where given: `_rlnVoltage` (kV), `_rlnSphericalAberration`
    /// (mm), `_rlnAmplitudeContrast`, `_rlnMicrographOriginalPixelSize` (Å).
    pub optics: StarOptics,
}

/// Optics a RELION tilt-series STAR may record (each `None` when absent).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StarOptics {
    /// Accelerating voltage (kV).
    pub voltage_kv: Option<f64>,
    /// Spherical aberration (mm).
    pub cs_mm: Option<f64>,
    /// Amplitude contrast fraction.
    pub amplitude_contrast: Option<f64>,
    /// Pixel size of the images (Å).
    pub pixel_size_a: Option<f64>,
}

/// Read a RELION 5 tilt-series STAR file (see [`parse_relion_tilts`]).
pub fn read_relion_tilts(path: impl AsRef<Path>, total_dose: f64) -> Result<RelionTilts> {
    let (text, what) = read_text(path.as_ref(), "STAR file")?;
    parse_relion_tilts(&text, &what, total_dose)
}

/// Parse a RELION 5 tilt-series STAR file: angles from `_rlnTomoNominalStageTiltAngle`;
/// acquisition order and dose per tilt (e/Å²) from `_rlnMicrographPreExposure` (each tilt's
/// dose is the step to the next pre-exposure, the last one repeats the mean step); without
/// pre-exposures the rows are the acquisition order and `total_dose` is spread equally. The
/// defocus (µm, underfocus positive) is the mean of `_rlnDefocusU/V` (Å, from CTF fitting),
/// else minus `_rlnTomoNominalDefocus` (µm, RELION: negative = underfocus).
pub fn parse_relion_tilts(text: &str, what: &str, total_dose: f64) -> Result<RelionTilts> {
    const ANGLE: &str = "rlnTomoNominalStageTiltAngle";
    let blocks = crate::star::parse(text, what)?;
    let Some(l) = blocks.iter().find_map(|b| b.loop_with(ANGLE)) else {
        bail!("{what}: no loop with _{ANGLE}: not a RELION 5 tilt-series STAR file");
    };
    let angles = l.numbers(ANGLE, what)?.unwrap_or_default();
    check_angles(&angles).with_context(|| format!("in {what}"))?;
    let n = angles.len();
    let col = |name: &str| column_in_range(l.numbers(name, what)?, name, what);
    let pre = col("rlnMicrographPreExposure")?;
    let mut idx: Vec<usize> = (0..n).collect();
    let mut doses = vec![total_dose / n as f64; n];
    let has_dose = pre.is_some();
    if let Some(pre) = &pre {
        idx.sort_by(|&a, &b| pre[a].total_cmp(&pre[b]).then(a.cmp(&b)));
        let (first, last) = (pre[idx[0]], pre[idx[n - 1]]);
        let mean_step = if n > 1 {
            (last - first) / (n - 1) as f64
        } else {
            total_dose
        };
        for k in 0..n {
            doses[idx[k]] = if k + 1 < n {
                pre[idx[k + 1]] - pre[idx[k]]
            } else {
                mean_step
            };
        }
    }
    let du = col("rlnDefocusU")?;
    let dv = col("rlnDefocusV")?;
    let nominal = col("rlnTomoNominalDefocus")?;
    let defocus = |i: usize| -> Option<f64> {
        match (&du, &dv, &nominal) {
            (Some(u), Some(v), _) => Some((u[i] + v[i]) / 2.0 * 1e-4),
            (Some(u), None, _) => Some(u[i] * 1e-4),
            (None, _, Some(d)) => Some(-d[i]),
            _ => None,
        }
    };
    let axis = col("rlnTomoNominalTiltAxisAngle")?.and_then(|a| a.first().copied());
    let mut acc = 0.0;
    let mut tilts = Vec::with_capacity(n);
    for (o, &i) in idx.iter().enumerate() {
        tilts.push(Tilt {
            angle_deg: angles[i],
            order: o,
            dose: doses[i],
            prior_dose: acc,
            defocus_um: defocus(i),
        });
        acc += doses[i];
    }
    let astigmatism = match (&du, &dv) {
        (Some(u), Some(v)) => {
            let ang = col("rlnDefocusAngle")?;
            Some(
                idx.iter()
                    .map(|&i| [u[i] * 1e-4, v[i] * 1e-4, ang.as_ref().map_or(0.0, |a| a[i])])
                    .collect(),
            )
        }
        _ => None,
    };
    let first =
        |name: &str| -> Result<Option<f64>> { Ok(col(name)?.and_then(|v| v.first().copied())) };
    let optics = StarOptics {
        voltage_kv: first("rlnVoltage")?,
        cs_mm: first("rlnSphericalAberration")?,
        amplitude_contrast: first("rlnAmplitudeContrast")?,
        pixel_size_a: match first("rlnMicrographOriginalPixelSize")? {
            Some(p) => Some(p),
            None => first("rlnTomoTiltSeriesPixelSize")?,
        },
    };
    let image = match l.column("rlnMicrographName") {
        Some(c) if l.rows.iter().all(|r| r[c].contains('@')) => {
            let mut image = Vec::with_capacity(n);
            for (row, r) in l.rows.iter().enumerate() {
                let n_at = r[c].split('@').next().unwrap_or("");
                match n_at.trim().parse::<usize>() {
                    Ok(k) if k >= 1 => image.push(k - 1),
                    _ => bail!(
                        "{what}: row {}: _rlnMicrographName {:?} should be N@stack with N >= 1 (the 1-based image in the stack)",
                        row + 1,
                        r[c]
                    ),
                }
            }
            image
        }
        _ => (0..n).collect(),
    };
    Ok(RelionTilts {
        scheme: TiltScheme { tilts },
        stack: idx.iter().map(|&i| image[i]).collect(),
        rows: idx,
        tilt_axis_deg: axis,
        has_dose,
        astigmatism,
        optics,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn data(p: &str) -> PathBuf {
        PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/data/tilt-metadata"
        ))
        .join(p)
    }

    #[test]
    fn ranges_and_errors() {
        let a = angle_range(-60.0, 60.0, 2.0).unwrap();
        assert_eq!(a.len(), 61);
        assert_eq!((a[0], a[60]), (-60.0, 60.0));
        assert!(angle_range(-60.0, 60.0, 0.0)
            .unwrap_err()
            .to_string()
            .contains("step"));
        assert!(angle_range(-95.0, 60.0, 3.0)
            .unwrap_err()
            .to_string()
            .contains("90"));
        assert!(angle_range(10.0, -10.0, 3.0).is_err());
        assert!(check_angles(&[1.0, 1.0]).is_err());
        // Absurd ranges are refused before anything is allocated, naming the parameters.
        let e = angle_range(-60.0, 1e12, 3.0).unwrap_err().to_string();
        assert!(e.contains("`tilt_max`"), "{e}");
        let e = angle_range(-60.0, 60.0, 1e-9).unwrap_err().to_string();
        assert!(e.contains("at most") && e.contains("`tilt_step`"), "{e}");
    }

    #[test]
    fn orders() {
        let a = angle_range(-9.0, 9.0, 3.0).unwrap();
        let ang = |o: TiltOrder, g: usize| -> Vec<f64> {
            acquisition_order(&a, o, 0.0, g, true)
                .into_iter()
                .map(|i| a[i])
                .collect()
        };
        assert_eq!(
            ang(TiltOrder::Unidirectional, 1),
            vec![-9.0, -6.0, -3.0, 0.0, 3.0, 6.0, 9.0]
        );
        assert_eq!(
            ang(TiltOrder::Bidirectional, 1),
            vec![0.0, 3.0, 6.0, 9.0, -3.0, -6.0, -9.0]
        );
        assert_eq!(
            ang(TiltOrder::DoseSymmetric, 2),
            vec![0.0, 3.0, -3.0, -6.0, 6.0, 9.0, -9.0]
        );
        assert_eq!(
            ang(TiltOrder::DoseSymmetric, 1),
            vec![0.0, 3.0, -3.0, 6.0, -6.0, 9.0, -9.0]
        );
        let s = TiltScheme::new(&a, TiltOrder::DoseSymmetric, 0.0, 2, true, 70.0).unwrap();
        assert!((s.total_dose() - 70.0).abs() < 1e-9);
        assert_eq!(s.tilts[3].prior_dose, 30.0);
    }

    #[test]
    fn mdoc_ts01_reproduces_angles_and_dose_order() {
        let m = read_mdoc(data("TS_01.mrc.mdoc"), 123.0).unwrap();
        assert_eq!(m.scheme.len(), 41);
        assert_eq!(m.pixel_size_a, Some(5.4));
        assert_eq!(m.tilt_axis_deg, Some(85.3));
        // Acquisition = ZValue order here; Hagen dose-symmetric with groups of 2 from 0 to +-60.
        assert_eq!(m.zvalues, (0..41).collect::<Vec<_>>());
        let expect = TiltScheme::new(
            &angle_range(-60.0, 60.0, 3.0).unwrap(),
            TiltOrder::DoseSymmetric,
            0.0,
            2,
            true,
            123.0,
        )
        .unwrap();
        for (t, e) in m.scheme.tilts.iter().zip(&expect.tilts) {
            assert!(
                (t.angle_deg - e.angle_deg).abs() < 0.01,
                "{} vs {}",
                t.angle_deg,
                e.angle_deg
            );
            assert!((t.prior_dose - e.prior_dose).abs() < 1e-9);
        }
        assert_eq!(m.scheme.tilts[0].defocus_um, Some(4.0));
        assert!(!m.has_dose);
    }

    #[test]
    fn mdoc_ts017_dose_order_matches_tlt_and_prior_dose() {
        let m = read_mdoc(data("TS_017/017.mdoc"), 0.0).unwrap();
        let tlt = read_tlt(data("TS_017/017.tlt")).unwrap();
        assert_eq!(m.scheme.len(), tlt.len());
        assert!(m.has_dose);
        // Sorted by angle it is the .tlt (stack order).
        for (t, a) in m.scheme.sorted_by_angle().iter().zip(&tlt) {
            assert!((t.angle_deg - a).abs() < 0.01);
        }
        // The accumulated dose grows along the order given by SerialEM's PriorRecordDose.
        let text = std::fs::read_to_string(data("TS_017/017.mdoc")).unwrap();
        let priors: Vec<f64> = text
            .lines()
            .filter_map(|l| l.strip_prefix("PriorRecordDose = "))
            .map(|v| v.trim().parse().unwrap())
            .collect();
        let ordered: Vec<f64> = m.zvalues.iter().map(|&z| priors[z]).collect();
        assert!(ordered.windows(2).all(|w| w[0] <= w[1]), "{ordered:?}");
        let first = m.scheme.tilts[0].angle_deg;
        // SerialEM's title says `dosym = 8.0`: a dose-symmetric series around an 8° pretilt.
        assert!((first - 8.0).abs() < 0.5, "series starts at {first}°");
        let serialem = TiltScheme::new(&tlt, TiltOrder::DoseSymmetric, 8.0, 2, false, 0.0).unwrap();
        for (a, b) in serialem.tilts.iter().zip(&m.scheme.tilts) {
            assert!(
                (a.angle_deg - b.angle_deg).abs() < 0.01,
                "{} vs {}",
                a.angle_deg,
                b.angle_deg
            );
        }
        // Our accumulated dose (sum of ExposureDose in acquisition order) follows SerialEM's
        // PriorRecordDose to within one exposure (SerialEM also counts an extra record).
        for (t, p) in m.scheme.tilts.iter().zip(&ordered) {
            assert!(
                (t.prior_dose - (p - ordered[0])).abs() < 2.5,
                "{} vs {}",
                t.prior_dose,
                p
            );
        }
    }

    #[test]
    fn relion5_tilt_star_gives_angles_dose_order_and_defocus() {
        let r = read_relion_tilts(data("relion5_TS_01_tilt.star"), 0.0).unwrap();
        let s = &r.scheme;
        assert_eq!(s.len(), 40);
        assert_eq!(r.tilt_axis_deg, Some(85.0));
        // Dose-symmetric: the first exposure is the one nearest 0°, the prior doses rise.
        assert!(s.tilts[0].angle_deg.abs() < 1.5, "{}", s.tilts[0].angle_deg);
        assert!(s
            .tilts
            .windows(2)
            .all(|w| w[1].prior_dose > w[0].prior_dose));
        // Pre-exposure of the -57° tilt is 114 e/Å² in the file.
        let t57 = s
            .tilts
            .iter()
            .find(|t| (t.angle_deg + 57.0).abs() < 0.01)
            .unwrap();
        assert!((t57.prior_dose - 114.0).abs() < 1e-9, "{}", t57.prior_dose);
        // DefocusU/V of that row: 39527.78 and 39418.41 Å.
        assert!((t57.defocus_um.unwrap() - 3.9473).abs() < 1e-3);
        let o = s.tilts.iter().position(|t| t == t57).unwrap();
        let [u, v, a] = r.astigmatism.as_ref().unwrap()[o];
        assert!((u - 3.952778).abs() < 1e-6 && (v - 3.941841).abs() < 1e-6);
        assert!((a - 44.527622).abs() < 1e-6);
        // This file records no optics; they stay unknown.
        assert_eq!(r.optics, StarOptics::default());
        let e = parse_relion_tilts("data_\nloop_\n_rlnX\n1\n", "x.star", 1.0).unwrap_err();
        assert!(
            e.to_string().contains("rlnTomoNominalStageTiltAngle"),
            "{e}"
        );
    }

    #[test]
    fn out_of_range_metadata_names_file_line_key_and_range() {
        let mdoc = |head: &str, sec: &str| {
            format!("{head}\n[ZValue = 0]\nTiltAngle = 0.0\n{sec}\n[ZValue = 1]\nTiltAngle = 3.0\n")
        };
        for (head, sec, line, key) in [
            ("PixelSpacing = 0", "", 1, "PixelSpacing"),
            ("PixelSpacing = nan", "", 1, "PixelSpacing"),
            ("Voltage = -300", "", 1, "Voltage"),
            ("", "ExposureDose = inf", 4, "ExposureDose"),
            ("", "PriorRecordDose = -1", 4, "PriorRecordDose"),
            ("", "TargetDefocus = NaN", 4, "TargetDefocus"),
        ] {
            let e = parse_mdoc(&mdoc(head, sec), "ts.mdoc", 100.0)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(&format!("ts.mdoc:{line}: {key} = ")) && e.contains("out of range"),
                "{head}/{sec}: {e}"
            );
        }
        assert!(parse_mdoc(
            &mdoc("PixelSpacing = 2.7", "ExposureDose = 3"),
            "ts.mdoc",
            1.0
        )
        .is_ok());
        let star = |col: &str, v: &str| {
            format!("data_\nloop_\n_rlnTomoNominalStageTiltAngle #1\n_{col} #2\n0.0 {v}\n3.0 1.0\n")
        };
        for (col, v) in [
            ("rlnTomoTiltSeriesPixelSize", "0"),
            ("rlnMicrographOriginalPixelSize", "-1.5"),
            ("rlnMicrographPreExposure", "-2"),
            ("rlnDefocusU", "1e15"),
            ("rlnAmplitudeContrast", "1.5"),
        ] {
            let e = parse_relion_tilts(&star(col, v), "ts.star", 100.0)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(&format!("ts.star: row 1: {col} = ")) && e.contains("out of range"),
                "{col}: {e}"
            );
        }
        let e = parse_relion_tilts(&star("rlnDefocusU", "nan"), "ts.star", 1.0).unwrap_err();
        assert!(e.to_string().contains("not a finite number"), "{e}");
        assert!(
            parse_relion_tilts(&star("rlnMicrographPreExposure", "0.5"), "ts.star", 1.0).is_ok()
        );
    }

    #[test]
    fn relion_micrograph_names_give_the_stack_index() {
        // A table re-sorted by angle: row order is not stack order; N@ says which image.
        let text = "data_\nloop_\n_rlnMicrographName #1\n_rlnTomoNominalStageTiltAngle #2\n\
                    _rlnMicrographPreExposure #3\n3@ts.mrcs -3.0 6.0\n1@ts.mrcs 0.0 0.0\n2@ts.mrcs 3.0 3.0\n";
        let r = parse_relion_tilts(text, "ts.star", 9.0).unwrap();
        // Acquisition order: 0°, +3°, −3° (rows 2, 3, 1), images 0, 1, 2.
        assert_eq!(r.rows, vec![1, 2, 0]);
        assert_eq!(r.stack, vec![0, 1, 2]);
        let angles: Vec<f64> = r.scheme.tilts.iter().map(|t| t.angle_deg).collect();
        assert_eq!(angles, vec![0.0, 3.0, -3.0]);
        // Without N@ the row is the image.
        let plain = text
            .replace("3@ts.mrcs", "a.mrc")
            .replace("1@ts.mrcs", "b.mrc")
            .replace("2@ts.mrcs", "c.mrc");
        assert_eq!(
            parse_relion_tilts(&plain, "ts.star", 9.0).unwrap().stack,
            vec![1, 2, 0]
        );
        let bad = text.replace("3@ts.mrcs", "0@ts.mrcs");
        let e = parse_relion_tilts(&bad, "ts.star", 9.0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("row 1") && e.contains("N >= 1"), "{e}");
    }
}
