//! `tomoflow runs`: the history of runs recorded in the store's journal, or one run in detail.

use super::{journal_path, open_store, user_error, Cli};
use crate::store::journal::{Journal, RunRecord};

/// Print the last `limit` runs, newest first, or with `id` that run in detail.
pub(super) fn runs(cli: &Cli, limit: usize, id: Option<u64>) -> i32 {
    let store = match open_store(cli) {
        Ok(s) => s,
        Err(e) => return user_error(e),
    };
    let j = match Journal::open(&journal_path(&store)) {
        Ok(j) => j,
        Err(e) => return user_error(e),
    };
    let runs = match j.runs(if id.is_some() { usize::MAX } else { limit }) {
        Ok(r) => r,
        Err(e) => return user_error(e),
    };
    let idle = store.is_idle();
    let status = |r: &RunRecord| {
        if r.status == "running" && idle {
            "interrupted".to_string()
        } else {
            r.status.clone()
        }
    };
    if let Some(id) = id {
        let Some(r) = runs.iter().find(|r| r.id == id) else {
            let ids: Vec<String> = runs.iter().rev().map(|r| r.id.to_string()).collect();
            return user_error(format!(
                "no run {id} in {} (runs: {})",
                store.root.display(),
                if ids.is_empty() {
                    "none".into()
                } else {
                    ids.join(", ")
                }
            ));
        };
        print_one(r, &status(r));
        return 0;
    }
    if runs.is_empty() {
        println!("no runs recorded in {}", store.root.display());
        return 0;
    }
    println!(
        "{:>4}  {:<20}  {:<11}  {:>8}  {:>5}  {:>6}  {:>6}  command",
        "id", "started (UTC)", "status", "wall", "ran", "cached", "failed"
    );
    for r in &runs {
        println!(
            "{:>4}  {:<20}  {:<11}  {:>8}  {:>5}  {:>6}  {:>6}  {}",
            r.id,
            utc(r.started),
            status(r),
            wall(r),
            r.ran,
            r.cached,
            r.failed,
            command(r)
        );
    }
    println!("`tomoflow runs ID` shows one run in detail.");
    0
}

/// One run, field by field.
fn print_one(r: &RunRecord, status: &str) {
    println!("run {}", r.id);
    println!("  workflow  {} ({})", r.workflow, r.file);
    println!("  command   {}", command(r));
    println!(
        "  params    {}",
        if r.sets.is_empty() {
            "(the workflow's defaults)".to_string()
        } else {
            r.sets.join(", ")
        }
    );
    println!("  started   {} UTC", utc(r.started));
    match r.ended {
        Some(e) => println!("  ended     {} UTC ({})", utc(e), wall(r)),
        None => println!("  ended     -"),
    }
    println!("  status    {status}");
    println!(
        "  nodes     {} ran, {} cached, {} failed",
        r.ran, r.cached, r.failed
    );
    if let Some(e) = &r.error {
        println!("  error     {e}");
    }
}

/// The run's wall time, or `-` while it has not ended.
fn wall(r: &RunRecord) -> String {
    r.ended
        .map(|e| format!("{:.1}s", e - r.started))
        .unwrap_or_else(|| "-".into())
}

/// The command that started the run.
fn command(r: &RunRecord) -> String {
    let mut c = format!("tomoflow run {}", r.file);
    for s in &r.sets {
        c.push_str(&format!(" --set {s}"));
    }
    c
}

/// Seconds since the Unix epoch as `YYYY-MM-DD HH:MM:SS` (UTC, proleptic Gregorian).
pub(super) fn utc(t: f64) -> String {
    let secs = t.max(0.0) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Days to civil date (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_seconds_become_utc_dates() {
        assert_eq!(utc(0.0), "1970-01-01 00:00:00");
        assert_eq!(utc(951_782_400.0), "2000-02-29 00:00:00");
        assert_eq!(utc(1_796_655_510.5), "2026-12-07 14:58:30");
    }
}
