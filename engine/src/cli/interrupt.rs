//! Ctrl-C and SIGTERM during a run: say how to resume, then stop.
//!
//! Stopping at once loses nothing a rerun would not redo: an entry is complete only when its
//! manifest exists, the store lock is released by the operating system with the process, and the
//! same command resumes from the completed entries (docs/reliability.md).

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use std::path::Path;

/// Watch for SIGINT and SIGTERM for the rest of the process: on the first, print how to resume
/// and exit with 130 (SIGINT) or 143 (SIGTERM), as a shell reports a process those signals
/// ended.
pub(super) fn exit_with_resume_hint(store: &Path) {
    let Ok(mut signals) = Signals::new([SIGINT, SIGTERM]) else {
        return;
    };
    let hint = resume_hint(store, &command_line(std::env::args()));
    let _ = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Some(sig) = signals.forever().next() {
                let (what, code) = if sig == SIGINT {
                    ("interrupted (Ctrl-C)", 130)
                } else {
                    ("terminated (SIGTERM)", 143)
                };
                eprintln!("\n{what}: {hint}");
                std::process::exit(code);
            }
        });
}

/// What to tell a user whose run stopped early.
fn resume_hint(store: &Path, command: &str) -> String {
    format!(
        "completed nodes are kept in the store {}; run the same command again to resume:\n  {command}",
        store.display()
    )
}

/// The command line as a shell would take it back: arguments with spaces or quotes are quoted.
fn command_line(args: impl Iterator<Item = String>) -> String {
    args.map(|a| {
        let plain = !a.is_empty()
            && a.chars()
                .all(|c| c.is_alphanumeric() || "-_./=:,@%+".contains(c));
        if plain {
            a
        } else {
            format!("'{}'", a.replace('\'', r"'\''"))
        }
    })
    .collect::<Vec<_>>()
    .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_quotes_what_a_shell_would_split() {
        let args = [
            "tomoflow", "run", "wf.yaml", "--set", "name=a b", "--set", "x='y'",
        ];
        assert_eq!(
            command_line(args.iter().map(|s| s.to_string())),
            r#"tomoflow run wf.yaml --set 'name=a b' --set 'x='\''y'\'''"#
        );
        let h = resume_hint(Path::new(".tomoflow"), "tomoflow run wf.yaml");
        assert!(h.contains("run the same command again to resume:\n  tomoflow run wf.yaml"));
    }
}
