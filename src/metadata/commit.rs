//! Writing records: one redb transaction for the images, their tag history and access records.

use super::access::AccessChanges;
use super::{IMAGES, ImageRecord, MetadataError, MetadataStore, TAG_HISTORY, TagRevision};
use crate::digest::Digest;

impl MetadataStore {
    /// Writes `put`, deletes `delete`, replaces the `history` of the tags named and applies `access`, in
    /// one durable transaction.
    pub(super) fn commit_all(
        &self,
        put: &[ImageRecord],
        delete: &[Digest],
        history: &[(String, Vec<TagRevision>)],
        access: &AccessChanges,
    ) -> Result<(), MetadataError> {
        let err = |e: redb::Error| MetadataError::Db {
            path: self.path.clone(),
            source: Box::new(e),
        };
        let tx = self.db.begin_write().map_err(|e| err(e.into()))?;
        {
            let mut table = tx.open_table(IMAGES).map_err(|e| err(e.into()))?;
            for rec in put {
                // Serialising a struct of strings and numbers cannot fail.
                let json = serde_json::to_vec(rec).unwrap_or_default();
                table
                    .insert(rec.id.to_string().as_str(), json.as_slice())
                    .map_err(|e| err(e.into()))?;
            }
            for id in delete {
                table.remove(id.to_string().as_str()).map_err(|e| err(e.into()))?;
            }
            let mut table = tx.open_table(TAG_HISTORY).map_err(|e| err(e.into()))?;
            for (tag, revs) in history {
                let json = serde_json::to_vec(revs).unwrap_or_default();
                table.insert(tag.as_str(), json.as_slice()).map_err(|e| err(e.into()))?;
            }
        }
        access.write(&tx).map_err(err)?;
        tx.commit().map_err(|e| err(e.into()))
    }
}

/// `a` then the entries of `b` not in `a`.
pub(super) fn union(a: &[String], b: &[String]) -> Vec<String> {
    let mut out = a.to_vec();
    for x in b {
        if !out.contains(x) {
            out.push(x.clone());
        }
    }
    out
}
