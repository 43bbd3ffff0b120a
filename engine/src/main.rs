//! The `tomoflow` binary: see `tomoflow --help`.

fn main() {
    std::process::exit(tomoflow::cli::main());
}
