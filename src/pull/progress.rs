//! Progress of one pull: per-layer bytes, the phase, and when bytes last moved (for the progress
//! timeout). Shared by every caller joined to the pull; watchers are woken on every change.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::digest::Digest;

/// What a layer is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerState {
    /// Not started.
    Waiting,
    /// Bytes are arriving.
    Downloading,
    /// Fetched, verified and applied.
    Done,
    /// Already in the store.
    Present,
}

/// One layer's progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerProgress {
    /// The layer blob.
    pub digest: Digest,
    /// Bytes received.
    pub done: u64,
    /// Bytes announced by the manifest.
    pub total: u64,
    /// State.
    pub state: LayerState,
}

/// A moment's view of a pull.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProgressView {
    /// `queued`, `resolving` or `pulling`.
    pub phase: &'static str,
    /// The layers, base first, once the manifest is known.
    pub layers: Vec<LayerProgress>,
}

/// The live progress of a pull.
#[derive(Debug)]
pub struct Progress {
    state: Mutex<ProgressView>,
    started: Instant,
    /// Nanoseconds after `started` when something last advanced.
    last_advance: AtomicU64,
    downloaded: AtomicU64,
    /// Parts of the pull queued behind others (see [`Progress::queued`]).
    queued: AtomicUsize,
    changed: watch::Sender<u64>,
}

/// While held, the pull counts as waiting in a queue, not standing still; see [`Progress::queued`].
#[must_use = "the pull counts as queued only while the guard is held"]
pub struct Queued<'a>(&'a Progress);

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.queued.fetch_sub(1, Ordering::Relaxed);
        self.0.advance();
    }
}

impl Default for Progress {
    fn default() -> Self {
        Progress {
            state: Mutex::new(ProgressView {
                phase: "queued",
                layers: Vec::new(),
            }),
            started: Instant::now(),
            last_advance: AtomicU64::new(0),
            downloaded: AtomicU64::new(0),
            queued: AtomicUsize::new(0),
            changed: watch::channel(0).0,
        }
    }
}

impl Progress {
    fn update(&self, f: impl FnOnce(&mut ProgressView)) {
        f(&mut self.state.lock().unwrap_or_else(|p| p.into_inner()));
        self.advance();
        self.changed.send_modify(|v| *v += 1);
    }

    /// Notes that the pull moved on (a response arrived, a layer finished).
    pub fn advance(&self) {
        self.last_advance
            .store(self.started.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }

    /// Sets the phase.
    pub fn phase(&self, phase: &'static str) {
        self.update(|s| s.phase = phase);
    }

    /// Lists the layers (all waiting).
    pub fn layers(&self, layers: impl IntoIterator<Item = (Digest, u64)>) {
        let layers = layers.into_iter().map(|(digest, total)| LayerProgress {
            digest,
            done: 0,
            total,
            state: LayerState::Waiting,
        });
        self.update(|s| {
            s.phase = "pulling";
            s.layers = layers.collect();
        });
    }

    /// Sets a layer's state.
    pub fn layer_state(&self, digest: &Digest, state: LayerState) {
        self.update(|s| {
            for l in s.layers.iter_mut().filter(|l| l.digest == *digest) {
                l.state = state;
                if matches!(state, LayerState::Done | LayerState::Present) {
                    l.done = l.total;
                }
            }
        });
    }

    /// Counts `n` bytes received for a layer (or for a config or other blob, when not listed).
    pub fn bytes(&self, digest: &Digest, n: u64) {
        self.downloaded.fetch_add(n, Ordering::Relaxed);
        self.update(|s| {
            for l in s.layers.iter_mut().filter(|l| l.digest == *digest) {
                l.done += n;
                l.state = LayerState::Downloading;
            }
        });
    }

    /// Bytes downloaded so far.
    pub fn downloaded(&self) -> u64 {
        self.downloaded.load(Ordering::Relaxed)
    }

    /// Marks the pull as queued behind other work (a pull slot, a rate token, a download slot, a layer another
    /// pull is building) until the guard is dropped: waiting in a queue is not standing still, for the
    /// progress timeout and for requests deciding whether to join.
    pub fn queued(&self) -> Queued<'_> {
        self.queued.fetch_add(1, Ordering::Relaxed);
        Queued(self)
    }

    /// How long nothing has advanced (zero while a part of the pull is queued).
    pub fn idle(&self) -> Duration {
        if self.queued.load(Ordering::Relaxed) > 0 {
            return Duration::ZERO;
        }
        let last = Duration::from_nanos(self.last_advance.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(last)
    }

    /// The current view.
    pub fn view(&self) -> ProgressView {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// A receiver that changes whenever the progress does.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracks_layers_and_idle_time() {
        let p = Progress::default();
        let (a, b) = (Digest::of(b"a"), Digest::of(b"b"));
        p.layers([(a, 10), (b, 20)]);
        p.bytes(&a, 4);
        p.layer_state(&b, LayerState::Present);
        let v = p.view();
        assert_eq!(v.phase, "pulling");
        assert_eq!((v.layers[0].done, v.layers[0].state), (4, LayerState::Downloading));
        assert_eq!((v.layers[1].done, v.layers[1].state), (20, LayerState::Present));
        assert_eq!(p.downloaded(), 4);
        assert!(p.idle() < Duration::from_secs(1));
    }

    #[test]
    fn a_queued_pull_is_not_idle() {
        let p = Progress::default();
        std::thread::sleep(Duration::from_millis(30));
        assert!(p.idle() >= Duration::from_millis(30));
        let q = p.queued();
        assert_eq!(p.idle(), Duration::ZERO);
        drop(q);
        assert!(
            p.idle() < Duration::from_millis(30),
            "leaving the queue counts as moving on"
        );
    }
}
