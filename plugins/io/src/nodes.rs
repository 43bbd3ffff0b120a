//! Source and processing nodes: `phantom`, `mrc-read`, `tiff-read`, `normalize`, `volume-stats`.

use crate::phantom::{place_random_spheres, ObjectSpec, PhantomSpec, RandomSpheres, Solid};
use crate::process::{Normalizer, VolumeStats};
use crate::{core_of, slab_meta, slab_planes};
use schemars::JsonSchema;
use serde::Deserialize;
use std::path::PathBuf;
use std::sync::Mutex;
use tomoflow_cryo::mrc::MrcReader;
use tomoflow_cryo::stats::RunningStats;
use tomoflow_sdk::prelude::*;
use tomoflow_sdk::volume::ChunkMeta;

fn ten() -> f64 {
    10.0
}

/// A chunk read from `path`, named after the file's stem (`meta.tomogram`), so that picks and
/// tables downstream carry the tomogram's own name.
fn named(mut msg: Message, path: &std::path::Path) -> Message {
    let stem = path
        .file_stem()
        .and_then(|n| n.to_str())
        .unwrap_or("tomogram");
    msg.meta.insert(
        "tomogram".into(),
        serde_json::Value::String(stem.to_string()),
    );
    msg
}

/// Build an output chunk message that keeps the input message's extra metadata.
pub fn replace_data<T: tomoflow_sdk::Element>(
    input: &Message,
    meta: &ChunkMeta,
    data: Vec<T>,
) -> Message {
    let mut out = volume::chunk_message(meta, data);
    for (k, v) in &input.meta {
        if k != "chunk" {
            out.meta.insert(k.clone(), v.clone());
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// phantom

/// Parameters of `phantom`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PhantomParams {
    /// Volume shape [z, y, x] in voxels.
    #[schemars(inner(range(min = 1, max = 4096)))]
    pub shape: [usize; 3],
    /// Voxel size in Å (isotropic, > 0).
    #[serde(default = "ten")]
    #[schemars(range(min = 0.001, max = 100000.0))]
    pub voxel_size: f64,
    /// Density of the background.
    #[serde(default)]
    pub background: f32,
    /// Objects; centres in Å relative to the volume centre (voxel i's centre lies at
    /// (i - (n-1)/2) × voxel_size).
    #[serde(default)]
    pub objects: Vec<ObjectSpec>,
    /// Optional randomly placed, non-overlapping spheres (drawn with the node's seed).
    #[serde(default)]
    pub random_spheres: Option<RandomSpheres>,
    /// Planes per output chunk (default: about 16 MiB per chunk).
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub slab: Option<usize>,
}

fn build_phantom(p: &PhantomParams, seed: u64) -> Result<PhantomSpec> {
    if p.shape.iter().any(|&n| !(1..=4096).contains(&n)) {
        bail!(
            "phantom: `shape` {:?} must have each axis in 1..=4096",
            p.shape
        );
    }
    if !(p.voxel_size.is_finite() && p.voxel_size > 0.0) {
        bail!("phantom: `voxel_size` must be > 0 Å, got {}", p.voxel_size);
    }
    let mut solids = p
        .objects
        .iter()
        .enumerate()
        .map(|(i, o)| Solid::from_spec(o, &format!("phantom: objects[{i}]")))
        .collect::<Result<Vec<_>>>()?;
    if let Some(rs) = &p.random_spheres {
        solids.extend(place_random_spheres(rs, p.shape, p.voxel_size, seed)?);
    }
    Ok(PhantomSpec {
        shape: p.shape,
        voxel_size: p.voxel_size,
        background: p.background,
        solids,
    })
}

/// Density and label planes of one z.
type PlanePair = (Vec<f32>, Vec<u16>);

/// `phantom`: a synthetic volume and its label map.
pub struct PhantomNode {
    spec: PhantomSpec,
    slab: Option<usize>,
}

impl Node for PhantomNode {
    fn finish(&mut self, ctx: &mut Ctx) -> Result<()> {
        let shape = self.spec.shape;
        let vs = [self.spec.voxel_size; 3];
        let plane = shape[1] * shape[2];
        let parts = volume::slabs(shape[0], slab_planes(self.slab, shape, 4), 0);
        let count = parts.len();
        for (index, s) in parts.iter().enumerate() {
            ctx.check_cancelled()?;
            let n = s.z1 - s.z0;
            let planes: Mutex<Vec<Option<PlanePair>>> = Mutex::new(vec![None; n]);
            let spec = &self.spec;
            ctx.parallel_for(n, |k| {
                let mut d = vec![0f32; plane];
                let mut l = vec![0u16; plane];
                spec.plane(s.z0 + k, &mut d, &mut l);
                if let Ok(mut g) = planes.lock() {
                    g[k] = Some((d, l));
                }
            });
            let planes = planes
                .into_inner()
                .map_err(|_| anyhow!("a rasterisation task failed"))?;
            let mut dens = Vec::with_capacity(n * plane);
            let mut labs = Vec::with_capacity(n * plane);
            for p in planes {
                let (d, l) = p.ok_or_else(|| anyhow!("a rasterisation task did not run"))?;
                dens.extend_from_slice(&d);
                labs.extend_from_slice(&l);
            }
            let meta = slab_meta(shape, vs, [0.0; 3], (s.z0, s.z1), index, count);
            ctx.emit("volume", volume::chunk_message(&meta, dens))?;
            ctx.emit("labels", volume::chunk_message(&meta, labs))?;
            ctx.progress(index as u64 + 1, count as u64);
        }
        Ok(())
    }
}

impl NodeDef for PhantomNode {
    type Params = PhantomParams;
    const NAME: &'static str = "phantom";
    const DOC: &'static str = "Synthetic volume of spheres, ellipsoids and boxes with anti-aliased edges, plus its label map.\n\n\
        Object centres are in Å relative to the volume centre; the centre of voxel i along an axis of n voxels lies at \
        (i - (n-1)/2) × voxel_size. Each voxel gets background + Σ density × (fraction of the voxel inside), the \
        fraction estimated by 4×4×4 supersampling near ellipsoid surfaces and exact for boxes. A voxel is labelled \
        with an object's label when at least half of it lies inside (later objects win). `random_spheres` are placed \
        fully inside the volume without overlapping each other, deterministically for the node's seed. The output \
        origin (centre of voxel 0) is 0 Å.";
    const INPUTS: &'static [Port] = &[];
    const OUTPUTS: &'static [Port] = &[
        port("volume", "volume", "density (f32)"),
        port("labels", "labels", "label map (u16; 0 = background)"),
    ];
    fn check(p: &PhantomParams) -> Result<()> {
        build_phantom(p, 0).map(|_| ())
    }
    fn create(p: PhantomParams, info: &NodeInfo) -> Result<Self> {
        Ok(PhantomNode {
            spec: build_phantom(&p, info.seed)?,
            slab: p.slab,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// mrc-read

/// Parameters of `mrc-read`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MrcReadParams {
    /// MRC file to read (relative paths are resolved against the run's working directory).
    #[schemars(extend("x-tomoflow" = "input-file"))]
    pub path: String,
    /// Voxel size in Å overriding the header's (for files with a wrong or missing CELLA).
    #[serde(default)]
    #[schemars(range(min = 0.001, max = 100000.0))]
    pub voxel_size: Option<f64>,
    /// Accept NaN/Inf voxels, replacing them by the mean of the finite voxels (with a warning);
    /// when false they are an error.
    #[serde(default)]
    pub allow_non_finite: bool,
    /// Planes per output chunk (default: about 16 MiB per chunk).
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub slab: Option<usize>,
    /// Read only this box of the file (voxels): the volume's origin moves to the box's first
    /// voxel, so positions stay those of the whole tomogram.
    #[serde(default)]
    pub region: Option<Region>,
}

/// A box of a volume in voxels, (z, y, x).
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Region {
    /// First voxel [z, y, x] (0-based).
    pub start: [usize; 3],
    /// Size [z, y, x] in voxels.
    #[schemars(inner(range(min = 1)))]
    pub shape: [usize; 3],
}

impl Region {
    /// Check the box lies inside a volume of `full` shape (z, y, x).
    fn check(&self, full: [usize; 3], file: &str) -> Result<()> {
        for (a, axis) in ["z", "y", "x"].iter().enumerate() {
            if self.shape[a] == 0 || self.start[a] + self.shape[a] > full[a] {
                bail!(
                    "{file}: `region` {axis} {}..{} does not fit the volume's {} voxels along {axis}",
                    self.start[a],
                    self.start[a] + self.shape[a],
                    full[a]
                );
            }
        }
        Ok(())
    }

    /// The box's part of planes read whole (`data` holds whole planes of `full`).
    fn cut(&self, data: &[f32], full: [usize; 3]) -> Vec<f32> {
        let plane = full[1] * full[2];
        let mut out = Vec::with_capacity(data.len() / plane * self.shape[1] * self.shape[2]);
        for p in data.chunks_exact(plane) {
            for y in self.start[1]..self.start[1] + self.shape[1] {
                let row = y * full[2] + self.start[2];
                out.extend_from_slice(&p[row..row + self.shape[2]]);
            }
        }
        out
    }
}

/// Voxel size to use: the override, else the header's (an error if undefined).
fn effective_voxel_size(header: [f64; 3], over: Option<f64>, file: &str) -> Result<[f64; 3]> {
    if let Some(v) = over {
        if !(v.is_finite() && v > 0.0) {
            bail!("`voxel_size` must be > 0 Å, got {v}");
        }
        return Ok([v; 3]);
    }
    if header.iter().any(|&v| !(v.is_finite() && v > 0.0)) {
        bail!("{file}: the header defines no voxel size (CELLA / MXYZ = {header:?}); set the `voxel_size` parameter (Å)");
    }
    Ok(header)
}

/// `mrc-read`: stream an MRC file as z-slabs.
pub struct MrcReadNode {
    path: PathBuf,
    p: MrcReadParams,
}

impl MrcReadNode {
    /// Count non-finite voxels and the statistics of the finite ones over the whole file.
    fn scan(r: &mut MrcReader, slab: usize, ctx: &Ctx) -> Result<RunningStats> {
        let mut s = RunningStats::new();
        let mut buf = Vec::new();
        for sl in volume::slabs(r.header.shape[0], slab, 0) {
            ctx.check_cancelled()?;
            r.read_slab_into(sl.z0, sl.z1, &mut buf)?;
            s.push_slice(&buf);
        }
        Ok(s)
    }
}

impl Node for MrcReadNode {
    fn finish(&mut self, ctx: &mut Ctx) -> Result<()> {
        let mut r = MrcReader::open(&self.path)?;
        let h = r.header.clone();
        let name = self.path.display().to_string();
        let vs = effective_voxel_size(h.voxel_size, self.p.voxel_size, &name)?;
        let region = self.p.region.unwrap_or(Region {
            start: [0; 3],
            shape: h.shape,
        });
        region.check(h.shape, &name)?;
        let origin: [f64; 3] =
            std::array::from_fn(|a| h.origin[a] + region.start[a] as f64 * vs[a]);
        let slab = slab_planes(self.p.slab, region.shape, 4);
        let parts = volume::slabs(region.shape[0], slab, 0);
        let count = parts.len();
        let mut replacement: Option<f32> = None;
        for (index, s) in parts.iter().enumerate() {
            ctx.check_cancelled()?;
            let (z0, z1) = (region.start[0] + s.z0, region.start[0] + s.z1);
            let mut data = r.read_slab(z0, z1)?;
            if region.shape[1..] != h.shape[1..] {
                data = region.cut(&data, h.shape);
            }
            if h.mode.is_float() && data.iter().any(|v| !v.is_finite()) {
                let fill = match replacement {
                    Some(f) => f,
                    None => {
                        let st = Self::scan(&mut r, slab, ctx)?;
                        if !self.p.allow_non_finite {
                            bail!(
                                "{name}: {} of {} voxels are NaN or infinite (the first in plane {}); fix the file, or set \
                                 `allow_non_finite: true` to replace them by the mean of the finite voxels ({})",
                                st.non_finite,
                                h.len(),
                                z0 + data.iter().position(|v| !v.is_finite()).unwrap_or(0) / (data.len() / (z1 - z0)),
                                st.mean()
                            );
                        }
                        ctx.warn(format!(
                            "{name}: replaced {} NaN/infinite voxels by the mean of the finite voxels ({})",
                            st.non_finite,
                            st.mean()
                        ));
                        replacement = Some(st.mean() as f32);
                        st.mean() as f32
                    }
                };
                for v in data.iter_mut().filter(|v| !v.is_finite()) {
                    *v = fill;
                }
            }
            let meta = slab_meta(region.shape, vs, origin, (s.z0, s.z1), index, count);
            ctx.emit(
                "volume",
                named(volume::chunk_message(&meta, data), &self.path),
            )?;
            ctx.progress(index as u64 + 1, count as u64);
        }
        Ok(())
    }
}

impl NodeDef for MrcReadNode {
    type Params = MrcReadParams;
    const NAME: &'static str = "mrc-read";
    const DOC: &'static str = "Read an MRC/CCP4 map (modes 0, 1, 2, 6, 12) as a volume, streamed in z-slabs.\n\n\
        The voxel size is CELLA/MXYZ from the header unless `voxel_size` overrides it; the origin is the header's \
        ORIGIN (Å). The extended header (e.g. FEI1) is skipped; big-endian files are read. \
        `region` reads one box of a large tomogram (its origin moves with it, so positions stay the whole tomogram's).";
    const INPUTS: &'static [Port] = &[];
    const OUTPUTS: &'static [Port] = &[port("volume", "volume", "the map as f32")];
    fn create(p: MrcReadParams, info: &NodeInfo) -> Result<Self> {
        Ok(MrcReadNode {
            path: info.resolve(&p.path),
            p,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// tiff-read

/// Parameters of `tiff-read`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TiffReadParams {
    /// Multi-page TIFF stack to read, one page per z plane (relative paths are resolved against
    /// the run's working directory).
    #[schemars(extend("x-tomoflow" = "input-file"))]
    pub path: String,
    /// Voxel size in Å; required unless the file has ImageJ `spacing`/`unit` metadata, which it overrides.
    #[serde(default)]
    #[schemars(range(min = 0.001, max = 100000.0))]
    pub voxel_size: Option<f64>,
    /// Planes per output chunk (default: about 16 MiB per chunk).
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub slab: Option<usize>,
}

/// `tiff-read`: stream a TIFF stack as z-slabs.
pub struct TiffReadNode {
    path: PathBuf,
    p: TiffReadParams,
}

impl Node for TiffReadNode {
    fn finish(&mut self, ctx: &mut Ctx) -> Result<()> {
        let info = tomoflow_cryo::tiff::inspect(&self.path)?;
        let vs = match (self.p.voxel_size, info.voxel_size) {
            (Some(v), _) => effective_voxel_size([v; 3], Some(v), "")?,
            (None, Some(v)) => v,
            (None, None) => bail!(
                "{}: no ImageJ spacing metadata; set the `voxel_size` parameter (Å)",
                self.path.display()
            ),
        };
        let shape = info.shape;
        let parts = volume::slabs(shape[0], slab_planes(self.p.slab, shape, 4), 0);
        let count = parts.len();
        let mut pages = tomoflow_cryo::tiff::PageReader::open(&self.path)?;
        for (index, s) in parts.iter().enumerate() {
            let mut data = Vec::with_capacity((s.z1 - s.z0) * shape[1] * shape[2]);
            for _ in s.z0..s.z1 {
                ctx.check_cancelled()?;
                pages.read_next(&mut data)?;
            }
            let meta = slab_meta(shape, vs, [0.0; 3], (s.z0, s.z1), index, count);
            ctx.emit(
                "volume",
                named(volume::chunk_message(&meta, data), &self.path),
            )?;
            ctx.progress(index as u64 + 1, count as u64);
        }
        Ok(())
    }
}

impl NodeDef for TiffReadNode {
    type Params = TiffReadParams;
    const NAME: &'static str = "tiff-read";
    const DOC: &'static str = "Read a multi-page grey TIFF stack (u8/u16/i16/u32/i32/f32/f64 pages, all the same size) as a volume.\n\n\
        Page k is plane z = k. The voxel size comes from `voxel_size`, else from ImageJ metadata (`spacing` and \
        `unit` for z, X/YResolution for x and y). The origin is 0 Å.";
    const INPUTS: &'static [Port] = &[];
    const OUTPUTS: &'static [Port] = &[port("volume", "volume", "the stack as f32")];
    fn create(p: TiffReadParams, info: &NodeInfo) -> Result<Self> {
        Ok(TiffReadNode {
            path: info.resolve(&p.path),
            p,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// normalize

/// Parameters of `normalize`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NormalizeParams {
    /// Multiply by -1 after normalising (e.g. to make dark protein bright).
    #[serde(default)]
    pub invert: bool,
    /// Clip the result to ±`clip` standard deviations.
    #[serde(default)]
    #[schemars(range(min = 0.0))]
    pub clip: Option<f64>,
}

/// `normalize`: zero mean, unit variance over the whole volume.
pub struct NormalizeNode {
    p: NormalizeParams,
    msgs: Vec<Message>,
    stats: RunningStats,
}

impl Node for NormalizeNode {
    fn process(&mut self, ctx: &mut Ctx, _input: usize, msg: Message) -> Result<()> {
        let (meta, data) = volume::chunk_f32(&msg)?;
        self.stats.merge(&RunningStats::of(&core_of(&meta, data)));
        self.msgs.push(msg);
        ctx.check_cancelled()
    }

    fn finish(&mut self, ctx: &mut Ctx) -> Result<()> {
        if self.stats.count == 0 {
            bail!("normalize: the input volume has no finite voxel");
        }
        if self.stats.std() == 0.0 {
            ctx.warn("normalize: the volume is constant; output is all zeros");
        }
        if self.stats.non_finite > 0 {
            ctx.warn(format!(
                "normalize: {} NaN/infinite voxels are passed through unchanged",
                self.stats.non_finite
            ));
        }
        let n = Normalizer::new(&self.stats, self.p.invert, self.p.clip);
        let total = self.msgs.len() as u64;
        for (i, msg) in std::mem::take(&mut self.msgs).into_iter().enumerate() {
            ctx.check_cancelled()?;
            let (meta, data) = volume::chunk_f32(&msg)?;
            let out = replace_data(&msg, &meta, n.apply(data));
            drop(msg);
            ctx.emit("volume", out)?;
            ctx.progress(i as u64 + 1, total);
        }
        Ok(())
    }
}

impl NodeDef for NormalizeNode {
    type Params = NormalizeParams;
    const NAME: &'static str = "normalize";
    const DOC: &'static str = "Normalise a volume to zero mean and unit variance (statistics over the whole volume, in f64).\n\n\
        Waits for every chunk (keeping them, not copying), then emits normalised chunks with the same geometry. \
        `invert` multiplies by -1; `clip` clips to ±clip standard deviations; NaN/Inf pass through.";
    const INPUTS: &'static [Port] = &[port("volume", "volume", "input volume")];
    const OUTPUTS: &'static [Port] = &[port("volume", "volume", "normalised volume")];
    fn create(p: NormalizeParams, _info: &NodeInfo) -> Result<Self> {
        Ok(NormalizeNode {
            p,
            msgs: Vec::new(),
            stats: RunningStats::new(),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// volume-stats

/// Parameters of `volume-stats` (none).
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoParams {}

/// `volume-stats`: summary statistics of a volume as a metrics document.
pub struct VolumeStatsNode {
    acc: VolumeStats,
}

impl Node for VolumeStatsNode {
    fn process(&mut self, ctx: &mut Ctx, _input: usize, msg: Message) -> Result<()> {
        let (meta, data) = volume::chunk_f32(&msg)?;
        self.acc
            .add(meta.full_shape, meta.voxel_size, &core_of(&meta, data));
        ctx.progress(meta.index as u64 + 1, meta.count as u64);
        ctx.check_cancelled()
    }

    fn finish(&mut self, ctx: &mut Ctx) -> Result<()> {
        if self.acc.shape.is_none() {
            bail!("volume-stats: the input volume is empty (no chunk arrived)");
        }
        ctx.emit("metrics", Message::json(self.acc.to_json()))
    }
}

impl NodeDef for VolumeStatsNode {
    type Params = NoParams;
    const NAME: &'static str = "volume-stats";
    const DOC: &'static str = "Statistics of a volume: shape, voxel size, count, mean, std, min, max, NaN/Inf count and a 64-bin histogram.\n\n\
        Streaming: chunks are not kept. The histogram's bin width is a power of two chosen as the data arrive, so its \
        edges enclose [min, max] without equalling them; counts are exact.";
    const INPUTS: &'static [Port] = &[port("volume", "volume", "input volume")];
    const OUTPUTS: &'static [Port] = &[port("metrics", "metrics", "statistics (JSON)")];
    fn create(_p: NoParams, _info: &NodeInfo) -> Result<Self> {
        Ok(VolumeStatsNode {
            acc: VolumeStats::default(),
        })
    }
}
