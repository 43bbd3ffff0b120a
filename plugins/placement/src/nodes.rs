//! Node types `templates` and `place`.

use crate::place::{pack, Mode, Physics, PlaceConfig, Prepared, Renderer, VesicleSpec};
use crate::sample::MembraneParams;
use schemars::JsonSchema;
use serde::Deserialize;
use std::collections::BTreeMap;
use tomoflow_cryo::particles::{ClassInfo, Particle, ParticleTable, TomogramInfo};
use tomoflow_cryo::scattering::{ice_mean_inner_potential, protein_mean_inner_potential};
use tomoflow_cryo::template::{AtomOptions, MapOptions, Template};
use tomoflow_sdk::prelude::*;
use tomoflow_sdk::volume::ChunkMeta;
use tomoflow_sdk::Tensor;

// ---------------------------------------------------------------------------------------------
// templates

/// One class of `templates`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClassParams {
    /// Class name (copick object name, CSV `class`).
    pub name: String,
    /// Density map (`.mrc`, `.map`) or atomic model (`.pdb`, `.cif`, `.ent`, `.mmcif`, optionally `.gz`).
    #[schemars(extend("x-tomoflow" = "input-file"))]
    pub path: String,
    /// Label id in the class label map (default: position in the list + 1).
    #[serde(default)]
    #[schemars(range(min = 1, max = 65535))]
    pub label: Option<u32>,
    /// Particle radius in Å (default: from the mask).
    #[serde(default)]
    pub radius: Option<f64>,
    /// Mask threshold: in the map's units for maps, in volts for models (default: maps 10% of
    /// the peak above background; models the level enclosing the molecular volume).
    #[serde(default)]
    pub threshold: Option<f32>,
    /// Maps: molecular mass in kDa used to scale the map to volts (default: from the mask volume).
    #[serde(default)]
    pub mass_kda: Option<f64>,
    /// Maps: protein is dark (negative) in this map.
    #[serde(default)]
    pub invert: bool,
    /// Models: replace every atom's B-factor (Å²); default: the file's.
    #[serde(default)]
    pub b_factor: Option<f64>,
}

/// Parameters of `templates`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplatesParams {
    /// Voxel size of the templates (Å): that of the sample they will be placed in.
    #[schemars(range(min = 0.1, max = 1000.0))]
    pub voxel_size: f64,
    /// The particle classes.
    pub classes: Vec<ClassParams>,
}

/// Build one template from its parameters.
pub fn build_template(
    c: &ClassParams,
    index: usize,
    voxel_size: f64,
    info_resolve: &dyn Fn(&str) -> std::path::PathBuf,
) -> Result<Template> {
    let path = info_resolve(&c.path);
    let label = c.label.unwrap_or(index as u32 + 1);
    let name = &c.name;
    let shown = c.path.as_str();
    if tomoflow_cryo::pdb::is_model_file(&c.path) {
        let model = tomoflow_cryo::pdb::read_model(&path)
            .with_context(|| format!("templates: class {name}"))?;
        let mut t = Template::from_atoms(
            name,
            label,
            &model,
            voxel_size,
            &AtomOptions {
                b_factor: c.b_factor,
                threshold: c.threshold,
                radius_a: c.radius,
            },
        )?;
        t.source = shown.to_string();
        Ok(t)
    } else {
        if !path.exists() {
            bail!("templates: class {name}: {} does not exist", path.display());
        }
        let (h, d) = tomoflow_cryo::mrc::read_mrc(&path)
            .with_context(|| format!("templates: class {name}"))?;
        if (h.voxel_size[2] - h.voxel_size[1]).abs() > 1e-3 * h.voxel_size[2]
            || (h.voxel_size[2] - h.voxel_size[0]).abs() > 1e-3 * h.voxel_size[2]
        {
            bail!(
                "templates: class {name}: {shown} has anisotropic voxels {:?} Å; resample it first",
                h.voxel_size
            );
        }
        let opts = MapOptions {
            threshold: c.threshold,
            mass_kda: c.mass_kda,
            scale: None,
            invert: c.invert,
            radius_a: c.radius,
        };
        Template::from_map(
            name,
            label,
            &d,
            h.shape,
            h.voxel_size[2],
            voxel_size,
            shown,
            &opts,
        )
    }
}

/// A template as a `templates` message.
pub fn template_message(t: &Template) -> Message {
    Message::json(serde_json::json!({
        "template": {
            "name": t.name,
            "label": t.label,
            "radius_A": t.radius_a,
            "support_radius_A": t.support_radius_a,
            "voxel_size": t.voxel_size,
            "shape": t.shape,
            "threshold": t.threshold,
            "com_offset_A": t.com_offset_a,
            "mass_Da": t.mass_da,
            "integral_VA3": t.integral(),
            "mask_voxels": t.mask_voxels(),
            "source": t.source,
            "units": "V",
        }
    }))
    .with_tensor("data", Tensor::from_vec(t.data.clone(), &t.shape))
    .with_tensor("mask", Tensor::from_vec(t.mask.clone(), &t.shape))
}

/// Parse a `templates` message.
pub fn template_from_message(msg: &Message) -> Result<Template> {
    let m = msg
        .meta
        .get("template")
        .ok_or_else(|| anyhow!("message has no `template` metadata: is this a templates port?"))?;
    let f = |k: &str| {
        m.get(k)
            .and_then(|v| v.as_f64())
            .ok_or_else(|| anyhow!("template metadata lacks `{k}`"))
    };
    let shape: [usize; 3] =
        serde_json::from_value(m["shape"].clone()).map_err(|e| anyhow!("template shape: {e}"))?;
    let data = msg
        .tensor("data")
        .map_err(anyhow::Error::msg)?
        .as_slice::<f32>()
        .map_err(anyhow::Error::msg)?
        .to_vec();
    let mask = msg
        .tensor("mask")
        .map_err(anyhow::Error::msg)?
        .as_slice::<u8>()
        .map_err(anyhow::Error::msg)?
        .to_vec();
    if data.len() != shape.iter().product::<usize>() || mask.len() != data.len() {
        bail!("template tensors do not match shape {shape:?}");
    }
    Ok(Template {
        name: m["name"].as_str().unwrap_or("?").to_string(),
        label: f("label")? as u32,
        voxel_size: f("voxel_size")?,
        shape,
        data,
        mask,
        threshold: f("threshold")? as f32,
        radius_a: f("radius_A")?,
        support_radius_a: f("support_radius_A")?,
        com_offset_a: serde_json::from_value(m["com_offset_A"].clone()).unwrap_or([0.0; 3]),
        mass_da: m.get("mass_Da").and_then(|v| v.as_f64()),
        source: m["source"].as_str().unwrap_or("").to_string(),
    })
}

/// `templates`: particle templates from maps and atomic models.
pub struct TemplatesNode {
    p: TemplatesParams,
    base: NodeInfo,
}

impl Node for TemplatesNode {
    fn finish(&mut self, ctx: &mut Ctx) -> Result<()> {
        let n = self.p.classes.len();
        for (i, c) in self.p.classes.iter().enumerate() {
            ctx.check_cancelled()?;
            let t = build_template(c, i, self.p.voxel_size, &|s| self.base.resolve(s))?;
            ctx.info(format!(
                "template {}: {:?} voxels at {} Å, radius {:.0} Å, {} mask voxels, ∫V = {:.3e} V·Å³",
                t.name, t.shape, t.voxel_size, t.radius_a, t.mask_voxels(), t.integral()
            ));
            ctx.emit("templates", template_message(&t))?;
            ctx.progress(i as u64 + 1, n as u64);
        }
        Ok(())
    }
}

impl NodeDef for TemplatesNode {
    type Params = TemplatesParams;
    const NAME: &'static str = "templates";
    const DOC: &'static str = "Particle templates (electrostatic potential in V, occupancy mask, radius) from MRC maps or PDB/mmCIF models.\n\n\
        Models: Peng et al. (1996) five-Gaussian scattering factors integrated over each voxel, B-factors included. \
        Maps: background removed, resampled to `voxel_size` (trilinear, anti-aliased), scaled to volts from the molecular mass. \
        One message per class; see docs/data-kinds.md (`templates`).";
    const INPUTS: &'static [Port] = &[];
    const OUTPUTS: &'static [Port] = &[port("templates", "templates", "one template per class")];
    fn check(p: &TemplatesParams) -> Result<()> {
        if p.classes.is_empty() {
            bail!("templates: `classes` is empty; give at least one {{name, path}}");
        }
        let mut seen = BTreeMap::new();
        for (i, c) in p.classes.iter().enumerate() {
            if let Some(j) = seen.insert(c.name.clone(), i) {
                bail!(
                    "templates: classes[{j}] and classes[{i}] are both named {:?}",
                    c.name
                );
            }
            if c.label == Some(0) {
                bail!(
                    "templates: class {}: label 0 is the background; use 1 or more",
                    c.name
                );
            }
        }
        Ok(())
    }
    fn create(p: TemplatesParams, info: &NodeInfo) -> Result<Self> {
        Ok(TemplatesNode {
            p,
            base: info.clone(),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// place

fn ten() -> f64 {
    10.0
}
fn attempts() -> usize {
    2000
}
fn forty() -> f64 {
    40.0
}
fn chain() -> usize {
    8
}
fn bend_default() -> f64 {
    40.0
}

/// Packing mode of `place`.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema, PartialEq, Default)]
#[serde(rename_all = "lowercase")]
pub enum ModeParam {
    /// Independent uniform positions.
    #[default]
    Uniform,
    /// Self-avoiding chains of particles (PolNet-like).
    Clustered,
}

/// Chain parameters of the clustered mode.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClusterParams {
    /// Particles per chain (at most).
    #[serde(default = "chain")]
    #[schemars(range(min = 1))]
    pub chain_length: usize,
    /// Largest bend between consecutive links (degrees).
    #[serde(default = "bend_default")]
    #[schemars(range(min = 0.0, max = 180.0))]
    pub max_bend: f64,
    /// Gap between neighbours' bounding spheres (Å).
    #[serde(default)]
    pub gap: f64,
}

/// Vesicle parameters of `place`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VesicleParams {
    /// Number of vesicles.
    pub count: usize,
    /// Outer radius range [min, max] in Å.
    pub radius: [f64; 2],
    /// Bilayer thickness (Å).
    #[serde(default = "forty")]
    pub thickness: f64,
    /// Largest relative deviation of the semi-axes from the mean radius (0 = spheres).
    #[serde(default)]
    #[schemars(range(min = 0.0, max = 0.5))]
    pub ellipticity: f64,
    /// Label of membranes in the class label map (default: largest class label + 1).
    #[serde(default)]
    pub label: Option<u32>,
}

/// Parameters of `place`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PlaceParams {
    /// Box shape [z, y, x] in voxels.
    #[schemars(inner(range(min = 1, max = 4096)))]
    pub shape: [usize; 3],
    /// Voxel size (Å); must equal the templates'.
    #[serde(default = "ten")]
    pub voxel_size: f64,
    /// Ice slab thickness (Å), centred in z; vacuum outside. Default: the whole box height.
    #[serde(default)]
    pub ice_thickness: Option<f64>,
    /// Particles per class name.
    #[serde(default)]
    pub counts: BTreeMap<String, usize>,
    /// Target fraction of the ice slab volume filled by each class's masks (instead of a count).
    #[serde(default)]
    pub occupancy: BTreeMap<String, f64>,
    /// `uniform` or `clustered`.
    #[serde(default)]
    pub mode: ModeParam,
    /// Chain parameters for `mode: clustered`.
    #[serde(default)]
    pub clustered: Option<ClusterParams>,
    /// Vesicles (lipid bilayer shells) as distractors.
    #[serde(default)]
    pub vesicles: Option<VesicleParams>,
    /// Candidate positions per particle before giving up.
    #[serde(default = "attempts")]
    #[schemars(range(min = 1))]
    pub max_attempts: usize,
    /// Accept fewer particles than requested (the shortfall is reported) instead of failing.
    #[serde(default)]
    pub allow_fewer: bool,
    /// Mean inner potential of the ice (V); default 4.57 V (independent-atom model of H₂O at 0.94 g/cm³).
    #[serde(default)]
    pub ice_potential: Option<f64>,
    /// Tomogram name in the particle table (default: the node id, or the instance label when swept).
    #[serde(default)]
    pub name: Option<String>,
    /// Planes per output chunk (default: 16).
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub slab: Option<usize>,
}

/// `place`: pack templates into an ice slab and render potential, labels, instances, table.
pub struct PlaceNode {
    p: PlaceParams,
    seed: u64,
    name: String,
    templates: Vec<Template>,
}

impl Node for PlaceNode {
    fn process(&mut self, _ctx: &mut Ctx, _input: usize, msg: Message) -> Result<()> {
        self.templates.push(template_from_message(&msg)?);
        Ok(())
    }

    fn finish(&mut self, ctx: &mut Ctx) -> Result<()> {
        let run = run_place(&self.p, self.seed, &self.name, &self.templates)?;
        let Run {
            table_msg,
            cfg,
            prepared_templates,
            packing,
            physics,
            report,
        } = run;
        ctx.info(report);
        ctx.emit("particles", table_msg)?;
        let prepared: Vec<Prepared> = prepared_templates.iter().map(Prepared::new).collect();
        let r = Renderer::new(&cfg, &prepared, &packing, physics);
        let [nz, ny, nx] = cfg.shape;
        let parts = tomoflow_sdk::volume::slabs(nz, self.p.slab.unwrap_or(16), 0);
        let count = parts.len();
        let max_label = prepared_templates
            .iter()
            .map(|t| t.label)
            .chain(cfg.vesicles.as_ref().map(|v| v.label))
            .max()
            .unwrap_or(0);
        let n_inst = packing.particles.len() + packing.vesicles.len();
        for (index, s) in parts.iter().enumerate() {
            ctx.check_cancelled()?;
            let out = r.slab(s.z0, s.z1, &|n, f| ctx.parallel_for(n, f));
            let meta = ChunkMeta {
                full_shape: cfg.shape,
                offset: [s.z0, 0, 0],
                shape: [s.z1 - s.z0, ny, nx],
                core_offset: [s.z0, 0, 0],
                core_shape: [s.z1 - s.z0, ny, nx],
                voxel_size: [cfg.voxel_size; 3],
                origin: [0.0; 3],
                index,
                count,
            };
            ctx.emit("potential", volume::chunk_message(&meta, out.potential))?;
            if max_label <= 255 {
                ctx.emit(
                    "labels",
                    volume::chunk_message(
                        &meta,
                        out.labels.iter().map(|&v| v as u8).collect::<Vec<u8>>(),
                    ),
                )?;
            } else {
                ctx.emit("labels", volume::chunk_message(&meta, out.labels))?;
            }
            if n_inst <= 65535 {
                ctx.emit(
                    "instances",
                    volume::chunk_message(
                        &meta,
                        out.instances
                            .iter()
                            .map(|&v| v as u16)
                            .collect::<Vec<u16>>(),
                    ),
                )?;
            } else {
                ctx.emit("instances", volume::chunk_message(&meta, out.instances))?;
            }
            ctx.progress(index as u64 + 1, count as u64);
        }
        Ok(())
    }
}

/// What [`run_place`] computes before rendering.
pub struct Run {
    /// The `particles` message.
    pub table_msg: Message,
    /// The packing configuration.
    pub cfg: PlaceConfig,
    /// Templates in class order.
    pub prepared_templates: Vec<Template>,
    /// The packing.
    pub packing: crate::place::Packing,
    /// Material constants.
    pub physics: Physics,
    /// A one-paragraph summary.
    pub report: String,
}

/// Build the configuration, pack, and build the particle table (shared by the node and tests).
pub fn run_place(p: &PlaceParams, seed: u64, name: &str, templates: &[Template]) -> Result<Run> {
    if templates.is_empty() {
        bail!("place: no template arrived on input `templates`");
    }
    let h = p.voxel_size;
    for t in templates {
        if (t.voxel_size / h - 1.0).abs() > 1e-3 {
            bail!("place: template {} is at {} Å but the sample is at {h} Å; set the templates node's voxel_size to {h}", t.name, t.voxel_size);
        }
    }
    let names: Vec<&str> = templates.iter().map(|t| t.name.as_str()).collect();
    for k in p.counts.keys().chain(p.occupancy.keys()) {
        if !names.contains(&k.as_str()) {
            bail!(
                "place: no template named {k:?}; templates: {}",
                names.join(", ")
            );
        }
        if p.counts.contains_key(k) && p.occupancy.contains_key(k) {
            bail!("place: class {k:?} has both a count and an occupancy; give one");
        }
    }
    let thickness = p.ice_thickness;
    if let Some(t) = thickness {
        if t.is_nan() || t <= 0.0 {
            bail!("place: ice_thickness must be > 0 Å, got {t}");
        }
    }
    let slab = crate::place::slab_range(p.shape, h, thickness);
    let slab_vox = ((slab[1] - slab[0] + 1).max(0) as usize * p.shape[1] * p.shape[2]) as f64;
    let total_occ: f64 = p.occupancy.values().sum();
    if p.occupancy.values().any(|&o| !(0.0..=1.0).contains(&o)) || total_occ > 1.0 {
        bail!("place: occupancy fractions must lie in 0..1 and sum to at most 1 (they sum to {total_occ}); random packing jams near 0.3–0.4");
    }
    let counts: Vec<usize> = templates
        .iter()
        .map(|t| {
            if let Some(&n) = p.counts.get(&t.name) {
                n
            } else if let Some(&o) = p.occupancy.get(&t.name) {
                (o * slab_vox / t.mask_voxels().max(1) as f64).round() as usize
            } else {
                0
            }
        })
        .collect();
    let mode = match p.mode {
        ModeParam::Uniform => Mode::Uniform,
        ModeParam::Clustered => {
            let c = p.clustered.clone().unwrap_or(ClusterParams {
                chain_length: chain(),
                max_bend: bend_default(),
                gap: 0.0,
            });
            Mode::Clustered {
                chain_length: c.chain_length.max(1),
                max_bend_deg: c.max_bend,
                gap_a: c.gap,
            }
        }
    };
    let max_label = templates.iter().map(|t| t.label).max().unwrap_or(0);
    let vesicles = p.vesicles.as_ref().map(|v| VesicleSpec {
        count: v.count,
        radius_min_a: v.radius[0].min(v.radius[1]),
        radius_max_a: v.radius[0].max(v.radius[1]),
        ellipticity: v.ellipticity,
        membrane: MembraneParams::with_thickness(v.thickness),
        label: v.label.unwrap_or(max_label + 1),
    });
    if let Some(v) = &vesicles {
        if v.radius_min_a <= v.membrane.thickness_a {
            bail!(
                "place: vesicle radius {} Å must exceed the membrane thickness {} Å",
                v.radius_min_a,
                v.membrane.thickness_a
            );
        }
    }
    let cfg = PlaceConfig {
        shape: p.shape,
        voxel_size: h,
        ice_thickness_a: thickness,
        counts: counts.clone(),
        mode,
        vesicles,
        seed,
        max_attempts: p.max_attempts,
        allow_fewer: p.allow_fewer,
    };
    let prepared: Vec<Prepared> = templates.iter().map(Prepared::new).collect();
    let packing = pack(&cfg, &prepared).map_err(|e| anyhow!("place: {e}"))?;
    let physics = Physics {
        ice_v: p.ice_potential.unwrap_or_else(ice_mean_inner_potential),
        protein_v: protein_mean_inner_potential(),
    };
    let r = Renderer::new(&cfg, &prepared, &packing, physics);
    let particles: Vec<Particle> = (0..packing.particles.len())
        .map(|i| {
            let pl = &packing.particles[i];
            let t = &templates[pl.class];
            let c = r.com_voxels(i);
            let (rot, tilt, psi) = r.angles(i);
            Particle {
                class: t.name.clone(),
                class_id: t.label,
                x: c[2] * h,
                y: c[1] * h,
                z: c[0] * h,
                rot,
                tilt,
                psi,
                q: pl.q.to_array(),
                instance: i as u32 + 1,
                score: 1.0,
            }
        })
        .collect();
    let mut classes: Vec<ClassInfo> = templates
        .iter()
        .map(|t| ClassInfo {
            id: t.label,
            name: t.name.clone(),
            radius_a: t.radius_a,
        })
        .collect();
    if let Some(v) = &cfg.vesicles {
        classes.push(ClassInfo {
            id: v.label,
            name: "membrane".into(),
            radius_a: v.radius_max_a,
        });
    }
    let table = ParticleTable {
        tomogram: TomogramInfo {
            name: name.to_string(),
            shape: p.shape,
            voxel_size: [h; 3],
            origin: [0.0; 3],
        },
        classes,
        particles,
    };
    let mut v = serde_json::to_value(&table)?;
    let n_part = packing.particles.len();
    let vesicles_json: Vec<serde_json::Value> = packing
        .vesicles
        .iter()
        .enumerate()
        .map(|(k, ve)| serde_json::json!({"instance": n_part + 1 + k, "x": ve.centre[2] * h, "y": ve.centre[1] * h, "z": ve.centre[0] * h, "radii_A": [ve.radii_a[2], ve.radii_a[1], ve.radii_a[0]]}))
        .collect();
    v["vesicles"] = serde_json::Value::Array(vesicles_json);
    v["report"] = serde_json::json!({
        "classes": packing.report,
        "occupancy": packing.occupancy,
        "attempts": packing.attempts,
        "ice_slab_planes": packing.slab,
        "ice_potential_V": physics.ice_v,
        "protein_potential_V": physics.protein_v,
        "seed": seed,
    });
    let short: Vec<String> = packing
        .report
        .iter()
        .map(|c| format!("{} {}/{}", c.name, c.placed, c.requested))
        .collect();
    let report = format!(
        "placed {} particles ({}) and {} vesicles; {:.1}% of the ice slab occupied; {} attempts",
        n_part,
        short.join(", "),
        packing.vesicles.len(),
        100.0 * packing.occupancy,
        packing.attempts
    );
    drop(r);
    Ok(Run {
        table_msg: Message::json(v),
        cfg,
        prepared_templates: templates.to_vec(),
        packing,
        physics,
        report,
    })
}

impl NodeDef for PlaceNode {
    type Params = PlaceParams;
    const NAME: &'static str = "place";
    const DOC: &'static str = "Pack particle templates without overlap into an ice slab; output the potential (V), class labels, instance ids and the particle table.\n\n\
        Orientations uniform on SO(3); exact overlap test on the rotated, thresholded masks; counts or target occupancy per class; \
        uniform or clustered (self-avoiding chains) mode; optional vesicles with a two-leaflet bilayer profile; solvent displacement. \
        Fails with a report if a count cannot be reached (or set `allow_fewer`). Deterministic for a seed whatever the threads.";
    const INPUTS: &'static [Port] = &[port(
        "templates",
        "templates",
        "particle templates at the sample's voxel size",
    )];
    const OUTPUTS: &'static [Port] = &[
        port(
            "potential",
            "volume",
            "electrostatic potential (V), ice slab included",
        ),
        port("labels", "labels", "class label per voxel (0 = ice/vacuum)"),
        port(
            "instances",
            "labels",
            "instance id per voxel (particle table `instance`)",
        ),
        port("particles", "particles", "ground-truth particle table"),
    ];
    fn check(p: &PlaceParams) -> Result<()> {
        if !(p.voxel_size.is_finite() && p.voxel_size > 0.0) {
            bail!("place: voxel_size must be > 0 Å");
        }
        if p.counts.is_empty() && p.occupancy.is_empty() {
            bail!("place: give `counts` or `occupancy` per class name");
        }
        if p.clustered.is_some() && p.mode != ModeParam::Clustered {
            bail!("place: `clustered` parameters given but mode is not `clustered`");
        }
        Ok(())
    }
    fn create(p: PlaceParams, info: &NodeInfo) -> Result<Self> {
        // Potential (f32), labels (u16), instances (u32) and the occupancy grid (u8) per voxel.
        tomoflow_sdk::memory::ensure(
            tomoflow_sdk::memory::bytes_of(p.shape, 11),
            &format!(
                "place: `shape` {:?}: the potential, label, instance and occupancy volumes",
                p.shape
            ),
        )?;
        let name = p.name.clone().unwrap_or_else(|| {
            if info.instance == "main" {
                info.node_id.clone()
            } else {
                info.instance.clone()
            }
        });
        Ok(PlaceNode {
            p,
            seed: info.seed,
            name,
            templates: Vec::new(),
        })
    }
}
