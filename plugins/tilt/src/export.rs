//! `tilt-series-write`: export a `tilt_series` as an MRC stack sorted by angle (IMOD's `.st`
//! convention) plus, beside it with the same stem:
//! - `.tlt`: the angles in stack order, one per line (IMOD `tilt`/etomo);
//! - `.mdoc`: a SerialEM-style metadata file, one `[ZValue = i]` section per image with TiltAngle,
//!   ExposureDose, PriorRecordDose, TargetDefocus (negative = underfocus, SerialEM's sign),
//!   PixelSpacing, Voltage and the acquisition order (`DateTime` increases with it) — what
//!   RELION 5's and Warp's importers read;
//! - `.star`: a RELION 5 tilt-series STAR (`data_<stem>`), one row per image in stack order with
//!   `_rlnMicrographName` (`i@stack`), nominal stage tilt and tilt-axis angles, pre-exposure,
//!   nominal defocus (µm) and `_rlnDefocusU/V/Angle` (Å), voltage, Cs, amplitude contrast, pixel size.
//!
//! Every file is written to a temporary name and renamed into place.

use schemars::JsonSchema;
use serde::Deserialize;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use tomoflow_cryo::image::write_atomic;
use tomoflow_cryo::mrc::MrcWriter;
use tomoflow_cryo::tiltseries::{SeriesInfo, TiltInfo};
use tomoflow_sdk::prelude::*;

/// Parameters of `tilt-series-write`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TiltExportParams {
    /// Target stack `X.st` / `X.mrc` / `X.mrcs` (filled in by the engine from `exports:`).
    pub path: String,
}

/// Parse one `tilt_series` message.
pub fn parse(msg: &Message) -> Result<(TiltInfo, SeriesInfo, &[f32])> {
    let tilt: TiltInfo = serde_json::from_value(
        msg.meta
            .get("tilt")
            .cloned()
            .ok_or_else(|| anyhow!("message has no `tilt` metadata: is this a tilt_series?"))?,
    )
    .context("bad `tilt` metadata")?;
    let series: SeriesInfo = serde_json::from_value(
        msg.meta
            .get("series")
            .cloned()
            .ok_or_else(|| anyhow!("message has no `series` metadata: is this a tilt_series?"))?,
    )
    .context("bad `series` metadata")?;
    let data = msg
        .tensor("data")
        .map_err(anyhow::Error::msg)?
        .as_slice::<f32>()
        .map_err(anyhow::Error::msg)?;
    if data.len() != series.shape[0] * series.shape[1] {
        bail!(
            "tilt image has {} pixels, its series says {:?}",
            data.len(),
            series.shape
        );
    }
    Ok((tilt, series, data))
}

/// `tilt-series-write` node.
pub struct TiltSeriesWriteNode {
    path: PathBuf,
    images: Vec<(TiltInfo, Vec<f32>)>,
    series: Option<SeriesInfo>,
}

fn sibling(path: &Path, ext: &str) -> PathBuf {
    path.with_extension(ext)
}

/// Write the sidecar texts for tilts sorted by angle.
pub fn sidecars(stack: &Path, s: &SeriesInfo, tilts: &[TiltInfo]) -> (String, String, String) {
    let name = stack
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = stack
        .file_stem()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "tilt_series".into());
    let mut tlt = String::new();
    for t in tilts {
        let _ = writeln!(tlt, "{:8.2}", t.angle_deg);
    }
    let mut mdoc = format!(
        "PixelSpacing = {}\nVoltage = {}\nImageFile = {name}\nImageSize = {} {}\nDataMode = 2\n\n\
         [T = tomoflow simulated tilt series ({})]\n\n[T =     Tilt axis angle = {}, binning = 1]\n\n",
        s.pixel_size_a, s.voltage_kv, s.shape[1], s.shape[0], s.simulator, s.tilt_axis_deg
    );
    for (z, t) in tilts.iter().enumerate() {
        // A synthetic clock: one minute per image in acquisition order.
        let (h, m) = (10 + t.order / 60, t.order % 60);
        let _ = write!(
            mdoc,
            "[ZValue = {z}]\nTiltAngle = {}\nExposureDose = {}\nPriorRecordDose = {}\nPixelSpacing = {}\n\
             TargetDefocus = {}\nDefocus = {}\nDateTime = 01-Jan-25  {h:02}:{m:02}:00\n\n",
            t.angle_deg,
            t.dose_e_per_a2,
            t.prior_dose,
            s.pixel_size_a,
            -t.defocus_um,
            -t.defocus_um
        );
    }
    let mut star = format!(
        "\n# version 50001\n\ndata_{stem}\n\nloop_\n_rlnMicrographName #1\n_rlnTomoNominalStageTiltAngle #2\n\
         _rlnTomoNominalTiltAxisAngle #3\n_rlnMicrographPreExposure #4\n_rlnTomoNominalDefocus #5\n\
         _rlnDefocusU #6\n_rlnDefocusV #7\n_rlnDefocusAngle #8\n_rlnVoltage #9\n_rlnSphericalAberration #10\n\
         _rlnAmplitudeContrast #11\n_rlnMicrographOriginalPixelSize #12\n_rlnTomoTiltMovieFrameCount #13\n"
    );
    for (z, t) in tilts.iter().enumerate() {
        let _ = writeln!(
            star,
            "{:06}@{name} {:10.5} {:10.5} {:10.4} {:10.5} {:12.2} {:12.2} {:8.3} {:8.2} {:6.3} {:6.3} {:8.4} 1",
            z + 1,
            t.angle_deg,
            s.tilt_axis_deg,
            t.prior_dose,
            -t.defocus_um,
            t.defocus_u_um * 1e4,
            t.defocus_v_um * 1e4,
            t.astigmatism_angle_deg,
            s.voltage_kv,
            s.cs_mm,
            s.amplitude_contrast,
            s.pixel_size_a
        );
    }
    (tlt, mdoc, star)
}

impl Node for TiltSeriesWriteNode {
    fn process(&mut self, ctx: &mut Ctx, _input: usize, msg: Message) -> Result<()> {
        let (tilt, series, data) = parse(&msg)?;
        if let Some(s) = &self.series {
            if s.shape != series.shape || s.count != series.count {
                bail!("tilt-series-write: images of different series in one stream");
            }
        }
        ctx.progress(self.images.len() as u64 + 1, series.count as u64);
        self.images.push((tilt, data.to_vec()));
        self.series = Some(series);
        Ok(())
    }

    fn finish(&mut self, _ctx: &mut Ctx) -> Result<()> {
        let s = self.series.clone().ok_or_else(|| {
            anyhow!("tilt-series-write: no image arrived; the tilt series is empty")
        })?;
        if self.images.len() != s.count {
            bail!(
                "tilt-series-write: {} of {} images arrived",
                self.images.len(),
                s.count
            );
        }
        self.images
            .sort_by(|a, b| a.0.angle_deg.total_cmp(&b.0.angle_deg));
        let [ny, nx] = s.shape;
        let px = s.pixel_size_a;
        let mut w =
            MrcWriter::<f32>::create(&self.path, [s.count, ny, nx], [px, px, px], [0.0; 3])?;
        for (_, img) in &self.images {
            w.write_slab(img)?;
        }
        w.finish()?;
        let tilts: Vec<TiltInfo> = self.images.iter().map(|(t, _)| t.clone()).collect();
        let (tlt, mdoc, star) = sidecars(&self.path, &s, &tilts);
        write_atomic(&sibling(&self.path, "tlt"), tlt.as_bytes())?;
        let mut mpath = self.path.clone().into_os_string();
        mpath.push(".mdoc");
        write_atomic(Path::new(&mpath), mdoc.as_bytes())?;
        write_atomic(&sibling(&self.path, "star"), star.as_bytes())?;
        Ok(())
    }
}

impl NodeDef for TiltSeriesWriteNode {
    type Params = TiltExportParams;
    const NAME: &'static str = "tilt-series-write";
    const DOC: &'static str = "Export a tilt series as an MRC stack sorted by angle, with IMOD `.tlt`, SerialEM-style `X.st.mdoc` and RELION 5 tilt-series `.star` beside it.\n\n\
        The stack is float32 (mode 2), pixel size in the header; `.tlt` lists the angles in stack order; `<stack>.mdoc` has one \
        [ZValue] section per image with TiltAngle, ExposureDose, PriorRecordDose, TargetDefocus (negative = underfocus) and a \
        DateTime that increases in acquisition order; `.star` is a RELION 5 tilt-series table (`i@stack`, stage tilt, tilt-axis \
        angle, pre-exposure, nominal defocus, DefocusU/V in Å, voltage, Cs, amplitude contrast, pixel size).";
    const INPUTS: &'static [Port] = &[port("tilt_series", "tilt_series", "tilt series to write")];
    const OUTPUTS: &'static [Port] = &[];
    const EXPORT_EXTENSIONS: &'static [&'static str] = &["st", "mrc", "mrcs"];
    fn create(p: TiltExportParams, info: &NodeInfo) -> Result<Self> {
        Ok(TiltSeriesWriteNode {
            path: info.resolve(&p.path),
            images: Vec::new(),
            series: None,
        })
    }
}
