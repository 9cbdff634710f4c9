//! The blobs and snapshots GC and prune plan with: what exists, what is leased, what each takes on disk.

use std::collections::HashMap;

use super::Collector;
use crate::digest::Digest;
use crate::gc::policy::ResourceId;
use crate::lease::Item;
use crate::metadata::ImageRecord;

impl Collector {
    pub(super) fn exists(&self, r: &ResourceId) -> bool {
        match digest_of(r) {
            Some(d) => match r {
                ResourceId::Blob(_) => self.stores.content.contains(&d),
                ResourceId::Snapshot(_) => self.stores.layers.exists(&d),
            },
            None => false,
        }
    }

    /// Every blob and snapshot in the store that no lease protects, with its size.
    pub(super) fn all_resources(&self) -> HashMap<ResourceId, u64> {
        let s = &self.stores;
        let mut out = HashMap::new();
        for d in s.content.list().unwrap_or_default() {
            if !s.leases.is_leased(&Item::Blob(d)) {
                let r = ResourceId::Blob(d.to_string());
                out.insert(r.clone(), self.size_of(&r));
            }
        }
        for c in s.layers.list().unwrap_or_default() {
            if !s.leases.is_leased(&Item::Snapshot(c)) {
                let r = ResourceId::Snapshot(c.to_string());
                out.insert(r.clone(), self.size_of(&r));
            }
        }
        out
    }

    pub(super) fn size_of(&self, r: &ResourceId) -> u64 {
        match r {
            ResourceId::Blob(d) => d
                .parse()
                .ok()
                .and_then(|d| self.stores.content.allocated(&d))
                .unwrap_or(0),
            ResourceId::Snapshot(c) => c
                .parse()
                .ok()
                .and_then(|c| self.stores.layers.meta(&c))
                .map_or(0, |m| m.bytes),
        }
    }
}

pub(super) fn resources_of(r: &ImageRecord) -> Vec<ResourceId> {
    r.blobs()
        .map(|d| ResourceId::Blob(d.to_string()))
        .chain(r.chain_ids().into_iter().map(|c| ResourceId::Snapshot(c.to_string())))
        .collect()
}

pub(super) fn digest_of(r: &ResourceId) -> Option<Digest> {
    match r {
        ResourceId::Blob(d) | ResourceId::Snapshot(d) => d.parse().ok(),
    }
}
