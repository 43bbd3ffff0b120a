//! tomoflow plugin `tilt`: tilt-series simulation from a potential volume.
//!
//! Two node types with identical ports and parameters, so that a workflow can swap them:
//! `tilt-projection` (projection approximation) and `tilt-multislice` (phase gratings and
//! Fresnel propagation). Both emit a `tilt_series` (one message per image in acquisition order,
//! see docs/data-kinds.md) and the plugin exports it as an MRC stack with `.tlt`, `.mdoc` and a
//! RELION 5 tilt-series `.star` beside it ([`export`]). The physics is in [`sim`] and
//! docs/physics.md ("Image formation: tilt series").

pub mod export;
pub mod read;
pub mod sim;

use schemars::JsonSchema;
use serde::Deserialize;
use std::sync::Mutex;
use tomoflow_cryo::ctf::CtfParams;
use tomoflow_cryo::poisson::Rng;
use tomoflow_cryo::projector::{to_zxy_in_place, Geometry};
use tomoflow_cryo::tiltscheme::{angle_range, TiltOrder, TiltScheme};
use tomoflow_cryo::tiltseries::{SeriesInfo, TiltInfo};
use tomoflow_sdk::prelude::*;
use tomoflow_sdk::volume::{Assembler, Volume};

/// Acquisition order (see `tomoflow_cryo::tiltscheme`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum OrderParam {
    /// From the lowest angle to the highest.
    Unidirectional,
    /// From `start_angle` to the maximum, then from below the start to the minimum.
    Bidirectional,
    /// Hagen dose-symmetric: from `start_angle`, alternating sides in groups of `group`.
    DoseSymmetric,
}

impl OrderParam {
    /// The scheme module's order.
    pub fn tilt_order(self) -> TiltOrder {
        match self {
            OrderParam::Unidirectional => TiltOrder::Unidirectional,
            OrderParam::Bidirectional => TiltOrder::Bidirectional,
            OrderParam::DoseSymmetric => TiltOrder::DoseSymmetric,
        }
    }
}

/// Radiation-damage model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum DamageParam {
    /// No damage.
    None,
    /// Grant & Grigorieff (2015) critical exposure.
    GrantGrigorieff,
    /// A B-factor of `b_factor_per_dose` Å² per e/Å² of accumulated exposure.
    BFactor,
}

fn d_min() -> f64 {
    -60.0
}
fn d_max() -> f64 {
    60.0
}
fn d_step() -> f64 {
    3.0
}
fn d_group() -> usize {
    2
}
fn d_true() -> bool {
    true
}
fn d_kv() -> f64 {
    300.0
}
fn d_cs() -> f64 {
    2.7
}
fn d_ac() -> f64 {
    0.07
}
fn d_defocus() -> f64 {
    3.0
}
fn d_alpha() -> f64 {
    0.02
}
fn d_delta() -> f64 {
    60.0
}
fn d_one() -> f64 {
    1.0
}
fn d_mfp() -> f64 {
    3800.0
}
fn d_dqe() -> f64 {
    0.8
}
fn d_slice() -> f64 {
    40.0
}
fn d_strip() -> f64 {
    500.0
}
fn d_damage() -> DamageParam {
    DamageParam::GrantGrigorieff
}
fn d_order() -> OrderParam {
    OrderParam::DoseSymmetric
}
fn d_bfac() -> f64 {
    4.0
}

/// Parameters of `tilt-projection` and `tilt-multislice` (identical, so the two are swappable).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TiltParams {
    /// Lowest tilt angle (degrees), used when neither `angles` nor `tilt_file` is given.
    #[serde(default = "d_min")]
    pub tilt_min: f64,
    /// Highest tilt angle (degrees).
    #[serde(default = "d_max")]
    pub tilt_max: f64,
    /// Tilt increment (degrees, > 0).
    #[serde(default = "d_step")]
    pub tilt_step: f64,
    /// Explicit tilt angles (degrees); overrides the range.
    #[serde(default)]
    pub angles: Option<Vec<f64>>,
    /// IMOD `.tlt` (angles), SerialEM `.mdoc` or RELION 5 tilt-series `.star` (angles,
    /// acquisition order, doses, defocus).
    #[serde(default)]
    #[schemars(extend("x-tomoflow" = "input-file"))]
    pub tilt_file: Option<String>,
    /// Acquisition order (ignored for an `.mdoc` or `.star`, which record it).
    #[serde(default = "d_order")]
    pub order: OrderParam,
    /// Start angle of bidirectional and dose-symmetric orders (degrees).
    #[serde(default)]
    pub start_angle: f64,
    /// Images per side before switching in the dose-symmetric order.
    #[serde(default = "d_group")]
    #[schemars(range(min = 1, max = 100))]
    pub group: usize,
    /// Dose-symmetric: the start image counts as part of the first group (Hagen 2017:
    /// 0, +3, −3, −6, +6, ...); false gives SerialEM's 0, +3, +6, −3, −6, ...
    #[serde(default = "d_true")]
    pub start_in_group: bool,
    /// Total exposure of the series (e/Å²), spread equally (or in the ratios of an `.mdoc`'s
    /// ExposureDose). Default: the `.mdoc`'s doses if it has them, else 120.
    #[serde(default)]
    #[schemars(range(min = 0.0, max = 100000.0))]
    pub total_dose: Option<f64>,
    /// Tilt-axis angle (degrees, counter-clockwise from the image y axis); the images are
    /// rotated in plane by it.
    #[serde(default)]
    pub tilt_axis_angle: f64,
    /// Accelerating voltage (kV).
    #[serde(default = "d_kv")]
    #[schemars(range(min = 1.0, max = 3000.0))]
    pub voltage: f64,
    /// Spherical aberration Cs (mm).
    #[serde(default = "d_cs")]
    #[schemars(range(min = 0.0, max = 100.0))]
    pub cs: f64,
    /// Amplitude contrast fraction (0..1).
    #[serde(default = "d_ac")]
    #[schemars(range(min = 0.0, max = 0.99))]
    pub amplitude_contrast: f64,
    /// Defocus on the tilt axis (µm, underfocus positive); an `.mdoc`'s TargetDefocus wins.
    #[serde(default = "d_defocus")]
    pub defocus: f64,
    /// Per-tilt defoci (µm) in acquisition order; overrides `defocus`.
    #[serde(default)]
    pub defocus_per_tilt: Option<Vec<f64>>,
    /// Astigmatism: defocus difference between the major and minor axes (µm).
    #[serde(default)]
    pub astigmatism: f64,
    /// Angle of the astigmatism major axis from x (degrees).
    #[serde(default)]
    pub astigmatism_angle: f64,
    /// Illumination semi-angle (mrad) for the spatial-coherence envelope.
    #[serde(default = "d_alpha")]
    #[schemars(range(min = 0.0, max = 10.0))]
    pub source_spread: f64,
    /// Focal spread (Å) for the temporal-coherence envelope.
    #[serde(default = "d_delta")]
    #[schemars(range(min = 0.0, max = 10000.0))]
    pub focal_spread: f64,
    /// Apply the CTF (false: in-focus imaging without aberrations).
    #[serde(default = "d_true")]
    pub ctf: bool,
    /// Input value × this = electrostatic potential in V (the phantom's densities are unitless).
    #[serde(default = "d_one")]
    pub potential_scale: f64,
    /// Radiation damage model.
    #[serde(default = "d_damage")]
    pub damage: DamageParam,
    /// B-factor growth (Å² per e/Å²) for `damage: b-factor`.
    #[serde(default = "d_bfac")]
    #[schemars(range(min = 0.0, max = 1000.0))]
    pub b_factor_per_dose: f64,
    /// Ice thickness (Å) for inelastic loss; default: the volume's depth.
    #[serde(default)]
    #[schemars(range(min = 0.0, max = 1.0e6))]
    pub ice_thickness: Option<f64>,
    /// Inelastic mean free path (Å) at this voltage (380 nm at 300 kV); 0 disables the loss.
    #[serde(default = "d_mfp")]
    #[schemars(range(min = 0.0, max = 1.0e7))]
    pub inelastic_mfp: f64,
    /// Counting-detector MTF sinc(π k p) (false: ideal detector).
    #[serde(default = "d_true")]
    pub mtf: bool,
    /// Detector DQE at zero frequency (0..1]; DQE(k) = dqe0 × MTF(k)².
    #[serde(default = "d_dqe")]
    #[schemars(range(min = 0.001, max = 1.0))]
    pub dqe0: f64,
    /// Poisson shot noise at the real electron count per pixel (false: the expected image).
    #[serde(default = "d_true")]
    pub noise: bool,
    /// Multislice slice thickness (Å); `tilt-multislice` only.
    #[serde(default = "d_slice")]
    #[schemars(range(min = 0.1, max = 100000.0))]
    pub slice_thickness: f64,
    /// Projection approximation: the largest defocus step (Å) between the strips that model the
    /// defocus gradient across a tilted specimen.
    #[serde(default = "d_strip")]
    #[schemars(range(min = 1.0, max = 1.0e6))]
    pub defocus_strip_step: f64,
}

/// Parse the tilt scheme and per-tilt defoci (µm) described by the parameters.
pub fn build_scheme(p: &TiltParams, info: Option<&NodeInfo>) -> Result<(TiltScheme, Vec<f64>)> {
    let order = p.order.tilt_order();
    let total = p.total_dose.unwrap_or(120.0);
    if !(total.is_finite() && total >= 0.0) {
        bail!("`total_dose` must be >= 0 e/Å², got {total}");
    }
    let scheme = match &p.tilt_file {
        Some(f) => {
            let path = match info {
                Some(i) => i.resolve(f),
                None => f.into(),
            };
            read::read_listing(
                f,
                &path,
                p.order,
                p.start_angle,
                p.group,
                p.start_in_group,
                p.total_dose,
            )?
            .scheme
        }
        None => {
            let a = match &p.angles {
                Some(a) => a.clone(),
                None => angle_range(p.tilt_min, p.tilt_max, p.tilt_step)?,
            };
            TiltScheme::new(&a, order, p.start_angle, p.group, p.start_in_group, total)?
        }
    };
    let defoci: Vec<f64> = match &p.defocus_per_tilt {
        Some(d) => {
            if d.len() != scheme.len() {
                bail!(
                    "`defocus_per_tilt` has {} values but the scheme has {} tilts",
                    d.len(),
                    scheme.len()
                );
            }
            d.clone()
        }
        None => scheme
            .tilts
            .iter()
            .map(|t| t.defocus_um.unwrap_or(p.defocus))
            .collect(),
    };
    if let Some(d) = defoci.iter().find(|d| !d.is_finite() || d.abs() > 100.0) {
        bail!("defocus {d} µm is out of range (|defocus| <= 100 µm)");
    }
    Ok((scheme, defoci))
}

fn check_params(p: &TiltParams) -> Result<()> {
    if p.tilt_file.is_none() {
        build_scheme(p, None)?;
    }
    let ctf = ctf_params(p);
    ctf.validate().map_err(|e| anyhow!("{e}"))?;
    if !(p.potential_scale.is_finite()) {
        bail!("`potential_scale` must be finite");
    }
    Ok(())
}

fn ctf_params(p: &TiltParams) -> CtfParams {
    let df = p.defocus * 1e4;
    CtfParams {
        voltage_kv: p.voltage,
        cs_mm: p.cs,
        amplitude_contrast: p.amplitude_contrast,
        defocus_u_a: df + p.astigmatism * 1e4 / 2.0,
        defocus_v_a: df - p.astigmatism * 1e4 / 2.0,
        astigmatism_angle_deg: p.astigmatism_angle,
        source_spread_mrad: p.source_spread,
        focal_spread_a: p.focal_spread,
    }
}

/// The shared implementation of both node types.
pub struct TiltSim {
    params: TiltParams,
    multislice: bool,
    seed: u64,
    scheme: TiltScheme,
    defoci: Vec<f64>,
    input: Assembler<f32>,
    name: &'static str,
    threads: usize,
}

impl TiltSim {
    fn create(
        p: TiltParams,
        info: &NodeInfo,
        multislice: bool,
        name: &'static str,
    ) -> Result<Self> {
        check_params(&p)?;
        let (scheme, defoci) = build_scheme(&p, Some(info))?;
        Ok(TiltSim {
            params: p,
            multislice,
            seed: info.seed,
            scheme,
            defoci,
            input: Assembler::new(),
            name,
            threads: info.threads,
        })
    }

    fn model(&self, vol: &Volume<f32>) -> Result<sim::Model> {
        let [vz, vy, vx] = vol.voxel_size;
        if !(vx > 0.0 && vy > 0.0 && vz > 0.0) {
            bail!(
                "{}: the input volume has voxel size {:?} Å; it must be > 0",
                self.name,
                vol.voxel_size
            );
        }
        if (vz - vx).abs() > 1e-6 * vx || (vy - vx).abs() > 1e-6 * vx {
            bail!(
                "{}: the projector needs isotropic voxels, got {:?} Å (z, y, x); resample the volume first",
                self.name,
                vol.voxel_size
            );
        }
        let p = &self.params;
        let geom = Geometry::new(vol.shape, vx);
        geom.validate().map_err(|e| anyhow!("{}: {e}", self.name))?;
        Ok(sim::Model {
            geom,
            ctf: ctf_params(p),
            apply_ctf: p.ctf,
            envelopes: true,
            potential_scale: p.potential_scale,
            damage: match p.damage {
                DamageParam::None => sim::Damage::None,
                DamageParam::GrantGrigorieff => sim::Damage::GrantGrigorieff,
                DamageParam::BFactor => sim::Damage::BFactor(p.b_factor_per_dose),
            },
            ice_thickness_a: p.ice_thickness.unwrap_or(vol.shape[0] as f64 * vz),
            inelastic_mfp_a: p.inelastic_mfp,
            mtf: p.mtf,
            dqe0: p.dqe0,
            noise: p.noise,
            tilt_axis_deg: p.tilt_axis_angle,
            slice_a: self.multislice.then_some(p.slice_thickness),
            strip_step_a: p.defocus_strip_step,
            layers_a: 0.0,
        })
    }

    fn run(&mut self, ctx: &mut Ctx) -> Result<()> {
        let input = std::mem::take(&mut self.input);
        let mut vol = input
            .finish()
            .map_err(|e| anyhow!("{}: input `potential`: {e}", self.name))?;
        let mut model = self.model(&vol)?;
        // The projector's layout, in the same buffer: the potential is held once.
        to_zxy_in_place(&mut vol.data, vol.shape);
        // The ice slab is laterally infinite: project only what differs from it.
        sim::split_layers(&mut model, &mut vol.data);
        let vol_zxy = std::mem::take(&mut vol.data);
        drop(vol);
        let n = self.scheme.len();
        let stack_index = self.scheme.stack_indices();
        let series = SeriesInfo {
            count: n,
            shape: [model.geom.ny, model.geom.nu],
            pixel_size_a: model.geom.voxel_a,
            tilt_axis_deg: self.params.tilt_axis_angle,
            voltage_kv: self.params.voltage,
            cs_mm: self.params.cs,
            amplitude_contrast: self.params.amplitude_contrast,
            total_dose: self.scheme.total_dose(),
            specimen_thickness_a: model.geom.nz as f64 * model.geom.voxel_a,
            ctf_applied: self.params.ctf,
            units: "electrons per pixel".into(),
            simulator: self.name.into(),
        };
        let batch = (self.threads * 2).max(1);
        let mut next = 0;
        while next < n {
            ctx.check_cancelled()?;
            let hi = (next + batch).min(n);
            let out: Mutex<Vec<Option<Vec<f32>>>> = Mutex::new(vec![None; hi - next]);
            let shots: Vec<sim::TiltShot> = (next..hi)
                .map(|o| {
                    let t = &self.scheme.tilts[o];
                    sim::TiltShot {
                        angle_deg: t.angle_deg,
                        dose: t.dose,
                        prior_dose: t.prior_dose,
                        defocus_a: self.defoci[o] * 1e4,
                        seed: Rng::stream(self.seed, o as u64).next_u64(),
                    }
                })
                .collect();
            ctx.parallel_for(hi - next, |k| {
                let img = sim::simulate_tilt(&model, &vol_zxy, &shots[k]);
                if let Ok(mut g) = out.lock() {
                    g[k] = Some(img);
                }
            });
            let out = out
                .into_inner()
                .map_err(|_| anyhow!("a simulation task failed"))?;
            for (k, img) in out.into_iter().enumerate() {
                let o = next + k;
                let img = img.ok_or_else(|| anyhow!("a simulation task did not run"))?;
                let t = &self.scheme.tilts[o];
                let ctf = ctf_params(&self.params);
                let tilt = TiltInfo {
                    index: stack_index[o],
                    angle_deg: t.angle_deg,
                    order: o,
                    dose_e_per_a2: t.dose,
                    prior_dose: t.prior_dose,
                    accumulated_dose: t.prior_dose + t.dose,
                    defocus_um: self.defoci[o],
                    defocus_u_um: self.defoci[o] + (ctf.defocus_u_a - ctf.defocus_a()) / 1e4,
                    defocus_v_um: self.defoci[o] + (ctf.defocus_v_a - ctf.defocus_a()) / 1e4,
                    astigmatism_angle_deg: ctf.astigmatism_angle_deg,
                };
                ctx.emit("tilt_series", tilt_message(&tilt, &series, img))?;
                ctx.progress(o as u64 + 1, n as u64);
            }
            next = hi;
        }
        Ok(())
    }
}

macro_rules! tilt_node {
    ($ty:ident, $name:literal, $multi:expr, $doc:literal) => {
        #[doc = $doc]
        pub struct $ty(TiltSim);

        impl Node for $ty {
            fn process(&mut self, _ctx: &mut Ctx, _input: usize, msg: Message) -> Result<()> {
                self.0.input.add(&msg)
            }
            fn finish(&mut self, ctx: &mut Ctx) -> Result<()> {
                self.0.run(ctx)
            }
        }

        impl NodeDef for $ty {
            type Params = TiltParams;
            const NAME: &'static str = $name;
            const DOC: &'static str = concat!(
                $doc,
                "\n\nInput `potential`: a volume in V (× `potential_scale`), isotropic voxels, z along the beam at 0°. \
                 Output `tilt_series`: one image per tilt in acquisition order, in electrons per pixel, pixel = voxel size, \
                 with per-tilt angle, order, dose, accumulated dose and defocus in the metadata (docs/data-kinds.md). \
                 Physics and units: docs/physics.md, \"Image formation: tilt series\". Noise is drawn from the node's seed."
            );
            const INPUTS: &'static [Port] =
                &[port("potential", "volume", "specimen potential (V × potential_scale)")];
            const OUTPUTS: &'static [Port] = &[port(
                "tilt_series",
                "tilt_series",
                "one image per tilt, acquisition order, electrons per pixel",
            )];
            fn check(p: &TiltParams) -> Result<()> {
                check_params(p)
            }
            fn create(p: TiltParams, info: &NodeInfo) -> Result<Self> {
                Ok($ty(TiltSim::create(p, info, $multi, $name)?))
            }
        }
    };
}

tilt_node!(
    TiltProjection,
    "tilt-projection",
    false,
    "Simulate a tilt series in the projection approximation (phase object exp(iσ∫V dz), CTF with defocus gradient, dose, damage, detector, shot noise).\n\n\
     The exit wave of each tilt is exp((i − a) σ P) with P the projected potential (Joseph's projector, V·Å), σ the interaction constant and \
     a = A/sqrt(1−A²) the amplitude-contrast ratio; it is filtered by exp(iχ(k)) E_s E_t with the defocus of strips parallel to the tilt axis \
     (defocus gradient across the tilted specimen), giving intensities that are blended between strips. Radiation damage filters P by the \
     accumulated exposure (Grant & Grigorieff 2015 or a B-factor), inelastic scattering removes exp(−t/(λ_in cos θ)), the counting detector \
     applies MTF sinc(πkp) and DQE dqe0·MTF², and Poisson noise is drawn at the electron count per pixel. Ports and parameters are those of \
     `tilt-multislice`, so the two are swappable."
);

tilt_node!(
    TiltMultislice,
    "tilt-multislice",
    true,
    "Simulate a tilt series by multislice (phase gratings of `slice_thickness` and Fresnel propagation), then CTF, dose, damage, detector, shot noise.\n\n\
     The tilted volume is cut into slabs perpendicular to the beam (projected with Joseph's projector binned by depth); the wave is multiplied \
     by each slab's transmission exp((i − a) σ P_k) and propagated by exp(iπλΔz k²) (band-limited to 2/3 Nyquist) to the next; the \
     objective's defocus is referred to the specimen centre, so the defocus gradient of a tilted specimen arises from the geometry. The rest \
     (damage, inelastic loss, detector, noise, metadata) is as in `tilt-projection`, whose ports and parameters are identical."
);

/// A `tilt_series` message: metadata `{"tilt": ..., "series": ...}` and tensor `data` [ny, nx].
pub fn tilt_message(tilt: &TiltInfo, series: &SeriesInfo, img: Vec<f32>) -> Message {
    let meta = serde_json::json!({"tilt": tilt, "series": series});
    Message::json(meta).with_tensor("data", Tensor::from_vec(img, &series.shape))
}

tomoflow_sdk::export_plugin! {
    name: "tilt",
    version: env!("CARGO_PKG_VERSION"),
    description: "Tilt-series simulation (projection approximation or multislice) with CTF, dose, damage, detector and shot noise; tilt-series export and import",
    nodes: [
        TiltProjection,
        TiltMultislice,
        export::TiltSeriesWriteNode,
        read::TiltSeriesReadNode,
    ],
}

#[cfg(test)]
mod tests {
    use super::*;
    use tomoflow_sdk::plugin::params_schema;

    #[test]
    fn descriptor_and_schemas() {
        assert!(!super::tomoflow_plugin_descriptor().is_null());
        let a = params_schema::<<TiltProjection as NodeDef>::Params>();
        let b = params_schema::<<TiltMultislice as NodeDef>::Params>();
        assert_eq!(a, b, "the two simulators must be swappable");
        assert_eq!(a["type"], "object");
    }

    fn params(v: serde_json::Value) -> TiltParams {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn parameter_errors_are_clear() {
        let e = check_params(&params(serde_json::json!({"tilt_step": 0.0}))).unwrap_err();
        assert!(e.to_string().contains("step"), "{e}");
        let e = check_params(&params(serde_json::json!({"tilt_min": -95.0}))).unwrap_err();
        assert!(e.to_string().contains("90"), "{e}");
        let e = check_params(&params(serde_json::json!({"amplitude_contrast": 1.5}))).unwrap_err();
        assert!(e.to_string().contains("amplitude"), "{e}");
        let (s, d) = build_scheme(&params(serde_json::json!({})), None).unwrap();
        assert_eq!(s.len(), 41);
        assert_eq!(d.len(), 41);
        let mdoc = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/data/tilt-metadata/TS_01.mrc.mdoc"
        );
        let (s, d) = build_scheme(
            &params(serde_json::json!({"tilt_file": mdoc, "total_dose": 100.0})),
            None,
        )
        .unwrap();
        assert_eq!(s.len(), 41);
        assert!((s.total_dose() - 100.0).abs() < 1e-9);
        assert_eq!(d[0], 4.0);
    }
}
