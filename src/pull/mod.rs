//! One image pull: resolve the reference, choose the platform, fetch and verify every blob, commit them to
//! the content store and record the image.
//!
//! Visibility rule: an image appears in the metadata only after every blob it needs is committed (and so
//! verified). Blobs are leased from the moment the manifest names them until the image is recorded, so a
//! concurrent removal cannot delete them in between; a crash in between leaves unreferenced blobs, which
//! the service sweeps at start.

mod download;
mod error;

use std::sync::Arc;

use futures_util::{StreamExt, TryStreamExt};

pub use error::PullError;

use crate::content::ContentStore;
use crate::digest::Digest;
use crate::manifest::{self, Manifest};
use crate::metadata::{Descriptor, ImageRecord, LayerRecord, MetadataStore};
use crate::platform::Platform;
use crate::reference::ImageRef;
use crate::registry::auth::Credentials;
use crate::registry::{Registry, Session};

/// Pulls images into the stores.
pub struct Puller {
    content: ContentStore,
    metadata: Arc<MetadataStore>,
    registry: Arc<Registry>,
    platform: Platform,
    max_concurrent_downloads: usize,
}

impl Puller {
    /// A puller writing into these stores, selecting images for `platform`.
    pub fn new(
        content: ContentStore,
        metadata: Arc<MetadataStore>,
        registry: Arc<Registry>,
        platform: Platform,
        max_concurrent_downloads: usize,
    ) -> Puller {
        Puller {
            content,
            metadata,
            registry,
            platform,
            max_concurrent_downloads: max_concurrent_downloads.max(1),
        }
    }

    /// The platform images are selected for.
    pub fn platform(&self) -> &Platform {
        &self.platform
    }

    /// Pulls `image` and records it; returns the recorded image. A failed pull keeps nothing: blobs it
    /// committed that no image references are removed again.
    pub async fn pull(
        &self,
        image: &ImageRef,
        creds: Option<Credentials>,
        now_ns: i64,
    ) -> Result<Arc<ImageRecord>, PullError> {
        let mut lease = self.content.lease();
        match self.pull_leased(image, creds, now_ns, &mut lease).await {
            Ok(rec) => Ok(rec),
            Err(e) => {
                let named = lease.digests().to_vec();
                drop(lease);
                self.discard_unreferenced(&named).await;
                Err(e)
            }
        }
    }

    /// Removes those of `digests` that no recorded image references (and no other pull has leased).
    async fn discard_unreferenced(&self, digests: &[Digest]) {
        let keep = referenced(&self.metadata.list());
        let content = self.content.clone();
        let discard: Vec<Digest> = digests.iter().filter(|d| !keep.contains(d)).copied().collect();
        let _ = tokio::task::spawn_blocking(move || {
            for d in discard {
                if let Err(e) = content.delete(&d) {
                    tracing::warn!(blob = %d, error = %e, "could not remove a blob of a failed pull");
                }
            }
        })
        .await;
    }

    async fn pull_leased(
        &self,
        image: &ImageRef,
        creds: Option<Credentials>,
        now_ns: i64,
        lease: &mut crate::content::Lease,
    ) -> Result<Arc<ImageRecord>, PullError> {
        let session = self.registry.session(image, creds)?;
        let top = session.fetch_manifest(&image.reference()).await?;
        let (parsed, media_type) = manifest::parse(&top.body, top.content_type.as_deref(), top.digest)?;
        let top_desc = Descriptor {
            media_type,
            digest: top.digest,
            size: top.body.len() as u64,
        };

        // An index: choose our platform's manifest and fetch it by digest.
        let (index, index_body, manifest_desc, manifest_body, m) = match parsed {
            Manifest::Image(m) => (None, None, top_desc, top.body, m),
            Manifest::Index(idx) => {
                let chosen = self
                    .platform
                    .select(idx.manifests.iter().map(|d| d.platform.as_ref()))
                    .ok_or_else(|| PullError::NoMatchingPlatform {
                        image: image.to_string(),
                        platform: self.platform.to_string(),
                        available: idx
                            .manifests
                            .iter()
                            .filter_map(|d| d.platform.as_ref().map(|p| p.to_string()))
                            .collect(),
                    })?;
                let entry = &idx.manifests[chosen];
                let child = session.fetch_manifest(&entry.digest.to_string()).await?;
                let (parsed, media_type) = manifest::parse(&child.body, child.content_type.as_deref(), child.digest)?;
                let Manifest::Image(m) = parsed else {
                    return Err(PullError::NestedIndex {
                        image: image.to_string(),
                        digest: child.digest,
                    });
                };
                let desc = Descriptor {
                    media_type,
                    digest: child.digest,
                    size: child.body.len() as u64,
                };
                (Some(top_desc), Some(top.body), desc, child.body, m)
            }
        };
        m.check_media_types(manifest_desc.digest)?;

        // From here on, every blob the image names is leased.
        for d in index
            .iter()
            .map(|d| d.digest)
            .chain([manifest_desc.digest, m.config.digest])
        {
            lease.add(d);
        }
        for l in &m.layers {
            lease.add(l.digest);
        }

        let config_desc = desc_of(&m.config);
        let config_body = self.config_blob(&session, &config_desc).await?;
        let config = manifest::parse_config(&config_body, config_desc.digest, m.layers.len())?;
        let image_platform = Platform {
            os: config.os.clone(),
            architecture: config.architecture.clone(),
            variant: config.variant.clone(),
        };
        if index.is_none() && self.platform.select([Some(&image_platform)]).is_none() {
            return Err(PullError::NoMatchingPlatform {
                image: image.to_string(),
                platform: self.platform.to_string(),
                available: vec![image_platform.to_string()],
            });
        }

        let layers: Vec<Descriptor> = m.layers.iter().map(desc_of).collect();
        let (session_ref, content) = (&session, &self.content);
        let missing: Vec<Descriptor> = layers
            .iter()
            .filter(|l| !content.contains(&l.digest))
            .cloned()
            .collect();
        let downloads = missing
            .into_iter()
            .map(|l| async move { download::blob_to_store(session_ref, content, &l).await });
        futures_util::stream::iter(downloads)
            .buffer_unordered(self.max_concurrent_downloads)
            .try_collect::<Vec<()>>()
            .await?;
        self.commit_small(&manifest_body, &manifest_desc).await?;
        if let (Some(desc), Some(body)) = (&index, &index_body) {
            self.commit_small(body, desc).await?;
        }

        let top_digest = index.as_ref().map_or(manifest_desc.digest, |d| d.digest);
        let record = ImageRecord {
            id: config_desc.digest,
            manifest: manifest_desc,
            index,
            config: config_desc,
            layers: layers
                .into_iter()
                .zip(config.rootfs.diff_ids)
                .map(|(blob, diff_id)| LayerRecord { blob, diff_id })
                .collect(),
            repo_tags: if image.digest().is_none() {
                image.tagged().into_iter().collect()
            } else {
                Vec::new()
            },
            repo_digests: vec![image.with_digest(&top_digest)],
            user: config.config.and_then(|c| c.user).unwrap_or_default(),
            platform: image_platform.to_string(),
            created: config.created,
            first_seen_ns: now_ns,
            last_used_ns: now_ns,
            pinned: false,
        };
        let id = record.id;
        let metadata = self.metadata.clone();
        tokio::task::spawn_blocking(move || metadata.record(record))
            .await
            .map_err(|e| PullError::Task(e.to_string()))??;
        self.metadata.get(&id).ok_or(PullError::Vanished {
            image: image.to_string(),
            id,
        })
    }

    /// The config blob, from the store or the registry (held in memory: it is small and needed parsed).
    async fn config_blob(&self, session: &Session, desc: &Descriptor) -> Result<Vec<u8>, PullError> {
        if desc.size > manifest::MAX_CONFIG_BYTES {
            return Err(PullError::ConfigTooLarge {
                digest: desc.digest,
                size: desc.size,
                limit: manifest::MAX_CONFIG_BYTES,
            });
        }
        if let Ok(body) = self.content.read(&desc.digest, manifest::MAX_CONFIG_BYTES) {
            return Ok(body);
        }
        let body = download::blob_to_memory(session, desc, manifest::MAX_CONFIG_BYTES).await?;
        self.commit_small(&body, desc).await?;
        Ok(body)
    }

    async fn commit_small(&self, body: &[u8], desc: &Descriptor) -> Result<(), PullError> {
        let content = self.content.clone();
        let body = body.to_vec();
        let digest = desc.digest;
        tokio::task::spawn_blocking(move || content.write_blob(&body, digest))
            .await
            .map_err(|e| PullError::Task(e.to_string()))??;
        Ok(())
    }
}

fn desc_of(d: &manifest::Desc) -> Descriptor {
    Descriptor {
        media_type: d.media_type.clone(),
        digest: d.digest,
        size: d.size,
    }
}

/// The digests an image record references, for sweeping.
pub fn referenced(records: &[Arc<ImageRecord>]) -> std::collections::HashSet<Digest> {
    records.iter().flat_map(|r| r.blobs().collect::<Vec<_>>()).collect()
}
