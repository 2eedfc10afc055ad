//! The model-load progress bar.

use indicatif::{ProgressBar, ProgressStyle};

/// A bar on stderr from 0 to 100%, or nothing when progress is off.
pub struct LoadBar(Option<ProgressBar>);

impl LoadBar {
    /// A bar labelled with the model file, if `on`.
    pub fn new(on: bool, label: &str) -> Self {
        Self(on.then(|| {
            let bar = ProgressBar::new(100);
            let style = ProgressStyle::with_template("loading {msg} [{bar:40}] {pos:>3}%")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
            bar.set_style(style);
            bar.set_message(label.to_string());
            bar
        }))
    }

    /// Moves the bar to `fraction` (0..=1); always lets the load go on.
    pub fn set(&self, fraction: f32) -> bool {
        if let Some(bar) = &self.0 {
            bar.set_position((fraction.clamp(0.0, 1.0) * 100.0) as u64);
            if fraction >= 1.0 {
                bar.finish();
            }
        }
        true
    }
}
