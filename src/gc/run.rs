//! Running GC, prune and the orphan sweep against the real stores: gather the policies' inputs (images,
//! exact sizes, filesystem usage, images in use, pins), execute their plans, measure what was freed.
//!
//! One operation at a time (a mutex). Pulls in flight are never harmed: their blobs and snapshots are
//! leased, leased items are left out of every plan, and the stores never delete what a lease or a record
//! protects at the moment of deletion (see [`crate::lease`]). A victim is removed only if it is unchanged
//! since the plan: a pull, an ImageStatus or a rename in between keeps it.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use super::policy::{self, GcImage, GcPolicy, PolicyError, ResourceId, Usage};
use super::prune::{self, PruneImage, PruneOptions, TagRevision};
use crate::digest::Digest;
use crate::error::{Classify, ErrorKind};
use crate::lease::Item;
use crate::metadata::ImageRecord;
use crate::pinned::Pinned;
use crate::stores::Stores;

mod resources;
use resources::{digest_of, resources_of};

/// Why a GC or prune run could not be done.
#[derive(Debug, thiserror::Error)]
pub enum GcError {
    /// A runtime could not say which images are in use.
    #[error(transparent)]
    Runtime(#[from] crate::events::InUseError),
    /// The policy or the filesystem figures are invalid.
    #[error("image garbage collection: {0}")]
    Policy(#[from] PolicyError),
    /// The filesystem holding the store could not be measured.
    #[error("cannot measure the filesystem of {path}: {source}")]
    Statvfs {
        /// The store root.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Removing an image failed.
    #[error("removing image {id}: {detail}")]
    Remove {
        /// The image.
        id: String,
        /// Why.
        detail: String,
    },
}

impl Classify for GcError {
    fn kind(&self) -> ErrorKind {
        match self {
            GcError::Runtime(_) => ErrorKind::Unavailable,
            GcError::Policy(_) => ErrorKind::InvalidArgument,
            GcError::Statvfs { .. } | GcError::Remove { .. } => ErrorKind::Internal,
        }
    }
}

pub use super::outcome::{GcOutcome, PruneOutcome, Removed};

/// Runs GC, prune and sweeps over the stores.
pub struct Collector {
    stores: Stores,
    root: PathBuf,
    pinned: Arc<Pinned>,
    running: tokio::sync::Mutex<()>,
    events: Arc<dyn crate::events::ImageEvents>,
}

impl Collector {
    /// A collector over `stores`, whose filesystem is the one holding `root`; removals are announced to
    /// `events`.
    pub fn new(
        stores: Stores,
        root: PathBuf,
        pinned: Arc<Pinned>,
        events: Arc<dyn crate::events::ImageEvents>,
    ) -> Collector {
        Collector {
            stores,
            root,
            pinned,
            running: tokio::sync::Mutex::new(()),
            events,
        }
    }

    /// Capacity and used bytes of the filesystem holding the store.
    pub fn usage(&self) -> Result<Usage, GcError> {
        let s = rustix::fs::statvfs(&self.root).map_err(|e| GcError::Statvfs {
            path: self.root.clone(),
            source: e.into(),
        })?;
        let capacity = s.f_blocks * s.f_frsize;
        let available = s.f_bavail * s.f_frsize;
        Ok(Usage {
            capacity_bytes: capacity,
            used_bytes: capacity.saturating_sub(available),
        })
    }

    /// Threshold and max-age GC with `policy`, now.
    pub async fn collect(&self, policy: &GcPolicy, dry_run: bool, now_ns: i64) -> Result<GcOutcome, GcError> {
        let _one = self.running.lock().await;
        let in_use = self.in_use().await?;
        let images = self.stores.metadata.list();
        let (gc_images, sizes) = self.inputs(&images, &in_use);
        let usage = self.usage()?;
        let plan = policy::plan(&gc_images, &sizes, usage, policy, now_ns)?;
        let shortfall = plan.shortfall.as_ref().map(|s| s.why.clone());
        if let Some(why) = &shortfall {
            tracing::warn!(reason = "FreeDiskSpaceFailed", "{why}");
        }
        let by_id: HashMap<String, &Arc<ImageRecord>> = images.iter().map(|r| (r.id.to_string(), r)).collect();
        let mut out = GcOutcome {
            target_bytes: plan.target_bytes,
            capacity_bytes: usage.capacity_bytes,
            used_before: usage.used_bytes,
            shortfall,
            ..Default::default()
        };
        for v in &plan.victims {
            let Some(rec) = by_id.get(&v.id) else { continue };
            let freed = if dry_run {
                v.frees_bytes
            } else {
                match self.remove_planned(rec).await? {
                    Some(freed) => freed,
                    None => continue, // Used since the plan: it stays.
                }
            };
            out.freed_bytes += freed;
            out.removed.push(Removed {
                id: v.id.clone(),
                repo_tags: rec.repo_tags.clone(),
                reason: v.reason.as_str().to_string(),
                freed_bytes: freed,
            });
            tracing::info!(image = %v.id, reason = v.reason.as_str(), freed_bytes = freed, dry_run, "image garbage-collected");
        }
        out.used_after = if dry_run {
            usage.used_bytes.saturating_sub(out.freed_bytes)
        } else {
            self.usage()?.used_bytes
        };
        Ok(out)
    }

    /// OpenShift-style prune with `options`, now.
    pub async fn prune(&self, options: &PruneOptions, dry_run: bool, now_ns: i64) -> Result<PruneOutcome, GcError> {
        let _one = self.running.lock().await;
        let in_use = self.in_use().await?;
        let images = self.stores.metadata.list();
        let prune_images: Vec<PruneImage> = images
            .iter()
            .map(|r| PruneImage {
                id: r.id.to_string(),
                created_ns: r
                    .created
                    .as_deref()
                    .and_then(crate::clock::rfc3339_ns)
                    .unwrap_or(r.first_seen_ns),
                first_seen_ns: r.first_seen_ns,
                pinned: self.pinned.is_pinned(r),
                // A pull in flight holds a lease on its config digest, the image id: until it has answered,
                // its image is in use.
                in_use: in_use.contains(&r.id) || self.stores.leases.is_leased(&Item::Blob(r.id)),
                tags: r.repo_tags.clone(),
                resources: resources_of(r),
            })
            .collect();
        let history: HashMap<String, Vec<TagRevision>> = self
            .stores
            .metadata
            .history()
            .into_iter()
            .map(|(tag, revs)| {
                let revs = revs
                    .into_iter()
                    .map(|r| TagRevision {
                        image_id: r.image.to_string(),
                        tagged_at_ns: r.since_ns,
                    })
                    .collect();
                (tag, revs)
            })
            .collect();
        let all = self.all_resources();
        let mut plan = prune::plan(&prune_images, &history, &all, options, now_ns);
        let mut report = prune::render(&plan);
        let mut freed = plan.freed_bytes;
        if !dry_run {
            freed = 0;
            let by_id: HashMap<String, &Arc<ImageRecord>> = images.iter().map(|r| (r.id.to_string(), r)).collect();
            let mut removed = Vec::with_capacity(plan.images.len());
            for p in std::mem::take(&mut plan.images) {
                let Some(rec) = by_id.get(&p.id) else { continue };
                if let Some(n) = self.remove_planned(rec).await? {
                    freed += n;
                    removed.push(p);
                }
            }
            plan.images = removed;
            // The plan's other resources: what no image referenced even before (left by a crash).
            let stores = self.stores.clone();
            let resources = plan.resources.clone();
            freed += tokio::task::spawn_blocking(move || {
                let names: Vec<Digest> = resources.iter().filter_map(|(r, _)| digest_of(r)).collect();
                stores.discard_unreferenced(&names)
            })
            .await
            .unwrap_or(0);
            // What an image used since the plan still references stayed: report what is gone.
            plan.resources.retain(|(r, _)| !self.exists(r));
            plan.freed_bytes = freed;
            report = prune::render(&plan);
        }
        Ok(PruneOutcome {
            plan,
            report,
            freed_bytes: freed,
        })
    }

    /// Mark and sweep: removes blobs and snapshots no image references and no lease protects, and stale
    /// ingest files. Returns (blobs and snapshots removed, bytes freed, ingests removed).
    pub async fn sweep(&self) -> (usize, u64, usize) {
        let _one = self.running.lock().await;
        let stores = self.stores.clone();
        tokio::task::spawn_blocking(move || {
            let mut names = stores.content.list().unwrap_or_default();
            names.extend(stores.layers.list().unwrap_or_default());
            let before = names.len();
            let freed = stores.discard_unreferenced(&names);
            let after = stores.content.list().map(|v| v.len()).unwrap_or(0)
                + stores.layers.list().map(|v| v.len()).unwrap_or(0);
            (
                before.saturating_sub(after),
                freed,
                stores.content.remove_stale_ingests(),
            )
        })
        .await
        .unwrap_or((0, 0, 0))
    }

    /// Removes one planned victim through the stores' removal protocol; returns the bytes freed, or `None`
    /// when the image stays. The re-check comes right before it goes: it is removed only if its record is
    /// still the one the plan saw, decided in one step with the removal under the metadata store's lock, the
    /// lock a pull's record and an ImageStatus touch take too. A pull in flight for it (leasing its id)
    /// also keeps it.
    async fn remove_planned(&self, planned: &Arc<ImageRecord>) -> Result<Option<u64>, GcError> {
        let spared = |why: &str| {
            tracing::info!(image = %planned.id, why, "image kept: used since garbage collection planned it");
        };
        if self.stores.leases.is_leased(&Item::Blob(planned.id)) {
            spared("a pull of it is in flight");
            return Ok(None);
        }
        let mut changed = false;
        let removed = self
            .stores
            .remove_image(self.events.as_ref(), &planned.id, |current| {
                changed = !Arc::ptr_eq(current, planned);
                !changed
            })
            .await
            .map_err(|e| GcError::Remove {
                id: planned.id.to_string(),
                detail: e.to_string(),
            })?;
        match removed {
            Some(r) => Ok(Some(r.freed_bytes)),
            None => {
                if changed {
                    spared("pulled, inspected or renamed since the plan");
                }
                Ok(None) // Otherwise already gone (a RemoveImage meanwhile).
            }
        }
    }

    /// Ids of images the runtimes' containers use, as the bridges see them (the CRI runtime at
    /// `[gc] runtime_endpoint` is one of them).
    async fn in_use(&self) -> Result<HashSet<Digest>, GcError> {
        Ok(self.events.in_use().await?)
    }

    fn inputs(
        &self,
        images: &[Arc<ImageRecord>],
        in_use: &HashSet<Digest>,
    ) -> (Vec<GcImage>, HashMap<ResourceId, u64>) {
        let gc: Vec<GcImage> = images
            .iter()
            .map(|r| GcImage {
                id: r.id.to_string(),
                first_seen_ns: r.first_seen_ns,
                last_used_ns: r.last_used_ns,
                pinned: self.pinned.is_pinned(r),
                in_use: in_use.contains(&r.id) || self.stores.leases.is_leased(&Item::Blob(r.id)),
                resources: resources_of(r),
            })
            .collect();
        let mut sizes = HashMap::new();
        for r in gc.iter().flat_map(|i| i.resources.iter()) {
            if !sizes.contains_key(r) {
                sizes.insert(r.clone(), self.size_of(r));
            }
        }
        (gc, sizes)
    }
}
