//! Threshold image GC: which images to remove, and in what order, when the image filesystem fills up or when
//! images have gone unused for too long.
//!
//! [`plan`] is kubelet's image GC (`pkg/kubelet/images/image_gc_manager.go`) as a pure function of the images,
//! their resources, the disk usage, the policy and `now`; the daemon removes the victims in the order given.
//!
//! - Images in use or pinned are never victims (kubelet's `imagesInEvictionOrder`). An image whose last use is
//!   at or after `now` counts as in use, as in kubelet's `freeSpace`.
//! - Max-age pass (kubelet's `freeOldImages`): with [`GcPolicy::max_age`] set, every other image unused for
//!   longer than it is a victim, whatever the disk usage. Kubelet does not check the min age there; it requires
//!   `max_age > min_age` instead, and so does [`GcPolicy::validate`].
//! - Disk-pressure pass (kubelet's `GarbageCollect` + `freeSpace`): kubelet reads the disk usage again after the
//!   max-age pass, so the bytes those victims free are subtracted first. If usage is then at or above the high
//!   threshold (in kubelet's integer percent), images are taken oldest first (last used, then first seen, then id)
//!   until the freed bytes reach the amount that brings usage down to the low threshold. Images first seen less
//!   than `min_age` ago are skipped: they may have just been pulled for a container about to start.
//!
//! Where this differs from kubelet, on purpose:
//! - Freed bytes are exact. Kubelet sums image sizes, so a base layer shared by ten images is counted ten times
//!   and GC stops early with the disk still full (containerd/cri#881). Here a blob or snapshot counts only when
//!   the last image referencing it (among *all* images, victims or not) is removed. An image chosen whose removal
//!   frees nothing yet is still removed: it is the least recently used, and removing it is what lets the shared
//!   bytes go when a later victim drops the last reference.
//! - For the max-age pass, an image's last use is never earlier than its first sighting, so an image pulled and
//!   not yet used is not "unused since forever". Kubelet instead waits `max_age` after its own start, because its
//!   in-memory records forget use times on restart; the daemon should persist them (or pass its start time).
//! - A high threshold of 100 disables the disk-pressure pass, as kubelet documents for
//!   `--image-gc-high-threshold` (kubelet's code would still collect above 99 % usage).
//! - When integer rounding makes the amount to free zero or negative (low == high, usage just at the threshold),
//!   nothing is removed; kubelet would remove one image.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::time::Duration;

use crate::duration;
use crate::error::{Classify, ErrorKind};

/// Something on disk that images reference and that can be deleted once none does.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResourceId {
    /// A blob in the content store, by digest (`sha256:…`): a layer, config or manifest.
    Blob(String),
    /// An unpacked snapshot, by chain id.
    Snapshot(String),
}

impl fmt::Display for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResourceId::Blob(d) => write!(f, "blob {d}"),
            ResourceId::Snapshot(c) => write!(f, "snapshot {c}"),
        }
    }
}

/// One image as GC sees it. Ids are expected to be unique.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcImage {
    /// The image id (config digest).
    pub id: String,
    /// When the store first saw the image (its pull), in ns since the Unix epoch.
    pub first_seen_ns: i64,
    /// When a container last used the image, in ns since the Unix epoch; 0 if never. The eviction order uses it as
    /// is (never-used images go first, as in kubelet); the max-age pass uses `max(last_used_ns, first_seen_ns)`.
    pub last_used_ns: i64,
    /// Pinned images (e.g. the sandbox image) are never removed.
    pub pinned: bool,
    /// Whether a container uses the image now; such images are never removed.
    pub in_use: bool,
    /// Every blob and snapshot the image references; duplicates are ignored.
    pub resources: Vec<ResourceId>,
}

/// Usage of the filesystem holding the store (from `statvfs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Total bytes of the filesystem.
    pub capacity_bytes: u64,
    /// Bytes in use (capacity minus available); values above the capacity count as the capacity.
    pub used_bytes: u64,
}

/// When and how much to collect; kubelet's `ImageGCPolicy` and defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcPolicy {
    /// Disk usage (percent) at or above which the disk-pressure pass runs; 100 disables it. Default 85.
    pub high_threshold_percent: u8,
    /// Disk usage (percent) the disk-pressure pass frees down to. Default 80.
    pub low_threshold_percent: u8,
    /// Images first seen more recently than this are not removed under disk pressure. Default 2m.
    pub min_age: Duration,
    /// Images unused for longer than this are removed whatever the disk usage; `None` (default) disables it.
    pub max_age: Option<Duration>,
}

impl Default for GcPolicy {
    fn default() -> GcPolicy {
        GcPolicy {
            high_threshold_percent: 85,
            low_threshold_percent: 80,
            min_age: Duration::from_secs(120),
            max_age: None,
        }
    }
}

impl GcPolicy {
    /// Checks the policy as kubelet does: percentages in 0..=100, low not above high, max age above min age.
    pub fn validate(&self) -> Result<(), PolicyError> {
        let (high, low) = (self.high_threshold_percent, self.low_threshold_percent);
        if high > 100 {
            return Err(PolicyError::HighThresholdOutOfRange(high));
        }
        if low > 100 {
            return Err(PolicyError::LowThresholdOutOfRange(low));
        }
        if low > high {
            return Err(PolicyError::LowAboveHigh { low, high });
        }
        match self.max_age {
            Some(max_age) if max_age <= self.min_age => Err(PolicyError::MaxAgeNotAboveMinAge {
                max_age,
                min_age: self.min_age,
            }),
            _ => Ok(()),
        }
    }
}

/// Why GC cannot plan.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    /// The high threshold is above 100.
    #[error("invalid image GC high threshold {0}%: must be in range 0-100")]
    HighThresholdOutOfRange(u8),
    /// The low threshold is above 100.
    #[error("invalid image GC low threshold {0}%: must be in range 0-100")]
    LowThresholdOutOfRange(u8),
    /// The low threshold is above the high one.
    #[error("image GC low threshold {low}% can not be higher than high threshold {high}%")]
    LowAboveHigh {
        /// The low threshold.
        low: u8,
        /// The high threshold.
        high: u8,
    },
    /// The max age is not longer than the min age.
    #[error(
        "image GC max age {} must be greater than min age {}",
        duration::format(*max_age),
        duration::format(*min_age)
    )]
    MaxAgeNotAboveMinAge {
        /// The max age.
        max_age: Duration,
        /// The min age.
        min_age: Duration,
    },
    /// `statvfs` reported a capacity of 0.
    #[error("invalid capacity 0 on image filesystem")]
    InvalidCapacity,
}

impl Classify for PolicyError {
    fn kind(&self) -> ErrorKind {
        match self {
            PolicyError::InvalidCapacity => ErrorKind::Internal,
            _ => ErrorKind::InvalidArgument,
        }
    }
}

/// Why an image is a victim (kubelet's `image_garbage_collected_total` reasons).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VictimReason {
    /// Unused for longer than the max age.
    MaxAge,
    /// Removed to bring disk usage down to the low threshold.
    DiskPressure,
}

impl VictimReason {
    /// kubelet's metric label: `age` or `space`.
    pub fn as_str(&self) -> &'static str {
        match self {
            VictimReason::MaxAge => "age",
            VictimReason::DiskPressure => "space",
        }
    }
}

/// An image to remove.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Victim {
    /// The image id.
    pub id: String,
    /// Why it goes.
    pub reason: VictimReason,
    /// Bytes released when this image is removed after the victims before it (0 if all it holds is shared).
    pub frees_bytes: u64,
}

/// The disk-pressure pass could not find enough to free (kubelet's `FreeDiskSpaceFailed` event).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shortfall {
    /// Bytes the disk-pressure victims free.
    pub freed: u64,
    /// Bytes the disk-pressure pass had to free.
    pub target: u64,
    /// The event message: kubelet's wording plus how many images were not eligible, and why.
    pub why: String,
}

/// What one GC run removes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GcPlan {
    /// The images to remove, in order: max-age victims first, then disk-pressure victims, each oldest first.
    pub victims: Vec<Victim>,
    /// Bytes the disk-pressure pass had to free (after the max-age victims); 0 below the high threshold.
    pub target_bytes: u64,
    /// Bytes all victims free together.
    pub planned_free_bytes: u64,
    /// Set when the disk-pressure victims free less than `target_bytes`.
    pub shortfall: Option<Shortfall>,
}

/// Plans one GC run; see the module documentation for the rules. `sizes` holds the on-disk bytes of each
/// resource (a missing one counts as 0). Fails on an invalid policy, and on a capacity of 0, for which kubelet
/// raises its `InvalidDiskCapacity` event: nothing is planned from a disk reading that cannot be right.
pub fn plan(
    images: &[GcImage],
    sizes: &HashMap<ResourceId, u64>,
    usage: Usage,
    policy: &GcPolicy,
    now_ns: i64,
) -> Result<GcPlan, PolicyError> {
    policy.validate()?;
    if usage.capacity_bytes == 0 {
        return Err(PolicyError::InvalidCapacity);
    }
    let mut order: Vec<&GcImage> = images.iter().collect();
    order.sort_by(|a, b| (a.last_used_ns, a.first_seen_ns, &a.id).cmp(&(b.last_used_ns, b.first_seen_ns, &b.id)));
    let in_use = |img: &GcImage| img.in_use || img.last_used_ns >= now_ns;
    let age_ns = |since_ns: i64| i128::from(now_ns) - i128::from(since_ns);

    let mut refs = RefCounts::new(images);
    let mut removed = vec![false; order.len()];
    let mut out = GcPlan::default();

    if let Some(max_age) = policy.max_age {
        for (i, img) in order.iter().enumerate() {
            let unused_ns = age_ns(img.last_used_ns.max(img.first_seen_ns));
            if !in_use(img) && !img.pinned && unused_ns > max_age.as_nanos() as i128 {
                removed[i] = true;
                out.push(img, VictimReason::MaxAge, refs.release(img, sizes));
            }
        }
    }
    if policy.high_threshold_percent >= 100 {
        return Ok(out);
    }

    // kubelet's arithmetic, on the usage left after the max-age victims are gone.
    let capacity = u128::from(usage.capacity_bytes);
    let used = u128::from(usage.used_bytes)
        .min(capacity)
        .saturating_sub(u128::from(out.planned_free_bytes));
    let available = capacity - used;
    let usage_percent = 100 - available * 100 / capacity;
    if usage_percent < u128::from(policy.high_threshold_percent) {
        return Ok(out);
    }
    let low = u128::from(policy.low_threshold_percent);
    let target = (capacity * (100 - low) / 100).saturating_sub(available);
    out.target_bytes = u64::try_from(target).unwrap_or(u64::MAX);

    let (mut freed, mut skipped_in_use, mut skipped_pinned, mut skipped_young) = (0u64, 0usize, 0usize, 0usize);
    for (i, img) in order.iter().enumerate() {
        if freed >= out.target_bytes {
            break;
        }
        if removed[i] {
            continue;
        }
        if in_use(img) {
            skipped_in_use += 1;
        } else if img.pinned {
            skipped_pinned += 1;
        } else if age_ns(img.first_seen_ns) < policy.min_age.as_nanos() as i128 {
            skipped_young += 1;
        } else {
            let frees = refs.release(img, sizes);
            freed = freed.saturating_add(frees);
            out.push(img, VictimReason::DiskPressure, frees);
        }
    }
    if freed < out.target_bytes {
        let mut why = format!(
            "failed to garbage collect required amount of images. Attempted to free {} bytes, but only found {} \
             bytes eligible to free",
            out.target_bytes, freed
        );
        let min_age = format!("younger than the min age of {}", duration::format(policy.min_age));
        let skipped: Vec<String> = [
            (skipped_in_use, "in use"),
            (skipped_pinned, "pinned"),
            (skipped_young, min_age.as_str()),
        ]
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} {what}"))
        .collect();
        if !skipped.is_empty() {
            why.push_str("; images not eligible: ");
            why.push_str(&skipped.join(", "));
        }
        out.shortfall = Some(Shortfall {
            freed,
            target: out.target_bytes,
            why,
        });
    }
    Ok(out)
}

impl GcPlan {
    fn push(&mut self, img: &GcImage, reason: VictimReason, frees_bytes: u64) {
        self.planned_free_bytes = self.planned_free_bytes.saturating_add(frees_bytes);
        self.victims.push(Victim {
            id: img.id.clone(),
            reason,
            frees_bytes,
        });
    }
}

/// How many remaining images reference each resource.
struct RefCounts<'a> {
    counts: HashMap<&'a ResourceId, usize>,
}

impl<'a> RefCounts<'a> {
    fn new(images: &'a [GcImage]) -> RefCounts<'a> {
        let mut counts = HashMap::new();
        for img in images {
            for r in img.resources.iter().collect::<HashSet<_>>() {
                *counts.entry(r).or_insert(0) += 1;
            }
        }
        RefCounts { counts }
    }

    /// Drops `img`'s references; returns the bytes of the resources nothing references any more.
    fn release(&mut self, img: &GcImage, sizes: &HashMap<ResourceId, u64>) -> u64 {
        let mut freed = 0u64;
        for r in img.resources.iter().collect::<HashSet<_>>() {
            if let Some(count) = self.counts.get_mut(r) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    freed = freed.saturating_add(sizes.get(r).copied().unwrap_or(0));
                }
            }
        }
        freed
    }
}

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;
