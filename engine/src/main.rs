//! The `tomoflow` binary: see `tomoflow --help`.

fn main() {
    restore_sigpipe();
    std::process::exit(tomoflow::cli::main());
}

/// Rust ignores SIGPIPE, which turns `tomoflow plugins | head` into a panic on a closed pipe;
/// restore the default so that the process ends quietly like any Unix tool.
fn restore_sigpipe() {
    #[cfg(unix)]
    {
        extern "C" {
            fn signal(signum: i32, handler: usize) -> usize;
        }
        const SIGPIPE: i32 = 13;
        const SIG_DFL: usize = 0;
        // SAFETY: setting a signal disposition to its default has no preconditions.
        unsafe {
            signal(SIGPIPE, SIG_DFL);
        }
    }
}
