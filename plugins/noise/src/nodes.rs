//! The node types of the `noise` plugin.

use crate::empirical::{SampleOptions, Sampler};
use crate::mix::{allocate, mix};
use crate::source::{load_source, MaskParams, NonFinite, Source, SourceOptions};
use crate::spectral::{estimate, EstimateOptions, NoiseModel, Synthesizer};
use schemars::JsonSchema;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use tomoflow_sdk::prelude::*;
use tomoflow_sdk::volume::{Assembler, Volume};

fn d_vs() -> f64 {
    10.0
}
fn d_overlap() -> usize {
    8
}
fn d_nonfinite() -> NonFinite {
    NonFinite::Error
}
fn d_patch() -> usize {
    32
}
fn d_bins() -> usize {
    16
}
fn d_max_patches() -> usize {
    256
}
fn d_snr() -> f64 {
    1.0
}

/// Where real tomograms come from and how they are prepared (shared by `noise-empirical` and
/// `noise-spectral`).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SourceParams {
    /// Further tomograms (MRC or TIFF), hashed by content for the cache key like `path`.
    #[serde(default)]
    #[schemars(extend("x-tomoflow" = "input-file"))]
    pub more_paths: Vec<String>,
    /// Voxel size (Å) of the sources, overriding their headers (for bad headers).
    #[serde(default)]
    #[schemars(range(min = 0.001, max = 100000.0))]
    pub source_voxel_size: Option<f64>,
    /// Multiply the sources by −1 (for protein-dark data; tomoflow is protein-bright).
    #[serde(default)]
    pub invert: bool,
    /// Structure exclusion (automatic and/or a mask file).
    #[serde(default)]
    pub mask: MaskParams,
    /// NaN/Inf voxels: `error` (default) or `mask`.
    #[serde(default = "d_nonfinite")]
    pub non_finite: NonFinite,
}

fn load_all(
    path: &str,
    sp: &SourceParams,
    vs: f64,
    info: &NodeInfo,
    ctx: &Ctx,
) -> Result<Vec<Source>> {
    let mut mask = sp.mask.clone();
    if let Some(f) = &mask.file {
        mask.file = Some(info.resolve(f).display().to_string());
    }
    if !sp.more_paths.is_empty() && mask.file.is_some() {
        bail!(
            "`mask.file` applies to one tomogram; give one source per node when using a mask file"
        );
    }
    let o = SourceOptions {
        voxel_size: vs,
        source_voxel_size: sp.source_voxel_size,
        invert: sp.invert,
        mask,
        non_finite: sp.non_finite,
    };
    let mut out = Vec::new();
    for p in std::iter::once(path).chain(sp.more_paths.iter().map(String::as_str)) {
        ctx.check_cancelled()?;
        let s = load_source(&info.resolve(p), p, &o)?;
        let i = &s.info;
        if i.file_shape != i.shape {
            ctx.info(format!(
                "{p}: resampled from {:?} voxels of {:?} Å to {:?} of {vs} Å (Fourier cropping/padding)",
                i.file_shape, i.file_voxel_size, i.shape
            ));
        }
        ctx.info(format!(
            "{p}: {} ({:?}), {:.1} % excluded as structure (mean {:+.2} σ), background mean {:.4} std {:.4} before normalising, measured SNR {:.3}",
            i.dtype,
            i.file_shape,
            100.0 * i.masked_fraction,
            i.structure_mean,
            i.raw_background_mean,
            i.raw_background_std,
            i.measured_snr
        ));
        if i.non_finite > 0 {
            ctx.warn(format!(
                "{p}: {} NaN/infinite voxels excluded",
                i.non_finite
            ));
        }
        out.push(s);
    }
    Ok(out)
}

fn emit_volume(
    ctx: &mut Ctx,
    port: &str,
    data: Vec<f32>,
    shape: [usize; 3],
    vs: f64,
    extra: &serde_json::Value,
) -> Result<()> {
    let v = Volume {
        data,
        shape,
        voxel_size: [vs; 3],
        origin: [0.0; 3],
    };
    let plane = (shape[1] * shape[2]).max(1);
    let slab = ((4usize << 20) / plane).clamp(1, shape[0].max(1));
    for mut m in v.to_messages(slab, 0) {
        m.meta.insert("background".into(), extra.clone());
        ctx.emit(port, m)?;
    }
    Ok(())
}

fn check_shape(shape: &[usize; 3], vs: f64) -> Result<()> {
    if shape.iter().any(|&n| n == 0 || n > 4096) {
        bail!("`shape` must have 1..4096 voxels per axis, got {shape:?}");
    }
    if !(vs.is_finite() && vs > 0.0) {
        bail!("`voxel_size` must be > 0 Å, got {vs}");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// noise-empirical

/// Parameters of `noise-empirical`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EmpiricalParams {
    /// Real tomogram (MRC or TIFF, any dtype) to sample backgrounds from.
    #[schemars(extend("x-tomoflow" = "input-file"))]
    pub path: String,
    /// Source handling (more paths, voxel-size override, inversion, mask, NaN policy).
    #[serde(flatten)]
    pub source: SourceParams,
    /// Box shape [z, y, x] in voxels.
    pub shape: [usize; 3],
    /// Voxel size (Å) of the box; sources are resampled to it.
    #[serde(default = "d_vs")]
    pub voxel_size: f64,
    /// Cross-fade overlap (voxels) when a box is assembled from patches.
    #[serde(default = "d_overlap")]
    #[schemars(range(min = 0, max = 256))]
    pub overlap: usize,
    /// Allow 90° turns about z (swap x and y, which moves the tilt axis); flips are always on.
    #[serde(default)]
    pub quarter_turns: bool,
    /// Fewest structure-free positions a patch size needs (lower: larger patches, less variety).
    #[serde(default = "d_min_positions")]
    #[schemars(range(min = 1))]
    pub min_positions: usize,
}

fn d_min_positions() -> usize {
    16
}

/// `noise-empirical`: a background box sampled from real tomograms.
pub struct EmpiricalNode {
    p: EmpiricalParams,
    info: NodeInfo,
}

impl Node for EmpiricalNode {
    fn finish(&mut self, ctx: &mut Ctx) -> Result<()> {
        let p = &self.p;
        let sources = load_all(&p.path, &p.source, p.voxel_size, &self.info, ctx)?;
        let sampler = Sampler::new(
            &sources,
            SampleOptions {
                shape: p.shape,
                overlap: p.overlap,
                quarter_turns: p.quarter_turns,
                min_positions: p.min_positions,
            },
        )?;
        let l = sampler.layout().clone();
        if l.is_single() {
            ctx.info(format!(
                "box {:?} cut in one piece ({} structure-free positions)",
                p.shape, l.positions
            ));
        } else {
            ctx.info(format!(
                "the structure-free background is smaller than the box {:?}: assembled from {:?} patches of {:?} voxels \
                 ({} positions), mirrored/flipped at random and cross-faded over {:?} voxels",
                p.shape, l.tiles, l.patch, l.positions, l.overlap
            ));
        }
        let data = sampler.sample(self.info.seed, 0);
        let snr = sources.iter().map(|s| s.info.measured_snr).sum::<f64>() / sources.len() as f64;
        let extra = serde_json::json!({
            "source": "empirical",
            "layout": l,
            "measured_snr": snr,
            "sources": sources.iter().map(|s| &s.info).collect::<Vec<_>>(),
            "seed": self.info.seed,
        });
        emit_volume(ctx, "volume", data, p.shape, p.voxel_size, &extra)
    }
}

impl NodeDef for EmpiricalNode {
    type Params = EmpiricalParams;
    const NAME: &'static str = "noise-empirical";
    const DOC: &'static str = "Sample a background box from real tomograms (MRC/TIFF): normalised, structure masked, resampled, flipped, seamlessly tiled.\n\n\
        Sources are read (any dtype), optionally inverted (tomoflow is protein-bright), resampled to `voxel_size` by Fourier \
        cropping/padding, masked (a mask file and/or the automatic mask: Gaussian-smoothed |z-score| > `mask.k`, dilated by \
        `mask.margin` Å) and normalised to zero mean, unit variance over the background. One box per instance (use `repeat:` \
        for more), drawn from the node's seed; masked voxels are never sampled. When no structure-free block of the box's size \
        exists, the box is assembled from random flipped patches cross-faded with variance-preserving weights (logged). \
        Output metadata `background` carries the layout, the sources' statistics and their measured SNR. docs/physics.md, \"Backgrounds\".";
    const INPUTS: &'static [Port] = &[];
    const OUTPUTS: &'static [Port] = &[port(
        "volume",
        "volume",
        "background box, mean 0, variance 1",
    )];
    fn check(p: &EmpiricalParams) -> Result<()> {
        check_shape(&p.shape, p.voxel_size)
    }
    fn create(p: EmpiricalParams, info: &NodeInfo) -> Result<Self> {
        Ok(EmpiricalNode {
            p,
            info: info.clone(),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// noise-spectral

/// Parameters of `noise-spectral`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SpectralParams {
    /// Real tomogram (MRC or TIFF) to fit the model to (or give `model`).
    #[serde(default)]
    #[schemars(extend("x-tomoflow" = "input-file"))]
    pub path: Option<String>,
    /// A saved model (`.json` written from a `noise_model` port) to reuse instead of fitting.
    #[serde(default)]
    #[schemars(extend("x-tomoflow" = "input-file"))]
    pub model: Option<String>,
    /// Source handling when fitting.
    #[serde(flatten)]
    pub source: SourceParams,
    /// Box shape [z, y, x] in voxels.
    pub shape: [usize; 3],
    /// Voxel size (Å) of the box (and of the fit).
    #[serde(default = "d_vs")]
    pub voxel_size: f64,
    /// Patch edge (voxels) of the Welch estimate.
    #[serde(default = "d_patch")]
    #[schemars(range(min = 8, max = 512))]
    pub patch: usize,
    /// Most patches averaged.
    #[serde(default = "d_max_patches")]
    #[schemars(range(min = 1))]
    pub max_patches: usize,
    /// Radial k_xy bins of the table.
    #[serde(default = "d_bins")]
    #[schemars(range(min = 2, max = 256))]
    pub bins_xy: usize,
    /// |k_z| bins of the table.
    #[serde(default = "d_bins")]
    #[schemars(range(min = 2, max = 256))]
    pub bins_z: usize,
}

/// `noise-spectral`: coloured Gaussian noise with the anisotropic spectrum of real tomograms.
pub struct SpectralNode {
    p: SpectralParams,
    info: NodeInfo,
}

impl Node for SpectralNode {
    fn finish(&mut self, ctx: &mut Ctx) -> Result<()> {
        let p = &self.p;
        let model = match (&p.path, &p.model) {
            (Some(path), None) => {
                let sources = load_all(path, &p.source, p.voxel_size, &self.info, ctx)?;
                let m = estimate(
                    &sources,
                    &EstimateOptions {
                        patch: p.patch,
                        max_patches: p.max_patches,
                        n_xy: p.bins_xy,
                        n_z: p.bins_z,
                    },
                    concat!("noise-spectral ", env!("CARGO_PKG_VERSION")),
                )?;
                ctx.info(format!(
                    "fitted a {}x{} (k_z x k_xy) spectrum from {} patches of {:?}",
                    m.n_z(),
                    m.n_xy(),
                    m.provenance.patches,
                    m.provenance.patch
                ));
                m
            }
            (None, Some(mp)) => read_model(&self.info.resolve(mp))?,
            _ => bail!(
                "give exactly one of `path` (fit a tomogram) and `model` (a saved noise model)"
            ),
        };
        if (model.voxel_size - p.voxel_size).abs() > 1e-6 * p.voxel_size {
            ctx.info(format!(
                "model fitted at {} Å used at {} Å: frequencies beyond the model's band get no power",
                model.voxel_size, p.voxel_size
            ));
        }
        let syn = Synthesizer::new(&model, p.shape, p.voxel_size)?;
        let data = syn.sample(self.info.seed, 0);
        let snr = model
            .provenance
            .sources
            .as_array()
            .map(|a| {
                let v: Vec<f64> = a
                    .iter()
                    .filter_map(|s| s["measured_snr"].as_f64())
                    .collect();
                v.iter().sum::<f64>() / v.len().max(1) as f64
            })
            .unwrap_or(0.0);
        let extra = serde_json::json!({"source": "spectral", "measured_snr": snr, "seed": self.info.seed,
            "model": {"voxel_size": model.voxel_size, "bins": [model.n_z(), model.n_xy()]}});
        emit_volume(ctx, "volume", data, p.shape, p.voxel_size, &extra)?;
        let mut meta = serde_json::Map::new();
        meta.insert("noise_model".into(), serde_json::to_value(&model)?);
        ctx.emit(
            "model",
            Message {
                meta,
                tensors: Vec::new(),
            },
        )
    }
}

/// Read a saved model: either the bare model object or a `{"noise_model": {...}}` document.
pub fn read_model(path: &std::path::Path) -> Result<NoiseModel> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read noise model {}", path.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    let v = v.get("noise_model").cloned().unwrap_or(v);
    let m: NoiseModel = serde_json::from_value(v)
        .with_context(|| format!("{} is not a tomoflow noise model", path.display()))?;
    m.validate()
        .with_context(|| format!("noise model {}", path.display()))?;
    Ok(m)
}

impl NodeDef for SpectralNode {
    type Params = SpectralParams;
    const NAME: &'static str = "noise-spectral";
    const DOC: &'static str = "Synthesise coloured Gaussian noise with the anisotropic (k_xy, k_z) power spectrum of real tomograms, or of a saved model.\n\n\
        Fits a table of relative power over radial k_xy and |k_z| bins (Welch: Hann-windowed structure-free patches, the \
        same masking as `noise-empirical`), so the missing wedge and z-elongation are kept, then synthesises one box of any \
        shape from the node's seed (expected variance 1). Output `model` (kind `noise_model`) is the fitted model: export it \
        to `.json` and reuse it with `model:`. docs/physics.md, \"Backgrounds\".";
    const INPUTS: &'static [Port] = &[];
    const OUTPUTS: &'static [Port] = &[
        port("volume", "volume", "noise box, expected mean 0, variance 1"),
        port("model", "noise_model", "the spectral model used"),
    ];
    fn check(p: &SpectralParams) -> Result<()> {
        check_shape(&p.shape, p.voxel_size)?;
        if p.path.is_some() == p.model.is_some() {
            bail!("give exactly one of `path` (fit a tomogram) and `model` (a saved noise model)");
        }
        Ok(())
    }
    fn create(p: SpectralParams, info: &NodeInfo) -> Result<Self> {
        // The output (f32), its complex spectrum (2 x f32) and the amplitude table (f64) per voxel.
        tomoflow_sdk::memory::ensure(
            tomoflow_sdk::memory::bytes_of(p.shape, 20),
            &format!(
                "noise-spectral: `shape` {:?}: the noise volume and its spectrum",
                p.shape
            ),
        )?;
        Ok(SpectralNode {
            p,
            info: info.clone(),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// noise-model-write

/// Parameters of the model exporter.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExportParams {
    /// Target file (filled in by the engine from the workflow's `exports:`).
    pub path: String,
}

/// `noise-model-write`: a `noise_model` as pretty JSON.
pub struct ModelWriteNode {
    path: PathBuf,
    doc: Option<serde_json::Value>,
}

impl Node for ModelWriteNode {
    fn process(&mut self, _ctx: &mut Ctx, _input: usize, msg: Message) -> Result<()> {
        let m = msg
            .meta
            .get("noise_model")
            .ok_or_else(|| anyhow!("message carries no `noise_model`"))?;
        self.doc = Some(serde_json::json!({ "noise_model": m }));
        Ok(())
    }
    fn finish(&mut self, _ctx: &mut Ctx) -> Result<()> {
        let doc = self
            .doc
            .take()
            .ok_or_else(|| anyhow!("no noise model received"))?;
        let mut s = serde_json::to_string_pretty(&doc)?;
        s.push('\n');
        tomoflow_cryo::image::write_atomic(&self.path, s.as_bytes())
    }
}

impl NodeDef for ModelWriteNode {
    type Params = ExportParams;
    const NAME: &'static str = "noise-model-write";
    const DOC: &'static str = "Export a noise model as JSON (`{\"noise_model\": {...}}`), readable by `noise-spectral`'s `model:`.";
    const INPUTS: &'static [Port] = &[port("model", "noise_model", "model to write")];
    const OUTPUTS: &'static [Port] = &[];
    const EXPORT_EXTENSIONS: &'static [&'static str] = &["json"];
    fn create(p: ExportParams, info: &NodeInfo) -> Result<Self> {
        Ok(ModelWriteNode {
            path: info.resolve(&p.path),
            doc: None,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// background-mix

/// How the background's strength is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Contrast {
    /// At `snr`.
    Snr,
    /// At the SNR measured in the real data the background came from (`measured_snr` in its
    /// metadata, written by `noise-empirical` and `noise-spectral`).
    Measured,
}

fn d_contrast() -> Contrast {
    Contrast::Snr
}

/// Parameters of `background-mix`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MixParams {
    /// Target SNR = var(signal) / var(background) over the whole box (docs/physics.md).
    #[serde(default = "d_snr")]
    #[schemars(range(min = 0.0001, max = 10000.0))]
    pub snr: f64,
    /// `snr` (default) or `measured`.
    #[serde(default = "d_contrast")]
    pub contrast: Contrast,
    /// The background is a noisy simulation of the same sample (tilt with `noise: true`): the
    /// clean signal is subtracted first, leaving the physics noise. `null`: from the
    /// background's metadata (`background-select` sets it).
    #[serde(default)]
    pub background_includes_signal: Option<bool>,
}

/// `background-mix`: clean signal + background at a target SNR.
pub struct MixNode {
    p: MixParams,
    sig: Assembler<f32>,
    bg: Assembler<f32>,
    bg_meta: Option<serde_json::Value>,
}

impl Node for MixNode {
    fn process(&mut self, _ctx: &mut Ctx, input: usize, msg: Message) -> Result<()> {
        if input == 0 {
            self.sig.add(&msg)
        } else {
            if self.bg_meta.is_none() {
                self.bg_meta = msg.meta.get("background").cloned();
            }
            self.bg.add(&msg)
        }
    }
    fn finish(&mut self, ctx: &mut Ctx) -> Result<()> {
        let s = std::mem::take(&mut self.sig)
            .finish()
            .context("input `signal`")?;
        let b = std::mem::take(&mut self.bg)
            .finish()
            .context("input `background`")?;
        if s.shape != b.shape {
            bail!(
                "signal is {:?} voxels but the background {:?} (z, y, x): give the background node the signal's shape",
                s.shape,
                b.shape
            );
        }
        for a in 0..3 {
            if (s.voxel_size[a] - b.voxel_size[a]).abs() > 0.01 * s.voxel_size[a] {
                bail!(
                    "signal voxel size {:?} Å differs from the background's {:?} Å; set the background node's `voxel_size`",
                    s.voxel_size,
                    b.voxel_size
                );
            }
        }
        let meta = self.bg_meta.clone().unwrap_or(serde_json::Value::Null);
        let includes = self
            .p
            .background_includes_signal
            .or_else(|| meta["includes_signal"].as_bool())
            .unwrap_or(false);
        let background: Vec<f32> = if includes {
            b.data.iter().zip(&s.data).map(|(b, s)| b - s).collect()
        } else {
            b.data
        };
        let snr = match self.p.contrast {
            Contrast::Snr => self.p.snr,
            Contrast::Measured => match meta["measured_snr"].as_f64() {
                Some(v) if v > 0.0 => v,
                Some(v) => bail!("the background's source has a measured SNR of {v}: no structure contrast to copy; use `contrast: snr`"),
                None => bail!(
                    "`contrast: measured` needs a background from real data (`noise-empirical` or `noise-spectral`), whose metadata carries `measured_snr`; this one has none"
                ),
            },
        };
        let (data, report) = mix(&s.data, &background, snr)?;
        ctx.info(format!(
            "mixed at SNR {snr:.4} (signal variance {:.4e}, background scale {:.4e}; source {})",
            report.signal_variance, report.alpha, meta["source"]
        ));
        let extra =
            serde_json::json!({"source": meta["source"], "mix": report, "background": meta});
        let v = Volume {
            data,
            shape: s.shape,
            voxel_size: s.voxel_size,
            origin: s.origin,
        };
        let plane = (s.shape[1] * s.shape[2]).max(1);
        let slab = ((4usize << 20) / plane).clamp(1, s.shape[0].max(1));
        for mut m in v.to_messages(slab, 0) {
            m.meta.insert("background".into(), extra.clone());
            ctx.emit("tomogram", m)?;
        }
        Ok(())
    }
}

impl NodeDef for MixNode {
    type Params = MixParams;
    const NAME: &'static str = "background-mix";
    const DOC: &'static str = "Add a background to a clean simulated tomogram at a target SNR (or the real data's measured contrast).\n\n\
        tomogram = signal + α·(background − mean)/std with α = sqrt(var(signal)/SNR), variances over the whole box \
        (docs/physics.md, \"Backgrounds\"). A noisy simulation of the same sample as background (`background_includes_signal`) \
        has the signal subtracted first, leaving the physics noise. Labels do not pass through here: wire them from `place`.";
    const INPUTS: &'static [Port] = &[
        port(
            "signal",
            "volume",
            "clean reconstructed particle tomogram (tilt `noise: false`)",
        ),
        port(
            "background",
            "volume",
            "background volume of the same shape and voxel size",
        ),
    ];
    const OUTPUTS: &'static [Port] = &[port("tomogram", "volume", "signal + scaled background")];
    fn create(p: MixParams, _info: &NodeInfo) -> Result<Self> {
        Ok(MixNode {
            p,
            sig: Assembler::new(),
            bg: Assembler::new(),
            bg_meta: None,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// background-select

/// Parameters of `background-select`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SelectParams {
    /// `synthetic`, `empirical`, `spectral`, or `mixed` (per replicate from `weights`).
    pub choice: String,
    /// Weights of the sources for `mixed`, e.g. {synthetic: 0.5, empirical: 0.5}.
    #[serde(default)]
    pub weights: BTreeMap<String, f64>,
    /// This replicate's index (`${repeat}`).
    #[serde(default)]
    pub index: usize,
    /// Number of replicates (the `repeat:` count): fractions are exact over them.
    #[serde(default = "d_one")]
    #[schemars(range(min = 1, max = 100000))]
    pub count: usize,
    /// Seed of the allocation shuffle (the same for all replicates, e.g. `${params.seed}`).
    #[serde(default)]
    pub shuffle_seed: u64,
    /// Inputs that are noisy simulations of the sample itself (the mixer subtracts the signal).
    #[serde(default = "d_includes")]
    pub includes_signal: Vec<String>,
}

fn d_one() -> usize {
    1
}
fn d_includes() -> Vec<String> {
    vec!["synthetic".into()]
}

const SOURCES: [&str; 3] = ["synthetic", "empirical", "spectral"];

/// `background-select`: pick one of three backgrounds, by name or by weighted allocation.
pub struct SelectNode {
    chosen: usize,
    name: String,
    includes: bool,
    held: Vec<Message>,
}

impl Node for SelectNode {
    fn process(&mut self, _ctx: &mut Ctx, input: usize, msg: Message) -> Result<()> {
        if input == self.chosen {
            self.held.push(msg);
        }
        Ok(())
    }
    fn finish(&mut self, ctx: &mut Ctx) -> Result<()> {
        ctx.info(format!("background: {}", self.name));
        for mut m in std::mem::take(&mut self.held) {
            let mut b = m
                .meta
                .get("background")
                .cloned()
                .unwrap_or_else(|| serde_json::json!({}));
            if let Some(o) = b.as_object_mut() {
                o.insert("source".into(), self.name.clone().into());
                o.insert("includes_signal".into(), self.includes.into());
            }
            m.meta.insert("background".into(), b);
            ctx.emit("volume", m)?;
        }
        Ok(())
    }
}

fn choose(p: &SelectParams) -> Result<String> {
    match p.choice.as_str() {
        "mixed" => {
            if p.index >= p.count {
                bail!("`index` {} is not below `count` {}", p.index, p.count);
            }
            for k in p.weights.keys() {
                if !SOURCES.contains(&k.as_str()) {
                    bail!("unknown source `{k}` in `weights`; use {SOURCES:?}");
                }
            }
            let w: Vec<(String, f64)> = p.weights.iter().map(|(k, v)| (k.clone(), *v)).collect();
            Ok(allocate(&w, p.count, p.shuffle_seed)?[p.index].clone())
        }
        c if SOURCES.contains(&c) => Ok(c.to_string()),
        c => bail!("unknown background `{c}`; use synthetic, empirical, spectral or mixed"),
    }
}

impl NodeDef for SelectNode {
    type Params = SelectParams;
    const NAME: &'static str = "background-select";
    const DOC: &'static str = "Choose the background of one training tomogram: synthetic, empirical, spectral, or `mixed` (weighted, exact fractions over replicates).\n\n\
        With `choice: mixed`, replicate `index` of `count` gets the source at its place in a list holding each source \
        round(weight × count) times (largest remainder), shuffled by `shuffle_seed`. The choice is recorded in the \
        volume's `background.source` metadata. docs/data-kinds.md, \"Training sets\".";
    const INPUTS: &'static [Port] = &[
        port(
            "synthetic",
            "volume",
            "noisy simulation of the sample (physics noise)",
        ),
        port(
            "empirical",
            "volume",
            "empirical background (noise-empirical)",
        ),
        port("spectral", "volume", "spectral background (noise-spectral)"),
    ];
    const OUTPUTS: &'static [Port] = &[port("volume", "volume", "the chosen background")];
    fn check(p: &SelectParams) -> Result<()> {
        if !(1..=100_000).contains(&p.count) {
            bail!(
                "`count` = {} must be in 1..=100000 (the number of replicates)",
                p.count
            );
        }
        if p.index >= p.count {
            bail!("`index` = {} must be below `count` = {}", p.index, p.count);
        }
        choose(p).map(|_| ())
    }
    fn create(p: SelectParams, _info: &NodeInfo) -> Result<Self> {
        let name = choose(&p)?;
        let chosen = SOURCES.iter().position(|s| *s == name).unwrap_or(0);
        Ok(SelectNode {
            chosen,
            includes: p.includes_signal.contains(&name),
            name,
            held: Vec::new(),
        })
    }
}
