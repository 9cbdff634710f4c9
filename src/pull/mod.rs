//! One image pull: resolve the reference, choose the platform, fetch and verify every blob, apply every
//! layer into its snapshot, commit, and record the image.
//!
//! Visibility rule: an image appears in the metadata only after every blob it needs is committed (and so
//! verified against its digest) and every layer is applied and verified against the config's diff id.
//! Blobs and snapshots are leased from the moment the manifest names them until the image is recorded, so
//! a concurrent removal cannot delete them in between. A failed pull removes what it committed that no
//! image references; a crash leaves unreferenced items, which the service sweeps at start.

mod arrivals;
mod cleanup;
mod download;
mod error;
mod fetch;
mod layer;
mod progress;
mod resolve;

use cleanup::{CancelOnDrop, Cleanup};
use std::sync::Arc;

use futures_util::StreamExt;

pub use error::PullError;
pub use fetch::FetchOptions;
pub use progress::{LayerProgress, LayerState, Progress, ProgressView, Queued};

use crate::digest::Digest;
use crate::lease::{Item, Lease};
use crate::manifest;
use crate::manifest::Descriptor;
use crate::metadata::{Grant, ImageRecord, LayerRecord};
use crate::platform::Platform;
use crate::reference::ImageRef;
use crate::registry::auth::Credentials;
use crate::registry::{Registry, Session};
use crate::stores::Stores;
use crate::unpack::{Capabilities, Limits};

/// How images are pulled.
#[derive(Debug, Clone)]
pub struct PullOptions {
    /// The platform to select from indexes.
    pub platform: Platform,
    /// Blob downloads at once, across all pulls (containerd's `max_concurrent_downloads`): layers and configs.
    pub downloads: Arc<tokio::sync::Semaphore>,
    /// Caps on each layer.
    pub limits: Limits,
    /// What the process may create in snapshots.
    pub caps: Capabilities,
    /// How blobs are split into requests.
    pub fetch: FetchOptions,
}

/// Pulls images into the stores.
pub struct Puller {
    stores: Stores,
    registry: Arc<Registry>,
    options: PullOptions,
}

impl Puller {
    /// A puller writing into `stores`.
    pub fn new(stores: Stores, registry: Arc<Registry>, options: PullOptions) -> Puller {
        Puller {
            stores,
            registry,
            options,
        }
    }

    /// The registry adapter.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// The platform images are selected for.
    pub fn platform(&self) -> &Platform {
        &self.options.platform
    }

    /// Pulls `image` and records it, with `grant` (the access this pull proves, see
    /// [`crate::metadata::access`]) in the same transaction, reporting to `progress`; returns the recorded
    /// image. A failed or cancelled (dropped) pull keeps nothing.
    pub async fn pull(
        &self,
        image: &ImageRef,
        creds: Option<Credentials>,
        grant: Option<Grant>,
        progress: &Progress,
    ) -> Result<Arc<ImageRecord>, PullError> {
        let mut cleanup = Cleanup {
            stores: self.stores.clone(),
            lease: Some(self.stores.leases.lease()),
        };
        let lease = cleanup.lease.as_mut().ok_or(PullError::Interrupted)?;
        let result = self.pull_leased(image, creds, grant, lease, progress).await;
        let Some(lease) = cleanup.lease.take() else {
            return result;
        };
        let named = lease.digests().to_vec();
        drop(lease);
        // Failed: discard what it committed before answering, so the caller never sees leftovers. Recorded:
        // a removal (or a pull of another form of the image) that ran between the record and the end of the
        // lease could not delete what the lease held; if the record no longer names it, that is garbage now.
        // Only a dropped pull leaves the work to Cleanup.
        let superseded = match &result {
            Err(_) => true,
            Ok(rec) => {
                let top = |r: &ImageRecord| (r.manifest.digest, r.index.as_ref().map(|d| d.digest));
                self.stores.metadata.get(&rec.id).map(|r| top(&r)) != Some(top(rec))
            }
        };
        if superseded {
            let stores = self.stores.clone();
            let _ = tokio::task::spawn_blocking(move || stores.discard_unreferenced(&named)).await;
        }
        result
    }

    async fn pull_leased(
        &self,
        image: &ImageRef,
        creds: Option<Credentials>,
        grant: Option<Grant>,
        lease: &mut Lease,
        progress: &Progress,
    ) -> Result<Arc<ImageRecord>, PullError> {
        let platform = &self.options.platform;
        progress.phase("resolving");
        let session = self.registry.session(image, creds).await?;
        // A tag the store holds an image for is revalidated (a HEAD, and the store's manifest if unchanged).
        let recorded = image.tagged().and_then(|t| self.stores.metadata.by_tag(&t));
        let local = resolve::Local {
            content: &self.stores.content,
            recorded: recorded.as_deref(),
        };
        let r = resolve::resolve(&session, image, platform, local).await?;
        // Manifests fetched count as downloaded bytes too (those read from the store do not).
        for (digest, size) in &r.fetched {
            progress.bytes(digest, *size);
        }
        let m = &r.parsed;
        // From here on, every blob the image names is leased.
        for d in r
            .index
            .iter()
            .map(|(d, _)| d.digest)
            .chain([r.manifest.0.digest, m.config.digest])
        {
            lease.add(Item::Blob(d));
        }
        for l in &m.layers {
            lease.add(Item::Blob(l.digest));
        }

        let config_desc = Descriptor::from(&m.config);
        let config_body = self.config_blob(&session, &config_desc, progress).await?;
        progress.advance();
        let config = manifest::parse_config(&config_body, config_desc.digest, m.layers.len())?;
        let image_platform = Platform {
            os: config.os.clone(),
            architecture: config.architecture.clone(),
            variant: config.variant.clone(),
        };
        if r.index.is_none() && platform.select([Some(&image_platform)]).is_none() {
            return Err(PullError::NoMatchingPlatform {
                image: image.to_string(),
                platform: platform.to_string(),
                available: vec![image_platform.to_string()],
            });
        }

        let layers: Vec<LayerRecord> = m
            .layers
            .iter()
            .zip(&config.rootfs.diff_ids)
            .map(|(l, diff_id)| LayerRecord {
                blob: Descriptor::from(l),
                diff_id: *diff_id,
            })
            .collect();
        let chains = crate::metadata::chain_ids(layers.iter().map(|l| l.diff_id));
        for c in &chains {
            lease.add(Item::Snapshot(*c));
        }
        progress.layers(layers.iter().map(|l| (l.blob.digest, l.blob.size)));
        // On the first failure the other layers stop; all are waited for, so nothing of this pull is still
        // being committed when its cleanup runs. Dropping the pull sets the flag too.
        let cancel = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let _cancel_on_drop = CancelOnDrop(cancel.clone());
        let ctx = layer::LayerCtx {
            session: &session,
            content: &self.stores.content,
            snapshots: &self.stores.layers,
            limits: self.options.limits,
            caps: self.options.caps,
            downloads: &self.options.downloads,
            progress,
            cancel: &cancel,
            fetch: self.options.fetch,
        };
        let ctx = &ctx;
        let jobs: Vec<(LayerRecord, Digest, Option<Digest>)> = layers
            .iter()
            .cloned()
            .zip(chains.iter().copied())
            .enumerate()
            .map(|(i, (l, chain))| (l, chain, i.checked_sub(1).map(|p| chains[p])))
            .collect();
        let work = jobs.into_iter().map(|(l, chain, parent)| async move {
            let r = layer::ensure_layer(ctx, &l, chain, parent).await;
            if r.is_err() {
                ctx.cancel.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            r
        });
        let results: Vec<Result<(), PullError>> = futures_util::stream::iter(work)
            .buffer_unordered(layers.len().max(1))
            .collect()
            .await;
        // The first real failure, not the interruptions it caused.
        let mut errors: Vec<PullError> = results.into_iter().filter_map(Result::err).collect();
        if !errors.is_empty() {
            let i = errors
                .iter()
                .position(|e| !matches!(e, PullError::Interrupted))
                .unwrap_or(0);
            return Err(errors.swap_remove(i));
        }
        let (snapshots, chain_list) = (self.stores.layers.clone(), chains.clone());
        tokio::task::spawn_blocking(move || snapshots.inherit_implicit_dirs(&chain_list))
            .await
            .map_err(|e| PullError::Task(e.to_string()))??;
        self.commit_small(&r.manifest.1, &r.manifest.0).await?;
        if let Some((desc, body)) = &r.index {
            self.commit_small(body, desc).await?;
        }

        let now = crate::clock::now_ns();
        let top_digest = r.index.as_ref().map_or(r.manifest.0.digest, |(d, _)| d.digest);
        let record = ImageRecord {
            id: config_desc.digest,
            manifest: r.manifest.0.clone(),
            index: r.index.as_ref().map(|(d, _)| d.clone()),
            config: config_desc,
            layers,
            repo_tags: if image.digest().is_none() {
                image.tagged().into_iter().collect()
            } else {
                Vec::new()
            },
            repo_digests: vec![image.with_digest(&top_digest)],
            user: config.config.and_then(|c| c.user).unwrap_or_default(),
            platform: image_platform.to_string(),
            created: config.created,
            // Now, when the image appears, not when the pull began: a long pull is not an old image.
            first_seen_ns: now,
            last_used_ns: now,
            pinned: false,
        };
        let stores = self.stores.clone();
        // The answer is the record as written: a removal that comes after it is a later operation, and one
        // that came before (RemoveImage, GC, prune) is undone by this record, which creates the image again.
        // Everything it names is still leased here, and referenced by the record before the lease ends.
        tokio::task::spawn_blocking(move || Ok(stores.record(record, grant.as_ref(), now)?))
            .await
            .map_err(|e| PullError::Task(e.to_string()))?
    }

    /// The config blob, from the store or the registry (held in memory: it is small and needed parsed).
    async fn config_blob(
        &self,
        session: &Session,
        desc: &Descriptor,
        progress: &Progress,
    ) -> Result<Vec<u8>, PullError> {
        if desc.size > manifest::MAX_CONFIG_BYTES {
            return Err(PullError::ConfigTooLarge {
                digest: desc.digest,
                size: desc.size,
                limit: manifest::MAX_CONFIG_BYTES,
            });
        }
        if let Ok(body) = self.stores.content.read(&desc.digest, manifest::MAX_CONFIG_BYTES) {
            return Ok(body);
        }
        let _permit = download::slot(&self.options.downloads, progress).await?;
        let body = download::blob_to_memory(session, desc, manifest::MAX_CONFIG_BYTES, progress).await?;
        self.commit_small(&body, desc).await?;
        Ok(body)
    }

    async fn commit_small(&self, body: &[u8], desc: &Descriptor) -> Result<(), PullError> {
        let content = self.stores.content.clone();
        let body = body.to_vec();
        let digest = desc.digest;
        tokio::task::spawn_blocking(move || content.write_blob(&body, digest))
            .await
            .map_err(|e| PullError::Task(e.to_string()))??;
        Ok(())
    }
}
