//! What GC and prune report.

use super::prune::PrunePlan;

/// One image removed (or that would be).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removed {
    /// The image id.
    pub id: String,
    /// Its tags.
    pub repo_tags: Vec<String>,
    /// Why it was chosen.
    pub reason: String,
    /// Bytes released by removing it (planned, for a dry run).
    pub freed_bytes: u64,
}

/// What a GC run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcOutcome {
    /// Images removed, in order.
    pub removed: Vec<Removed>,
    /// Bytes freed (measured by what was deleted; planned for a dry run).
    pub freed_bytes: u64,
    /// Bytes the run aimed to free.
    pub target_bytes: u64,
    /// Size of the filesystem holding the store.
    pub capacity_bytes: u64,
    /// Used bytes of that filesystem before and after.
    pub used_before: u64,
    /// Used bytes after.
    pub used_after: u64,
    /// Why the target was not reached, if it was not (kubelet's FreeDiskSpaceFailed).
    pub shortfall: Option<String>,
}

/// What a prune did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneOutcome {
    /// The plan (executed unless dry run).
    pub plan: PrunePlan,
    /// The listing `imaged prune` prints.
    pub report: String,
    /// Bytes freed (measured; planned for a dry run).
    pub freed_bytes: u64,
}
