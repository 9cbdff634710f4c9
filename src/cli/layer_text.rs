//! A layer's progress in words, shared by both ways `imaged pull` shows it: the terminal bars
//! ([`super::bars`]) and the plain lines ([`super::progress`]). It sits below both, so neither imports
//! the other for its text.

use super::output::human_size;
use crate::proto::imaged::v1::{LayerProgress, LayerState};

/// Hex characters of a layer digest shown, as `docker pull` does.
const SHORT_DIGEST_HEX: usize = 12;

/// `sha256:` and the first 12 hex characters of a digest; a digest without an algorithm is cut alike.
pub fn short_digest(digest: &str) -> String {
    let (algorithm, hex) = digest.split_once(':').map_or(("", digest), |(a, h)| (a, h));
    let hex: String = hex.chars().take(SHORT_DIGEST_HEX).collect();
    match algorithm {
        "" => hex,
        a => format!("{a}:{hex}"),
    }
}

/// A layer's state in words: `waiting`, `downloading 12.3MB/45.6MB` (just the bytes done while the size
/// is unknown), `done`, `already present`.
pub fn status(layer: &LayerProgress) -> String {
    match layer.state() {
        LayerState::Waiting => "waiting".to_string(),
        LayerState::Downloading if layer.total_bytes > 0 => format!(
            "downloading {}/{}",
            human_size(layer.done_bytes),
            human_size(layer.total_bytes)
        ),
        LayerState::Downloading => format!("downloading {}", human_size(layer.done_bytes)),
        LayerState::Done => "done".to_string(),
        LayerState::Present => "already present".to_string(),
    }
}

/// The layer the progress tests of this folder describe, in one place.
#[cfg(test)]
pub mod fixture {
    use crate::proto::imaged::v1::{LayerProgress, LayerState};

    /// The digest of [`layer`]'s layer; its short form is `sha256:0123456789ab`.
    pub const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    /// A layer of [`DIGEST`] in `state`, with `done` of `total` bytes.
    pub fn layer(state: LayerState, done: u64, total: u64) -> LayerProgress {
        LayerProgress {
            digest: DIGEST.to_string(),
            done_bytes: done,
            total_bytes: total,
            state: state.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixture::{DIGEST, layer};
    use super::*;

    #[test]
    fn short_digest_keeps_the_algorithm_and_12_hex_chars() {
        assert_eq!(short_digest(DIGEST), "sha256:0123456789ab");
        assert_eq!(short_digest("0123456789abcdef"), "0123456789ab");
        assert_eq!(short_digest("sha256:abc"), "sha256:abc");
    }

    #[test]
    fn an_unknown_state_number_reads_as_waiting() {
        let mut l = layer(LayerState::Waiting, 0, 0);
        l.state = 99;
        assert_eq!(status(&l), "waiting");
    }
}
