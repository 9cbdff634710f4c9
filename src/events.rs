//! What the image service announces to the bridges: an image was recorded (pulled, or asked for and
//! present), or removed (RemoveImage, GC, prune). Bridges publish and unpublish on these, and reconcile at
//! start, so the state on both sides converges after any crash (containerd's CRI plugin learns about
//! images from image events the same way).
//!
//! `recorded` is awaited before a PullImage answers, so the caller's next request to a runtime
//! (CreateContainer) finds the image there. A bridge that cannot reach its runtime logs, remembers the work
//! and returns: a runtime being down never fails a pull.

use std::sync::Arc;

use futures_util::future::BoxFuture;

use crate::metadata::ImageRecord;

/// Receives image events.
pub trait ImageEvents: Send + Sync {
    /// `rec` was recorded or is present and was asked for: make it usable on the other side.
    fn recorded<'a>(&'a self, rec: &'a Arc<ImageRecord>) -> BoxFuture<'a, ()>;
    /// `rec` was removed from the store.
    fn removed<'a>(&'a self, rec: &'a ImageRecord) -> BoxFuture<'a, ()>;
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
