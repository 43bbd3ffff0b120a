//! Progress bars: one per running node (units done / total), drawn on stderr when it is a
//! terminal and `--progress` is not off.

use crate::plugin::host::Progress;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::sync::Arc;

/// The set of bars of a run.
pub struct Bars {
    multi: Option<MultiProgress>,
}

/// The bar of one node.
#[derive(Clone)]
pub struct Bar(Option<ProgressBar>);

impl Progress for Bar {
    fn set(&self, done: u64, total: u64) {
        if let Some(b) = &self.0 {
            if b.length() != Some(total) {
                b.set_length(total);
            }
            b.set_position(done);
        }
    }
}

impl Bar {
    /// Remove the bar.
    pub fn finish(&self) {
        if let Some(b) = &self.0 {
            b.finish_and_clear();
        }
    }
}

impl Bars {
    /// Bars on stderr, or none.
    pub fn new(enabled: bool) -> Bars {
        let multi = enabled.then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        Bars { multi }
    }

    /// Add a bar for a node.
    pub fn add(&self, label: &str) -> Arc<Bar> {
        let Some(m) = &self.multi else {
            return Arc::new(Bar(None));
        };
        let b = m.add(ProgressBar::new(0));
        b.set_style(
            ProgressStyle::with_template(
                "{prefix:>24.cyan} [{bar:30}] {pos}/{len} {elapsed_precise}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
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
        if let Some(m) = &self.multi {
            let _ = m.clear();
        }
    }
}
