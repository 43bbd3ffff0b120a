//! `probabilities-mrc-write`: probability maps as MRC files that IMOD, napari, ChimeraX and
//! mrcfile open. The exported path gets the most probable class's probability at each voxel
//! (one map to look at first); beside it, `<stem>.<class>.mrc` holds each class's own map.
//! Streamed: chunks in z order are written straight from the message; one that arrives ahead
//! of the stream is copied and waits. Each chunk's core only (halos are dropped).

use crate::nodes::PathParams;
use crate::probmap::{parse_prob, ProbClass, ProbHeader};
use std::path::{Path, PathBuf};
use tomoflow_cryo::mrc::MrcWriter;
use tomoflow_sdk::prelude::*;
use tomoflow_sdk::volume::ZOrder;

/// The file of one class beside `path`: `dir/stem.<class>.mrc` (the class name with every
/// character other than letters, digits, `-` and `_` replaced by `_`).
pub fn class_path(path: &Path, class: &str) -> PathBuf {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "probabilities".into());
    let ext = path
        .extension()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "mrc".into());
    let safe: String = class
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    path.with_file_name(format!("{stem}.{safe}.{ext}"))
}

/// Open files and the classes they are for.
struct Files {
    classes: Vec<ProbClass>,
    full_shape: [usize; 3],
    best: MrcWriter<f32>,
    per_class: Vec<MrcWriter<f32>>,
}

/// The streaming writer behind `probabilities-mrc-write`.
pub struct ProbMrcExport {
    path: PathBuf,
    files: Option<Files>,
    /// Cores that arrived ahead of the next plane to write, as `[K, planes, y, x]` blocks.
    order: ZOrder<Vec<f32>>,
}

impl ProbMrcExport {
    /// A writer for `path` (and its per-class siblings); nothing is created before the first chunk.
    pub fn new(path: PathBuf) -> Self {
        ProbMrcExport {
            path,
            files: None,
            order: ZOrder::default(),
        }
    }

    /// Planes written so far (of every file).
    pub fn planes_written(&self) -> usize {
        self.order.next_plane()
    }

    /// Write `planes` planes of every class (`class(c)` gives class `c`'s block) and their
    /// per-voxel maximum.
    fn write_planes<'a>(
        f: &mut Files,
        planes: usize,
        class: impl Fn(usize) -> &'a [f32],
    ) -> Result<()> {
        let n = planes * f.full_shape[1] * f.full_shape[2];
        let mut best = vec![0f32; n];
        for (c, w) in f.per_class.iter_mut().enumerate() {
            let block = class(c);
            for (b, &p) in best.iter_mut().zip(block) {
                *b = b.max(p);
            }
            w.write_slab(block)?;
        }
        f.best.write_slab(&best)
    }

    /// Add one chunk (any order; each core once).
    pub fn add(&mut self, h: &ProbHeader, data: &[f32]) -> Result<()> {
        let c = &h.chunk;
        let [_, fy, fx] = c.full_shape;
        if c.core_shape[1] != fy || c.core_shape[2] != fx {
            bail!(
                "probabilities-mrc-write: chunks must be whole z slabs, got a core of {:?} in a volume of {:?}",
                c.core_shape,
                c.full_shape
            );
        }
        let z0 = c.core_offset[0];
        let f = match &mut self.files {
            slot @ None => {
                let mk = |p: &Path| MrcWriter::create(p, c.full_shape, c.voxel_size, c.origin);
                let per_class = h
                    .classes
                    .iter()
                    .map(|k| mk(&class_path(&self.path, &k.name)))
                    .collect::<Result<Vec<_>>>()?;
                slot.insert(Files {
                    classes: h.classes.clone(),
                    full_shape: c.full_shape,
                    best: mk(&self.path)?,
                    per_class,
                })
            }
            Some(f) if f.classes != h.classes || f.full_shape != c.full_shape => bail!(
                "probabilities-mrc-write: one export takes one tomogram's maps; this chunk has classes or a shape ({:?}) other than the first's ({:?}); export each instance to its own file with `{{instance}}` in the path",
                c.full_shape,
                f.full_shape
            ),
            Some(f) => f,
        };
        // Class `ch`'s core planes within the chunk's [K, z, y, x] block.
        let (nz, plane) = (c.core_shape[0], fy * fx);
        let first = (z0 - c.offset[0]) * plane;
        let core = |ch: usize| {
            let start = ch * c.shape[0] * plane + first;
            &data[start..start + nz * plane]
        };
        let in_order = self
            .order
            .arrive(z0, nz)
            .map_err(|e| anyhow!("probabilities-mrc-write: {e}"))?;
        if in_order {
            Self::write_planes(f, nz, core)?;
        } else {
            // Ahead of the stream: keep a copy until the planes before it have arrived.
            let copy: Vec<f32> = (0..h.classes.len()).flat_map(core).copied().collect();
            self.order.hold(z0, nz, copy);
        }
        while let Some((planes, data)) = self.order.pop() {
            let n = planes * plane;
            Self::write_planes(f, planes, |ch| &data[ch * n..(ch + 1) * n])?;
        }
        Ok(())
    }

    /// Check that every plane arrived and move the files to their final names.
    pub fn finish(&mut self) -> Result<()> {
        let f = self
            .files
            .take()
            .ok_or_else(|| anyhow!("probabilities-mrc-write: no probability map arrived"))?;
        if self.order.next_plane() != f.full_shape[0] || !self.order.is_drained() {
            bail!(
                "probabilities-mrc-write: the stream ended with planes missing ({} of {} written)",
                self.order.next_plane(),
                f.full_shape[0]
            );
        }
        for w in f.per_class {
            w.finish()?;
        }
        f.best.finish()?;
        Ok(())
    }
}

/// `probabilities-mrc-write`: see the module documentation.
pub struct ProbMrcWriteNode(ProbMrcExport);

impl Node for ProbMrcWriteNode {
    fn process(&mut self, ctx: &mut Ctx, _input: usize, msg: Message) -> Result<()> {
        let (h, data) = parse_prob(&msg)?;
        self.0.add(&h, data)?;
        ctx.progress(self.0.planes_written() as u64, h.chunk.full_shape[0] as u64);
        Ok(())
    }
    fn finish(&mut self, _ctx: &mut Ctx) -> Result<()> {
        self.0.finish()
    }
}

impl NodeDef for ProbMrcWriteNode {
    type Params = PathParams;
    const NAME: &'static str = "probabilities-mrc-write";
    const DOC: &'static str = "Export per-class probability maps as MRC (mode 2, float32, the tomogram's voxel size and origin): the exported path holds the most probable class's probability at each voxel; `<stem>.<class>.mrc` beside it holds each class's map. Streamed chunk by chunk.";
    const INPUTS: &'static [Port] = &[port(
        "probabilities",
        "probabilities",
        "per-class probability maps (unet-infer)",
    )];
    const OUTPUTS: &'static [Port] = &[];
    const EXPORT_EXTENSIONS: &'static [&'static str] = &["mrc", "map"];
    fn create(p: PathParams, info: &NodeInfo) -> Result<Self> {
        Ok(ProbMrcWriteNode(ProbMrcExport::new(info.resolve(&p.path))))
    }
}
