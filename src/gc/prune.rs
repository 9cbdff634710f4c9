//! Graph pruning of a node's store, after OpenShift's `oc adm prune images`
//! (`openshift/oc` `pkg/cli/admin/prune/imageprune`).
//!
//! OpenShift prunes a registry: it walks image stream tags → tag revisions → images → layers and configs, keeps
//! what recent revisions, young objects and running workloads reference, and deletes the rest, down to blobs no
//! image references any more. [`plan`] is the same mark and sweep over one node's store, as a pure function:
//!
//! - Kept images (the roots):
//!   - the newest `keep_tag_revisions` revisions of every tag (revision 0 is the image the tag names now; an image
//!     holding a tag is revision 0 of it even if the recorded history lags behind);
//!   - revisions tagged less than `keep_younger_than` ago (OpenShift keeps young tag events);
//!   - images younger than `keep_younger_than`, counted from the later of `created_ns` and `first_seen_ns`
//!     (OpenShift ages the image object, i.e. its arrival in the store; on a node that is the pull);
//!   - images in use or pinned;
//!   - unless `all`, images that no tag revision mentions (untagged: on a node, pulled by digest).
//! - Every resource reachable from a kept image is kept. Every other image, and every other resource in the
//!   store (orphans included), is removed.
//!
//! The output is sorted, so a dry run lists exactly what a real run removes. The caller must keep the store
//! still between planning and deleting: a pull in flight has committed blobs that no image references yet, so
//! take the pull lock, or pass them as the resources of a pinned placeholder image.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::{self, Write as _};
use std::time::Duration;

use super::policy::ResourceId;

/// OpenShift's default for `--keep-tag-revisions`, used when [`PruneOptions::keep_tag_revisions`] is `None`.
pub const DEFAULT_KEEP_TAG_REVISIONS: usize = 3;

/// OpenShift's default for `--keep-younger-than` (60m).
pub const DEFAULT_KEEP_YOUNGER_THAN: Duration = Duration::from_secs(60 * 60);

/// One image in the store. Ids are expected to be unique; entries repeating an id are merged (kept if any is).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PruneImage {
    /// The image id (config digest).
    pub id: String,
    /// When the image was built (its config's `created`), or `first_seen_ns` if unknown; ns since the epoch.
    pub created_ns: i64,
    /// When the store first saw the image (its pull), in ns since the Unix epoch.
    pub first_seen_ns: i64,
    /// Pinned images are always kept.
    pub pinned: bool,
    /// Images a container uses now are always kept.
    pub in_use: bool,
    /// The tags (references) naming this image now.
    pub tags: Vec<String>,
    /// Every blob and snapshot the image references.
    pub resources: Vec<ResourceId>,
}

/// One entry of a tag's history: the tag named this image from `tagged_at_ns` on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagRevision {
    /// The image the tag named.
    pub image_id: String,
    /// When the tag was set to it, in ns since the Unix epoch.
    pub tagged_at_ns: i64,
}

/// What to keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PruneOptions {
    /// Keep images and tag revisions younger than this; `None` protects nothing by age. Default 60m.
    pub keep_younger_than: Option<Duration>,
    /// Keep this many of the newest revisions of every tag (0 keeps none, not even the current one);
    /// `None` means [`DEFAULT_KEEP_TAG_REVISIONS`].
    pub keep_tag_revisions: Option<usize>,
    /// Also prune untagged images (those no tag revision mentions). Without it only images that appear solely in
    /// tag revisions older than the kept ones are pruned.
    pub all: bool,
}

impl Default for PruneOptions {
    fn default() -> PruneOptions {
        PruneOptions {
            keep_younger_than: Some(DEFAULT_KEEP_YOUNGER_THAN),
            keep_tag_revisions: Some(DEFAULT_KEEP_TAG_REVISIONS),
            all: false,
        }
    }
}

/// Why an image is pruned.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum PruneReason {
    /// It appears only in tag revisions older than the kept ones; this is the first of them (by tag, then
    /// revision, 0 being the current one).
    OldRevision {
        /// The tag.
        tag: String,
        /// The revision index, 0 being the current image.
        revision: usize,
    },
    /// No tag revision mentions it (pruned only with `all`).
    Untagged,
}

impl fmt::Display for PruneReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PruneReason::OldRevision { tag, revision } => write!(f, "revision {revision} of tag {tag}"),
            PruneReason::Untagged => f.write_str("untagged"),
        }
    }
}

/// An image the prune removes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrunedImage {
    /// The image id.
    pub id: String,
    /// Why it goes.
    pub reason: PruneReason,
}

/// What a prune removes, sorted: images by id, resources by kind then id.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PrunePlan {
    /// The images to remove.
    pub images: Vec<PrunedImage>,
    /// The blobs and snapshots to remove, with their sizes; all of them are in the store and unreachable from
    /// every kept image.
    pub resources: Vec<(ResourceId, u64)>,
    /// The sum of the removed resources' sizes.
    pub freed_bytes: u64,
    /// How many images stay.
    pub kept: usize,
}

/// Plans a prune; see the module documentation for the rules. `history` maps each tag to its revisions, newest
/// first; `resources` lists everything in the store with its on-disk size, referenced or not.
pub fn plan(
    images: &[PruneImage],
    history: &HashMap<String, Vec<TagRevision>>,
    resources: &HashMap<ResourceId, u64>,
    options: &PruneOptions,
    now_ns: i64,
) -> PrunePlan {
    let keep_revisions = options.keep_tag_revisions.unwrap_or(DEFAULT_KEEP_TAG_REVISIONS);
    let young = |t: i64| {
        options
            .keep_younger_than
            .is_some_and(|d| i128::from(now_ns) - i128::from(t) < d.as_nanos() as i128)
    };

    let mut by_id: BTreeMap<&str, Vec<&PruneImage>> = BTreeMap::new();
    for img in images {
        by_id.entry(img.id.as_str()).or_default().push(img);
    }

    // The graph's first edges: tag → revisions (image id, when tagged), newest first.
    let mut revisions: BTreeMap<&str, Vec<(&str, Option<i64>)>> = history
        .iter()
        .map(|(tag, revs)| {
            (
                tag.as_str(),
                revs.iter()
                    .map(|r| (r.image_id.as_str(), Some(r.tagged_at_ns)))
                    .collect(),
            )
        })
        .collect();
    for img in by_id.values().flatten() {
        for tag in &img.tags {
            let revs = revisions.entry(tag.as_str()).or_default();
            if revs.first().map(|r| r.0) != Some(img.id.as_str()) {
                revs.insert(0, (img.id.as_str(), None));
            }
        }
    }
    let mut kept_by_tag: HashSet<&str> = HashSet::new();
    let mut old_revision: HashMap<&str, (&str, usize)> = HashMap::new();
    for (tag, revs) in &revisions {
        for (revision, (id, tagged_at)) in revs.iter().enumerate() {
            if revision < keep_revisions || tagged_at.is_some_and(young) {
                kept_by_tag.insert(id);
            } else {
                old_revision.entry(id).or_insert((tag, revision));
            }
        }
    }

    let mut out = PrunePlan::default();
    let mut reachable: HashSet<&ResourceId> = HashSet::new();
    for (id, entries) in &by_id {
        let reason = match old_revision.get(id) {
            Some((tag, revision)) => Some(PruneReason::OldRevision {
                tag: tag.to_string(),
                revision: *revision,
            }),
            None if options.all => Some(PruneReason::Untagged),
            None => None,
        };
        let protected = entries
            .iter()
            .any(|e| e.in_use || e.pinned || young(e.created_ns.max(e.first_seen_ns)));
        match reason {
            Some(reason) if !protected && !kept_by_tag.contains(id) => {
                out.images.push(PrunedImage {
                    id: id.to_string(),
                    reason,
                });
            }
            _ => {
                out.kept += 1;
                reachable.extend(entries.iter().flat_map(|e| &e.resources));
            }
        }
    }

    out.resources = resources
        .iter()
        .filter(|(r, _)| !reachable.contains(r))
        .map(|(r, n)| (r.clone(), *n))
        .collect();
    out.resources.sort();
    out.freed_bytes = out.resources.iter().fold(0u64, |sum, (_, n)| sum.saturating_add(*n));
    out
}

/// The listing a prune prints, the same for a dry run and a real one: one line per image and per resource,
/// then a total.
pub fn render(plan: &PrunePlan) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    for img in &plan.images {
        let _ = writeln!(out, "image {}  {}", img.id, img.reason);
    }
    for (resource, size) in &plan.resources {
        let _ = writeln!(out, "{resource}  {size} bytes");
    }
    let _ = writeln!(
        out,
        "total: {} images, {} blobs and snapshots, {} bytes; {} images kept",
        plan.images.len(),
        plan.resources.len(),
        plan.freed_bytes,
        plan.kept
    );
    out
}

#[cfg(test)]
#[path = "prune_tests.rs"]
mod tests;
