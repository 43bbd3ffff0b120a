//! `picks-read`: particle tables from pick files (RELION 5 / 4 STAR, tomoflow / CZII / plain
//! CSV, copick picks JSON or a directory of them, Dynamo `.tbl`, IMOD `.mod`). The formats live
//! in `tomoflow_cryo::particles_read`.

use schemars::JsonSchema;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tomoflow_cryo::particles::{ClassInfo, ParticleTable};
use tomoflow_cryo::particles_read::{self, Format, Origin, ReadOptions, Unit};
use tomoflow_sdk::prelude::*;

/// One class of the picks: its name (as in the file), number and radius.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClassParam {
    /// Class name (copick object, CSV class column, IMOD object name).
    pub name: String,
    /// Class number (RELION `rlnClassNumber`, Dynamo column 22, the label in label maps).
    #[schemars(range(min = 1))]
    pub label: u32,
    /// Particle radius in Å (scoring counts a pick within this distance of a truth point).
    #[schemars(range(min = 0.001, max = 100000.0))]
    pub radius: f64,
}

/// Pick file format.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FormatParam {
    /// RELION 5 or 4 STAR.
    Star,
    /// CSV: tomoflow's columns, the CZII form, or plain x, y, z.
    Csv,
    /// copick picks JSON.
    Copick,
    /// Dynamo table.
    Dynamo,
    /// IMOD model.
    Imod,
}

/// Unit of a plain CSV.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum UnitParam {
    /// Ångström.
    Angstrom,
    /// Voxels.
    Voxel,
}

/// Origin of a plain CSV's coordinates.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum OriginParam {
    /// 0 is the centre of voxel 0.
    #[default]
    VoxelCentre,
    /// 0 is the outer corner of voxel 0.
    Corner,
}

/// Parameters of `picks-read`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PicksReadParams {
    /// Pick file (`.star`, `.csv`, `.json`, `.tbl`, `.mod`) or a directory of copick picks
    /// files (`<user>_<session>_<object>.json`).
    #[schemars(extend("x-tomoflow" = "input-file"))]
    pub path: String,
    /// Format (default: from the extension).
    #[serde(default)]
    pub format: Option<FormatParam>,
    /// The classes the picks may name.
    #[schemars(length(min = 1))]
    pub classes: Vec<ClassParam>,
    /// Voxel size in Å of the tomogram the picks refer to (files in pixels need it; files
    /// that state one are checked against it).
    #[serde(default)]
    #[schemars(range(min = 0.001, max = 100000.0))]
    pub voxel_size: Option<f64>,
    /// Tomogram shape [z, y, x] in voxels (RELION 5 files without sizes need it; every pick is
    /// checked to lie inside).
    #[serde(default)]
    #[schemars(inner(range(min = 1, max = 1000000)))]
    pub shape: Option<[usize; 3]>,
    /// Unit of a plain CSV's x, y, z (`angstrom` or `voxel`).
    #[serde(default)]
    pub unit: Option<UnitParam>,
    /// Where a plain CSV's coordinate 0 lies: `voxel-centre` (default) or `corner`.
    #[serde(default)]
    pub origin: OriginParam,
    /// A plain CSV's coordinate columns [x, y, z] (default `[x, y, z]`; any case), e.g.
    /// `[x_A, y_A, z_A]` with `unit: angstrom`.
    #[serde(default)]
    pub columns: Option<[String; 3]>,
    /// Tomogram name: selects one tomogram of a file that holds several; names the picks of a
    /// file that names none (default: the file's stem).
    #[serde(default)]
    pub tomogram: Option<String>,
    /// A RELION 5 `tomograms.star` with the tomograms' sizes and pixel sizes.
    #[serde(default)]
    #[schemars(extend("x-tomoflow" = "input-file"))]
    pub tomograms: Option<String>,
    /// copick directories: read only the files whose user id is this.
    #[serde(default)]
    pub user: Option<String>,
    /// copick directories: read only the files whose session id is this.
    #[serde(default)]
    pub session: Option<String>,
}

/// `picks-read`: emits one particle table per tomogram named in the file.
pub struct PicksReadNode {
    p: PicksReadParams,
    path: PathBuf,
    tomograms: Option<PathBuf>,
}

impl PicksReadNode {
    fn options(&self) -> Result<ReadOptions> {
        let p = &self.p;
        let tomograms_star = match &self.tomograms {
            Some(t) => {
                let text = std::fs::read_to_string(t)
                    .map_err(|e| anyhow!("cannot read {}: {e}", t.display()))?;
                particles_read::tomograms_star(&text, &t.display().to_string())?
            }
            None => Vec::new(),
        };
        Ok(ReadOptions {
            classes: p
                .classes
                .iter()
                .map(|c| ClassInfo {
                    id: c.label,
                    name: c.name.clone(),
                    radius_a: c.radius,
                })
                .collect(),
            voxel_size: p.voxel_size,
            shape: p.shape,
            unit: p.unit.map(|u| match u {
                UnitParam::Angstrom => Unit::Angstrom,
                UnitParam::Voxel => Unit::Voxel,
            }),
            origin: match p.origin {
                OriginParam::VoxelCentre => Origin::VoxelCentre,
                OriginParam::Corner => Origin::Corner,
            },
            columns: p.columns.clone(),
            tomogram: p.tomogram.clone(),
            tomograms_star,
        })
    }

    /// The files to read: the path itself, or a copick directory's matching `*.json`.
    fn files(&self) -> Result<Vec<PathBuf>> {
        if !self.path.is_dir() {
            return Ok(vec![self.path.clone()]);
        }
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.path)
            .map_err(|e| anyhow!("cannot list {}: {e}", self.path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|f| f.extension().is_some_and(|e| e == "json"))
            .filter(|f| copick_file_matches(f, self.p.user.as_deref(), self.p.session.as_deref()))
            .collect();
        files.sort();
        if files.is_empty() {
            bail!(
                "{}: no copick picks files (<user>_<session>_<object>.json){}",
                self.path.display(),
                match (&self.p.user, &self.p.session) {
                    (None, None) => String::new(),
                    (u, s) => format!(" of user {u:?}, session {s:?}"),
                }
            );
        }
        Ok(files)
    }
}

/// Whether a copick file name `<user>_<session>_<object>.json` matches the filters (user ids
/// and session ids hold no `_` in copick's layout; object names may).
fn copick_file_matches(f: &Path, user: Option<&str>, session: Option<&str>) -> bool {
    let stem = f.file_stem().and_then(|s| s.to_str()).unwrap_or("");
    let mut parts = stem.splitn(3, '_');
    let (u, s) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    user.is_none_or(|w| w == u) && session.is_none_or(|w| w == s)
}

/// Concatenate tables of the same tomogram (copick keeps one file per object).
fn merge(tables: Vec<ParticleTable>) -> Vec<ParticleTable> {
    let mut by: BTreeMap<String, ParticleTable> = BTreeMap::new();
    for t in tables {
        match by.get_mut(&t.tomogram.name) {
            Some(m) => m.particles.extend(t.particles),
            None => {
                by.insert(t.tomogram.name.clone(), t);
            }
        }
    }
    by.into_values().collect()
}

impl Node for PicksReadNode {
    fn finish(&mut self, ctx: &mut Ctx) -> Result<()> {
        let o = self.options()?;
        let mut tables = Vec::new();
        for f in self.files()? {
            let bytes =
                std::fs::read(&f).map_err(|e| anyhow!("cannot read {}: {e}", f.display()))?;
            let format = match self.p.format {
                Some(FormatParam::Star) => Format::Star,
                Some(FormatParam::Csv) => Format::Csv,
                Some(FormatParam::Copick) => Format::Copick,
                Some(FormatParam::Dynamo) => Format::Dynamo,
                Some(FormatParam::Imod) => Format::Imod,
                None => Format::from_path(&f)?,
            };
            let stem = f.file_stem().and_then(|s| s.to_str()).unwrap_or("picks");
            tables.extend(particles_read::read(
                &bytes,
                format,
                &f.display().to_string(),
                stem,
                &o,
            )?);
        }
        for t in merge(tables) {
            let per_class: Vec<String> = t
                .classes
                .iter()
                .map(|c| {
                    format!(
                        "{} {}",
                        c.name,
                        t.particles.iter().filter(|p| p.class == c.name).count()
                    )
                })
                .collect();
            ctx.info(format!(
                "{}: {} picks ({}) in a {:?} tomogram at {} Å",
                t.tomogram.name,
                t.particles.len(),
                per_class.join(", "),
                t.tomogram.shape,
                t.tomogram.voxel_size[0]
            ));
            ctx.emit("particles", Message::json(serde_json::to_value(&t)?))?;
        }
        Ok(())
    }
}

impl NodeDef for PicksReadNode {
    type Params = PicksReadParams;
    const NAME: &'static str = "picks-read";
    const DOC: &'static str = "Read particle picks or annotations from RELION 5 / 4 STAR, CSV (tomoflow, CZII or plain x,y,z with a stated `unit`), copick JSON (a file or a Picks directory), Dynamo .tbl or IMOD .mod.\n\n\
        Emits one particle table per tomogram the file names (`tomogram` selects one). Class names come from the file (copick object, CSV class column, IMOD object) or from class numbers (`rlnClassNumber`, Dynamo column 22) through `classes[].label`; radii from `classes[].radius`. \
        Coordinates follow docs/data-kinds.md; a pick outside the tomogram, an unknown class, a missing column or a voxel size that contradicts the file is an error naming the file, row and field.";
    const INPUTS: &'static [Port] = &[];
    const OUTPUTS: &'static [Port] = &[port(
        "particles",
        "particles",
        "one particle table per tomogram",
    )];
    fn check(p: &PicksReadParams) -> Result<()> {
        let mut seen = std::collections::BTreeSet::new();
        for c in &p.classes {
            if !seen.insert(&c.name) {
                bail!("picks-read: class {:?} is declared twice", c.name);
            }
        }
        Ok(())
    }
    fn create(p: PicksReadParams, info: &NodeInfo) -> Result<Self> {
        Ok(PicksReadNode {
            path: info.resolve(&p.path),
            tomograms: p.tomograms.as_deref().map(|t| info.resolve(t)),
            p,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copick_names_filter_by_user_and_session() {
        let f = Path::new("Picks/curation_0_beta-galactosidase.json");
        assert!(copick_file_matches(f, None, None));
        assert!(copick_file_matches(f, Some("curation"), Some("0")));
        assert!(!copick_file_matches(f, Some("tomoflow"), None));
        assert!(!copick_file_matches(f, None, Some("1")));
    }
}
