//! `imaged pull`'s terminal progress: one `indicatif` bar per layer, redrawn in place on stderr.

use std::collections::HashMap;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::layer_text::{short_digest, status};
use crate::proto::imaged::v1::{LayerState, PullProgress};

/// A layer being fetched: digest, bar, bytes.
const BAR_TEMPLATE: &str = "{prefix} [{bar:30.cyan/blue}] {msg}";
/// A layer with nothing to measure yet (waiting) or at all (already present): digest and state.
const TEXT_TEMPLATE: &str = "{prefix} {msg}";

/// Terminal progress: one bar per layer, in the order layers first appear. `indicatif` limits redraws to
/// its own refresh rate, so every event can be applied as it comes.
#[derive(Debug)]
pub struct Bars {
    multi: MultiProgress,
    bars: HashMap<String, (ProgressBar, LayerState)>,
}

impl Bars {
    /// Bars drawn to `target` (stderr, or hidden in tests).
    pub fn new(target: ProgressDrawTarget) -> Self {
        Self {
            multi: MultiProgress::with_draw_target(target),
            bars: HashMap::new(),
        }
    }

    /// Brings each layer's bar up to date with `progress`; finished layers (done, present) stay shown.
    pub fn show(&mut self, progress: &PullProgress) {
        for layer in &progress.layers {
            let (bar, shown) = self.bars.entry(layer.digest.clone()).or_insert_with(|| {
                // Complete before it is added: adding draws it.
                let bar = ProgressBar::new(layer.total_bytes)
                    .with_style(style(layer.state()))
                    .with_prefix(short_digest(&layer.digest))
                    .with_message(status(layer))
                    .with_position(layer.done_bytes);
                (self.multi.add(bar), layer.state())
            });
            if *shown != layer.state() {
                bar.set_style(style(layer.state()));
                *shown = layer.state();
            }
            if layer.total_bytes > 0 {
                bar.set_length(layer.total_bytes);
            }
            bar.set_position(layer.done_bytes);
            match layer.state() {
                LayerState::Done | LayerState::Present => bar.finish_with_message(status(layer)),
                LayerState::Waiting | LayerState::Downloading => bar.set_message(status(layer)),
            }
        }
    }

    /// Ends the bars still running: finished if the pull succeeded, left as they stand if it failed.
    pub fn finish(&self, succeeded: bool) {
        for (bar, _) in self.bars.values().filter(|(bar, _)| !bar.is_finished()) {
            if succeeded { bar.finish() } else { bar.abandon() }
        }
    }
}

/// The bar style for a layer in `state`: a bar while bytes move or have moved, text otherwise.
fn style(state: LayerState) -> ProgressStyle {
    let template = match state {
        LayerState::Downloading | LayerState::Done => BAR_TEMPLATE,
        LayerState::Waiting | LayerState::Present => TEXT_TEMPLATE,
    };
    // The templates are constants, checked by a test; the default style is only a fallback.
    ProgressStyle::with_template(template)
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::layer_text::fixture::{DIGEST, layer};

    #[test]
    fn bar_templates_are_valid() {
        for template in [BAR_TEMPLATE, TEXT_TEMPLATE] {
            assert!(ProgressStyle::with_template(template).is_ok(), "{template}");
        }
    }

    #[test]
    fn bars_follow_each_layer_and_finish_done_and_present_ones() {
        let mut bars = Bars::new(ProgressDrawTarget::hidden());
        let mut present = layer(LayerState::Present, 0, 7);
        present.digest = "sha256:ffffffffffffffffff".into();
        bars.show(&PullProgress {
            phase: "pulling".into(),
            layers: vec![layer(LayerState::Downloading, 4, 10), present],
        });
        let (bar, _) = &bars.bars[DIGEST];
        assert_eq!((bar.position(), bar.length()), (4, Some(10)));
        assert_eq!(
            (bar.prefix().as_str(), bar.message().as_str()),
            ("sha256:0123456789ab", "downloading 4B/10B")
        );
        assert!(!bar.is_finished());
        let (other, _) = &bars.bars["sha256:ffffffffffffffffff"];
        assert!(other.is_finished());
        assert_eq!(other.message(), "already present");

        bars.show(&PullProgress {
            phase: "pulling".into(),
            layers: vec![layer(LayerState::Done, 10, 10)],
        });
        let (bar, state) = &bars.bars[DIGEST];
        assert!(bar.is_finished());
        assert_eq!((bar.message().as_str(), *state), ("done", LayerState::Done));
    }

    #[test]
    fn a_failed_pull_leaves_unfinished_bars_abandoned() {
        let mut bars = Bars::new(ProgressDrawTarget::hidden());
        bars.show(&PullProgress {
            phase: "pulling".into(),
            layers: vec![layer(LayerState::Downloading, 4, 10)],
        });
        bars.finish(false);
        let (bar, _) = &bars.bars[DIGEST];
        assert!(bar.is_finished());
        assert_eq!(bar.position(), 4);
    }
}
