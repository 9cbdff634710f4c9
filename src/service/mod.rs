//! The image service in domain types: what the CRI RPCs do, without gRPC.
//!
//! `server/` turns protobuf requests into calls here; everything below is testable without tonic.

mod error;
mod lookup;
mod verbose;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

pub use error::ServiceError;

use crate::config::Config;
use crate::content::{ContentStore, IndexEntry};
use crate::metadata::{ImageRecord, MetadataStore};
use crate::pull::{self, Puller};
use crate::reference::ImageRef;
use crate::registry::auth::Credentials;
use crate::registry::{Registry, RegistryOptions};

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
    content: ContentStore,
    metadata: Arc<MetadataStore>,
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
        let content = ContentStore::open(&config.root.join("content"))?;
        let metadata = Arc::new(MetadataStore::open(&config.root.join("metadata.redb")).map_err(|e| {
            // redb locks its file: a second daemon on the same root fails here.
            open_err(format!("{e} (is another imaged running on this root?)"))
        })?);
        let registry = Arc::new(Registry::new(RegistryOptions {
            hosts_dir: config.hosts_dir.clone(),
            auth_files: config.auth_files.clone(),
            connect_timeout_secs: config.connect_timeout_secs,
        }));
        let puller = Puller::new(
            content.clone(),
            metadata.clone(),
            registry,
            config.platform.clone(),
            config.max_concurrent_downloads,
        );
        let service = ImageService {
            root: config.root.clone(),
            content,
            metadata,
            puller,
            runtime_handlers: config.runtime_handlers.clone(),
        };
        let swept = service.sweep()?;
        if swept > 0 {
            tracing::info!(
                blobs = swept,
                "removed blobs no image references (left by an interrupted pull)"
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
        let result = self.puller.pull(&image, req.creds, now_ns()).await;
        match result {
            Ok(rec) => {
                self.refresh_index()?;
                tracing::info!(image = %image, id = %rec.id, size = rec.size(), seconds = started.elapsed().as_secs_f64(), "Pulled");
                Ok(rec)
            }
            Err(source) => {
                let err = ServiceError::Pull {
                    image: req.image,
                    source,
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
        verbose::info(&self.content, rec)
    }

    /// All images, or the one `filter` refers to.
    pub fn list(&self, filter: Option<&str>) -> Result<Vec<Arc<ImageRecord>>, ServiceError> {
        match filter.filter(|f| !f.is_empty()) {
            Some(f) => Ok(self.lookup(f)?.into_iter().collect()),
            None => Ok(self.metadata.list()),
        }
    }

    /// Removes the image `name` refers to, with all its tags, and every blob no other image needs.
    /// Removing an absent image succeeds.
    pub async fn remove(&self, name: &str) -> Result<(), ServiceError> {
        let Some(rec) = self.lookup(name)? else {
            return Ok(());
        };
        let removed = self.metadata.remove(&rec.id)?;
        if removed.is_none() {
            return Ok(());
        }
        let still = pull::referenced(&self.metadata.list());
        let mut freed = 0;
        for d in rec.blobs().filter(|d| !still.contains(d)) {
            freed += self.content.delete(&d)?;
        }
        self.refresh_index()?;
        tracing::info!(image = %name, id = %rec.id, freed_bytes = freed, "Removed");
        Ok(())
    }

    /// The store's usage, kept incrementally (no tree walk).
    pub fn fs_usage(&self) -> FsUsage {
        let (bytes, inodes) = self.content.usage();
        let db = std::fs::metadata(self.metadata.path())
            .map(|m| std::os::unix::fs::MetadataExt::blocks(&m) * 512)
            .unwrap_or(0);
        FsUsage {
            mountpoint: self.root.clone(),
            used_bytes: bytes + db,
            inodes_used: inodes + 1,
            timestamp_ns: now_ns(),
        }
    }

    /// Removes blobs that no image references. Run at start, when no pull is in flight.
    fn sweep(&self) -> Result<usize, ServiceError> {
        let keep = pull::referenced(&self.metadata.list());
        let mut n = 0;
        for d in self.content.list()? {
            if !keep.contains(&d) && self.content.delete(&d)? > 0 {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Rewrites the OCI layout's `index.json` from the metadata.
    fn refresh_index(&self) -> Result<(), ServiceError> {
        let mut entries = Vec::new();
        for rec in self.metadata.list() {
            let top = rec.index.as_ref().unwrap_or(&rec.manifest);
            let mut names: Vec<&String> = rec.repo_tags.iter().collect();
            if names.is_empty() {
                names.extend(rec.repo_digests.iter().take(1));
            }
            for name in names {
                entries.push(IndexEntry {
                    media_type: top.media_type.clone(),
                    digest: top.digest,
                    size: top.size,
                    annotations: [("org.opencontainers.image.ref.name".to_string(), name.clone())].into(),
                });
            }
        }
        Ok(self.content.write_index(&entries)?)
    }

    fn check_runtime_handler(&self, handler: &str) -> Result<(), ServiceError> {
        if handler.is_empty() || self.runtime_handlers.iter().any(|h| h == handler) {
            Ok(())
        } else {
            Err(ServiceError::UnknownRuntimeHandler(handler.to_string()))
        }
    }

    /// The content store (for tests and maintenance commands).
    pub fn content(&self) -> &ContentStore {
        &self.content
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
