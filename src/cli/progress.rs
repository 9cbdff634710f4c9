//! How `imaged pull` shows the progress events of imaged's streaming `Pull`: one `indicatif` bar per layer
//! on a terminal ([`Bars`]), plain lines otherwise (logs, CI, pipes).
//!
//! Plain lines are throttled: a layer gets a line when its state changes, and otherwise at most one a
//! second while its byte count moves, so a log shows every transition without a line per 200 ms event.
//! The decision ([`line_due`]) takes the time as an argument, so it is tested without a clock.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use indicatif::ProgressDrawTarget;

use super::bars::Bars;
use super::layer_text::{short_digest, status};
use crate::proto::imaged::v1::{LayerProgress, LayerState, PullProgress};

/// The least time between two plain lines of one layer in the same state.
pub const LINE_INTERVAL: Duration = Duration::from_secs(1);

/// How `pull` shows progress on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    /// Live bars, redrawn in place: stderr is a terminal.
    Bars,
    /// Plain lines, one per change: stderr is a file or a pipe.
    Lines,
}

impl ProgressMode {
    /// [`ProgressMode::Bars`] when this process's stderr is a terminal, else [`ProgressMode::Lines`].
    pub fn for_stderr() -> Self {
        if std::io::stderr().is_terminal() {
            Self::Bars
        } else {
            Self::Lines
        }
    }
}

/// The plain line of a layer: `sha256:0123456789ab downloading 12.3MB/45.6MB`.
pub fn line(layer: &LayerProgress) -> String {
    format!("{} {}", short_digest(&layer.digest), status(layer))
}

/// What the last plain line of a layer showed, and when it was printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Printed {
    state: LayerState,
    done_bytes: u64,
    total_bytes: u64,
    at: Instant,
}

/// Whether `layer` gets a plain line at `now`, after `last` (`None`: it never had one): always for a new
/// layer or a new state; within a state, only when the bytes moved and [`LINE_INTERVAL`] has passed.
pub fn line_due(last: Option<&Printed>, layer: &LayerProgress, now: Instant) -> bool {
    let Some(last) = last else { return true };
    if last.state != layer.state() {
        return true;
    }
    let moved = (last.done_bytes, last.total_bytes) != (layer.done_bytes, layer.total_bytes);
    moved && now.saturating_duration_since(last.at) >= LINE_INTERVAL
}

/// Plain-line progress: remembers each layer's last line to throttle the next.
#[derive(Debug, Default)]
pub struct Lines {
    printed: HashMap<String, Printed>,
}

impl Lines {
    /// Writes the lines due at `now` for the layers of `progress`, in the order the service lists them.
    pub fn show(&mut self, progress: &PullProgress, now: Instant, err: &mut (dyn Write + Send)) -> std::io::Result<()> {
        for layer in &progress.layers {
            if line_due(self.printed.get(&layer.digest), layer, now) {
                writeln!(err, "{}", line(layer))?;
                let printed = Printed {
                    state: layer.state(),
                    done_bytes: layer.done_bytes,
                    total_bytes: layer.total_bytes,
                    at: now,
                };
                self.printed.insert(layer.digest.clone(), printed);
            }
        }
        Ok(())
    }
}

/// Either way of showing progress, chosen by [`ProgressMode`].
#[derive(Debug)]
pub enum Reporter {
    /// Bars on the terminal (stderr).
    Bars(Bars),
    /// Plain lines, to the `err` writer given to [`Reporter::show`].
    Lines(Lines),
}

impl Reporter {
    /// A reporter for `mode`; bars draw to this process's stderr.
    pub fn new(mode: ProgressMode) -> Self {
        match mode {
            ProgressMode::Bars => Self::Bars(Bars::new(ProgressDrawTarget::stderr())),
            ProgressMode::Lines => Self::Lines(Lines::default()),
        }
    }

    /// Shows one progress event received at `now`.
    pub fn show(&mut self, progress: &PullProgress, now: Instant, err: &mut (dyn Write + Send)) -> std::io::Result<()> {
        match self {
            Self::Bars(bars) => {
                bars.show(progress);
                Ok(())
            }
            Self::Lines(lines) => lines.show(progress, now, err),
        }
    }

    /// Ends the display when the pull is over.
    pub fn finish(&self, succeeded: bool) {
        if let Self::Bars(bars) = self {
            bars.finish(succeeded);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::layer_text::fixture::layer;

    #[test]
    fn lines_show_the_state_and_bytes() {
        assert_eq!(
            line(&layer(LayerState::Downloading, 12_345_678, 45_600_000)),
            "sha256:0123456789ab downloading 12.3MB/45.6MB"
        );
        assert_eq!(
            line(&layer(LayerState::Downloading, 1_500, 0)),
            "sha256:0123456789ab downloading 1.5kB"
        );
        assert_eq!(line(&layer(LayerState::Waiting, 0, 10)), "sha256:0123456789ab waiting");
        assert_eq!(line(&layer(LayerState::Done, 10, 10)), "sha256:0123456789ab done");
        assert_eq!(
            line(&layer(LayerState::Present, 0, 10)),
            "sha256:0123456789ab already present"
        );
    }

    #[test]
    fn a_line_is_due_for_a_new_layer_and_every_state_change() {
        let t0 = Instant::now();
        assert!(line_due(None, &layer(LayerState::Waiting, 0, 10), t0));
        let last = Printed {
            state: LayerState::Downloading,
            done_bytes: 5,
            total_bytes: 10,
            at: t0,
        };
        assert!(line_due(Some(&last), &layer(LayerState::Done, 10, 10), t0));
        assert!(line_due(Some(&last), &layer(LayerState::Waiting, 5, 10), t0));
    }

    #[test]
    fn within_a_state_a_line_is_due_once_a_second_and_only_if_the_bytes_moved() {
        let t0 = Instant::now();
        let last = Printed {
            state: LayerState::Downloading,
            done_bytes: 5,
            total_bytes: 10,
            at: t0,
        };
        let later = |ms| t0 + Duration::from_millis(ms);
        assert!(!line_due(
            Some(&last),
            &layer(LayerState::Downloading, 6, 10),
            later(999)
        ));
        assert!(line_due(
            Some(&last),
            &layer(LayerState::Downloading, 6, 10),
            later(1000)
        ));
        assert!(!line_due(
            Some(&last),
            &layer(LayerState::Downloading, 5, 10),
            later(5000)
        ));
        assert!(line_due(
            Some(&last),
            &layer(LayerState::Downloading, 5, 20),
            later(1000)
        ));
        // A clock that went backwards never makes a line due early.
        let future = Printed {
            at: later(2000),
            ..last
        };
        assert!(!line_due(Some(&future), &layer(LayerState::Downloading, 6, 10), t0));
    }

    #[test]
    fn lines_print_changes_and_throttle_byte_counts() {
        let t0 = Instant::now();
        let event = |layers: Vec<LayerProgress>| PullProgress {
            phase: "pulling".into(),
            layers,
        };
        let mut present = layer(LayerState::Present, 0, 7);
        present.digest = "sha256:ffffffffffffffffff".into();
        let steps = [
            (
                0,
                event(vec![layer(LayerState::Waiting, 0, 3_000_000), present.clone()]),
            ),
            (
                200,
                event(vec![
                    layer(LayerState::Downloading, 1_000_000, 3_000_000),
                    present.clone(),
                ]),
            ),
            (
                400,
                event(vec![
                    layer(LayerState::Downloading, 2_000_000, 3_000_000),
                    present.clone(),
                ]),
            ),
            (
                1300,
                event(vec![
                    layer(LayerState::Downloading, 2_500_000, 3_000_000),
                    present.clone(),
                ]),
            ),
            (
                1400,
                event(vec![layer(LayerState::Done, 3_000_000, 3_000_000), present]),
            ),
        ];
        let (mut lines, mut err) = (Lines::default(), Vec::new());
        for (ms, e) in &steps {
            lines.show(e, t0 + Duration::from_millis(*ms), &mut err).unwrap();
        }
        assert_eq!(
            String::from_utf8(err).unwrap(),
            "sha256:0123456789ab waiting\n\
             sha256:ffffffffffff already present\n\
             sha256:0123456789ab downloading 1MB/3MB\n\
             sha256:0123456789ab downloading 2.5MB/3MB\n\
             sha256:0123456789ab done\n"
        );
    }
}
