//! Helpers shared by the end-to-end tests: where the workspace and the built `tomoflow`
//! binary are, and compiling C sources with the system compiler.
//!
//! The tests run the real binary, which `cargo test -p tomoflow-tests` does not build (a
//! binary of another package is not a dependency of this one), hence:
//! `cargo build --workspace && cargo test --workspace`.

#![allow(dead_code)] // each test file uses its own subset

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The workspace root (the parent of this crate's directory).
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// `target/<profile>`: test binaries live in `target/<profile>/deps/`.
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current test executable");
    let deps = exe.parent().expect("test binary has a directory");
    if deps.file_name().is_some_and(|n| n == "deps") {
        deps.parent().expect("deps has a parent").to_path_buf()
    } else {
        deps.to_path_buf()
    }
}

/// Path of the built `tomoflow` binary; panics with the command to run when it is missing.
pub fn tomoflow_exe() -> PathBuf {
    let exe = profile_dir().join(format!("tomoflow{}", std::env::consts::EXE_SUFFIX));
    assert!(
        exe.is_file(),
        "{} not found: run `cargo build --workspace` first (the tests run the real binary \
         and the plugins built next to it)",
        exe.display()
    );
    exe
}

/// A `tomoflow` command with a clean plugin environment (only explicit `--plugin-path`
/// entries and the plugins next to the binary are found).
pub fn tomoflow() -> Command {
    let mut c = Command::new(tomoflow_exe());
    c.env_remove("TOMOFLOW_PLUGIN_PATH")
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1");
    c
}

/// Run a command, returning its output; panics if it cannot start.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// stdout and stderr together, for assertions and failure messages.
pub fn text(out: &Output) -> String {
    format!(
        "--- stdout\n{}--- stderr\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The C compiler: `$CC` or `cc`.
pub fn cc_command() -> Command {
    Command::new(std::env::var_os("CC").unwrap_or_else(|| "cc".into()))
}

/// Compile C sources with `args` (e.g. `-shared -fPIC -O2 -o lib.so`) and `-I include`.
/// Fails the test (never skips it) when no C compiler is installed or compilation fails.
pub fn cc(args: &[&str], sources: &[&Path]) {
    let mut cmd = cc_command();
    cmd.arg("-I").arg(workspace().join("include")).args(args);
    for s in sources {
        cmd.arg(s);
    }
    let out = match cmd.output() {
        Ok(o) => o,
        Err(e) => panic!(
            "cannot run the C compiler ({cmd:?}): {e}. These tests need a C compiler: install \
             one (e.g. `apt-get install gcc`) or point $CC at it"
        ),
    };
    assert!(
        out.status.success(),
        "C compilation failed: {cmd:?}\n{}",
        text(&out)
    );
}

/// A Python interpreter that can import every module in `modules`: `TOMOFLOW_TEST_PYTHON`
/// (`.ci/run` makes a venv with mrcfile, numpy, zarr, starfile and copick), else `python3`.
/// Under CI (`CI` set) a missing interpreter or module fails the test; elsewhere it is skipped
/// with a message.
pub fn python(modules: &[&str]) -> Option<PathBuf> {
    let import = format!("import {}", modules.join(", "));
    let candidates: Vec<PathBuf> = std::env::var_os("TOMOFLOW_TEST_PYTHON")
        .map(PathBuf::from)
        .into_iter()
        .chain([PathBuf::from("python3")])
        .collect();
    for py in candidates {
        if Command::new(&py)
            .args(["-c", &import])
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return Some(py);
        }
    }
    let what = modules.join(", ");
    if std::env::var_os("CI").is_some() {
        panic!("CI needs a Python with {what}: set TOMOFLOW_TEST_PYTHON (see .ci/run)");
    }
    eprintln!("skipping the Python checks: no Python with {what} (set TOMOFLOW_TEST_PYTHON)");
    None
}

/// Shape (nx, ny, nz), voxel size along x (Å) and data as f32 of a little-endian MRC file
/// (modes 0 int8, 1 int16, 2 float32, 6 uint16).
pub fn read_mrc_f32(p: &Path) -> ([i32; 3], f32, Vec<f32>) {
    let b = std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let i = |w: usize| i32::from_le_bytes(b[w * 4..w * 4 + 4].try_into().unwrap());
    let f = |w: usize| f32::from_le_bytes(b[w * 4..w * 4 + 4].try_into().unwrap());
    let dims = [i(0), i(1), i(2)];
    let d = &b[1024 + i(23) as usize..];
    let data = match i(3) {
        0 => d.iter().map(|&v| v as i8 as f32).collect(),
        1 => d
            .chunks_exact(2)
            .map(|c| i16::from_le_bytes([c[0], c[1]]) as f32)
            .collect(),
        2 => d
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect(),
        6 => d
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]) as f32)
            .collect(),
        m => panic!(
            "{}: MRC mode {m} not handled by the test reader",
            p.display()
        ),
    };
    (dims, f(10) / dims[0] as f32, data)
}

/// Pearson correlation of two equally long series.
pub fn pearson(a: &[f32], b: &[f32]) -> f64 {
    let n = a.len() as f64;
    let ma = a.iter().map(|&v| v as f64).sum::<f64>() / n;
    let mb = b.iter().map(|&v| v as f64).sum::<f64>() / n;
    let (mut ab, mut aa, mut bb) = (0.0, 0.0, 0.0);
    for (&x, &y) in a.iter().zip(b) {
        let (dx, dy) = (x as f64 - ma, y as f64 - mb);
        ab += dx * dy;
        aa += dx * dx;
        bb += dy * dy;
    }
    ab / (aa * bb).sqrt()
}
