//! The four stores as one aggregate, and the two operations that change what images exist: recording an
//! image and removing one. Everything above (pull, GC, prune, the service, the bridges) reaches the stores
//! through here; nothing here knows who asked.
//!
//! Removal has one protocol, written once in [`Stores::remove_image`]: the metadata record goes (under the
//! metadata store's lock, with the caller's last-moment check), the runtimes hear of it and are done with it,
//! then the blobs and layers only it named are deleted (the stores refuse, under the lease lock, whatever a
//! lease or another record still protects), and `index.json` is written again. A record is written by
//! [`Stores::record`], which discards what a replaced form of the image named and refreshes the index the
//! same way. `index.json` is derived and rebuilt at start, so failing to write it fails neither.

use std::collections::HashSet;
use std::sync::Arc;

use crate::content::ContentStore;
use crate::digest::Digest;
use crate::error::{Classify, ErrorKind};
use crate::events::ImageEvents;
use crate::layers::LayerStore;
use crate::lease::LeaseTable;
use crate::metadata::{Grant, ImageRecord, MetadataError, MetadataStore};

/// The stores: blobs, unpacked layers, image records, and the leases over blobs and layers.
#[derive(Clone)]
pub struct Stores {
    /// Blobs.
    pub content: ContentStore,
    /// Unpacked layers (snapshot directories by chain id).
    pub layers: LayerStore,
    /// Image records.
    pub metadata: Arc<MetadataStore>,
    /// Leases over blobs and snapshots.
    pub leases: Arc<LeaseTable>,
}

/// An image [`Stores::remove_image`] removed.
#[derive(Debug)]
pub struct Removal {
    /// Its record as it was removed.
    pub record: Arc<ImageRecord>,
    /// The bytes its blobs and layers freed (what other images or leases still need stays).
    pub freed_bytes: u64,
}

/// A removal that could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum StoresError {
    /// The metadata store failed.
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    /// The task deleting the image's files failed; what it left is removed by the next sweep.
    #[error("removing image {id}: discarding its blobs and layers failed: {detail}")]
    Discard {
        /// The image.
        id: Digest,
        /// Why.
        detail: String,
    },
}

impl Classify for StoresError {
    fn kind(&self) -> ErrorKind {
        match self {
            StoresError::Metadata(e) => e.kind(),
            StoresError::Discard { .. } => ErrorKind::Internal,
        }
    }
}

impl Stores {
    /// Records `record` (with who the registry served it to, `grant`), then discards what the image's
    /// previous form named and this one does not. Returns the image as stored now. Blocking: call it off the
    /// async threads. Whatever `record` names must be leased by the caller until this returns.
    pub fn record(
        &self,
        record: ImageRecord,
        grant: Option<&Grant>,
        now_ns: i64,
    ) -> Result<Arc<ImageRecord>, MetadataError> {
        let recorded = self.metadata.record_granted(record, grant, now_ns)?;
        if !recorded.dropped.is_empty() {
            // Another form of this image was recorded before: what only it named is garbage now.
            let freed = self.discard_unreferenced(&recorded.dropped);
            tracing::debug!(id = %recorded.image.id, freed_bytes = freed, "Replaced another form of the image");
        }
        self.refresh_index_or_warn();
        Ok(recorded.image)
    }

    /// Removes the image `id` when `goes` agrees of its current record (decided in one step with the
    /// removal, under the metadata store's lock: see [`MetadataStore::remove_if`]), announces the removal
    /// to `events` and waits for them, so a runtime never lists an image whose files are gone, then deletes
    /// the blobs and layers only that record named and refreshes `index.json`. `None`: the image was absent
    /// or `goes` declined.
    pub async fn remove_image(
        &self,
        events: &dyn ImageEvents,
        id: &Digest,
        goes: impl FnOnce(&Arc<ImageRecord>) -> bool,
    ) -> Result<Option<Removal>, StoresError> {
        let Some(record) = self.metadata.remove_if(id, goes)? else {
            return Ok(None);
        };
        events.removed(&record).await;
        // What the removed record named: a pull of another form of the image may have replaced the record
        // the caller looked at, and the form it recorded is the one whose files are garbage now.
        let named: Vec<Digest> = record.blobs().chain(record.chain_ids()).collect();
        let stores = self.clone();
        let freed_bytes = tokio::task::spawn_blocking(move || {
            let freed = stores.discard_unreferenced(&named);
            stores.refresh_index_or_warn();
            freed
        })
        .await
        .map_err(|e| StoresError::Discard {
            id: record.id,
            detail: e.to_string(),
        })?;
        Ok(Some(Removal { record, freed_bytes }))
    }

    /// Rewrites the OCI layout's `index.json` from the metadata: one entry per tag (or, for an untagged
    /// image, its first repo digest), so OCI tools see the images by name.
    pub fn refresh_index(&self) -> Result<(), crate::content::ContentError> {
        self.content.write_index(|| {
            let mut entries = Vec::new();
            for rec in self.metadata.list() {
                let top = rec.index.as_ref().unwrap_or(&rec.manifest);
                let mut names: Vec<&String> = rec.repo_tags.iter().collect();
                if names.is_empty() {
                    names.extend(rec.repo_digests.iter().take(1));
                }
                for name in names {
                    entries.push(crate::content::IndexEntry {
                        media_type: top.media_type.clone(),
                        digest: top.digest,
                        size: top.size,
                        annotations: [("org.opencontainers.image.ref.name".to_string(), name.clone())].into(),
                    });
                }
            }
            entries
        })
    }

    /// [`Stores::refresh_index`] after a change that has happened: the index is derived (rebuilt at
    /// start), so failing to write it fails nothing.
    fn refresh_index_or_warn(&self) {
        if let Err(e) = self.refresh_index() {
            tracing::warn!(error = %e, "could not refresh index.json");
        }
    }

    /// Removes the blobs and snapshots among `digests` that no recorded image references and no other
    /// operation has leased. Returns the bytes freed.
    pub fn discard_unreferenced(&self, digests: &[Digest]) -> u64 {
        let images = self.metadata.list();
        let (blobs, snaps) = (referenced_blobs(&images), referenced_snapshots(&images));
        let mut freed = 0;
        for d in digests {
            if !blobs.contains(d) {
                match self.content.delete(d) {
                    Ok(n) => freed += n,
                    Err(e) => tracing::warn!(blob = %d, error = %e, "could not remove an unreferenced blob"),
                }
            }
            if !snaps.contains(d) {
                match self.layers.delete(d) {
                    Ok(n) => freed += n,
                    Err(e) => tracing::warn!(snapshot = %d, error = %e, "could not remove an unreferenced snapshot"),
                }
            }
        }
        freed
    }
}

/// Every blob the images reference.
pub fn referenced_blobs(records: &[Arc<ImageRecord>]) -> HashSet<Digest> {
    records.iter().flat_map(|r| r.blobs().collect::<Vec<_>>()).collect()
}

/// Every snapshot (chain id) the images reference.
pub fn referenced_snapshots(records: &[Arc<ImageRecord>]) -> HashSet<Digest> {
    records.iter().flat_map(|r| r.chain_ids()).collect()
}
