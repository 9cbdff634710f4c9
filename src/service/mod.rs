//! The image service in domain types: what the CRI RPCs and imaged's own RPCs do, without gRPC.
//!
//! `server/` turns protobuf requests into calls here; everything below is testable without tonic.

mod error;
mod fsck;
mod housekeeping;
mod lookup;
mod open;
mod pin;
mod verbose;

use std::path::PathBuf;
use std::sync::Arc;

pub use error::ServiceError;
pub use fsck::{FsckReport, leftovers as fsck_leftovers, resumable_downloads};
pub use housekeeping::Housekeeping;
pub use open::Opened;
pub use pin::PullTicket;

use crate::clock::now_ns;
use crate::ensure::{Caller, Ensurer};
use crate::gc::run::{Collector, GcOutcome, PruneOutcome};
use crate::metadata::ImageRecord;
use crate::metrics::Metrics;
use crate::pinned::Pinned;
use crate::reference::ImageRef;
use crate::registry::auth::Credentials;
use crate::stores::Stores;

/// The store's filesystem usage, as `ImageFsInfo` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsUsage {
    /// The store's root directory.
    pub mountpoint: PathBuf,
    /// Bytes used by the store.
    pub used_bytes: u64,
    /// Inodes used by the store.
    pub inodes_used: u64,
    /// When measured (Unix nanoseconds).
    pub timestamp_ns: i64,
}

/// Who a pull is for, from `PodSandboxConfig.metadata`: the back-off key and the events name the pod.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodInfo {
    /// Pod name.
    pub name: String,
    /// Pod namespace.
    pub namespace: String,
    /// Pod UID.
    pub uid: String,
}

/// A pull request in domain terms.
#[derive(Debug, Clone, Default)]
pub struct PullRequest {
    /// The image as the caller wrote it.
    pub image: String,
    /// Credentials from the request, if any.
    pub creds: Option<Credentials>,
    /// The pod the pull is for.
    pub pod: Option<PodInfo>,
    /// `ImageSpec.runtime_handler`.
    pub runtime_handler: String,
    /// `ImageSpec.image_ref` (Kubernetes 1.36): the digest the pull is pinned to, if not empty (see
    /// [`PullTicket`] and `service/pin.rs`).
    pub image_ref: String,
}

/// The image service.
pub struct ImageService {
    root: PathBuf,
    stores: Stores,
    ensurer: Ensurer,
    collector: Collector,
    gc_policy: crate::gc::policy::GcPolicy,
    pinned: Arc<Pinned>,
    metrics: Arc<Metrics>,
    runtime_handlers: Vec<String>,
    snapshotter: Arc<crate::snapshotter::Snapshotter>,
    bridges: Arc<crate::events::Bridges>,
    image_id_format: crate::config::ImageIdFormat,
}

impl ImageService {
    /// Pulls an image (as policy, back-off and limits allow) and returns its record, whose id is the
    /// `image_ref` kubelet gets.
    pub async fn pull(&self, req: PullRequest) -> Result<Arc<ImageRecord>, ServiceError> {
        self.begin_pull(req)?.finish().await
    }

    /// Starts a pull and returns its ticket (for progress streaming); [`PullTicket::finish`] gives the
    /// result.
    pub fn begin_pull(&self, req: PullRequest) -> Result<PullTicket<'_>, ServiceError> {
        self.check_runtime_handler(&req.runtime_handler)?;
        let (image, pin) = self.pinned(ImageRef::parse(&req.image)?, &req.image_ref)?;
        let pod = req.pod.unwrap_or_default();
        let ticket = self.ensurer.begin(
            image,
            req.creds,
            Caller {
                pod: pod.name,
                namespace: pod.namespace,
                uid: pod.uid,
            },
        );
        Ok(PullTicket {
            ticket,
            image: req.image,
            pin,
        })
    }

    /// The image `name` refers to (an id, a short id, a tag, a repo digest), or `None`. Counts as a use of
    /// the image: kubelet asks before every container start.
    pub fn status(&self, name: &str) -> Result<Option<Arc<ImageRecord>>, ServiceError> {
        let rec = self.lookup(name)?;
        if let Some(r) = &rec {
            self.stores.metadata.touch(&r.id, now_ns());
        }
        Ok(rec)
    }

    /// Whether the image is pinned (configured patterns, e.g. the sandbox image).
    pub fn is_pinned(&self, rec: &ImageRecord) -> bool {
        self.pinned.is_pinned(rec)
    }

    /// The verbose `info` map of `ImageStatus`: `{"info": <JSON>}`.
    pub fn verbose_info(&self, rec: &ImageRecord) -> Result<std::collections::HashMap<String, String>, ServiceError> {
        verbose::info(&self.stores, rec)
    }

    /// Every image and the metadata generation they belong to (see [`ImageService::list_generation`]).
    pub fn list_all(&self) -> (u64, Vec<Arc<ImageRecord>>) {
        self.stores.metadata.list_with_generation()
    }

    /// Changes whenever the set of images, their names or pins change: what [`ImageService::list_all`]
    /// returns is the same for the same generation.
    pub fn list_generation(&self) -> u64 {
        self.stores.metadata.generation()
    }

    /// All images, or the one `filter` refers to.
    pub fn list(&self, filter: Option<&str>) -> Result<Vec<Arc<ImageRecord>>, ServiceError> {
        match filter.filter(|f| !f.is_empty()) {
            Some(f) => Ok(self.lookup(f)?.into_iter().collect()),
            None => Ok(self.stores.metadata.list()),
        }
    }

    /// Removes the image `name` refers to, with all its tags, and every blob and snapshot no other image
    /// needs. Removing an absent image succeeds.
    pub async fn remove(&self, name: &str) -> Result<(), ServiceError> {
        let Some(rec) = self.lookup(name)? else {
            return Ok(());
        };
        let removal = self
            .stores
            .remove_image(self.bridges.as_ref(), &rec.id, |_| true)
            .await?;
        if let Some(r) = removal {
            tracing::info!(image = %name, id = %r.record.id, freed_bytes = r.freed_bytes, "Removed");
        }
        Ok(())
    }

    /// Runs the disk-threshold garbage collection now.
    pub async fn gc(&self, dry_run: bool) -> Result<GcOutcome, ServiceError> {
        let out = self.collector.collect(&self.gc_policy, dry_run, now_ns()).await?;
        if !dry_run {
            self.metrics.gc_runs.inc();
            self.metrics.gc_images_removed.inc_by(out.removed.len() as u64);
            self.metrics.gc_freed_bytes.inc_by(out.freed_bytes);
        }
        Ok(out)
    }

    /// Prunes by the reachability graph.
    pub async fn prune(
        &self,
        options: &crate::gc::prune::PruneOptions,
        dry_run: bool,
    ) -> Result<PruneOutcome, ServiceError> {
        let out = self.collector.prune(options, dry_run, now_ns()).await?;
        if !dry_run {
            self.metrics.gc_runs.inc();
            self.metrics.gc_images_removed.inc_by(out.plan.images.len() as u64);
            self.metrics.gc_freed_bytes.inc_by(out.freed_bytes);
        }
        Ok(out)
    }

    /// The store's usage, kept incrementally (no tree walk): blobs, layers, the metadata database, and
    /// the snapshots runtimes keep through the snapshotter (containers' writable layers included, as
    /// containerd counts them; those are measured in the background at most every 10 s).
    pub fn fs_usage(&self) -> FsUsage {
        let (blob_bytes, blob_inodes) = self.stores.content.usage();
        let (snap_bytes, snap_inodes) = self.stores.layers.usage();
        let (runtime, stale) = self.snapshotter.usage_total();
        if stale && let Ok(rt) = tokio::runtime::Handle::try_current() {
            let s = self.snapshotter.clone();
            rt.spawn_blocking(move || s.refresh_active_usage());
        }
        let db = std::fs::metadata(self.stores.metadata.path())
            .map(|m| std::os::unix::fs::MetadataExt::blocks(&m) * 512)
            .unwrap_or(0);
        FsUsage {
            mountpoint: self.root.clone(),
            used_bytes: blob_bytes + snap_bytes + db + runtime.bytes,
            inodes_used: blob_inodes + snap_inodes + 1 + runtime.inodes,
            timestamp_ns: now_ns(),
        }
    }

    /// Starts the bridges' background work (their reconcilers), if any; each stops when its handle is
    /// aborted.
    pub fn start_bridges(&self) -> Vec<tokio::task::JoinHandle<()>> {
        self.bridges.start()
    }

    /// The id clients see for `rec` (`Image.id`, `image_ref`), in the configured format.
    pub fn image_id(&self, rec: &ImageRecord) -> String {
        self.image_id_format.render(&rec.id)
    }

    /// The snapshotter runtimes build containers' root filesystems with.
    pub fn snapshotter(&self) -> &Arc<crate::snapshotter::Snapshotter> {
        &self.snapshotter
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Updates the gauges read at scrape time.
    pub fn refresh_metrics(&self) {
        self.metrics.store_bytes.set(self.fs_usage().used_bytes as i64);
        self.metrics.images.set(self.stores.metadata.list().len() as i64);
    }

    fn check_runtime_handler(&self, handler: &str) -> Result<(), ServiceError> {
        if handler.is_empty() || self.runtime_handlers.iter().any(|h| h == handler) {
            Ok(())
        } else {
            Err(ServiceError::UnknownRuntimeHandler(handler.to_string()))
        }
    }
}
