//! `tomoflow verify`: check every store entry against its manifest's checksums.

use super::{open_store, user_error, Cli, EXIT_FAILED};

/// Print every corrupt entry; exit code 1 when there is one.
pub(super) fn verify(cli: &Cli) -> i32 {
    let store = match open_store(cli) {
        Ok(s) => s,
        Err(e) => return user_error(e),
    };
    let problems = store.verify();
    let n = store.keys().len();
    if problems.is_empty() {
        println!("{n} store entries checked: all manifests match their data");
        0
    } else {
        for p in &problems {
            println!("corrupt: {p}");
        }
        println!("{} problems in {n} entries; remove the affected entries (or run `tomoflow gc`) and rerun", problems.len());
        EXIT_FAILED
    }
}
