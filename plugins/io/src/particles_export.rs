//! Exporters for `particles` tables: RELION STAR (`.star`, RELION 5 or 4), CSV (tomoflow's
//! columns or the CZII submission form), copick picks JSON (`.json`), Dynamo tables (`.tbl`)
//! and IMOD models (`.mod`). The formats and the coordinate convention are
//! implemented in `tomoflow_cryo::particles` (see docs/data-kinds.md).

use schemars::JsonSchema;
use serde::Deserialize;
use std::path::PathBuf;
use tomoflow_cryo::image::write_atomic;
use tomoflow_cryo::particles::{ParticleTable, StarFlavour};
use tomoflow_sdk::prelude::*;

/// Parameters of the STAR exporter.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StarParams {
    /// Target file (filled in by the engine from the workflow's `exports:`).
    pub path: String,
    /// `relion5` (centred Å coordinates plus a `data_global` block with the tomogram size) or
    /// `relion4` (pixel coordinates).
    #[serde(default)]
    pub flavour: StarFlavourParam,
}

/// STAR flavour parameter.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StarFlavourParam {
    /// RELION 5 (default).
    #[default]
    Relion5,
    /// RELION 4.
    Relion4,
}

/// Parameters of the CSV exporter.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CsvParams {
    /// Target file (filled in by the engine from the workflow's `exports:`).
    pub path: String,
    /// `tomoflow` (default: every column) or `czii` (the CZII challenge submission form
    /// `id,experiment,particle_type,x,y,z`, coordinates `v × voxel_size` in Å).
    #[serde(default)]
    pub layout: CsvLayout,
}

/// Column layout of the CSV exporter.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CsvLayout {
    /// tomogram, class, ids, Å and voxel coordinates, angles, quaternion, score.
    #[default]
    Tomoflow,
    /// `id,experiment,particle_type,x,y,z` (Å from voxel 0's centre), as Kaggle's CZII
    /// CryoET Object Identification challenge expects.
    Czii,
}

/// Parameters of the Dynamo and IMOD exporters.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TableParams {
    /// Target file (filled in by the engine from the workflow's `exports:`).
    pub path: String,
}

fn zero() -> String {
    "0".into()
}
fn user() -> String {
    "tomoflow".into()
}

/// Parameters of the copick exporter.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CopickParams {
    /// Target file, e.g. `.../Picks/tomoflow_0_ribosome.json`.
    pub path: String,
    /// Pickable object (class name) to write; required when the table holds several classes.
    #[serde(default)]
    pub object: Option<String>,
    /// copick `user_id`.
    #[serde(default = "user")]
    pub user_id: String,
    /// copick `session_id`.
    #[serde(default = "zero")]
    pub session_id: String,
    /// copick `run_name` (default: the table's tomogram name).
    #[serde(default)]
    pub run_name: Option<String>,
}

/// Collects the table (one JSON message, or several concatenated) then writes.
fn table_of(
    metas: &[serde_json::Map<String, serde_json::Value>],
    name: &str,
) -> Result<ParticleTable> {
    let mut it = metas.iter();
    let first = it
        .next()
        .ok_or_else(|| anyhow!("{name}: no particle table arrived"))?;
    let mut t = ParticleTable::from_json(&serde_json::Value::Object(first.clone()))?;
    for m in it {
        let more = ParticleTable::from_json(&serde_json::Value::Object(m.clone()))?;
        if more.tomogram != t.tomogram {
            bail!(
                "{name}: the particle tables refer to different tomograms ({} and {})",
                t.tomogram.name,
                more.tomogram.name
            );
        }
        t.particles.extend(more.particles);
    }
    Ok(t)
}

macro_rules! table_exporter {
    ($ty:ident, $params:ty, $name:expr, $doc:expr, $ext:expr, |$p:ident, $t:ident| $body:expr) => {
        #[doc = $doc]
        pub struct $ty {
            path: PathBuf,
            params: $params,
            metas: Vec<serde_json::Map<String, serde_json::Value>>,
        }
        impl Node for $ty {
            fn process(&mut self, _ctx: &mut Ctx, _input: usize, msg: Message) -> Result<()> {
                self.metas.push(msg.meta);
                Ok(())
            }
            fn finish(&mut self, _ctx: &mut Ctx) -> Result<()> {
                let $t = table_of(&self.metas, $name)?;
                let $p = &self.params;
                let text: Result<String> = $body;
                write_atomic(&self.path, text?.as_bytes())
            }
        }
        impl NodeDef for $ty {
            type Params = $params;
            const NAME: &'static str = $name;
            const DOC: &'static str = $doc;
            const INPUTS: &'static [Port] =
                &[port("particles", "particles", "particle table to write")];
            const OUTPUTS: &'static [Port] = &[];
            const EXPORT_EXTENSIONS: &'static [&'static str] = $ext;
            fn create(p: $params, info: &NodeInfo) -> Result<Self> {
                Ok($ty {
                    path: info.resolve(&p.path),
                    params: p,
                    metas: Vec::new(),
                })
            }
        }
    };
}

table_exporter!(
    StarWriteNode,
    StarParams,
    "star-write",
    "Export a particle table as a RELION STAR file: `flavour: relion5` (default; rlnCenteredCoordinateX/Y/ZAngst and a data_global block with rlnTomoSizeX/Y/Z and the pixel size) or `relion4` (rlnCoordinateX/Y/Z in pixels).",
    &["star"],
    |p, t| Ok(t.to_star(match p.flavour {
        StarFlavourParam::Relion5 => StarFlavour::Relion5,
        StarFlavourParam::Relion4 => StarFlavour::Relion4,
    }))
);

table_exporter!(
    CsvWriteNode,
    CsvParams,
    "csv-write",
    "Export a particle table as CSV: `layout: tomoflow` (default; class, ids, x/y/z in Å and in voxels, RELION angles, quaternion, score) or `layout: czii` (the CZII submission form id,experiment,particle_type,x,y,z in Å).",
    &["csv"],
    |p, t| Ok(match p.layout {
        CsvLayout::Tomoflow => t.to_csv(),
        CsvLayout::Czii => t.to_czii_csv(),
    })
);

table_exporter!(
    CopickWriteNode,
    CopickParams,
    "copick-write",
    "Export one class of a particle table as copick picks JSON (locations in Å, 4x4 transformation_).",
    &["json"],
    |p, t| {
        let object = match (&p.object, t.classes.len()) {
            (Some(o), _) => o.clone(),
            (None, 1) => t.classes[0].name.clone(),
            (None, _) => {
                let with: Vec<&str> = t.classes.iter().map(|c| c.name.as_str()).collect();
                bail!(
                    "copick-write: the table holds {} classes ({}); copick keeps one object per file: set `params: {{object: NAME}}` on this export (one export per class)",
                    with.len(),
                    with.join(", ")
                )
            }
        };
        t.to_copick(&object, &p.user_id, &p.session_id, p.run_name.as_deref())
    }
);

table_exporter!(
    DynamoWriteNode,
    TableParams,
    "dynamo-write",
    "Export a particle table as a Dynamo .tbl (35 columns; ZXZ angles tdrot/tilt/narot; 1-based pixel coordinates in columns 24-26).",
    &["tbl"],
    |_p, t| Ok(t.to_dynamo_tbl(1))
);

/// `mod-write`: export a particle table as an IMOD model (`.mod`), one scattered-point object
/// per class (see `tomoflow_cryo::imod` for the layout and the coordinate convention).
pub struct ModWriteNode {
    path: PathBuf,
    metas: Vec<serde_json::Map<String, serde_json::Value>>,
}

impl Node for ModWriteNode {
    fn process(&mut self, _ctx: &mut Ctx, _input: usize, msg: Message) -> Result<()> {
        self.metas.push(msg.meta);
        Ok(())
    }
    fn finish(&mut self, _ctx: &mut Ctx) -> Result<()> {
        let t = table_of(&self.metas, "mod-write")?;
        write_atomic(&self.path, &tomoflow_cryo::imod::particles_to_mod(&t))
    }
}

impl NodeDef for ModWriteNode {
    type Params = TableParams;
    const NAME: &'static str = "mod-write";
    const DOC: &'static str = "Export a particle table as an IMOD binary model (.mod, IMODV1.2): one object per class with scattered points (sphere size = class radius), points in IMOD pixel coordinates (voxel (0,0,0) at 0.5, 0.5, 0), pixel size in Å.";
    const INPUTS: &'static [Port] = &[port("particles", "particles", "particle table to write")];
    const OUTPUTS: &'static [Port] = &[];
    const EXPORT_EXTENSIONS: &'static [&'static str] = &["mod"];
    fn create(p: TableParams, info: &NodeInfo) -> Result<Self> {
        Ok(ModWriteNode {
            path: info.resolve(&p.path),
            metas: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn czii_csv_form() {
        let t = ParticleTable::from_json(&serde_json::json!({
            "tomogram": {"name": "TS_5_4", "shape": [10, 20, 30], "voxel_size": [10.0, 10.0, 10.0], "origin": [5.0, 5.0, 5.0]},
            "classes": [{"id": 4, "name": "ribosome", "radius_A": 150.0}],
            "particles": [{"class": "ribosome", "class_id": 4, "x": 105.0, "y": 55.0, "z": 15.0,
                           "rot": 0.0, "tilt": 0.0, "psi": 0.0, "q": [1.0, 0.0, 0.0, 0.0]}]
        }))
        .unwrap();
        assert_eq!(
            t.to_czii_csv(),
            "id,experiment,particle_type,x,y,z\n0,TS_5_4,ribosome,100.000,50.000,10.000\n"
        );
    }
}
