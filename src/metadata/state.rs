//! The in-memory state of the metadata store: the records, their name indexes, and how many recorded
//! images reference each blob and snapshot.
//!
//! An image's *names* (its entry in `images`, `tags`, `digests`) and its *references* are kept apart on
//! purpose. A removal hides the names first, in the same critical section that decides it, so no reader
//! sees an image that is being removed; it drops the references only once the removal is durable, so
//! nothing the image needs can be deleted while a crash could still bring the image back.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use super::{ImageRecord, TagRevision};
use crate::digest::Digest;

#[derive(Default)]
pub(super) struct State {
    pub images: BTreeMap<Digest, Arc<ImageRecord>>,
    pub tags: HashMap<String, Digest>,
    pub digests: HashMap<String, Digest>,
    pub history: HashMap<String, Vec<TagRevision>>,
    /// Blobs and snapshots (chain ids) the recorded images reference, with how many references each has.
    pub refs: HashMap<crate::lease::Item, usize>,
    /// Images whose last-used time changed in memory since the last [`super::MetadataStore::flush`].
    pub dirty: HashSet<Digest>,
    /// Bumped whenever an image or its names change (not on last-use updates): lets readers cache what
    /// they derive from [`super::MetadataStore::list`].
    pub generation: u64,
    /// Who the registry let pull each image (see [`super::access`]).
    pub access: super::access::AccessMap,
}

impl State {
    /// Adds a record: its names and its references.
    pub fn insert(&mut self, rec: ImageRecord) {
        let rec = Arc::new(rec);
        self.add_refs(&rec);
        self.link(rec);
    }

    /// Removes a record with its names and its references.
    pub fn remove(&mut self, id: &Digest) -> Option<Arc<ImageRecord>> {
        let rec = self.unlink(id)?;
        self.drop_refs(&rec);
        Some(rec)
    }

    /// Makes a record findable (by id, tags and repo digests), without counting its references.
    pub fn link(&mut self, rec: Arc<ImageRecord>) {
        for t in &rec.repo_tags {
            self.tags.insert(t.clone(), rec.id);
        }
        for d in &rec.repo_digests {
            self.digests.insert(d.clone(), rec.id);
        }
        self.images.insert(rec.id, rec);
    }

    /// Hides a record from every lookup, leaving its references counted.
    pub fn unlink(&mut self, id: &Digest) -> Option<Arc<ImageRecord>> {
        let rec = self.images.remove(id)?;
        for t in &rec.repo_tags {
            if self.tags.get(t) == Some(id) {
                self.tags.remove(t);
            }
        }
        for d in &rec.repo_digests {
            if self.digests.get(d) == Some(id) {
                self.digests.remove(d);
            }
        }
        Some(rec)
    }

    /// Counts the references of `rec` (each blob and chain id once per occurrence).
    pub fn add_refs(&mut self, rec: &ImageRecord) {
        for item in items(rec) {
            *self.refs.entry(item).or_insert(0) += 1;
        }
    }

    /// Uncounts what [`State::add_refs`] counted for `rec`.
    pub fn drop_refs(&mut self, rec: &ImageRecord) {
        for item in items(rec) {
            if let Some(n) = self.refs.get_mut(&item) {
                *n -= 1;
                if *n == 0 {
                    self.refs.remove(&item);
                }
            }
        }
    }
}

/// What an image references: its blobs and its snapshots (chain ids).
pub(super) fn items(rec: &ImageRecord) -> impl Iterator<Item = crate::lease::Item> + '_ {
    use crate::lease::Item;
    rec.blobs()
        .map(Item::Blob)
        .chain(rec.chain_ids().into_iter().map(Item::Snapshot))
}
