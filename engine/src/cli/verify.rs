//! `tomoflow verify`: check every store entry against its manifest's checksums; `--repair`
//! removes the damaged ones so that the next run redoes them.

use super::{open_store, user_error, Cli, EXIT_FAILED};

/// Print every corrupt entry; exit code 1 when there is one (0 after a successful repair).
pub(super) fn verify(cli: &Cli, repair: bool) -> i32 {
    let mut store = match open_store(cli) {
        Ok(s) => s,
        Err(e) => return user_error(e),
    };
    if repair {
        if let Err(e) = store.lock() {
            return user_error(e);
        }
    }
    let c = store.check();
    let incomplete = match c.incomplete {
        0 => String::new(),
        n => format!("; {n} incomplete (being written or left by a killed run: not checked, `tomoflow gc` removes them)"),
    };
    if c.problems.is_empty() {
        println!(
            "{} complete store entries checked: all manifests match their data{incomplete}",
            c.complete
        );
        return 0;
    }
    for (_, p) in &c.problems {
        println!("corrupt: {p}");
    }
    let mut keys: Vec<&str> = c.problems.iter().map(|(k, _)| k.as_str()).collect();
    keys.dedup();
    if !repair {
        println!(
            "{} problems in {} of {} complete entries{incomplete}; run `tomoflow verify --repair` to remove them, then rerun the workflow to redo them",
            c.problems.len(),
            keys.len(),
            c.complete
        );
        return EXIT_FAILED;
    }
    let mut failed = 0;
    for k in &keys {
        match store.remove_entry(k) {
            Ok(()) => println!("removed {k}: the next run that needs it redoes it"),
            Err(e) => {
                println!("cannot remove {k}: {e}");
                failed += 1;
            }
        }
    }
    if failed == 0 {
        0
    } else {
        EXIT_FAILED
    }
}
