//! Writing one blob: hashed in order, visible only after a verified commit.
//!
//! Bytes reach an ingest in one of two ways. [`Write`] appends them and hashes them as they come (a blob
//! held in memory, a stream read in order). A download in parallel ranges writes them at their offsets
//! through a [`PartialWriter`], in any order, while its reader reads the file in order and hashes what it
//! read with [`Ingest::absorb`]. Either way [`Ingest::commit`] checks that every byte, from the first to
//! the last, went through the hash.
//!
//! A resumable ingest ([`super::ContentStore::ingest_resumable`]) keeps its file and its record of written
//! ranges ([`super::partial`]) when it is dropped without a commit, so the next download of the blob, also
//! after a restart, fetches only what is missing. [`Ingest::discard`] drops them instead (the bytes proved
//! wrong).

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::partial::{self, RangeSet};
use super::{ContentError, ContentStore, layout, usage};
use crate::digest::{Digest, Hasher};

/// How many bytes a [`PartialWriter`] writes between two saves of its record: what a crash can cost.
const SAVE_EVERY: u64 = 4 * 1024 * 1024;

/// A blob being written into `ingest/`. Dropping it without [`Ingest::commit`] removes the partial file,
/// unless it is resumable.
pub struct Ingest {
    store: ContentStore,
    file: Option<Arc<fs::File>>,
    path: PathBuf,
    hasher: Hasher,
    /// Bytes hashed, in order from the first.
    hashed: u64,
    expected: Digest,
    expected_size: Option<u64>,
    resumable: Option<Resumable>,
}

/// The parts of a resumable ingest.
struct Resumable {
    /// The record of written ranges.
    ranges: PathBuf,
    /// Set by [`Ingest::discard`]: drop the files instead of keeping them.
    discard: bool,
}

impl Ingest {
    pub(super) fn create(
        store: ContentStore,
        path: PathBuf,
        expected: Digest,
        expected_size: Option<u64>,
    ) -> Result<Ingest, ContentError> {
        let file = fs::File::create_new(&path).map_err(ContentError::io("create", &path))?;
        Ok(Ingest::with_file(store, file, path, expected, expected_size, None))
    }

    /// Opens (creating if needed) the resumable ingest of `expected` at `path`, with its record at `ranges`;
    /// returns it with the ranges already written. A record that does not match the file is dropped.
    pub(super) fn resume(
        store: ContentStore,
        path: PathBuf,
        ranges: PathBuf,
        expected: Digest,
        size: u64,
    ) -> Result<(Ingest, RangeSet), ContentError> {
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(ContentError::io("open", &path))?;
        let len = file.metadata().map_err(ContentError::io("stat", &path))?.len();
        let written = partial::load(&ranges, size)
            .filter(|w| w.ranges().last().is_none_or(|&(_, end)| end <= len))
            .unwrap_or_default();
        if written.total() == 0 {
            // Nothing usable: start from an empty file (a record may be left from a removed file).
            file.set_len(0).map_err(ContentError::io("truncate", &path))?;
            let _ = fs::remove_file(&ranges);
        }
        let resumable = Resumable { ranges, discard: false };
        let ingest = Ingest::with_file(store, file, path, expected, Some(size), Some(resumable));
        Ok((ingest, written))
    }

    fn with_file(
        store: ContentStore,
        file: fs::File,
        path: PathBuf,
        expected: Digest,
        expected_size: Option<u64>,
        resumable: Option<Resumable>,
    ) -> Ingest {
        Ingest {
            store,
            file: Some(Arc::new(file)),
            path,
            hasher: Hasher::new(),
            hashed: 0,
            expected,
            expected_size,
            resumable,
        }
    }

    /// The ingest file's path (for error messages).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes hashed so far.
    pub fn written(&self) -> u64 {
        self.hashed
    }

    /// A writer of bytes at their offsets, starting from `written` (what [`Ingest::resume`] found), and a
    /// reader of the file for the bytes written so far.
    pub fn positional(&self, written: RangeSet) -> Result<(PartialWriter, Arc<fs::File>), ContentError> {
        let file = self
            .file
            .clone()
            .ok_or_else(|| ContentError::io("write", &self.path)(io::Error::other("already committed")))?;
        let writer = PartialWriter {
            file: file.clone(),
            path: self.path.clone(),
            ranges: self.resumable.as_ref().map(|r| r.ranges.clone()),
            size: self.expected_size.unwrap_or(u64::MAX),
            written,
            unsaved: 0,
        };
        Ok((writer, file))
    }

    /// Hashes `buf`, the next bytes of the blob in order, which are already in the file (written by a
    /// [`PartialWriter`] and read back).
    pub fn absorb(&mut self, buf: &[u8]) -> io::Result<()> {
        self.check_room(buf.len())?;
        self.hasher.update(buf);
        self.hashed += buf.len() as u64;
        Ok(())
    }

    /// Drops the file (and the record of a resumable ingest) instead of keeping it for a resume: its bytes
    /// proved wrong.
    pub fn discard(mut self) {
        if let Some(r) = self.resumable.as_mut() {
            r.discard = true;
        }
    }

    fn check_room(&self, n: usize) -> io::Result<()> {
        match self.expected_size {
            // Stop a registry that sends more than announced before it fills the disk.
            Some(size) if self.hashed + n as u64 > size => Err(io::Error::other(format!(
                "blob {} is larger than its announced size of {size} bytes",
                self.expected
            ))),
            _ => Ok(()),
        }
    }

    /// Syncs, verifies size and digest, and moves the blob under its digest. A blob that already exists
    /// is success (the partial copy is dropped). A resumable ingest whose bytes do not verify is dropped.
    pub fn commit(mut self) -> Result<(), ContentError> {
        let Some(file) = self.file.take() else {
            return Err(ContentError::io("commit", &self.path)(io::Error::other(
                "already committed",
            )));
        };
        if let Some(r) = self.resumable.as_mut() {
            r.discard = true; // Whatever happens now, this file is not resumed.
        }
        if let Some(size) = self.expected_size
            && size != self.hashed
        {
            return Err(ContentError::SizeMismatch {
                digest: self.expected,
                expected: size,
                actual: self.hashed,
            });
        }
        let actual = std::mem::take(&mut self.hasher).finish();
        if actual != self.expected {
            return Err(ContentError::DigestMismatch {
                expected: self.expected,
                actual,
                size: self.hashed,
            });
        }
        file.sync_data().map_err(ContentError::io("sync", &self.path))?;
        let meta = file.metadata().map_err(ContentError::io("stat", &self.path))?;
        drop(file);
        let target = self.store.blob_path(&self.expected);
        {
            // Under the store lock: exists-check, rename and accounting happen as one step relative to
            // deletions and other commits of the same digest.
            let _guard = self.store.lock();
            if target.exists() {
                return Ok(()); // Drop removes our copy.
            }
            fs::rename(&self.path, &target).map_err(ContentError::io("rename", &target))?;
            self.store.inner.usage.add(usage::allocated(&meta));
        }
        self.path = PathBuf::new();
        layout::sync_dir(&self.store.inner.blobs)
    }
}

impl Write for Ingest {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.check_room(buf.len())?;
        let file = self
            .file
            .as_ref()
            .ok_or_else(|| io::Error::other("write after commit"))?;
        file.write_all_at(buf, self.hashed)?;
        self.hasher.update(buf);
        self.hashed += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for Ingest {
    fn drop(&mut self) {
        let keep = self.resumable.as_ref().is_some_and(|r| !r.discard);
        if let Some(r) = &self.resumable {
            if !keep {
                let _ = fs::remove_file(&r.ranges);
            }
            self.store.resumed(&self.expected);
        }
        if !keep && !self.path.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Writes a blob's bytes at their offsets into an ingest file, and keeps the record of what it wrote (for
/// a resumable ingest), saved every few MiB and by [`PartialWriter::save`].
pub struct PartialWriter {
    file: Arc<fs::File>,
    path: PathBuf,
    ranges: Option<PathBuf>,
    size: u64,
    written: RangeSet,
    unsaved: u64,
}

impl PartialWriter {
    /// Writes `buf` at `offset`.
    pub fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        if offset + buf.len() as u64 > self.size {
            return Err(io::Error::other(format!(
                "{} bytes at offset {offset} run past the blob's announced size of {} bytes",
                buf.len(),
                self.size
            )));
        }
        self.file.write_all_at(buf, offset)?;
        self.written.insert(offset, offset + buf.len() as u64);
        self.unsaved += buf.len() as u64;
        if self.unsaved >= SAVE_EVERY {
            self.save();
        }
        Ok(())
    }

    /// The ingest file's path (for error messages).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The ranges written so far.
    pub fn written(&self) -> &RangeSet {
        &self.written
    }

    /// Saves the record of written ranges (a resumable ingest, neither empty nor complete: a complete one
    /// is about to be committed, and its record would outlive it). A failure to save costs a resume, not the
    /// download: it is logged.
    pub fn save(&mut self) {
        self.unsaved = 0;
        let Some(ranges) = &self.ranges else { return };
        if self.written.total() == 0 || self.written.covers(0, self.size) {
            return;
        }
        if let Err(e) = partial::save(ranges, self.size, &self.written) {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot save the record of a partial download; it will not resume");
        }
    }
}
