//! The containers-storage bridge: a read-only image store in containers/storage's overlay layout, kept
//! over imaged's layers, that CRI-O, podman and buildah list in `additionalimagestores` (`storage.conf`)
//! and read next to their own store. Their CreateContainer then finds imaged's images there and mounts
//! imaged's layer directories as overlay lower layers: no second download, no second copy.
//!
//! - [`layout`]: the entries of `layers.json` and `images.json` for imaged's images (pure);
//! - [`files`]: the directory tree and its atomic writes; [`lockfile`]: containers/storage's lock protocol;
//! - [`sync`]: bringing the files in line with imaged's records, in a reader-safe order;
//! - [`primary`]: what the runtimes' own stores build on imaged's layers.
//!
//! # Design
//! The store follows imaged's metadata, which stays the only source of truth: every sync computes what
//! the files should say from the records and writes what differs. Events trigger a sync (a pull's
//! `recorded` before it answers, a removal's `removed` before its layers are deleted); so does the start
//! (after a crash between the metadata and these files), a failure (retried), and garbage collection,
//! which asks which images the runtimes' containers use.
//!
//! Data safety: a layer that a container of a primary store sits on stays listed and leased until the
//! container is gone (see [`sync`]); imaged's GC treats its images as in use.

mod files;
pub mod layout;
pub mod lockfile;
pub mod primary;
mod sync;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;

use crate::digest::Digest;
use crate::events::{Bridge, ImageEvents, InUseError};
use crate::lease::{Item, Lease};
use crate::metadata::ImageRecord;
use crate::stores::Stores;

/// The resolved `[containers_storage]` section (`config` reads it from the file and the command line),
/// present when the store is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainersStorageConfig {
    /// The read-only store's directory.
    pub root: std::path::PathBuf,
    /// Primary stores read for the containers that use imaged's layers.
    pub primary_roots: Vec<std::path::PathBuf>,
}

/// Longest wait for a runtime to let go of a lock of the store (a reader holds it for milliseconds).
const LOCK_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest a pull or a removal waits for the store to follow; the reconciler finishes it otherwise.
const EVENT_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the store is checked when nothing asked: layers kept for containers are let go of once the
/// containers are gone, failed work is retried.
const RECONCILE_PERIOD: Duration = Duration::from_secs(60);
/// Retry delay after a failure.
const RETRY: Duration = Duration::from_secs(2);

/// Why the store cannot be opened.
#[derive(Debug, thiserror::Error)]
#[error("containers-storage store {root}: {detail}")]
pub struct OpenError {
    root: PathBuf,
    detail: String,
}

/// Keeps the read-only containers/storage store in line with imaged's images.
pub struct ContainersStorageBridge {
    shared: Arc<Shared>,
}

struct Shared {
    stores: Stores,
    root: PathBuf,
    /// The files and what they list; every sync holds it (POSIX locks are per process: one user at a time).
    state: Mutex<sync::State>,
    /// Something could not be done; the reconciler retries.
    dirty: AtomicBool,
    /// Whether layers are kept for runtimes' containers (the reconciler then looks whether they still are).
    holding: AtomicBool,
    /// The images runtimes' containers use, as of the last sync.
    in_use: Mutex<HashSet<Digest>>,
    /// Leases on the layers of removed images, taken as the removal is announced and kept until a sync that
    /// began after it succeeds: until then the store may still list them (a runtime holding a lock, a
    /// sync that timed out), and the removal's own deletion must not take them.
    pending: Mutex<Vec<Pending>>,
    removals: AtomicU64,
    /// Longest an event waits for its sync.
    event_timeout: Duration,
    wake: tokio::sync::Notify,
    /// An exclusive `flock` on `<root>/imaged.lock`: one imaged per store.
    _owner: std::fs::File,
}

/// A removal's lease (see `Shared::pending`).
struct Pending {
    /// Its place in the order of removals.
    n: u64,
    lease: Lease,
    /// Whether the removal went on without waiting for the store (its deletion is done then, and what it
    /// skipped is deleted by the sync that lets go of the lease).
    returned: Arc<AtomicBool>,
}

impl ContainersStorageBridge {
    /// Opens (creating) the store of `config` over `stores`, and brings it in line with the records before
    /// anything else may delete a layer: the layers it lists that no record protects (kept for containers,
    /// or left by a crash) are leased first, then synced. A sync that fails here is retried by
    /// [`ContainersStorageBridge::start`].
    pub fn open(config: &ContainersStorageConfig, stores: Stores) -> Result<Arc<ContainersStorageBridge>, OpenError> {
        Self::open_with(config, stores, LOCK_TIMEOUT, EVENT_TIMEOUT)
    }

    /// [`ContainersStorageBridge::open`] with other waits for locks and for events (tests).
    pub(crate) fn open_with(
        config: &ContainersStorageConfig,
        stores: Stores,
        lock_timeout: Duration,
        event_timeout: Duration,
    ) -> Result<Arc<ContainersStorageBridge>, OpenError> {
        let fail = |detail: String| OpenError {
            root: config.root.clone(),
            detail,
        };
        std::fs::create_dir_all(&config.root).map_err(|e| fail(e.to_string()))?;
        // Absolute: the layers' `diff` links point at imaged's store by absolute path.
        let root = std::fs::canonicalize(&config.root).map_err(|e| fail(e.to_string()))?;
        let owner = std::fs::File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(root.join("imaged.lock"))
            .map_err(|e| fail(e.to_string()))?;
        rustix::fs::flock(&owner, rustix::fs::FlockOperation::NonBlockingLockExclusive)
            .map_err(|_| fail("another imaged keeps this store".into()))?;
        let files = files::Files::new(root.clone(), lock_timeout);
        files.create().map_err(|e| fail(e.to_string()))?;
        let mut primary_roots = config.primary_roots.clone();
        primary_roots.dedup();
        let mut state = sync::State::read(files, primary_roots);
        // Nothing was leased before this first sync, so it releases nothing.
        let dirty = match state.sync(&stores, true) {
            Ok(_) => false,
            Err(e) => {
                tracing::warn!(root = %root.display(), error = %e, "containers-storage: cannot bring the store in line yet; retrying");
                true
            }
        };
        tracing::info!(root = %root.display(), images = state.images.len(), layers = state.layers.len(), "containers-storage store ready");
        let in_use = state.images_in_use(&stores.metadata.list());
        Ok(Arc::new(ContainersStorageBridge {
            shared: Arc::new(Shared {
                holding: AtomicBool::new(!state.held.is_empty()),
                in_use: Mutex::new(in_use),
                pending: Mutex::new(Vec::new()),
                event_timeout,
                removals: AtomicU64::new(0),
                stores,
                root,
                state: Mutex::new(state),
                dirty: AtomicBool::new(dirty),
                wake: tokio::sync::Notify::new(),
                _owner: owner,
            }),
        }))
    }

    /// The store's directory (absolute).
    pub fn root(&self) -> &std::path::Path {
        &self.shared.root
    }

    /// Starts the reconciler: it retries failed work and, every minute, lets go of layers whose containers
    /// are gone. Stops when the handle is aborted.
    fn spawn_reconciler(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let shared = self.shared.clone();
        tokio::spawn(async move {
            loop {
                let dirty = shared.dirty.load(Ordering::Acquire);
                let wait = if dirty { RETRY } else { RECONCILE_PERIOD };
                let _ = tokio::time::timeout(wait, shared.wake.notified()).await;
                if shared.dirty.load(Ordering::Acquire) || shared.holding.load(Ordering::Acquire) {
                    shared.clone().sync(true).await;
                }
            }
        })
    }

    /// Problems between the store and imaged's records (for `imaged fsck`): every image listed, every
    /// listed layer's `diff` leading to imaged's layer directory.
    fn problems(&self) -> Vec<String> {
        let state = lock(&self.shared.state);
        let stores = &self.shared.stores;
        let mut problems = Vec::new();
        for rec in stores.metadata.list() {
            if !state.images.contains_key(&rec.id.hex()) {
                problems.push(format!("containers-storage: image {} is not listed", rec.id));
            }
        }
        for (id, layer) in &state.layers {
            let Some(chain) = layer.chain() else {
                problems.push(format!("containers-storage: layer {id} has no chain id"));
                continue;
            };
            let diff = state.files.overlay().join(id).join("diff");
            let same = std::fs::canonicalize(&diff).ok() == std::fs::canonicalize(stores.layers.fs_dir(&chain)).ok();
            if !same || !diff.is_dir() {
                problems.push(format!(
                    "containers-storage: layer {id}'s diff does not lead to layer {chain}"
                ));
            }
        }
        for (id, image) in &state.images {
            if !image.top_layer.is_empty() && !state.layers.contains_key(&image.top_layer) {
                problems.push(format!("containers-storage: image {id}'s top layer is not listed"));
            }
        }
        problems
    }
}

impl Shared {
    /// One sync on a blocking thread; layers it let go of are deleted if nothing else needs them. Failures
    /// are logged and left to the reconciler. Returns the images runtimes' containers use, as far as known.
    async fn sync(self: Arc<Self>, refresh_holds: bool) -> HashSet<Digest> {
        let shared = self.clone();
        let job = tokio::task::spawn_blocking(move || {
            let mut state = lock(&shared.state);
            // Removals announced before this point are all reflected by this sync.
            let seen = shared.removals.load(Ordering::Acquire);
            let result = state.sync(&shared.stores, refresh_holds);
            let in_use = state.images_in_use(&shared.stores.metadata.list());
            shared.holding.store(!state.held.is_empty(), Ordering::Release);
            drop(state);
            *shared.in_use.lock().unwrap_or_else(|p| p.into_inner()) = in_use.clone();
            match result {
                Ok(mut released) => {
                    let done: Vec<Pending> = {
                        let mut pending = shared.pending.lock().unwrap_or_else(|p| p.into_inner());
                        let (done, later) = pending.drain(..).partition(|p| p.n <= seen);
                        *pending = later;
                        done
                    };
                    // A removal still waiting deletes its layers itself once this returns (and counts them);
                    // one that returned already left them to this sync.
                    let (returned, waiting): (Vec<&Pending>, Vec<&Pending>) =
                        done.iter().partition(|p| p.returned.load(Ordering::Acquire));
                    let theirs: HashSet<Digest> = waiting.iter().flat_map(|p| p.lease.digests()).collect();
                    released.retain(|c| !theirs.contains(c));
                    for p in returned {
                        released.extend(p.lease.digests());
                    }
                    drop(done);
                    shared.dirty.store(false, Ordering::Release);
                    if !released.is_empty() {
                        let freed = shared.stores.discard_unreferenced(&released);
                        tracing::info!(
                            layers = released.len(),
                            freed_bytes = freed,
                            "containers-storage: let go of layers no container uses any more"
                        );
                    }
                }
                Err(e) => {
                    tracing::warn!(root = %shared.root.display(), error = %e, "containers-storage: cannot bring the store in line; retrying");
                    shared.dirty.store(true, Ordering::Release);
                    shared.wake.notify_one();
                }
            }
            in_use
        });
        match tokio::time::timeout(self.event_timeout, job).await {
            Ok(Ok(in_use)) => in_use,
            outcome => {
                match outcome {
                    Ok(Err(e)) => tracing::warn!(error = %e, "containers-storage: sync task failed"),
                    _ => {
                        tracing::warn!(timeout = ?self.event_timeout, "containers-storage: the store did not follow in time; it will")
                    }
                }
                self.dirty.store(true, Ordering::Release);
                // Not known now: the images in use when last known.
                self.in_use.lock().unwrap_or_else(|p| p.into_inner()).clone()
            }
        }
    }
}

fn lock(m: &Mutex<sync::State>) -> std::sync::MutexGuard<'_, sync::State> {
    // A sync that panicked leaves `verify` set or files the next sync rewrites.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl ImageEvents for ContainersStorageBridge {
    fn recorded<'a>(&'a self, _rec: &'a Arc<ImageRecord>) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            self.shared.clone().sync(false).await;
        })
    }

    fn removed<'a>(&'a self, rec: &'a ImageRecord) -> BoxFuture<'a, ()> {
        let shared = &self.shared;
        tracing::debug!(image = %rec.id, "containers-storage: the image was removed; taking it out of the store");
        // Before anything else (the removal deletes what nothing protects once this returns).
        let mut lease = shared.stores.leases.lease();
        for chain in rec.chain_ids() {
            lease.add(Item::Snapshot(chain));
        }
        let returned = Arc::new(AtomicBool::new(false));
        let n = shared.removals.fetch_add(1, Ordering::AcqRel) + 1;
        shared.pending.lock().unwrap_or_else(|p| p.into_inner()).push(Pending {
            n,
            lease,
            returned: returned.clone(),
        });
        Box::pin(async move {
            shared.clone().sync(false).await;
            returned.store(true, Ordering::Release);
        })
    }

    fn in_use(&self) -> BoxFuture<'_, Result<HashSet<Digest>, InUseError>> {
        let shared = self.shared.clone();
        Box::pin(async move { Ok(shared.sync(true).await) })
    }
}

impl Bridge for ContainersStorageBridge {
    fn start(self: Arc<Self>) -> Option<tokio::task::JoinHandle<()>> {
        Some(self.spawn_reconciler())
    }

    fn check(&self) -> Vec<String> {
        self.problems()
    }
}

#[cfg(test)]
mod tests;
