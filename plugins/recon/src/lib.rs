//! tomoflow plugin `recon`: tomographic reconstruction of a `tilt_series` into a `tomogram`
//! volume, by weighted back-projection (`recon-wbp`) or SIRT (`recon-sirt`). Both node types
//! have the same ports and parameters, so a workflow can swap them with a sweep axis.
//!
//! Output orientation: (z, y, x) with z along the beam at 0° tilt, y along the tilt axis, voxel
//! size = pixel size × binning in the header, streamed as z-slabs. Values are image contrast per
//! Å (the reconstruction of `−(I/⟨I⟩ − 1)` or of its phase-flipped version), proportional to the
//! potential for a weak object. Science in [`recon`].

pub mod recon;

use recon::{Filter, Par, Window};
use schemars::JsonSchema;
use serde::Deserialize;
use std::collections::BTreeMap;
use tomoflow_cryo::ctf::CtfParams;
use tomoflow_cryo::projector::{from_zxy, Geometry};
use tomoflow_cryo::tiltgeom::{phase_flip_tilted, rotate_image, strip_count};
use tomoflow_cryo::tiltseries::{SeriesInfo, TiltInfo};
use tomoflow_sdk::prelude::*;
use tomoflow_sdk::volume::ChunkMeta;

/// Apodisation window of the WBP ramp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum WindowParam {
    /// Pure ramp.
    Ramp,
    /// Shepp–Logan (sinc).
    SheppLogan,
    /// Cosine.
    Cosine,
    /// Hamming.
    Hamming,
    /// Hann.
    Hann,
}

fn d_true() -> bool {
    true
}
fn d_one() -> usize {
    1
}
fn d_cut() -> f64 {
    1.0
}
fn d_win() -> WindowParam {
    WindowParam::Hamming
}
fn d_iter() -> usize {
    20
}
fn d_relax() -> f64 {
    1.0
}
fn d_strip() -> f64 {
    500.0
}

/// Parameters of `recon-wbp` and `recon-sirt` (identical, so the two are swappable).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReconParams {
    /// Tomogram thickness (Å) along z; default: the series' specimen thickness if it records
    /// one, else half the image width.
    #[serde(default)]
    #[schemars(range(min = 1.0, max = 1.0e7))]
    pub thickness: Option<f64>,
    /// Bin the images by this factor (averaging) before reconstructing.
    #[serde(default = "d_one")]
    #[schemars(range(min = 1, max = 64))]
    pub binning: usize,
    /// CTF correction by strip-wise phase flipping per tilt (when the series carries a CTF).
    #[serde(default = "d_true")]
    pub ctf_correction: bool,
    /// Largest defocus step (Å) between phase-flipping strips across a tilted image.
    #[serde(default = "d_strip")]
    #[schemars(range(min = 1.0, max = 1.0e6))]
    pub strip_step: f64,
    /// Normalise each image to contrast I/⟨I⟩ − 1.
    #[serde(default = "d_true")]
    pub normalize: bool,
    /// Negate the contrast when it is not phase-flipped (dark protein becomes positive).
    #[serde(default = "d_true")]
    pub invert: bool,
    /// WBP: apodisation window of the ramp filter.
    #[serde(default = "d_win")]
    pub window: WindowParam,
    /// WBP: filter cutoff as a fraction of Nyquist.
    #[serde(default = "d_cut")]
    #[schemars(range(min = 0.01, max = 1.0))]
    pub cutoff: f64,
    /// WBP: SIRT-like filter equivalent to this many SIRT iterations (Zeng 2012); none = plain ramp.
    #[serde(default)]
    #[schemars(range(min = 1, max = 10000))]
    pub sirt_like_iterations: Option<usize>,
    /// SIRT: iterations.
    #[serde(default = "d_iter")]
    #[schemars(range(min = 1, max = 10000))]
    pub iterations: usize,
    /// SIRT: relaxation λ.
    #[serde(default = "d_relax")]
    #[schemars(range(min = 0.01, max = 2.0))]
    pub relaxation: f64,
    /// SIRT: clamp negative values to 0 after each iteration.
    #[serde(default)]
    pub nonnegative: bool,
    /// Planes per output chunk (default: about 16 MiB per chunk).
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub slab: Option<usize>,
}

/// The host's thread pool as a [`Par`].
struct HostPar<'a>(tomoflow_sdk::Par<'a>);

impl Par for HostPar<'_> {
    fn run(&self, n: usize, f: &(dyn Fn(usize) + Sync)) {
        self.0.for_each(n, f)
    }
}

/// A preprocessed image and its shape (ny, nx).
type BinnedImage = (Vec<f32>, usize, usize);

/// Shared implementation of both node types.
pub struct Recon {
    p: ReconParams,
    sirt: bool,
    name: &'static str,
    images: BTreeMap<usize, (TiltInfo, Vec<f32>)>,
    series: Option<SeriesInfo>,
}

/// Images ready to reconstruct: contrast, (y, u) layout, binned.
pub struct Prepared {
    /// Geometry of the output volume.
    pub geom: Geometry,
    /// Tilt angles (degrees).
    pub angles: Vec<f64>,
    /// Images (ny, nu) in contrast units.
    pub images: Vec<Vec<f32>>,
}

/// Rotate back by the tilt axis, normalise, phase-flip or invert, and bin one image. Takes
/// the raw image by value and works in its buffer where it can, so that preprocessing a whole
/// series never holds two copies of it.
pub fn preprocess(
    p: &ReconParams,
    s: &SeriesInfo,
    t: &TiltInfo,
    mut c: Vec<f32>,
) -> (Vec<f32>, usize, usize) {
    let [ny, nx] = s.shape;
    let mean = c.iter().map(|&v| v as f64).sum::<f64>() / c.len().max(1) as f64;
    if p.normalize && mean.abs() > 0.0 {
        c.iter_mut()
            .for_each(|v| *v = (*v as f64 / mean - 1.0) as f32);
    }
    if s.tilt_axis_deg != 0.0 {
        c = rotate_image(&c, ny, nx, -s.tilt_axis_deg, 0.0);
    }
    if p.ctf_correction && s.ctf_applied {
        let ctf = CtfParams {
            voltage_kv: s.voltage_kv,
            cs_mm: s.cs_mm,
            amplitude_contrast: s.amplitude_contrast,
            defocus_u_a: t.defocus_u_um * 1e4,
            defocus_v_a: t.defocus_v_um * 1e4,
            astigmatism_angle_deg: t.astigmatism_angle_deg,
            source_spread_mrad: 0.0,
            focal_spread_a: 0.0,
        };
        let strips = strip_count(nx, s.pixel_size_a, t.angle_deg, p.strip_step, 32);
        c = phase_flip_tilted(&c, ny, nx, s.pixel_size_a, t.angle_deg, &ctf, strips);
    } else if p.invert {
        c.iter_mut().for_each(|v| *v = -*v);
    }
    if p.binning <= 1 {
        return (c, ny, nx);
    }
    recon::bin_image(&c, ny, nx, p.binning)
}

impl Recon {
    fn new(p: ReconParams, sirt: bool, name: &'static str) -> Recon {
        Recon {
            p,
            sirt,
            name,
            images: BTreeMap::new(),
            series: None,
        }
    }

    fn add(&mut self, msg: &Message) -> Result<()> {
        let tilt: TiltInfo =
            serde_json::from_value(msg.meta.get("tilt").cloned().ok_or_else(|| {
                anyhow!(
                    "{}: message has no `tilt` metadata: is the input a tilt_series?",
                    self.name
                )
            })?)
            .with_context(|| format!("{}: bad `tilt` metadata", self.name))?;
        let series: SeriesInfo = serde_json::from_value(
            msg.meta
                .get("series")
                .cloned()
                .ok_or_else(|| anyhow!("{}: message has no `series` metadata", self.name))?,
        )
        .with_context(|| format!("{}: bad `series` metadata", self.name))?;
        let data = msg
            .tensor("data")
            .map_err(anyhow::Error::msg)?
            .as_slice::<f32>()
            .map_err(anyhow::Error::msg)?;
        if data.len() != series.shape[0] * series.shape[1] {
            bail!(
                "{}: image of {} pixels in a series of {:?}",
                self.name,
                data.len(),
                series.shape
            );
        }
        if series.pixel_size_a.is_nan() || series.pixel_size_a <= 0.0 {
            bail!(
                "{}: the series' pixel size must be > 0 Å, got {}",
                self.name,
                series.pixel_size_a
            );
        }
        if let Some(s) = &self.series {
            if s.shape != series.shape {
                bail!("{}: images of different shapes in one series", self.name);
            }
        }
        if self
            .images
            .insert(tilt.order, (tilt, data.to_vec()))
            .is_some()
        {
            bail!("{}: two images with the same acquisition order", self.name);
        }
        self.series = Some(series);
        Ok(())
    }

    /// Preprocess every image; each raw image is freed as soon as its preprocessed copy exists,
    /// so that raw and preprocessed series are never both held in full.
    fn prepare(&mut self, ctx: &Ctx) -> Result<Prepared> {
        let s = self
            .series
            .as_ref()
            .ok_or_else(|| anyhow!("{}: no image arrived; the tilt series is empty", self.name))?;
        if self.images.len() != s.count {
            bail!(
                "{}: {} of {} tilt images arrived",
                self.name,
                self.images.len(),
                s.count
            );
        }
        let list: Vec<(TiltInfo, std::sync::Mutex<Vec<f32>>)> = std::mem::take(&mut self.images)
            .into_values()
            .map(|(t, d)| (t, std::sync::Mutex::new(d)))
            .collect();
        let out: std::sync::Mutex<Vec<Option<BinnedImage>>> =
            std::sync::Mutex::new(vec![None; list.len()]);
        let p = &self.p;
        ctx.parallel_for(list.len(), |i| {
            let raw = std::mem::take(&mut *list[i].1.lock().unwrap_or_else(|e| e.into_inner()));
            let r = preprocess(p, s, &list[i].0, raw);
            // The raw image was allocated on the thread that received it; glibc keeps the
            // freed block resident in that thread's heap unless told to give it back.
            tomoflow_sdk::release_free_memory();
            if let Ok(mut g) = out.lock() {
                g[i] = Some(r);
            }
        });
        let out = out
            .into_inner()
            .map_err(|_| anyhow!("preprocessing failed"))?;
        let mut images = Vec::with_capacity(list.len());
        let (mut ny, mut nu) = (0, 0);
        for o in out {
            let (img, a, b) = o.ok_or_else(|| anyhow!("a preprocessing task did not run"))?;
            (ny, nu) = (a, b);
            images.push(img);
        }
        let px = s.pixel_size_a * self.p.binning as f64;
        let thick = self
            .p
            .thickness
            .or((s.specimen_thickness_a > 0.0).then_some(s.specimen_thickness_a))
            .unwrap_or(s.shape[1] as f64 * s.pixel_size_a / 2.0);
        let nz = ((thick / px).round() as usize).max(1);
        if ny == 0 || nu == 0 {
            bail!(
                "{}: binning {} leaves no pixels of a {:?} image",
                self.name,
                self.p.binning,
                s.shape
            );
        }
        Ok(Prepared {
            geom: Geometry {
                nz,
                ny,
                nx: nu,
                nu,
                voxel_a: px,
            },
            angles: list.iter().map(|t| t.0.angle_deg).collect(),
            images,
        })
    }

    fn run(&mut self, ctx: &mut Ctx) -> Result<()> {
        let mut prep = self.prepare(ctx)?;
        self.images.clear();
        tomoflow_sdk::release_free_memory();
        let g = prep.geom;
        let shape = [g.nz, g.ny, g.nx];
        let vs = [g.voxel_a; 3];
        let plane = g.nx * g.ny;
        let slab = self
            .p
            .slab
            .unwrap_or((16 << 20) / (plane * 4).max(1))
            .clamp(1, g.nz);
        let parts = volume::slabs(g.nz, slab, 0);
        let count = parts.len();
        let emit = |ctx: &mut Ctx, zxy: &[f32], index: usize, z0: usize, z1: usize| -> Result<()> {
            let data = from_zxy(zxy, g.ny, g.nx);
            let meta = ChunkMeta {
                full_shape: shape,
                offset: [z0, 0, 0],
                shape: [z1 - z0, g.ny, g.nx],
                core_offset: [z0, 0, 0],
                core_shape: [z1 - z0, g.ny, g.nx],
                voxel_size: vs,
                origin: [0.0; 3],
                index,
                count,
            };
            ctx.emit("tomogram", volume::chunk_message(&meta, data))?;
            ctx.progress(index as u64 + 1, count as u64);
            Ok(())
        };
        if self.sirt {
            let projs: Vec<Vec<f32>> = prep
                .images
                .iter()
                .map(|im| {
                    // Contrast is dimensionless; as line integrals in value·Å keep it per Å.
                    let s = g.voxel_a as f32;
                    recon::to_uy(&im.iter().map(|v| v * s).collect::<Vec<_>>(), g.ny, g.nu)
                })
                .collect();
            let x = {
                let par = HostPar(ctx.par());
                recon::sirt(
                    &g,
                    &projs,
                    &prep.angles,
                    self.p.iterations,
                    self.p.relaxation as f32,
                    self.p.nonnegative,
                    &par,
                    |it| {
                        ctx.progress(it as u64 + 1, self.p.iterations as u64 + 1);
                        !ctx.cancelled()
                    },
                )
            };
            ctx.check_cancelled()?;
            for (index, s) in parts.iter().enumerate() {
                emit(ctx, &x[s.z0 * plane..s.z1 * plane], index, s.z0, s.z1)?;
            }
        } else {
            let filter = Filter {
                window: match self.p.window {
                    WindowParam::Ramp => Window::Ramp,
                    WindowParam::SheppLogan => Window::SheppLogan,
                    WindowParam::Cosine => Window::Cosine,
                    WindowParam::Hamming => Window::Hamming,
                    WindowParam::Hann => Window::Hann,
                },
                cutoff: self.p.cutoff,
                sirt_like: self.p.sirt_like_iterations,
            };
            let filtered = recon::prepare_wbp(
                std::mem::take(&mut prep.images),
                g.ny,
                g.nu,
                g.voxel_a,
                &filter,
                &HostPar(ctx.par()),
            );
            tomoflow_sdk::release_free_memory();
            let weights = recon::angle_weights(&prep.angles);
            for (index, s) in parts.iter().enumerate() {
                ctx.check_cancelled()?;
                let sub = Geometry { ..g };
                let planes = {
                    let n = s.z1 - s.z0;
                    let mut out = vec![0f32; n * plane];
                    let chunks: Vec<&mut [f32]> = out.chunks_mut(plane).collect();
                    let cells: Vec<std::sync::Mutex<&mut [f32]>> =
                        chunks.into_iter().map(std::sync::Mutex::new).collect();
                    ctx.parallel_for(n, |k| {
                        let z = s.z0 + k;
                        if let Ok(mut o) = cells[k].lock() {
                            for ((q, &a), &w) in filtered.iter().zip(&prep.angles).zip(&weights) {
                                tomoflow_cryo::projector::backproject_voxel(
                                    &sub,
                                    q,
                                    a.to_radians(),
                                    w,
                                    z,
                                    z + 1,
                                    &mut o,
                                );
                            }
                        }
                    });
                    drop(cells);
                    out
                };
                emit(ctx, &planes, index, s.z0, s.z1)?;
            }
        }
        Ok(())
    }
}

macro_rules! recon_node {
    ($ty:ident, $name:literal, $sirt:expr, $doc:literal) => {
        #[doc = $doc]
        pub struct $ty(Recon);

        impl Node for $ty {
            fn process(&mut self, _ctx: &mut Ctx, _input: usize, msg: Message) -> Result<()> {
                self.0.add(&msg)
            }
            fn finish(&mut self, ctx: &mut Ctx) -> Result<()> {
                self.0.run(ctx)
            }
        }

        impl NodeDef for $ty {
            type Params = ReconParams;
            const NAME: &'static str = $name;
            const DOC: &'static str = concat!(
                $doc,
                "\n\nInput `tilts`: a tilt_series (docs/data-kinds.md). Each image is normalised to contrast I/⟨I⟩ − 1, \
                 rotated back by the tilt-axis angle, CTF-corrected by strip-wise phase flipping (defocus gradient across the \
                 tilted specimen) or inverted, and binned. Output `tomogram`: (z, y, x) volume, z along the beam at 0°, voxel \
                 size = pixel × binning, streamed as z-slabs; values are contrast per Å. Ports and parameters are those of \
                 the other reconstructor, so the two are swappable."
            );
            const INPUTS: &'static [Port] = &[port("tilts", "tilt_series", "tilt series (any acquisition order)")];
            const OUTPUTS: &'static [Port] = &[port("tomogram", "volume", "reconstructed tomogram (z-slabs)")];
            fn create(p: ReconParams, _info: &NodeInfo) -> Result<Self> {
                Ok($ty(Recon::new(p, $sirt, $name)))
            }
        }
    };
}

recon_node!(
    ReconWbp,
    "recon-wbp",
    false,
    "Weighted back-projection: ramp filter (Kak & Slaney discrete ramp) with a choice of apodisation or the SIRT-like filter, voxel-driven back-projection, streamed by slabs."
);

recon_node!(
    ReconSirt,
    "recon-sirt",
    true,
    "SIRT: `iterations` of x ← x + λ C Aᵀ R (p − A x) with Joseph's projector and its exact adjoint (R, C: inverse row and column sums)."
);

tomoflow_sdk::export_plugin! {
    name: "recon",
    version: env!("CARGO_PKG_VERSION"),
    description: "Tomographic reconstruction of tilt series: weighted back-projection with CTF phase flipping, and SIRT",
    nodes: [ReconWbp, ReconSirt],
}
