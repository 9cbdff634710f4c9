//! Leases: what an operation in flight is about to reference, protected from deletion.
//!
//! A pull takes a [`Lease`] on every blob digest and snapshot chain id its image names *before* it checks
//! whether they exist; the stores never delete a leased item. The table's lock also orders a store's
//! "exists?/leased?" checks with the deletion or commit that follows, so the check and the action are one
//! step (see `content` and `layers`).
//!
//! # Recording versus removal
//!
//! What keeps an item is a lease *or* a recorded image referencing it ([`References`], the metadata store,
//! set once with [`LeaseTable::set_references`]). A deletion asks [`Locked::protects`], under this table's
//! lock, right before it deletes; a pull records its image *before* it drops its lease. So at every moment an
//! item some image needs is protected, whatever a concurrent removal (RemoveImage, GC, prune, a failed
//! pull's cleanup, the start-up sweep) believed when it chose what to delete: a removal removes the record,
//! then asks the stores to delete, and they delete only what nothing protects at that moment. Lock order:
//! this table, then the metadata store's state; never the other way round.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use crate::digest::Digest;

/// What a lease or a reference protects: a blob, or a snapshot (by chain id). The same digest can name both
/// (an uncompressed layer's blob digest is its diff id, which is the chain id of a base layer): each is kept
/// for its own reasons, and keeping one never keeps the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Item {
    /// A blob of the content store.
    Blob(Digest),
    /// A snapshot of the layer store, by chain id.
    Snapshot(Digest),
}

impl Item {
    /// The digest it is named by.
    pub fn digest(&self) -> Digest {
        match self {
            Item::Blob(d) | Item::Snapshot(d) => *d,
        }
    }
}

/// Whether recorded images reference an item (implemented by the metadata store).
pub trait References: Send + Sync {
    /// Whether some recorded image references `item`.
    fn references(&self, item: &Item) -> bool;
}

/// The lease counts of every leased digest; shared by the content and snapshot stores.
#[derive(Default)]
pub struct LeaseTable {
    map: Mutex<HashMap<Item, usize>>,
    references: OnceLock<Arc<dyn References>>,
}

impl std::fmt::Debug for LeaseTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseTable")
            .field("map", &self.map)
            .finish_non_exhaustive()
    }
}

/// The locked table: while held, no lease is taken or dropped.
pub struct Locked<'a> {
    map: MutexGuard<'a, HashMap<Item, usize>>,
    references: Option<&'a dyn References>,
}

impl Locked<'_> {
    /// Whether `item` is leased now.
    pub fn is_leased(&self, item: &Item) -> bool {
        self.map.contains_key(item)
    }

    /// Whether `item` may not be deleted now: it is leased, or a recorded image references it.
    pub fn protects(&self, item: &Item) -> bool {
        self.map.contains_key(item) || self.references.is_some_and(|r| r.references(item))
    }
}

impl LeaseTable {
    /// A new, empty table.
    pub fn new() -> Arc<LeaseTable> {
        Arc::new(LeaseTable::default())
    }

    /// Makes [`Locked::protects`] consult `references` (the metadata store); set once, when the stores are
    /// opened. Later calls are ignored.
    pub fn set_references(&self, references: Arc<dyn References>) {
        let _ = self.references.set(references);
    }

    /// Locks the table.
    pub fn lock(&self) -> Locked<'_> {
        Locked {
            map: self.map_lock(),
            references: self.references.get().map(|r| r.as_ref()),
        }
    }

    fn map_lock(&self) -> MutexGuard<'_, HashMap<Item, usize>> {
        // Each update is a single map operation, so a panic elsewhere cannot leave it inconsistent.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `item` is leased now.
    pub fn is_leased(&self, item: &Item) -> bool {
        self.map_lock().contains_key(item)
    }

    /// A new, empty lease on this table.
    pub fn lease(self: &Arc<Self>) -> Lease {
        Lease {
            table: self.clone(),
            items: Vec::new(),
        }
    }
}

/// Protects blobs and snapshots from deletion until dropped.
#[derive(Debug)]
pub struct Lease {
    table: Arc<LeaseTable>,
    items: Vec<Item>,
}

impl Lease {
    /// Adds an item. Call before checking whether the blob or snapshot exists.
    pub fn add(&mut self, item: Item) {
        *self.table.map_lock().entry(item).or_insert(0) += 1;
        self.items.push(item);
    }

    /// The items this lease holds.
    pub fn items(&self) -> &[Item] {
        &self.items
    }

    /// The digests of the items this lease holds.
    pub fn digests(&self) -> Vec<Digest> {
        self.items.iter().map(Item::digest).collect()
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut map = self.table.map_lock();
        for d in &self.items {
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
        let d = Item::Blob(Digest::of(b"x"));
        let mut a = t.lease();
        let mut b = t.lease();
        a.add(d);
        b.add(d);
        drop(a);
        assert!(t.is_leased(&d));
        assert!(
            !t.is_leased(&Item::Snapshot(d.digest())),
            "a blob's lease keeps no snapshot"
        );
        drop(b);
        assert!(!t.is_leased(&d));
    }

    struct Recorded(Item);

    impl References for Recorded {
        fn references(&self, item: &Item) -> bool {
            *item == self.0
        }
    }

    #[test]
    fn a_referenced_digest_is_protected_without_a_lease() {
        let t = LeaseTable::new();
        let (recorded, leased, free) = (
            Item::Snapshot(Digest::of(b"r")),
            Item::Blob(Digest::of(b"l")),
            Item::Blob(Digest::of(b"f")),
        );
        let mut lease = t.lease();
        lease.add(leased);
        assert!(!t.lock().protects(&recorded), "no references set yet");
        t.set_references(Arc::new(Recorded(recorded)));
        let locked = t.lock();
        assert!(locked.protects(&recorded) && locked.protects(&leased) && !locked.protects(&free));
        assert!(
            !locked.protects(&Item::Blob(recorded.digest())),
            "a referenced snapshot keeps no blob"
        );
    }
}
