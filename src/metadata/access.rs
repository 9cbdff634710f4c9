//! Who the registry let pull each image: the records behind credential re-verification (kubelet's
//! KEP-2535, "ensure secret pulled images", enforced in the server; the decisions are in
//! `crate::ensure::verify`).
//!
//! A record says that the registry served image `id`, from `repository`, to an [`Accessor`]: the node (a
//! request without credentials, answered with the node's own credentials if it has any, or anonymously)
//! or the holder of the credentials whose keyed hash it stores, never the secret. A record is written in
//! the same transaction as the image record of the pull that proves it (so a crash cannot leave an image
//! pulled with credentials that looks as if nobody had pulled it), or alone after a verification; it is
//! removed with its image, in the removal's transaction. At most [`MAX_ACCESSORS`] are kept per image and
//! repository; the oldest give way (their holders are verified again, one manifest request each).

use std::collections::HashMap;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};

use super::{MetadataError, MetadataStore};
use crate::digest::Digest;

/// `"<image id> <repository> <accessor>"` -> when granted (Unix nanoseconds).
pub(super) const ACCESS: TableDefinition<&str, i64> = TableDefinition::new("access");

/// Records kept per image and repository (kubelet stops writing more than 100 per image too).
pub const MAX_ACCESSORS: usize = 100;

/// To whom a registry served an image.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Accessor {
    /// Any request of this node that carries no credentials (kubelet's `nodePodsAccessible`): an anonymous
    /// pull, or one with the node's own credentials from its docker config files.
    Node,
    /// Whoever holds the credentials with this keyed hash (lowercase hex HMAC-SHA256).
    Keyed(String),
}

impl Accessor {
    fn as_key(&self) -> String {
        match self {
            Accessor::Node => "node".to_string(),
            Accessor::Keyed(h) => format!("hmac-sha256:{h}"),
        }
    }

    fn parse(s: &str) -> Option<Accessor> {
        match s {
            "node" => Some(Accessor::Node),
            _ => s.strip_prefix("hmac-sha256:").map(|h| Accessor::Keyed(h.to_string())),
        }
    }
}

/// A record to write: `accessor` may use the image from `repository` (a name without tag or digest:
/// `docker.io/library/busybox`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The repository the registry served the image from.
    pub repository: String,
    /// To whom.
    pub accessor: Accessor,
}

/// What the records say about one image, repository and accessor.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AccessView {
    /// Some record exists for the image (in any repository): imaged pulled it, it was not preloaded.
    pub tracked: bool,
    /// The node may use the image from this repository (it was served without request credentials).
    pub node: bool,
    /// This accessor may use the image from this repository.
    pub granted: bool,
}

/// The records in memory: image -> repository -> accessor -> since.
pub(super) type AccessMap = HashMap<Digest, HashMap<String, HashMap<Accessor, i64>>>;

/// Rows to write and delete, in the transaction of the change they belong to, then applied to memory.
#[derive(Debug, Default)]
pub(super) struct AccessChanges {
    put: Vec<(Digest, String, Accessor, i64)>,
    delete: Vec<(Digest, String, Accessor)>,
}

impl AccessChanges {
    /// The rows that record `grant` for `id` (none if it is recorded already), evicting the oldest record
    /// of that repository beyond [`MAX_ACCESSORS`].
    pub fn grant(map: &AccessMap, id: &Digest, grant: &Grant, now_ns: i64) -> AccessChanges {
        let mut out = AccessChanges::default();
        let current = map.get(id).and_then(|r| r.get(&grant.repository));
        if current.is_some_and(|a| a.contains_key(&grant.accessor)) {
            return out;
        }
        if let Some(current) = current.filter(|a| a.len() >= MAX_ACCESSORS) {
            let mut oldest: Vec<(&Accessor, &i64)> = current.iter().collect();
            oldest.sort_by_key(|(_, since)| **since);
            let excess = current.len() + 1 - MAX_ACCESSORS;
            for (accessor, _) in oldest.into_iter().take(excess) {
                out.delete.push((*id, grant.repository.clone(), accessor.clone()));
            }
        }
        out.put
            .push((*id, grant.repository.clone(), grant.accessor.clone(), now_ns));
        out
    }

    /// The rows that forget every record of `id`.
    pub fn forget(map: &AccessMap, id: &Digest) -> AccessChanges {
        let mut out = AccessChanges::default();
        for (repository, accessors) in map.get(id).into_iter().flatten() {
            for accessor in accessors.keys() {
                out.delete.push((*id, repository.clone(), accessor.clone()));
            }
        }
        out
    }

    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.put.is_empty() && self.delete.is_empty()
    }

    /// Writes the rows in `tx`.
    pub fn write(&self, tx: &WriteTransaction) -> Result<(), redb::Error> {
        let mut table = tx.open_table(ACCESS)?;
        for (id, repository, accessor) in &self.delete {
            table.remove(row_key(id, repository, accessor).as_str())?;
        }
        for (id, repository, accessor, since) in &self.put {
            table.insert(row_key(id, repository, accessor).as_str(), *since)?;
        }
        Ok(())
    }

    /// Makes memory what the committed rows say.
    pub fn apply(self, map: &mut AccessMap) {
        for (id, repository, accessor) in self.delete {
            if let Some(repos) = map.get_mut(&id) {
                if let Some(accessors) = repos.get_mut(&repository) {
                    accessors.remove(&accessor);
                    if accessors.is_empty() {
                        repos.remove(&repository);
                    }
                }
                if repos.is_empty() {
                    map.remove(&id);
                }
            }
        }
        for (id, repository, accessor, since) in self.put {
            map.entry(id)
                .or_default()
                .entry(repository)
                .or_default()
                .insert(accessor, since);
        }
    }
}

fn row_key(id: &Digest, repository: &str, accessor: &Accessor) -> String {
    format!("{id} {repository} {}", accessor.as_key())
}

fn parse_row_key(key: &str) -> Option<(Digest, String, Accessor)> {
    let mut parts = key.splitn(3, ' ');
    let id = parts.next()?.parse().ok()?;
    let repository = parts.next()?.to_string();
    let accessor = Accessor::parse(parts.next()?)?;
    Some((id, repository, accessor))
}

/// Reads every record of an image `is_image` knows, and deletes the rows of images that are gone or that
/// do not parse: not written by this version (records go with their image), so tidied, never trusted.
pub(super) fn load(db: &Database, is_image: impl Fn(&Digest) -> bool) -> Result<AccessMap, redb::Error> {
    let mut map = AccessMap::new();
    let mut stale = Vec::new();
    let tx = db.begin_read()?;
    for row in tx.open_table(ACCESS)?.iter()? {
        let (k, v) = row?;
        match parse_row_key(k.value()) {
            Some((id, repository, accessor)) if is_image(&id) => {
                map.entry(id)
                    .or_default()
                    .entry(repository)
                    .or_default()
                    .insert(accessor, v.value());
            }
            _ => stale.push(k.value().to_string()),
        }
    }
    drop(tx);
    if !stale.is_empty() {
        let tx = db.begin_write()?;
        {
            let mut table = tx.open_table(ACCESS)?;
            for key in &stale {
                table.remove(key.as_str())?;
            }
        }
        tx.commit()?;
    }
    Ok(map)
}

impl MetadataStore {
    /// What the records say about `accessor` using image `id` from `repository`.
    pub fn access(&self, id: &Digest, repository: &str, accessor: &Accessor) -> AccessView {
        let state = self.read();
        let Some(repos) = state.access.get(id) else {
            return AccessView::default();
        };
        let accessors = repos.get(repository);
        AccessView {
            tracked: true,
            node: accessors.is_some_and(|a| a.contains_key(&Accessor::Node)),
            granted: accessors.is_some_and(|a| a.contains_key(accessor)),
        }
    }

    /// Records `grant` for image `id`, unless it is recorded already. Returns `false`, writing nothing,
    /// when the image is not in the store (removed meanwhile): records live and die with their image.
    pub fn grant(&self, id: &Digest, grant: &Grant, now_ns: i64) -> Result<bool, MetadataError> {
        let _writer = self.writer();
        let changes = {
            let state = self.read();
            if !state.images.contains_key(id) {
                return Ok(false);
            }
            AccessChanges::grant(&state.access, id, grant, now_ns)
        };
        if changes.is_empty() {
            return Ok(true);
        }
        self.commit_all(&[], &[], &[], &changes)?;
        changes.apply(&mut self.write().access);
        Ok(true)
    }
}

#[cfg(test)]
#[path = "access_tests.rs"]
mod tests;
