//! Leases: what an operation in flight is about to reference, protected from deletion.
//!
//! A pull takes a [`Lease`] on every blob digest and snapshot chain id its image names *before* it checks
//! whether they exist; the stores never delete a leased item. The table's lock also orders a store's
//! "exists?/leased?" checks with the deletion or commit that follows, so the check and the action are one
//! step (see `content` and `snapshot`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::digest::Digest;

/// The lease counts of every leased digest; shared by the content and snapshot stores.
#[derive(Debug, Default)]
pub struct LeaseTable {
    map: Mutex<HashMap<Digest, usize>>,
}

/// The locked table: while held, no lease is taken or dropped.
pub type Locked<'a> = MutexGuard<'a, HashMap<Digest, usize>>;

impl LeaseTable {
    /// A new, empty table.
    pub fn new() -> Arc<LeaseTable> {
        Arc::new(LeaseTable::default())
    }

    /// Locks the table.
    pub fn lock(&self) -> Locked<'_> {
        // Each update is a single map operation, so a panic elsewhere cannot leave it inconsistent.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `digest` is leased now.
    pub fn is_leased(&self, digest: &Digest) -> bool {
        self.lock().contains_key(digest)
    }

    /// A new, empty lease on this table.
    pub fn lease(self: &Arc<Self>) -> Lease {
        Lease {
            table: self.clone(),
            digests: Vec::new(),
        }
    }
}

/// Protects digests from deletion until dropped.
#[derive(Debug)]
pub struct Lease {
    table: Arc<LeaseTable>,
    digests: Vec<Digest>,
}

impl Lease {
    /// Adds a digest. Call before checking whether the blob or snapshot exists.
    pub fn add(&mut self, digest: Digest) {
        *self.table.lock().entry(digest).or_insert(0) += 1;
        self.digests.push(digest);
    }

    /// The digests this lease holds.
    pub fn digests(&self) -> &[Digest] {
        &self.digests
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut map = self.table.lock();
        for d in &self.digests {
            if let Some(n) = map.get_mut(d) {
                *n -= 1;
                if *n == 0 {
                    map.remove(d);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_overlapping_leases() {
        let t = LeaseTable::new();
        let d = Digest::of(b"x");
        let mut a = t.lease();
        let mut b = t.lease();
        a.add(d);
        b.add(d);
        drop(a);
        assert!(t.lock().contains_key(&d));
        drop(b);
        assert!(t.lock().is_empty());
    }
}
