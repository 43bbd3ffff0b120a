//! `tilt-series-read`: a tilt series recorded on a microscope (or exported by
//! `tilt-series-write`) read back as a `tilt_series`: an MRC stack (IMOD `.st`, `.mrc`,
//! `.mrcs`, `.ali`; one image per z) and its angles from an IMOD `.tlt`/`.rawtlt` (stack
//! order), a SerialEM `.mdoc` (ZValue per image, acquisition order from DateTime, doses,
//! defocus) or a RELION 5 tilt-series `.star` (row = stack index, acquisition order from the
//! pre-exposures, defocus U/V, optics). Images are read from the stack one at a time and sent
//! in acquisition order, so memory is one image whatever the stack's size.

use crate::{d_ac, d_cs, d_group, d_kv, d_order, d_true, OrderParam};
use schemars::JsonSchema;
use serde::Deserialize;
use std::path::PathBuf;
use tomoflow_cryo::mrc::MrcReader;
use tomoflow_cryo::tiltscheme::{
    acquisition_order, read_mdoc, read_relion_tilts, read_tlt, TiltScheme,
};
use tomoflow_cryo::tiltseries::{SeriesInfo, TiltInfo};
use tomoflow_sdk::prelude::*;

/// Parameters of `tilt-series-read`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TiltReadParams {
    /// The stack: an MRC file with one tilt image per z (`.st`, `.mrc`, `.mrcs`, `.ali`).
    #[schemars(extend("x-tomoflow" = "input-file"))]
    pub path: String,
    /// Its angles: IMOD `.tlt`/`.rawtlt` (one angle per stack image), SerialEM `.mdoc` or
    /// RELION 5 tilt-series `.star` (these two also give acquisition order, doses and defocus).
    #[schemars(extend("x-tomoflow" = "input-file"))]
    pub tilt_file: String,
    /// Acquisition order for a `.tlt` (which does not record it); ignored otherwise.
    #[serde(default = "d_order")]
    pub order: OrderParam,
    /// Start angle of bidirectional and dose-symmetric orders (degrees; `.tlt` only).
    #[serde(default)]
    pub start_angle: f64,
    /// Images per side before switching in the dose-symmetric order (`.tlt` only).
    #[serde(default = "d_group")]
    #[schemars(range(min = 1, max = 100))]
    pub group: usize,
    /// Dose-symmetric: the start image counts as part of the first group (`.tlt` only).
    #[serde(default = "d_true")]
    pub start_in_group: bool,
    /// Total exposure (e/Å²): rescales recorded doses, or is spread equally over a `.tlt`'s
    /// images. Default: the recorded doses, else 120.
    #[serde(default)]
    #[schemars(range(min = 0.0, max = 100000.0))]
    pub total_dose: Option<f64>,
    /// Pixel size (Å). Default: the stack header's, else the `.mdoc`'s or `.star`'s.
    #[serde(default)]
    #[schemars(range(min = 0.001, max = 100000.0))]
    pub pixel_size: Option<f64>,
    /// Tilt-axis angle (degrees, counter-clockwise from the image y axis). Default: the
    /// `.mdoc`'s or `.star`'s, else 0.
    #[serde(default)]
    pub tilt_axis_angle: Option<f64>,
    /// Accelerating voltage (kV). Default: the `.mdoc`'s or `.star`'s, else 300.
    #[serde(default)]
    #[schemars(range(min = 1.0, max = 3000.0))]
    pub voltage: Option<f64>,
    /// Spherical aberration (mm). Default: the `.star`'s, else 2.7.
    #[serde(default)]
    #[schemars(range(min = 0.0, max = 100.0))]
    pub cs: Option<f64>,
    /// Amplitude contrast fraction. Default: the `.star`'s, else 0.07.
    #[serde(default)]
    #[schemars(range(min = 0.0, max = 0.99))]
    pub amplitude_contrast: Option<f64>,
    /// The images carry a CTF (real data does): reconstructions phase-flip them, which needs a
    /// defocus per image. `false` for images without one (e.g. ideal projections).
    #[serde(default = "d_true")]
    pub ctf: bool,
    /// Defocus (µm, underfocus positive) of every image, overriding the file's; required when
    /// `ctf` is true and the tilt file records none (a `.tlt`).
    #[serde(default)]
    #[schemars(range(min = -100.0, max = 100.0))]
    pub defocus: Option<f64>,
    /// Specimen thickness (Å), the reconstruction's default thickness; unknown by default.
    #[serde(default)]
    #[schemars(range(min = 0.0, max = 1.0e7))]
    pub thickness: Option<f64>,
}

/// What a tilt file says, mapped onto the stack.
pub(crate) struct Listing {
    /// The scheme, in acquisition order.
    pub(crate) scheme: TiltScheme,
    /// Stack index (z) of each tilt of `scheme.tilts`.
    stack: Vec<usize>,
    /// Per tilt: defocus U, V (µm) and astigmatism angle (degrees), when recorded.
    astigmatism: Option<Vec<[f64; 3]>>,
    pixel_size_a: Option<f64>,
    tilt_axis_deg: Option<f64>,
    voltage_kv: Option<f64>,
    cs_mm: Option<f64>,
    amplitude_contrast: Option<f64>,
}

/// Read a tilt file (`tilt_file` as written, `file` resolved): an `.mdoc` or `.star`, whose
/// recorded doses a given `total_dose` rescales, or a `.tlt`/`.rawtlt`, whose acquisition
/// follows `order`, `start_angle`, `group` and `start_in_group`, with `total_dose` (default 120
/// e/Å²) spread equally. Shared by the simulators' `tilt_file` and `tilt-series-read`.
pub(crate) fn read_listing(
    tilt_file: &str,
    file: &std::path::Path,
    order: OrderParam,
    start_angle: f64,
    group: usize,
    start_in_group: bool,
    total_dose: Option<f64>,
) -> Result<Listing> {
    let total = total_dose.unwrap_or(120.0);
    let lower = tilt_file.to_ascii_lowercase();
    let rescale = |s: &mut TiltScheme, has_dose: bool| {
        if let Some(t) = total_dose {
            s.rescale_dose(t);
        } else if !has_dose {
            s.rescale_dose(total);
        }
    };
    if lower.ends_with(".mdoc") {
        let mut m = read_mdoc(file, total)?;
        rescale(&mut m.scheme, m.has_dose);
        Ok(Listing {
            scheme: m.scheme,
            stack: m.zvalues,
            astigmatism: None,
            pixel_size_a: m.pixel_size_a,
            tilt_axis_deg: m.tilt_axis_deg,
            voltage_kv: m.voltage_kv,
            cs_mm: None,
            amplitude_contrast: None,
        })
    } else if lower.ends_with(".star") {
        let mut r = read_relion_tilts(file, total)?;
        rescale(&mut r.scheme, r.has_dose);
        Ok(Listing {
            scheme: r.scheme,
            stack: r.stack,
            astigmatism: r.astigmatism,
            pixel_size_a: r.optics.pixel_size_a,
            tilt_axis_deg: r.tilt_axis_deg,
            voltage_kv: r.optics.voltage_kv,
            cs_mm: r.optics.cs_mm,
            amplitude_contrast: r.optics.amplitude_contrast,
        })
    } else if lower.ends_with(".tlt") || lower.ends_with(".rawtlt") {
        let a = read_tlt(file)?;
        let order = order.tilt_order();
        let scheme = TiltScheme::new(&a, order, start_angle, group, start_in_group, total)?;
        // The same permutation TiltScheme::new applied: stack index of each acquired image.
        let stack = acquisition_order(&a, order, start_angle, group, start_in_group);
        Ok(Listing {
            scheme,
            stack,
            astigmatism: None,
            pixel_size_a: None,
            tilt_axis_deg: None,
            voltage_kv: None,
            cs_mm: None,
            amplitude_contrast: None,
        })
    } else {
        bail!(
            "`tilt_file` {tilt_file:?}: expected an IMOD .tlt/.rawtlt, a SerialEM .mdoc or a RELION 5 tilt-series .star"
        )
    }
}

/// `tilt-series-read` node.
pub struct TiltSeriesReadNode {
    p: TiltReadParams,
    stack: PathBuf,
    tilt_file: PathBuf,
}

impl Node for TiltSeriesReadNode {
    fn finish(&mut self, ctx: &mut Ctx) -> Result<()> {
        let p = &self.p;
        let mut r = MrcReader::open(&self.stack)?;
        let [n, ny, nx] = r.header.shape;
        let stack_name = self.stack.display().to_string();
        let file_name = self.tilt_file.display().to_string();
        let l = read_listing(
            &p.tilt_file,
            &self.tilt_file,
            p.order,
            p.start_angle,
            p.group,
            p.start_in_group,
            p.total_dose,
        )?;
        if l.scheme.len() != n {
            bail!(
                "{file_name} lists {} tilts but the stack {stack_name} has {n} images; give the tilt file \
                 that belongs to this stack",
                l.scheme.len()
            );
        }
        let mut seen = vec![false; n];
        for &z in &l.stack {
            if z >= n || std::mem::replace(&mut seen[z], true) {
                bail!(
                    "{file_name}: stack index {z} is {} (the stack {stack_name} has images 0..{n})",
                    if z >= n {
                        "out of range"
                    } else {
                        "listed twice"
                    }
                );
            }
        }
        let header_px = r.header.voxel_size[2];
        let pixel_size_a = p
            .pixel_size
            .or((header_px.is_finite() && header_px > 0.0).then_some(header_px))
            .or(l.pixel_size_a)
            .ok_or_else(|| {
                anyhow!(
                    "{stack_name}: the header defines no pixel size and {file_name} gives none; set `pixel_size` (Å)"
                )
            })?;
        let defoci: Vec<[f64; 3]> = match (p.defocus, &l.astigmatism) {
            (Some(d), _) => vec![[d, d, 0.0]; n],
            (None, Some(a)) => a.clone(),
            (None, None) => l
                .scheme
                .tilts
                .iter()
                .map(|t| t.defocus_um.map(|d| [d, d, 0.0]))
                .collect::<Option<Vec<_>>>()
                .or((!p.ctf).then(|| vec![[0.0; 3]; n]))
                .ok_or_else(|| {
                    anyhow!(
                        "{file_name} records no defocus for every image: set `defocus` (µm, underfocus positive), \
                         or `ctf: false` if the images carry no CTF"
                    )
                })?,
        };
        if let Some(d) = defoci.iter().flatten().find(|d| !d.is_finite()) {
            bail!("{file_name}: defocus {d} is not a number");
        }
        let series = SeriesInfo {
            count: n,
            shape: [ny, nx],
            pixel_size_a,
            tilt_axis_deg: p.tilt_axis_angle.or(l.tilt_axis_deg).unwrap_or(0.0),
            voltage_kv: p.voltage.or(l.voltage_kv).unwrap_or(d_kv()),
            cs_mm: p.cs.or(l.cs_mm).unwrap_or(d_cs()),
            amplitude_contrast: p
                .amplitude_contrast
                .or(l.amplitude_contrast)
                .unwrap_or(d_ac()),
            total_dose: l.scheme.total_dose(),
            specimen_thickness_a: p.thickness.unwrap_or(0.0),
            ctf_applied: p.ctf,
            units: String::new(),
            simulator: TiltSeriesReadNode::NAME.into(),
        };
        // `index` is the position in the stack sorted by angle (the kind's convention), which a
        // stack in acquisition order (e.g. straight from SerialEM) does not follow.
        let rank = l.scheme.stack_indices();
        let mut img = Vec::new();
        for (o, (t, &z)) in l.scheme.tilts.iter().zip(&l.stack).enumerate() {
            ctx.check_cancelled()?;
            r.read_slab_into(z, z + 1, &mut img)?;
            if let Some(i) = img.iter().position(|v| !v.is_finite()) {
                bail!(
                    "{stack_name}: image {z} (tilt {}°) has a NaN or infinite pixel at (y {}, x {})",
                    t.angle_deg,
                    i / nx,
                    i % nx
                );
            }
            let [u, v, angle] = defoci[o];
            let tilt = TiltInfo {
                index: rank[o],
                angle_deg: t.angle_deg,
                order: o,
                dose_e_per_a2: t.dose,
                prior_dose: t.prior_dose,
                accumulated_dose: t.prior_dose + t.dose,
                defocus_um: (u + v) / 2.0,
                defocus_u_um: u,
                defocus_v_um: v,
                astigmatism_angle_deg: angle,
            };
            ctx.emit(
                "tilt_series",
                crate::tilt_message(&tilt, &series, std::mem::take(&mut img)),
            )?;
            ctx.progress(o as u64 + 1, n as u64);
        }
        Ok(())
    }
}

impl NodeDef for TiltSeriesReadNode {
    type Params = TiltReadParams;
    const NAME: &'static str = "tilt-series-read";
    const DOC: &'static str = "Read a recorded tilt series: an MRC stack (one image per z) and its angles from an IMOD `.tlt`/`.rawtlt`, a SerialEM `.mdoc` or a RELION 5 tilt-series `.star`.\n\n\
        The images are sent in acquisition order (`.mdoc`: DateTime; `.star`: pre-exposure; `.tlt`: the `order` \
        parameter), one at a time, so memory is one image. `.mdoc` and `.star` also give doses and defocus (and the \
        `.star` astigmatism, voltage, Cs, amplitude contrast and pixel size); parameters override what the files say. \
        The stack and the tilt file must list the same number of images. Reads what `tilt-series-write` exports, IMOD \
        and SerialEM stacks, and RELION 5 tilt-series tables (image N of `N@stack` in `_rlnMicrographName`, else the row).";
    const INPUTS: &'static [Port] = &[];
    const OUTPUTS: &'static [Port] = &[port(
        "tilt_series",
        "tilt_series",
        "the images in acquisition order",
    )];
    fn create(p: TiltReadParams, info: &NodeInfo) -> Result<Self> {
        for (name, v) in [
            ("pixel_size", p.pixel_size),
            ("voltage", p.voltage),
            ("total_dose", p.total_dose),
            ("defocus", p.defocus),
            ("tilt_axis_angle", p.tilt_axis_angle),
        ] {
            if v.is_some_and(|v| !v.is_finite()) {
                bail!("`{name}` must be a finite number");
            }
        }
        Ok(TiltSeriesReadNode {
            stack: info.resolve(&p.path),
            tilt_file: info.resolve(&p.tilt_file),
            p,
        })
    }
}
