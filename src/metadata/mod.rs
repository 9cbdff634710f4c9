//! Image metadata: which images exist, their names and bookkeeping, in a transactional redb database.
//!
//! Every change is one redb write transaction (fsynced on commit), so a crash leaves either the old or the
//! new state. All records are also held in memory, indexed by id, tag and repo digest: kubelet lists and
//! inspects images far more often than it changes them, and answering from memory keeps those RPCs in
//! microseconds with thousands of images. Writers are serialised by a writer lock held across the
//! transaction; the state lock is taken only to read and, after the commit, to update memory, so readers
//! never wait for an fsync.
//!
//! The store also counts, per blob and snapshot, how many recorded images reference it
//! ([`MetadataStore::references`]): the content and snapshot stores ask it, under the lease table's lock,
//! right before they delete anything (see [`crate::lease`]). A pull records its image before it drops its
//! lease, so an item an image needs is always held by a lease or a record, and no removal, however stale
//! its view, can delete it.
//!
//! Beside the images it keeps who the registry let pull them ([`access`]), for credential re-verification;
//! those records are written and removed in the transactions of the images they belong to.

pub mod access;
mod commit;
mod error;
mod record;
#[cfg(test)]
mod sample;
mod state;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

pub use crate::manifest::Descriptor;
use access::AccessChanges;
pub use access::{AccessView, Accessor, Grant, MAX_ACCESSORS};
use commit::union;
pub use error::MetadataError;
pub use record::{ImageRecord, LayerRecord, chain_ids};
use state::State;

use crate::digest::Digest;

const IMAGES: TableDefinition<&str, &[u8]> = TableDefinition::new("images");
/// Tag -> JSON list of [`TagRevision`], newest first (prune keeps recent revisions of each tag).
const TAG_HISTORY: TableDefinition<&str, &[u8]> = TableDefinition::new("tag_history");
/// Revisions remembered per tag; older ones are forgotten.
const MAX_REVISIONS: usize = 100;

/// One image a tag pointed at, and since when.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TagRevision {
    /// The image.
    pub image: Digest,
    /// When the tag started pointing at it (Unix nanoseconds).
    pub since_ns: i64,
}

/// What [`MetadataStore::record`] did.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// The image as stored now (names merged with what it had).
    pub image: Arc<ImageRecord>,
    /// Images that lost a tag to it.
    pub untagged: Vec<Digest>,
    /// Blobs and snapshots the image's previous record named and this one does not: a pull of another form
    /// of the same image (another manifest, other compressed layers, one config) replaced it. The caller
    /// discards those no other image references ([`crate::stores::Stores::discard_unreferenced`]).
    pub dropped: Vec<Digest>,
}

impl crate::lease::References for MetadataStore {
    fn references(&self, item: &crate::lease::Item) -> bool {
        MetadataStore::references(self, item)
    }
}

/// The image metadata store.
pub struct MetadataStore {
    db: Database,
    path: PathBuf,
    state: RwLock<State>,
    /// Held by each writer across its transaction (redb has one writer at a time anyway).
    writer: Mutex<()>,
}

impl MetadataStore {
    /// Opens (creating if needed) the database at `path` and loads every record.
    pub fn open(path: &Path) -> Result<MetadataStore, MetadataError> {
        let err = |e: redb::Error| MetadataError::Db {
            path: path.to_path_buf(),
            source: Box::new(e),
        };
        let db = Database::create(path).map_err(|e| err(e.into()))?;
        // Make sure the table exists so reads never see "no such table".
        let tx = db.begin_write().map_err(|e| err(e.into()))?;
        tx.open_table(IMAGES).map_err(|e| err(e.into()))?;
        tx.open_table(TAG_HISTORY).map_err(|e| err(e.into()))?;
        tx.open_table(access::ACCESS).map_err(|e| err(e.into()))?;
        tx.commit().map_err(|e| err(e.into()))?;

        let mut state = State::default();
        let tx = db.begin_read().map_err(|e| err(e.into()))?;
        let table = tx.open_table(IMAGES).map_err(|e| err(e.into()))?;
        for row in table.iter().map_err(|e| err(e.into()))? {
            let (k, v) = row.map_err(|e| err(e.into()))?;
            let rec: ImageRecord = serde_json::from_slice(v.value()).map_err(|source| MetadataError::Corrupt {
                path: path.to_path_buf(),
                key: k.value().to_string(),
                source,
            })?;
            state.insert(rec);
        }
        let table = tx.open_table(TAG_HISTORY).map_err(|e| err(e.into()))?;
        for row in table.iter().map_err(|e| err(e.into()))? {
            let (k, v) = row.map_err(|e| err(e.into()))?;
            let revs: Vec<TagRevision> =
                serde_json::from_slice(v.value()).map_err(|source| MetadataError::Corrupt {
                    path: path.to_path_buf(),
                    key: k.value().to_string(),
                    source,
                })?;
            state.history.insert(k.value().to_string(), revs);
        }
        drop(tx);
        state.access = access::load(&db, |id| state.images.contains_key(id)).map_err(err)?;
        Ok(MetadataStore {
            db,
            path: path.to_path_buf(),
            state: RwLock::new(state),
            writer: Mutex::new(()),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The image with this id.
    pub fn get(&self, id: &Digest) -> Option<Arc<ImageRecord>> {
        self.read().images.get(id).cloned()
    }

    /// The image a `name:tag` points at.
    pub fn by_tag(&self, name_tag: &str) -> Option<Arc<ImageRecord>> {
        let s = self.read();
        s.tags.get(name_tag).and_then(|id| s.images.get(id)).cloned()
    }

    /// The image a `name@sha256:…` points at.
    pub fn by_repo_digest(&self, name_digest: &str) -> Option<Arc<ImageRecord>> {
        let s = self.read();
        s.digests.get(name_digest).and_then(|id| s.images.get(id)).cloned()
    }

    /// The one image whose id's hex starts with `prefix` (lowercase hex, at least one digit).
    pub fn by_id_prefix(&self, prefix: &str) -> Result<Option<Arc<ImageRecord>>, MetadataError> {
        let s = self.read();
        let mut found = s.images.values().filter(|r| r.id.hex().starts_with(prefix));
        let first = found.next().cloned();
        if found.next().is_some() {
            return Err(MetadataError::Ambiguous(prefix.to_string()));
        }
        Ok(first)
    }

    /// Every image, ordered by id.
    pub fn list(&self) -> Vec<Arc<ImageRecord>> {
        self.read().images.values().cloned().collect()
    }

    /// The current generation: it changes whenever an image is recorded, renamed or removed.
    pub fn generation(&self) -> u64 {
        self.read().generation
    }

    /// Every image, ordered by id, and the generation they belong to.
    pub fn list_with_generation(&self) -> (u64, Vec<Arc<ImageRecord>>) {
        let s = self.read();
        (s.generation, s.images.values().cloned().collect())
    }

    /// Records a pulled image: creates it (again, if it was removed meanwhile) or merges the new names into
    /// it, and takes `tag` away from any other image that had it. `rec.repo_tags`/`repo_digests` are the
    /// names this pull adds. Returns the record as stored and the ids of images that lost a tag.
    pub fn record(&self, rec: ImageRecord) -> Result<Recorded, MetadataError> {
        self.record_granted(rec, None, 0)
    }

    /// [`MetadataStore::record`], and in the same transaction `grant` for the image (the access its pull
    /// proved), at `now_ns`.
    pub fn record_granted(
        &self,
        rec: ImageRecord,
        grant: Option<&Grant>,
        now_ns: i64,
    ) -> Result<Recorded, MetadataError> {
        let _writer = self.writer();
        let state = self.read();
        let mut changed: Vec<ImageRecord> = Vec::new();
        let mut untagged = Vec::new();
        for tag in &rec.repo_tags {
            if let Some(other) = state.tags.get(tag).copied()
                && other != rec.id
                && let Some(o) = state.images.get(&other)
            {
                let mut o = ImageRecord::clone(o);
                o.repo_tags.retain(|t| t != tag);
                untagged.push(o.id);
                changed.push(o);
            }
        }
        let mut dropped = Vec::new();
        let merged = match state.images.get(&rec.id) {
            Some(old) => {
                // Compared as items: a plain layer's blob digest is also a chain id, and keeping the
                // snapshot must not keep the blob.
                let kept: HashSet<crate::lease::Item> = state::items(&rec).collect();
                dropped = state::items(old)
                    .filter(|i| !kept.contains(i))
                    .map(|i| i.digest())
                    .collect();
                let mut m = rec.clone();
                m.first_seen_ns = old.first_seen_ns;
                m.pinned = old.pinned || rec.pinned;
                m.repo_tags = union(&old.repo_tags, &rec.repo_tags);
                m.repo_digests = union(&old.repo_digests, &rec.repo_digests);
                m
            }
            None => rec,
        };
        let mut history = Vec::new();
        for tag in &merged.repo_tags {
            let revs = state.history.get(tag).cloned().unwrap_or_default();
            if revs.first().map(|r| r.image) != Some(merged.id) {
                let mut revs = revs;
                revs.insert(
                    0,
                    TagRevision {
                        image: merged.id,
                        since_ns: merged.last_used_ns,
                    },
                );
                revs.truncate(MAX_REVISIONS);
                history.push((tag.clone(), revs));
            }
        }
        let id = merged.id;
        let access = grant.map_or_else(AccessChanges::default, |g| {
            AccessChanges::grant(&state.access, &id, g, now_ns)
        });
        changed.push(merged);
        drop(state);
        self.commit_all(&changed, &[], &history, &access)?;
        let mut state = self.write();
        access.apply(&mut state.access);
        state.generation += 1;
        for c in changed {
            state.dirty.remove(&c.id);
            state.remove(&c.id);
            state.insert(c);
        }
        state.history.extend(history);
        let image = state.images.get(&id).cloned().ok_or_else(|| MetadataError::Lost(id))?;
        Ok(Recorded {
            image,
            untagged,
            dropped,
        })
    }

    /// Updates an image's last-used time in memory; absent images are ignored. Cheap enough for every
    /// ImageStatus: the change reaches the disk with the next [`MetadataStore::flush`] (or any other
    /// write), so a crash loses at most the last-use updates since then.
    pub fn touch(&self, id: &Digest, now_ns: i64) {
        let mut state = self.write();
        let Some(old) = state.images.get(id) else { return };
        if old.last_used_ns >= now_ns {
            return;
        }
        let mut rec = ImageRecord::clone(old);
        rec.last_used_ns = now_ns;
        state.images.insert(*id, Arc::new(rec));
        state.dirty.insert(*id);
    }

    /// Persists the last-used times changed by [`MetadataStore::touch`].
    pub fn flush(&self) -> Result<usize, MetadataError> {
        let _writer = self.writer();
        let dirty: Vec<ImageRecord> = {
            let mut state = self.write();
            let ids = std::mem::take(&mut state.dirty);
            ids.iter()
                .filter_map(|id| state.images.get(id))
                .map(|r| ImageRecord::clone(r))
                .collect()
        };
        if dirty.is_empty() {
            return Ok(0);
        }
        if let Err(e) = self.commit_all(&dirty, &[], &[], &AccessChanges::default()) {
            // Still to be written: the next flush tries again.
            let mut state = self.write();
            let still: Vec<Digest> = dirty
                .iter()
                .map(|r| r.id)
                .filter(|id| state.images.contains_key(id))
                .collect();
            state.dirty.extend(still);
            return Err(e);
        }
        Ok(dirty.len())
    }

    /// Every tag's revisions, newest first (images may have been removed since).
    pub fn history(&self) -> HashMap<String, Vec<TagRevision>> {
        self.read().history.clone()
    }

    /// Removes an image and all its names. Returns it, or `None` if it was absent.
    pub fn remove(&self, id: &Digest) -> Result<Option<Arc<ImageRecord>>, MetadataError> {
        self.remove_if(id, |_| true)
    }

    /// Removes the image `id` if `keep` says so of its current record, in one step with that decision: no
    /// pull records it, no ImageStatus touches it, and no reader finds it between the decision and the
    /// removal. Returns the removed record, or `None` if the image was absent or `keep` declined. `keep`
    /// runs under the store's locks and must not take others (a lease check belongs before the call).
    ///
    /// GC and prune pass "still the record I planned with" (`Arc::ptr_eq`), so a victim that was pulled,
    /// inspected or renamed since the plan stays.
    pub fn remove_if(
        &self,
        id: &Digest,
        keep: impl FnOnce(&Arc<ImageRecord>) -> bool,
    ) -> Result<Option<Arc<ImageRecord>>, MetadataError> {
        let _writer = self.writer();
        let (rec, access) = {
            let mut state = self.write();
            match state.images.get(id) {
                Some(current) if keep(current) => {}
                _ => return Ok(None),
            }
            // Hidden now, in the same step as the decision; its references stay counted until durable.
            state.generation += 1;
            state.dirty.remove(id);
            (state.unlink(id), AccessChanges::forget(&state.access, id))
        };
        let Some(rec) = rec else { return Ok(None) };
        if let Err(e) = self.commit_all(&[], &[*id], &[], &access) {
            let mut state = self.write();
            state.generation += 1;
            state.link(rec);
            return Err(e);
        }
        let mut state = self.write();
        state.drop_refs(&rec);
        access.apply(&mut state.access);
        Ok(Some(rec))
    }

    /// Whether a recorded image references `item` (a blob, or a snapshot by chain id).
    pub fn references(&self, item: &crate::lease::Item) -> bool {
        self.read().refs.contains_key(item)
    }

    fn read(&self) -> RwLockReadGuard<'_, State> {
        // Memory is only updated after a successful commit and each update completes without panicking
        // paths, so a poisoned lock still guards a consistent state.
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    fn writer(&self) -> MutexGuard<'_, ()> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests;
