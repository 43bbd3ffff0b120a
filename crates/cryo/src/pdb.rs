//! Atomic models: PDB and mmCIF files (optionally gzipped) read with the `pdbtbx` crate, reduced
//! to what the potential needs (position, element parameters, B-factor, occupancy).

use crate::scattering::{known_elements, peng, Peng};
use anyhow::{bail, Result};
use pdbtbx::{
    ContainsAtomConformer, ContainsAtomConformerResidue, ContainsAtomConformerResidueChain,
};
use std::path::Path;

/// One atom of a model.
#[derive(Debug, Clone, Copy)]
pub struct Atom {
    /// Position (x, y, z) in Å, in the model's frame.
    pub pos: [f64; 3],
    /// Scattering parameters of its element.
    pub element: &'static Peng,
    /// Isotropic B-factor (Å²) from the file.
    pub b_factor: f64,
    /// Occupancy (0..1) from the file.
    pub occupancy: f64,
}

/// The atoms of the first model of a structure file.
#[derive(Debug, Clone)]
pub struct AtomModel {
    /// Atoms.
    pub atoms: Vec<Atom>,
    /// The file it came from.
    pub source: String,
}

impl AtomModel {
    /// Molecular mass (Da), occupancies included.
    pub fn mass_da(&self) -> f64 {
        self.atoms
            .iter()
            .map(|a| a.element.mass_da * a.occupancy)
            .sum()
    }

    /// Centre of the potential (f(0)-weighted centroid), (x, y, z) Å.
    pub fn potential_centre(&self) -> [f64; 3] {
        let mut c = [0.0; 3];
        let mut w = 0.0;
        for a in &self.atoms {
            let f = a.element.f0() * a.occupancy;
            for (ci, pi) in c.iter_mut().zip(a.pos) {
                *ci += f * pi;
            }
            w += f;
        }
        c.map(|v| v / w.max(f64::MIN_POSITIVE))
    }

    /// `∫ V d³r` of the whole model (V·Å³).
    pub fn potential_integral(&self) -> f64 {
        self.atoms
            .iter()
            .map(|a| a.element.potential_integral() * a.occupancy)
            .sum()
    }
}

/// True for the file names `read_model` accepts.
pub fn is_model_file(path: &str) -> bool {
    let p = path.to_ascii_lowercase();
    let p = p.strip_suffix(".gz").unwrap_or(&p);
    [".pdb", ".ent", ".cif", ".mmcif", ".pdb1"]
        .iter()
        .any(|e| p.ends_with(e))
}

/// Read the first model of a PDB or mmCIF file (`.pdb`, `.ent`, `.cif`, `.mmcif`, each optionally
/// `.gz`). Errors name the file and, for atoms, the serial number, name and residue.
pub fn read_model(path: impl AsRef<Path>) -> Result<AtomModel> {
    let path = path.as_ref();
    let name = path.display().to_string();
    if !path.exists() {
        bail!("atomic model {name} does not exist");
    }
    if !is_model_file(&name) {
        bail!("{name}: not an atomic model file name; expected .pdb, .ent, .cif or .mmcif, optionally .gz");
    }
    // pdbtbx decides the format from the extension; `.ent` is PDB.
    let lower = name.to_ascii_lowercase();
    let mut opts = pdbtbx::ReadOptions::default();
    opts.set_level(pdbtbx::StrictnessLevel::Loose)
        .set_only_first_model(true)
        .set_only_atomic_coords(true);
    if lower.ends_with(".ent") || lower.ends_with(".ent.gz") || lower.ends_with(".pdb1") {
        opts.set_format(pdbtbx::Format::Pdb);
    } else if lower.ends_with(".mmcif") || lower.ends_with(".mmcif.gz") {
        opts.set_format(pdbtbx::Format::Mmcif);
    } else {
        opts.guess_format(&name);
    }
    if lower.ends_with(".gz") {
        opts.set_decompress(true);
        if lower.ends_with(".ent.gz") || lower.ends_with(".mmcif.gz") {
            // pdbtbx only recognises .pdb.gz / .cif.gz when decompressing: read through flate2.
            let fmt = if lower.ends_with(".mmcif.gz") {
                pdbtbx::Format::Mmcif
            } else {
                pdbtbx::Format::Pdb
            };
            return read_gz_with_format(path, &name, fmt);
        }
    }
    let read = guarded(&name, || opts.read(&name))?;
    finish(read, &name)
}

/// Run pdbtbx's reader, turning a panic inside it (it panics on some malformed records, e.g.
/// `nan` coordinates) into an error naming the file.
fn guarded<T>(name: &str, read: impl FnOnce() -> T) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(read)).map_err(|p| {
        let why = p
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| p.downcast_ref::<&str>().copied())
            .unwrap_or("no message");
        anyhow::anyhow!(
            "cannot read atomic model {name}: the PDB/mmCIF reader failed on a malformed record ({why}); \
             check the file for non-numeric coordinates or truncated lines"
        )
    })
}

fn read_gz_with_format(path: &Path, name: &str, fmt: pdbtbx::Format) -> Result<AtomModel> {
    let f = std::fs::File::open(path).map_err(|e| anyhow::anyhow!("cannot open {name}: {e}"))?;
    let r = std::io::BufReader::new(flate2::read::GzDecoder::new(f));
    let mut o = pdbtbx::ReadOptions::default();
    o.set_level(pdbtbx::StrictnessLevel::Loose)
        .set_only_first_model(true)
        .set_only_atomic_coords(true)
        .set_format(fmt);
    finish(guarded(name, || o.read_raw(r))?, name)
}

fn errors_text(errs: &[pdbtbx::PDBError]) -> String {
    errs.iter()
        .filter(|e| {
            e.level() == pdbtbx::ErrorLevel::BreakingError
                || e.level() == pdbtbx::ErrorLevel::InvalidatingError
        })
        .take(3)
        .map(|e| format!("{}: {}", e.short_description(), e.long_description()))
        .collect::<Vec<_>>()
        .join("; ")
}

fn finish(
    read: Result<(pdbtbx::PDB, Vec<pdbtbx::PDBError>), Vec<pdbtbx::PDBError>>,
    name: &str,
) -> Result<AtomModel> {
    let pdb = match read {
        Ok((pdb, _warnings)) => pdb,
        Err(errs) => {
            let t = errors_text(&errs);
            bail!(
                "cannot read atomic model {name}: {}",
                if t.is_empty() {
                    format!("{} error(s)", errs.len())
                } else {
                    t
                }
            )
        }
    };
    let mut atoms = Vec::with_capacity(pdb.atom_count());
    for hier in pdb.atoms_with_hierarchy() {
        let a = hier.atom();
        let Some(el) = a.element() else {
            bail!(
                "{name}: atom serial {} (name {:?}, residue {} {}, chain {}) has no recognisable element; \
                 fill in the element column (77-78 in PDB, type_symbol in mmCIF)",
                a.serial_number(),
                a.name(),
                hier.residue().name().unwrap_or("?"),
                hier.residue().id().0,
                hier.chain().id()
            );
        };
        let sym = el.symbol();
        let Some(p) = peng(sym) else {
            bail!(
                "{name}: atom serial {} (name {:?}, residue {} {}, chain {}) is element {sym}, which has no \
                 electron scattering factors in tomoflow's table (Peng et al. 1996); known: {}; \
                 remove or replace the atom",
                a.serial_number(),
                a.name(),
                hier.residue().name().unwrap_or("?"),
                hier.residue().id().0,
                hier.chain().id(),
                known_elements()
            );
        };
        let (x, y, z) = a.pos();
        if ![x, y, z, a.b_factor(), a.occupancy()]
            .iter()
            .all(|v| v.is_finite())
        {
            bail!(
                "{name}: atom serial {} (name {:?}, residue {} {}, chain {}) has a coordinate, B-factor or \
                 occupancy that is not a finite number ({x}, {y}, {z}; B {}, occupancy {}); fix or remove the atom",
                a.serial_number(),
                a.name(),
                hier.residue().name().unwrap_or("?"),
                hier.residue().id().0,
                hier.chain().id(),
                a.b_factor(),
                a.occupancy()
            );
        }
        atoms.push(Atom {
            pos: [x, y, z],
            element: p,
            b_factor: a.b_factor(),
            occupancy: if a.occupancy() > 0.0 {
                a.occupancy().min(1.0)
            } else {
                1.0
            },
        });
    }
    if atoms.is_empty() {
        bail!("atomic model {name} holds no atoms (no ATOM/HETATM records in its first model)");
    }
    Ok(AtomModel {
        atoms,
        source: name.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared(p: &str) -> std::path::PathBuf {
        std::path::PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/data/templates/pdbs"
        ))
        .join(p)
    }

    const TWO_ATOMS: &str = "\
ATOM      1  CA  GLY A   1       1.000   2.000   3.000  1.00 20.00           C
ATOM      2  O   GLY A   1       2.000   2.000   3.000  1.00 30.00           O
END
";

    #[test]
    fn reads_pdb_and_mmcif_text() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("two.pdb");
        std::fs::write(&p, TWO_ATOMS).unwrap();
        let m = read_model(&p).unwrap();
        assert_eq!(m.atoms.len(), 2);
        assert_eq!(m.atoms[1].element.symbol, "O");
        assert_eq!(m.atoms[0].pos, [1.0, 2.0, 3.0]);
        assert_eq!(m.atoms[1].b_factor, 30.0);
        // gzipped copy
        let gz = dir.path().join("two.pdb.gz");
        let mut enc = flate2::write::GzEncoder::new(
            std::fs::File::create(&gz).unwrap(),
            flate2::Compression::fast(),
        );
        std::io::Write::write_all(&mut enc, TWO_ATOMS.as_bytes()).unwrap();
        enc.finish().unwrap();
        assert_eq!(read_model(&gz).unwrap().atoms.len(), 2);
        // mmCIF
        let cif = "data_test\nloop_\n_atom_site.group_PDB\n_atom_site.id\n_atom_site.type_symbol\n_atom_site.label_atom_id\n_atom_site.label_alt_id\n_atom_site.label_comp_id\n_atom_site.label_asym_id\n_atom_site.label_entity_id\n_atom_site.label_seq_id\n_atom_site.pdbx_PDB_ins_code\n_atom_site.Cartn_x\n_atom_site.Cartn_y\n_atom_site.Cartn_z\n_atom_site.occupancy\n_atom_site.B_iso_or_equiv\n_atom_site.pdbx_formal_charge\n_atom_site.auth_seq_id\n_atom_site.auth_comp_id\n_atom_site.auth_asym_id\n_atom_site.auth_atom_id\n_atom_site.pdbx_PDB_model_num\nATOM 1 C CA . GLY A 1 1 ? 1.000 2.000 3.000 1.00 20.00 ? 1 GLY A CA 1\nATOM 2 S SG . CYS A 1 2 ? 4.000 2.000 3.000 1.00 20.00 ? 2 CYS A SG 1\n";
        let c = dir.path().join("two.cif");
        std::fs::write(&c, cif).unwrap();
        let m = read_model(&c).unwrap();
        assert_eq!(m.atoms.len(), 2);
        assert_eq!(m.atoms[1].element.symbol, "S");
    }

    #[test]
    fn unknown_element_and_empty_model_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.pdb");
        std::fs::write(
            &p,
            "ATOM      1  CA  GLY A   1       1.000   2.000   3.000  1.00 20.00           C\n\
             HETATM    7 QQ1  UNK B   5       1.000   2.000   3.000  1.00 20.00          QQ\nEND\n",
        )
        .unwrap();
        let e = read_model(&p).unwrap_err().to_string();
        assert!(e.contains("serial 7") && e.contains("QQ1"), "{e}");
        let p = dir.path().join("uranium.pdb");
        std::fs::write(
            &p,
            "HETATM    3  U   URA A   1       1.000   2.000   3.000  1.00 20.00           U\nEND\n",
        )
        .unwrap();
        let e = read_model(&p).unwrap_err().to_string();
        assert!(
            e.contains("element U") && e.contains("serial 3") && e.contains("Peng"),
            "{e}"
        );
        // NaN coordinates: an error naming the file and the atom (once a panic in the plugin).
        let p = dir.path().join("nan.pdb");
        std::fs::write(
            &p,
            "ATOM      1  CA  GLY A   1       1.000   2.000   3.000  1.00 20.00           C\n\
             ATOM      2  CB  GLY A   1         nan   2.000   3.000  1.00 20.00           C\nEND\n",
        )
        .unwrap();
        let e = read_model(&p).unwrap_err().to_string();
        assert!(
            e.contains("nan.pdb") && e.contains("malformed record"),
            "{e}"
        );
        let p = dir.path().join("empty.pdb");
        std::fs::write(&p, "HEADER    EMPTY\nEND\n").unwrap();
        let e = read_model(&p).unwrap_err().to_string();
        assert!(e.contains("no atoms") || e.contains("cannot read"), "{e}");
        let e = read_model(dir.path().join("missing.pdb"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not exist"), "{e}");
    }

    #[test]
    fn reads_a_real_gzipped_entry() {
        let p = shared("1s3x.pdb.gz");
        if !p.exists() {
            eprintln!("skipping: {} missing", p.display());
            return;
        }
        let m = read_model(&p).unwrap();
        assert!(m.atoms.len() > 1000, "{}", m.atoms.len());
        let mass = m.mass_da();
        assert!(mass > 20_000.0 && mass < 200_000.0, "{mass}");
    }
}
