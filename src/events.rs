//! What the image service announces to the bridges: an image was recorded (pulled, or asked for and
//! present), or removed (RemoveImage, GC, prune). Bridges publish and unpublish on these, and reconcile at
//! start, so the state on both sides converges after any crash (containerd's CRI plugin learns about
//! images from image events the same way).
//!
//! `recorded` is awaited before a PullImage answers, so the caller's next request to a runtime
//! (CreateContainer) finds the image there. A bridge that cannot reach its runtime logs, remembers the work
//! and returns: a runtime being down never fails a pull. `removed` is awaited before the image's blobs and
//! layers are discarded, so a runtime never lists an image whose files are gone.
//!
//! Who announces: `removed` comes from [`crate::stores::Stores::remove_image`], the one place a record goes
//! (RemoveImage, GC and prune all remove through it). `recorded` comes from `ensure`, the one place that
//! knows a caller is about to use the image: when the pull that recorded it ends (a coalesced pull
//! announces once, for all its callers), when a re-verification grants it, and when it answers from the
//! store (the runtime may have lost the image meanwhile).
//!
//! Several bridges may be on at once (containerd, containers-storage, the CRI runtime GC asks): [`Bridges`]
//! announces to each.

use std::collections::HashSet;
use std::sync::Arc;

use futures_util::future::BoxFuture;

use crate::digest::Digest;
use crate::metadata::ImageRecord;

/// Receives image events.
pub trait ImageEvents: Send + Sync {
    /// `rec` was recorded or is present and was asked for: make it usable on the other side.
    fn recorded<'a>(&'a self, rec: &'a Arc<ImageRecord>) -> BoxFuture<'a, ()>;
    /// `rec` was removed from the store.
    fn removed<'a>(&'a self, rec: &'a ImageRecord) -> BoxFuture<'a, ()>;
    /// The ids of the images that the runtime's containers use as far as this bridge sees them, asked
    /// before garbage collection plans (it refreshes what the bridge holds for them first). None by default.
    /// An error stops the collection: an image in use must never be taken for garbage.
    fn in_use(&self) -> BoxFuture<'_, Result<HashSet<Digest>, InUseError>> {
        Box::pin(async { Ok(HashSet::new()) })
    }
}

/// A runtime could not say which images its containers use.
#[derive(Debug, thiserror::Error)]
#[error("cannot list containers of the runtime at {endpoint}: {detail}; no image is collected until it answers")]
pub struct InUseError {
    /// Where the runtime was asked.
    pub endpoint: String,
    /// Why it did not answer.
    pub detail: String,
}

/// No bridge: events go nowhere.
#[derive(Debug, Default)]
pub struct NoEvents;

impl ImageEvents for NoEvents {
    fn recorded<'a>(&'a self, _rec: &'a Arc<ImageRecord>) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }

    fn removed<'a>(&'a self, _rec: &'a ImageRecord) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }
}

/// A bridge to a runtime, as the service holds it: it listens to image events, may run background work (a
/// reconciler), and says what is wrong on its side for `imaged fsck`. Bridges are built by the composition
/// root (`daemon`), which knows the configuration; the service only holds them as [`Bridges`].
pub trait Bridge: ImageEvents {
    /// Starts the bridge's background work, if it has any; the work stops when the handle is aborted.
    fn start(self: Arc<Self>) -> Option<tokio::task::JoinHandle<()>> {
        None
    }

    /// What is wrong on the bridge's side, for `imaged fsck` (nothing by default).
    fn check(&self) -> Vec<String> {
        Vec::new()
    }
}

/// Every bridge that is on: each event goes to all of them at once, and is over when each is done.
#[derive(Default)]
pub struct Bridges(Vec<Arc<dyn Bridge>>);

impl Bridges {
    /// The bridges that receive events.
    pub fn new(bridges: Vec<Arc<dyn Bridge>>) -> Bridges {
        Bridges(bridges)
    }

    /// Starts each bridge's background work; see [`Bridge::start`].
    pub fn start(&self) -> Vec<tokio::task::JoinHandle<()>> {
        self.0.iter().filter_map(|b| b.clone().start()).collect()
    }

    /// What each bridge finds wrong on its side; see [`Bridge::check`].
    pub fn check(&self) -> Vec<String> {
        self.0.iter().flat_map(|b| b.check()).collect()
    }
}

impl ImageEvents for Bridges {
    fn recorded<'a>(&'a self, rec: &'a Arc<ImageRecord>) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            futures_util::future::join_all(self.0.iter().map(|b| b.recorded(rec))).await;
        })
    }

    fn removed<'a>(&'a self, rec: &'a ImageRecord) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            futures_util::future::join_all(self.0.iter().map(|b| b.removed(rec))).await;
        })
    }

    fn in_use(&self) -> BoxFuture<'_, Result<HashSet<Digest>, InUseError>> {
        Box::pin(async move {
            let all = futures_util::future::join_all(self.0.iter().map(|b| b.in_use())).await;
            let mut ids = HashSet::new();
            for one in all {
                ids.extend(one?);
            }
            Ok(ids)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Records what it was told, and says one image is in use.
    struct Recorder {
        seen: Mutex<Vec<String>>,
        uses: Digest,
    }

    impl ImageEvents for Recorder {
        fn recorded<'a>(&'a self, rec: &'a Arc<ImageRecord>) -> BoxFuture<'a, ()> {
            self.seen.lock().unwrap().push(format!("recorded {}", rec.id));
            Box::pin(async {})
        }

        fn removed<'a>(&'a self, rec: &'a ImageRecord) -> BoxFuture<'a, ()> {
            self.seen.lock().unwrap().push(format!("removed {}", rec.id));
            Box::pin(async {})
        }

        fn in_use(&self) -> BoxFuture<'_, Result<HashSet<Digest>, InUseError>> {
            Box::pin(async { Ok([self.uses].into()) })
        }
    }

    impl Bridge for Recorder {}

    #[tokio::test]
    async fn every_bridge_hears_every_event_and_in_use_is_the_union() {
        let rec = Arc::new(ImageRecord::sample("a"));
        let (a, b) = (rec.id, Digest::of(b"b"));
        let one = Arc::new(Recorder {
            seen: Mutex::default(),
            uses: a,
        });
        let two = Arc::new(Recorder {
            seen: Mutex::default(),
            uses: b,
        });
        let bridges = Bridges::new(vec![one.clone(), two.clone()]);
        bridges.recorded(&rec).await;
        bridges.removed(&rec).await;
        for r in [&one, &two] {
            assert_eq!(
                *r.seen.lock().unwrap(),
                [format!("recorded {a}"), format!("removed {a}")]
            );
        }
        assert_eq!(bridges.in_use().await.unwrap(), [a, b].into());
        assert!(NoEvents.in_use().await.unwrap().is_empty());
        assert!(
            bridges.start().is_empty(),
            "no background work unless a bridge has some"
        );
    }
}
