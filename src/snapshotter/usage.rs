//! What snapshots take on disk: per snapshot (the API's `Usage`) and in total (for `ImageFsInfo`, which
//! counts containers' writable layers as containerd's does).

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::{Kind, Snapshotter, SnapshotterError, Usage, error};

/// How old a measurement of the active snapshots may be before the total is measured again. Active
/// snapshots change under running containers; measuring them walks their trees, so it is done at most this
/// often (containerd's CRI plugin refreshes its figures every 10 s as well).
const ACTIVE_REFRESH: Duration = Duration::from_secs(10);

/// The last measurement of the active snapshots.
#[derive(Debug, Default)]
pub(super) struct ActiveUsage {
    last: Mutex<Option<(Instant, Usage)>>,
    refreshing: AtomicBool,
}

impl Snapshotter {
    /// What snapshot `key` takes itself: measured for an active snapshot, recorded at commit for a
    /// committed one, the layer's own figures for imaged's layers.
    pub fn usage(&self, key: &str) -> Result<Usage, SnapshotterError> {
        let state = self.read();
        match state.records.get(key) {
            Some(r) if r.kind == Kind::Active => {
                let dir = self.record_dir(r.id).join("fs");
                drop(state);
                let (bytes, inodes) = crate::layers::measure(&dir).map_err(error::io("measure", &dir))?;
                Ok(Usage { bytes, inodes })
            }
            Some(r) => Ok(Usage {
                bytes: r.bytes,
                inodes: r.inodes,
            }),
            None => {
                let missing = || SnapshotterError::NotFound(key.to_string());
                self.layer_info(&state, key).ok_or_else(missing)?;
                let meta = self
                    .layers
                    .meta(&key.parse().map_err(|_| missing())?)
                    .ok_or_else(missing)?;
                Ok(Usage {
                    bytes: meta.bytes,
                    inodes: meta.inodes,
                })
            }
        }
    }

    /// What the snapshotter's own snapshots take in total (imaged's layers are counted by the layer store):
    /// committed ones as recorded, active ones as last measured by [`Snapshotter::refresh_active_usage`]. The
    /// flag says the measurement is missing or older than [`ACTIVE_REFRESH`]: time to refresh it (off the
    /// caller's path: it walks the containers' trees).
    pub fn usage_total(&self) -> (Usage, bool) {
        let mut total = Usage::default();
        for r in self.read().records.values().filter(|r| r.kind != Kind::Active) {
            total.bytes += r.bytes;
            total.inodes += r.inodes;
        }
        let last = *self.active_usage.last.lock().unwrap_or_else(|p| p.into_inner());
        let stale = last.is_none_or(|(at, _)| at.elapsed() >= ACTIVE_REFRESH);
        if let Some((_, active)) = last {
            total.bytes += active.bytes;
            total.inodes += active.inodes;
        }
        (total, stale)
    }

    /// Measures the active snapshots again (blocking; one measurement at a time, others return at once).
    pub fn refresh_active_usage(&self) {
        if self.active_usage.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let dirs: Vec<_> = self
            .read()
            .records
            .values()
            .filter(|r| r.kind == Kind::Active)
            .map(|r| self.record_dir(r.id).join("fs"))
            .collect();
        let mut u = Usage::default();
        for dir in &dirs {
            // A snapshot removed meanwhile simply counts nothing.
            if let Ok((bytes, inodes)) = crate::layers::measure(dir) {
                u.bytes += bytes;
                u.inodes += inodes;
            }
        }
        *self.active_usage.last.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), u));
        self.active_usage.refreshing.store(false, Ordering::Release);
    }

    /// Consistency problems, one line each: records whose directory is missing or whose parents cannot
    /// be resolved (for `imaged fsck`).
    pub fn check(&self) -> Vec<String> {
        let state = self.read();
        let mut problems = Vec::new();
        for (name, r) in &state.records {
            let dir = self.record_dir(r.id);
            if !dir.join("fs").is_dir() {
                problems.push(format!(
                    "snapshotter: snapshot {name:?} has no directory {}",
                    dir.display()
                ));
            }
            if let Err(e) = self.lowers(&state, &r.parent) {
                problems.push(format!("snapshotter: snapshot {name:?}: parent chain broken: {e}"));
            }
        }
        problems
    }
}
