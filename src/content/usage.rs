//! Space accounting of the content store, kept up to date on every commit and delete so that
//! `ImageFsInfo` never walks the tree (kubelet calls it every few seconds).

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use super::ContentError;

/// Bytes allocated on disk and number of files, maintained incrementally.
#[derive(Debug, Default)]
pub struct Usage {
    bytes: AtomicU64,
    inodes: AtomicU64,
}

/// The bytes a file occupies on disk (allocated blocks, as `du` counts them).
pub(crate) fn allocated(meta: &fs::Metadata) -> u64 {
    meta.blocks() * 512
}

impl Usage {
    /// Measures the files in `dir` once, at start.
    pub fn measure(dir: &Path) -> Result<Usage, ContentError> {
        let usage = Usage::default();
        let entries = fs::read_dir(dir).map_err(ContentError::io("read directory", dir))?;
        for entry in entries {
            let entry = entry.map_err(ContentError::io("read directory", dir))?;
            let meta = entry.metadata().map_err(ContentError::io("stat", &entry.path()))?;
            usage.add(allocated(&meta));
        }
        Ok(usage)
    }

    /// Counts a new file of `bytes`.
    pub fn add(&self, bytes: u64) {
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.inodes.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts `inodes` new files taking `bytes` together.
    pub fn add_many(&self, bytes: u64, inodes: u64) {
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.inodes.fetch_add(inodes, Ordering::Relaxed);
    }

    /// Uncounts `inodes` removed files that took `bytes` together.
    pub fn sub_many(&self, bytes: u64, inodes: u64) {
        let _ = self
            .bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| Some(b.saturating_sub(bytes)));
        let _ = self
            .inodes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| Some(n.saturating_sub(inodes)));
    }

    /// Uncounts a removed file of `bytes`.
    pub fn sub(&self, bytes: u64) {
        // Saturating: a miscount must never wrap around to an absurd figure.
        let _ = self
            .bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| Some(b.saturating_sub(bytes)));
        let _ = self
            .inodes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| Some(n.saturating_sub(1)));
    }

    /// (bytes, inodes).
    pub fn get(&self) -> (u64, u64) {
        (self.bytes.load(Ordering::Relaxed), self.inodes.load(Ordering::Relaxed))
    }
}
