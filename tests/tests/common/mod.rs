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
