//! Progress bars: one for the whole run (node instances done of those to run, elapsed time and
//! an estimate of the time left) above one per running node (units done / total), drawn on
//! stderr when it is a terminal and `-q` is not given. Log lines go through [`LogWriter`], which lifts the bars
//! while it writes so that logs and bars never garble each other.

use crate::plugin::host::Progress;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::Write;
use std::sync::{Arc, Mutex};

/// The bars currently drawn, if any (logs must suspend them).
static ACTIVE: Mutex<Option<MultiProgress>> = Mutex::new(None);

/// A stderr writer for `tracing` that suspends the progress bars while it writes.
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let active = ACTIVE.lock().ok().and_then(|a| a.clone());
        match active {
            Some(m) => m
                .suspend(|| std::io::stderr().write_all(buf))
                .map(|_| buf.len()),
            None => std::io::stderr().write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// The set of bars of a run.
pub struct Bars {
    multi: Option<MultiProgress>,
    overall: Option<ProgressBar>,
}

/// The bar of one node.
#[derive(Clone)]
pub struct Bar(Option<ProgressBar>);

fn spinner_style() -> ProgressStyle {
    ProgressStyle::with_template("{prefix:>24.cyan} {spinner} {msg} {elapsed_precise}")
        .expect("valid template")
}

fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template("{prefix:>24.cyan} [{bar:30}] {pos}/{len} {elapsed_precise} {msg}")
        .expect("valid template")
        .progress_chars("=> ")
}

impl Progress for Bar {
    fn set(&self, done: u64, total: u64) {
        if let Some(b) = &self.0 {
            if b.length() != Some(total) {
                if b.length().unwrap_or(0) == 0 && total > 0 {
                    b.set_style(bar_style());
                }
                b.set_length(total);
            }
            b.set_position(done);
        }
    }
}

impl Bar {
    /// Count messages in and out, shown until the node reports its own progress.
    pub fn messages(&self, received: u64, emitted: u64) {
        if let Some(b) = &self.0 {
            b.set_message(format!("{received} in, {emitted} out"));
            b.tick();
        }
    }

    /// Remove the bar.
    pub fn finish(&self) {
        if let Some(b) = &self.0 {
            b.finish_and_clear();
        }
    }
}

impl Bars {
    /// Bars on stderr, or none; `to_run` node instances will run.
    pub fn new(enabled: bool, to_run: u64) -> Bars {
        let multi = enabled.then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        if let Ok(mut a) = ACTIVE.lock() {
            a.clone_from(&multi);
        }
        let overall = multi.as_ref().map(|m| {
            let b = m.add(ProgressBar::new(to_run));
            b.set_style(
                ProgressStyle::with_template(
                    "{prefix:>24.bold} [{bar:30}] {pos}/{len} nodes {elapsed_precise}, about {eta} left",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            b.set_prefix("run");
            b.enable_steady_tick(std::time::Duration::from_millis(500));
            b
        });
        Bars { multi, overall }
    }

    /// One more node instance ended.
    pub fn node_done(&self) {
        if let Some(b) = &self.overall {
            b.inc(1);
        }
    }

    /// Add a bar for a node.
    pub fn add(&self, label: &str) -> Arc<Bar> {
        let Some(m) = &self.multi else {
            return Arc::new(Bar(None));
        };
        let b = m.add(ProgressBar::new(0));
        b.set_style(spinner_style());
        b.set_message("starting");
        b.enable_steady_tick(std::time::Duration::from_millis(200));
        let short: String = if label.chars().count() > 24 {
            let tail: String = label
                .chars()
                .rev()
                .take(23)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            format!("…{tail}")
        } else {
            label.to_string()
        };
        b.set_prefix(short);
        Arc::new(Bar(Some(b)))
    }

    /// Remove every bar.
    pub fn clear(&self) {
        if let Some(b) = &self.overall {
            b.finish_and_clear();
        }
        if let Some(m) = &self.multi {
            let _ = m.clear();
        }
        if let Ok(mut a) = ACTIVE.lock() {
            *a = None;
        }
    }
}
