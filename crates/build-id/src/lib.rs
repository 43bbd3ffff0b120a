//! A plugin's build id from what it is built from, not from the binary.
//!
//! The build id enters the cache key of every node a plugin runs (docs/plugin-abi.md). The
//! linker's GNU build id hashes the library file, and the same sources do not always give the
//! same file: `cargo build -p one-plugin` and `cargo test` unify features differently and relink
//! every plugin, so a rebuild of unchanged code discarded cached results and training
//! checkpoints. Here the id hashes the inputs instead:
//!
//! - every file of the plugin's package and of each path dependency it names (recursively:
//!   `tomoflow-sdk`, `tomoflow-cryo`), skipping `target/` and dot-files;
//! - `Cargo.lock` (the versions of every other dependency);
//! - the compiler (`rustc -vV`), the target, the profile (`OPT_LEVEL`, `DEBUG`, `PROFILE`),
//!   `RUSTFLAGS`, the target features and the crate's enabled cargo features.
//!
//! Use it from the plugin's `build.rs`:
//!
//! ```ignore
//! fn main() {
//!     tomoflow_build_id::emit();
//! }
//! ```
//!
//! `tomoflow_sdk::export_plugin!` picks the id up from `TOMOFLOW_BUILD_ID`; a plugin built
//! without this build script has none and the host falls back to the library file's hash.

use std::fs;
use std::path::{Path, PathBuf};

/// Compute the build id of the package being built, set `TOMOFLOW_BUILD_ID` for its compilation
/// and tell cargo when to recompute it. Call from `build.rs`; panics with a message on an
/// unreadable source tree (cargo shows it as a build-script error).
pub fn emit() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("run from build.rs"));
    let root = workspace_root(&manifest);
    let dirs = package_dirs(&manifest, root.as_deref());
    let mut h = blake3::Hasher::new();
    for d in &dirs {
        println!("cargo:rerun-if-changed={}", d.display());
    }
    hash_packages(&mut h, &dirs, root.as_deref())
        .unwrap_or_else(|e| panic!("hashing the sources of {}: {e}", manifest.display()));
    if let Some(lock) = root.map(|r| r.join("Cargo.lock")) {
        if let Ok(bytes) = fs::read(&lock) {
            println!("cargo:rerun-if-changed={}", lock.display());
            h.update(b"Cargo.lock\0");
            h.update(&bytes);
        }
    }
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    if let Ok(out) = std::process::Command::new(rustc).arg("-vV").output() {
        h.update(&out.stdout);
    }
    let mut env: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| {
            k.starts_with("CARGO_FEATURE_")
                || matches!(
                    k.as_str(),
                    "TARGET"
                        | "PROFILE"
                        | "OPT_LEVEL"
                        | "DEBUG"
                        | "CARGO_ENCODED_RUSTFLAGS"
                        | "CARGO_CFG_TARGET_FEATURE"
                )
        })
        .collect();
    env.sort();
    for (k, v) in env {
        h.update(format!("{k}={v}\0").as_bytes());
    }
    println!("cargo:rustc-env=TOMOFLOW_BUILD_ID={}", id(&h));
}

/// The id's text form: `src-` and 32 hex digits (128 bits of blake3).
fn id(h: &blake3::Hasher) -> String {
    format!("src-{}", &h.finalize().to_hex()[..32])
}

/// The package directory followed by the directories of its path dependencies (declared
/// directly, `{ path = ".." }`, or through `[workspace.dependencies]` of the workspace at
/// `root`), recursively, each once.
pub fn package_dirs(manifest_dir: &Path, root: Option<&Path>) -> Vec<PathBuf> {
    let ws_paths = root
        .and_then(|r| {
            fs::read_to_string(r.join("Cargo.toml"))
                .ok()
                .map(|t| (r, t))
        })
        .map(|(r, t)| {
            section_entries(&t, "workspace.dependencies")
                .into_iter()
                .filter_map(|(name, v)| path_of(&v).map(|p| (name, r.join(p))))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let mut out: Vec<PathBuf> = Vec::new();
    let mut todo = vec![manifest_dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let d = d.canonicalize().unwrap_or(d);
        if out.contains(&d) {
            continue;
        }
        if let Ok(text) = fs::read_to_string(d.join("Cargo.toml")) {
            for (name, v) in section_entries(&text, "dependencies") {
                if let Some(p) = path_of(&v) {
                    todo.push(d.join(p));
                } else if v.contains("workspace") {
                    if let Some((_, p)) = ws_paths.iter().find(|(n, _)| *n == name) {
                        todo.push(p.clone());
                    }
                }
            }
        }
        out.push(d);
    }
    out
}

/// The nearest ancestor (or itself) whose `Cargo.toml` declares `[workspace]`.
fn workspace_root(dir: &Path) -> Option<PathBuf> {
    dir.ancestors()
        .find(|d| {
            fs::read_to_string(d.join("Cargo.toml"))
                .map(|t| t.lines().any(|l| l.trim() == "[workspace]"))
                .unwrap_or(false)
        })
        .map(Path::to_path_buf)
}

/// `(key, value)` of the one-line entries of a TOML table (`[name]`). `a.workspace = true`
/// gives `("a", "workspace = true")`.
fn section_entries(toml: &str, name: &str) -> Vec<(String, String)> {
    let mut inside = false;
    let mut out = Vec::new();
    for line in toml.lines() {
        let l = line.split('#').next().unwrap_or("").trim();
        if l.starts_with('[') {
            inside = l == format!("[{name}]");
            continue;
        }
        if !inside {
            continue;
        }
        if let Some((k, v)) = l.split_once('=') {
            let k = k.trim();
            match k.split_once('.') {
                Some((dep, field)) => out.push((
                    dep.trim().into(),
                    format!("{} = {}", field.trim(), v.trim()),
                )),
                None => out.push((k.into(), v.trim().into())),
            }
        }
    }
    out
}

/// The `path = "…"` of a dependency's inline table.
fn path_of(value: &str) -> Option<String> {
    let i = value.find("path")?;
    let rest = value[i + 4..].trim_start().strip_prefix('=')?.trim_start();
    let rest = rest.strip_prefix('"')?;
    Some(rest[..rest.find('"')?].to_string())
}

/// Feed each package directory's files into `h`, each package under its path relative to the
/// workspace root (so that the id does not depend on where the clone lives).
fn hash_packages(
    h: &mut blake3::Hasher,
    dirs: &[PathBuf],
    root: Option<&Path>,
) -> std::io::Result<()> {
    let root = root.and_then(|r| r.canonicalize().ok());
    for d in dirs {
        let name = root
            .as_deref()
            .and_then(|r| d.strip_prefix(r).ok())
            .unwrap_or(d);
        h.update(b"package\0");
        h.update(name.to_string_lossy().as_bytes());
        h.update(b"\0");
        hash_dir(h, d, d)?;
    }
    Ok(())
}

/// Feed every file under `dir` (sorted, paths relative to `base`) into `h`.
fn hash_dir(h: &mut blake3::Hasher, base: &Path, dir: &Path) -> std::io::Result<()> {
    let mut entries: Vec<_> = fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || name == "target" {
            continue;
        }
        let p = e.path();
        if e.file_type()?.is_dir() {
            hash_dir(h, base, &p)?;
        } else {
            let rel = p.strip_prefix(base).unwrap_or(&p);
            h.update(rel.to_string_lossy().as_bytes());
            h.update(b"\0");
            let bytes = fs::read(&p)?;
            h.update(&(bytes.len() as u64).to_le_bytes());
            h.update(&bytes);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(p: &Path, text: &str) {
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }

    /// A workspace with a plugin that depends on `sdk` through `[workspace.dependencies]` and
    /// on `extra` by a direct path; `other` is a member it does not depend on.
    fn workspace() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        write(
            &r.join("Cargo.toml"),
            "[workspace]\nmembers = [\"p\", \"sdk\", \"other\"]\n\n[workspace.dependencies]\nsdk = { path = \"sdk\" } # the SDK\nother = { path = \"other\" }\nserde = \"1\"\n",
        );
        write(
            &r.join("p/Cargo.toml"),
            "[package]\nname = \"p\"\n\n[dependencies]\nsdk.workspace = true\nserde.workspace = true\nextra = { path = \"../extra\", version = \"0.1\" }\n\n[dev-dependencies]\nother.workspace = true\n",
        );
        write(&r.join("p/src/lib.rs"), "pub fn f() {}\n");
        write(&r.join("sdk/Cargo.toml"), "[package]\nname = \"sdk\"\n");
        write(&r.join("sdk/src/lib.rs"), "pub fn g() {}\n");
        write(&r.join("extra/Cargo.toml"), "[package]\nname = \"extra\"\n");
        write(&r.join("extra/src/lib.rs"), "\n");
        write(&r.join("other/Cargo.toml"), "[package]\nname = \"other\"\n");
        t
    }

    fn hash(dirs: &[PathBuf]) -> String {
        let mut h = blake3::Hasher::new();
        let root = dirs[0].parent().unwrap();
        hash_packages(&mut h, dirs, Some(root)).unwrap();
        id(&h)
    }

    #[test]
    fn finds_the_path_dependencies_and_nothing_else() {
        let t = workspace();
        let r = t.path().canonicalize().unwrap();
        let mut dirs = package_dirs(&r.join("p"), Some(&r));
        assert_eq!(dirs[0], r.join("p"));
        dirs.sort();
        let mut want = vec![r.join("p"), r.join("sdk"), r.join("extra")];
        want.sort();
        assert_eq!(
            dirs, want,
            "dev-dependencies and non-dependencies are not sources"
        );
    }

    #[test]
    fn the_id_follows_the_sources_only() {
        let t = workspace();
        let r = t.path();
        let dirs = package_dirs(&r.join("p"), Some(r));
        let a = hash(&dirs);
        assert!(a.starts_with("src-") && a.len() == 36, "{a}");
        // Build outputs and dot-files do not count: a rebuild keeps the id.
        write(&r.join("p/target/release/libp.so"), "binary");
        write(&r.join("sdk/.hidden"), "x");
        assert_eq!(hash(&dirs), a);
        // An edit in a dependency's source does.
        write(&r.join("sdk/src/lib.rs"), "pub fn g() { }\n");
        let b = hash(&dirs);
        assert_ne!(b, a);
        // So does a moved file with the same bytes, also from one package to another.
        fs::rename(r.join("sdk/src/lib.rs"), r.join("sdk/src/main.rs")).unwrap();
        let c = hash(&dirs);
        assert_ne!(c, b);
        fs::rename(r.join("sdk/src/main.rs"), r.join("extra/src/main.rs")).unwrap();
        assert_ne!(hash(&dirs), c);
        // The same tree elsewhere has the same id.
        let u = workspace();
        let v = workspace();
        let id = |t: &tempfile::TempDir| hash(&package_dirs(&t.path().join("p"), Some(t.path())));
        assert_eq!(id(&u), id(&v));
    }

    #[test]
    fn reads_one_line_toml_entries() {
        let t = "[a]\nx = 1\n[dependencies]\nfoo.workspace = true # c\nbar = { path = \"../bar\" }\n\n[b]\ny = 2\n";
        let e = section_entries(t, "dependencies");
        assert_eq!(
            e,
            vec![
                ("foo".to_string(), "workspace = true".to_string()),
                ("bar".to_string(), "{ path = \"../bar\" }".to_string())
            ]
        );
        assert_eq!(path_of(&e[1].1).as_deref(), Some("../bar"));
        assert_eq!(path_of("\"1.0\""), None);
    }
}
