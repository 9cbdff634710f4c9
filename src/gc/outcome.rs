//! What GC and prune report, and the pinned-image patterns they respect.

use super::prune::PrunePlan;
use crate::metadata::ImageRecord;
use crate::pattern::ImagePattern;

/// Image patterns that are never collected (the sandbox image, system images).
#[derive(Debug, Default, Clone)]
pub struct Pinned {
    patterns: Vec<ImagePattern>,
}

impl Pinned {
    /// Pins images matching any of `patterns`.
    pub fn new(patterns: Vec<ImagePattern>) -> Pinned {
        Pinned { patterns }
    }

    /// Whether any name of the image matches a pin (or the image was pinned when recorded).
    pub fn is_pinned(&self, rec: &ImageRecord) -> bool {
        rec.pinned
            || rec
                .repo_tags
                .iter()
                .chain(&rec.repo_digests)
                .any(|n| self.patterns.iter().any(|p| p.matches(n)))
    }
}

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
