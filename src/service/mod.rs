//! The image service in domain types: what the CRI RPCs do, without gRPC.
//!
//! `server/` turns protobuf requests into calls here; everything below is testable without tonic.

mod error;
mod fsck;
mod lookup;
mod maintenance;
mod verbose;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

pub use error::ServiceError;
pub use fsck::FsckReport;

use crate::config::Config;
use crate::content::ContentStore;
use crate::lease::LeaseTable;
use crate::metadata::{ImageRecord, MetadataStore};
use crate::pull::{PullOptions, Puller, Stores};
use crate::reference::ImageRef;
use crate::registry::auth::Credentials;
use crate::registry::{Registry, RegistryOptions};
use crate::snapshot::SnapshotStore;
use crate::unpack::Capabilities;

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

/// Who a pull is for, from `PodSandboxConfig.metadata` (kept for logs and, later, per-pod back-off).
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
}

/// The image service.
pub struct ImageService {
    root: PathBuf,
    stores: Stores,
    puller: Puller,
    runtime_handlers: Vec<String>,
}

impl ImageService {
    /// Opens the store under `config.root` (creating it), cleans what a crash left behind and prepares the
    /// registry adapter.
    pub fn open(config: &Config) -> Result<ImageService, ServiceError> {
        let open_err = |detail: String| ServiceError::Open {
            path: config.root.display().to_string(),
            detail,
        };
        create_private_dir(&config.root).map_err(|e| open_err(e.to_string()))?;
        let leases = LeaseTable::new();
        // The metadata first: redb locks its file, so a second daemon on the same root stops here, before
        // it touches anything.
        let metadata = Arc::new(
            MetadataStore::open(&config.root.join("metadata.redb"))
                .map_err(|e| open_err(format!("{e} (is another imaged running on this root?)")))?,
        );
        let content = ContentStore::open(&config.root.join("content"), leases.clone())?;
        let snapshots = SnapshotStore::open(&config.root.join("snapshots"), leases.clone())?;
        let caps = Capabilities::probe(&config.root.join("snapshots"));
        if !caps.overlay_whiteouts {
            tracing::info!("cannot create overlay whiteouts here (not root?): layers keep deletions in OCI form");
        }
        let stores = Stores {
            content,
            snapshots,
            metadata,
            leases,
        };
        let registry = Arc::new(Registry::new(RegistryOptions {
            hosts_dir: config.hosts_dir.clone(),
            auth_files: config.auth_files.clone(),
            connect_timeout_secs: config.connect_timeout_secs,
        }));
        let options = PullOptions {
            platform: config.platform.clone(),
            max_concurrent_downloads: config.max_concurrent_downloads,
            limits: config.unpack,
            caps,
        };
        let service = ImageService {
            root: config.root.clone(),
            puller: Puller::new(stores.clone(), registry, options),
            stores,
            runtime_handlers: config.runtime_handlers.clone(),
        };
        let (blobs, snapshots) = service.sweep()?;
        if blobs + snapshots > 0 {
            tracing::info!(
                blobs,
                snapshots,
                "removed what no image references (left by an interrupted pull)"
            );
        }
        service.refresh_index()?;
        Ok(service)
    }

    /// Pulls an image and returns its record (whose id is the `image_ref` kubelet gets).
    pub async fn pull(&self, req: PullRequest) -> Result<Arc<ImageRecord>, ServiceError> {
        self.check_runtime_handler(&req.runtime_handler)?;
        let image = ImageRef::parse(&req.image)?;
        let pod = req.pod.unwrap_or_default();
        tracing::info!(image = %image, pod = %pod.name, namespace = %pod.namespace, pod_uid = %pod.uid, "Pulling");
        let started = std::time::Instant::now();
        match self.puller.pull(&image, req.creds, now_ns()).await {
            Ok(rec) => {
                self.refresh_index()?;
                let seconds = started.elapsed().as_secs_f64();
                tracing::info!(image = %image, id = %rec.id, size = rec.size(), seconds, "Pulled");
                Ok(rec)
            }
            Err(source) => {
                let err = ServiceError::Pull {
                    image: req.image,
                    source: Box::new(source),
                };
                tracing::warn!(image = %image, reason = %err.pull_reason(), error = %err, "Failed");
                Err(err)
            }
        }
    }

    /// The image `name` refers to (an id, a short id, a tag, a repo digest), or `None`.
    pub fn status(&self, name: &str) -> Result<Option<Arc<ImageRecord>>, ServiceError> {
        self.lookup(name)
    }

    /// The verbose `info` map of `ImageStatus`: `{"info": <JSON>}`.
    pub fn verbose_info(&self, rec: &ImageRecord) -> Result<std::collections::HashMap<String, String>, ServiceError> {
        verbose::info(&self.stores, rec)
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
        if self.stores.metadata.remove(&rec.id)?.is_none() {
            return Ok(());
        }
        let stores = self.stores.clone();
        let named: Vec<_> = rec.blobs().chain(rec.chain_ids()).collect();
        let freed = tokio::task::spawn_blocking(move || stores.discard_unreferenced(&named))
            .await
            .map_err(|e| ServiceError::Task(e.to_string()))?;
        self.refresh_index()?;
        tracing::info!(image = %name, id = %rec.id, freed_bytes = freed, "Removed");
        Ok(())
    }

    /// The store's usage, kept incrementally (no tree walk).
    pub fn fs_usage(&self) -> FsUsage {
        let (blob_bytes, blob_inodes) = self.stores.content.usage();
        let (snap_bytes, snap_inodes) = self.stores.snapshots.usage();
        let db = std::fs::metadata(self.stores.metadata.path())
            .map(|m| std::os::unix::fs::MetadataExt::blocks(&m) * 512)
            .unwrap_or(0);
        FsUsage {
            mountpoint: self.root.clone(),
            used_bytes: blob_bytes + snap_bytes + db,
            inodes_used: blob_inodes + snap_inodes + 1,
            timestamp_ns: now_ns(),
        }
    }

    fn check_runtime_handler(&self, handler: &str) -> Result<(), ServiceError> {
        if handler.is_empty() || self.runtime_handlers.iter().any(|h| h == handler) {
            Ok(())
        } else {
            Err(ServiceError::UnknownRuntimeHandler(handler.to_string()))
        }
    }

    /// The stores (for maintenance commands and tests).
    pub fn stores(&self) -> &Stores {
        &self.stores
    }
}

/// Now, in Unix nanoseconds.
pub fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// Creates `dir` (and parents) readable only by its owner: image layers can hold secrets.
fn create_private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}
