//! The content store: blobs by digest, laid out as an OCI image layout.
//!
//! ```text
//! <root>/oci-layout              {"imageLayoutVersion": "1.0.0"}
//! <root>/index.json              the images' manifests, rewritten from the metadata after each change
//! <root>/blobs/sha256/<hex>      committed, verified blobs
//! <root>/ingest/<hex>-<n>        blobs being written; never visible under a digest
//! <root>/ingest/<hex>.partial     a download to resume, with <hex>.ranges, the ranges it holds ([`partial`])
//! ```
//!
//! Lifecycle of a blob (as containerd's `content.Writer`): bytes go to an [`Ingest`] in `ingest/`, hashed as
//! they are written; [`Ingest::commit`] syncs the data, checks size and digest, renames the file to
//! `blobs/sha256/<hex>` and syncs the directory. A blob that already exists is a successful commit. Until
//! the rename, nothing is visible; a crash leaves only `ingest/` files. Those of downloads that can resume
//! (`.partial`, younger than [`PARTIAL_MAX_AGE`]) are kept; the others are removed when the store is opened.
//!
//! Deletion is guarded by leases: a pull takes a [`crate::lease::Lease`] on every digest it will reference *before* it
//! checks whether the blob exists, and [`ContentStore::delete`] never removes a leased blob, so a removal
//! racing a pull cannot take a blob from under it.

mod ingest;
mod layout;
pub mod partial;
mod usage;

use std::collections::HashSet;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

pub use ingest::{Ingest, PartialWriter};
pub use layout::IndexEntry;
pub use usage::Usage;

use crate::digest::Digest;
use crate::error::{Classify, ErrorKind};
use crate::lease::{LeaseTable, Locked};
use partial::RangeSet;

/// How long a partial download is kept for a resume after it was last written to.
pub const PARTIAL_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// What went wrong in the content store.
#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    /// A file system operation failed.
    #[error("content store: {op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The bytes written do not hash to the expected digest.
    #[error("content of {expected} does not match its digest: got {actual} ({size} bytes)")]
    DigestMismatch {
        /// The digest the blob was announced with.
        expected: Digest,
        /// The digest of what was received.
        actual: Digest,
        /// How many bytes were received.
        size: u64,
    },
    /// More or fewer bytes than announced.
    #[error("content of {digest} has {actual} bytes, expected {expected}")]
    SizeMismatch {
        /// The blob.
        digest: Digest,
        /// The announced size.
        expected: u64,
        /// The received size (so far, when too large).
        actual: u64,
    },
    /// A blob is larger than the caller allows reading into memory.
    #[error("blob {digest} is {size} bytes, more than the limit of {limit} bytes")]
    TooLarge {
        /// The blob.
        digest: Digest,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The blob is not in the store.
    #[error("blob {0} not found in the content store")]
    NotFound(Digest),
}

impl ContentError {
    fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> ContentError + 'a {
        move |source| ContentError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }
}

impl Classify for ContentError {
    fn kind(&self) -> ErrorKind {
        match self {
            ContentError::Io { .. } => ErrorKind::Internal,
            ContentError::DigestMismatch { .. } | ContentError::SizeMismatch { .. } => ErrorKind::FailedPrecondition,
            ContentError::TooLarge { .. } => ErrorKind::ResourceExhausted,
            ContentError::NotFound(_) => ErrorKind::NotFound,
        }
    }
}

/// A handle on the content store; cheap to clone.
#[derive(Clone)]
pub struct ContentStore {
    inner: Arc<Inner>,
}

struct Inner {
    root: PathBuf,
    blobs: PathBuf,
    ingest: PathBuf,
    usage: Usage,
    next_ingest: AtomicU64,
    /// Leased digests. Its lock also orders commits and deletions, so checking "exists/leased" and acting
    /// on it is atomic.
    leases: Arc<LeaseTable>,
    index_lock: std::sync::Mutex<()>,
    /// Digests whose resumable ingest is open (one writer per partial file).
    resuming: Mutex<HashSet<Digest>>,
}

impl ContentStore {
    /// Opens (creating if needed) the store at `root`, removes leftovers of interrupted writes and
    /// measures the space the blobs take.
    pub fn open(root: &Path, leases: Arc<LeaseTable>) -> Result<ContentStore, ContentError> {
        let blobs = root.join("blobs").join("sha256");
        let ingest = root.join("ingest");
        for dir in [&blobs, &ingest] {
            fs::create_dir_all(dir).map_err(ContentError::io("create directory", dir))?;
        }
        layout::ensure_layout_file(root)?;
        // Anything in ingest/ is from a write that never committed: it was never visible. Drop it, except
        // the downloads that can resume.
        let entries = fs::read_dir(&ingest).map_err(ContentError::io("read directory", &ingest))?;
        for entry in entries {
            let entry = entry.map_err(ContentError::io("read directory", &ingest))?;
            let path = entry.path();
            if !resumable(&path, SystemTime::now()) {
                fs::remove_file(&path).map_err(ContentError::io("remove stale ingest", &path))?;
            }
        }
        let usage = Usage::measure(&blobs)?;
        Ok(ContentStore {
            inner: Arc::new(Inner {
                root: root.to_path_buf(),
                blobs,
                ingest,
                usage,
                next_ingest: AtomicU64::new(0),
                leases,
                index_lock: std::sync::Mutex::new(()),
                resuming: Mutex::default(),
            }),
        })
    }

    /// The root of the OCI image layout.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// Where the blob with this digest lives (whether or not it exists).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.inner.blobs.join(digest.hex())
    }

    /// The size of a committed blob, or `None` if it is absent.
    pub fn size(&self, digest: &Digest) -> Option<u64> {
        fs::metadata(self.blob_path(digest)).ok().map(|m| m.len())
    }

    /// Whether a committed blob exists.
    pub fn contains(&self, digest: &Digest) -> bool {
        self.size(digest).is_some()
    }

    /// Reads a whole blob into memory, refusing blobs over `limit` bytes. Used for manifests and configs.
    pub fn read(&self, digest: &Digest, limit: u64) -> Result<Vec<u8>, ContentError> {
        let path = self.blob_path(digest);
        let file = match fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(ContentError::NotFound(*digest)),
            Err(e) => return Err(ContentError::io("open", &path)(e)),
        };
        let size = file.metadata().map_err(ContentError::io("stat", &path))?.len();
        if size > limit {
            return Err(ContentError::TooLarge {
                digest: *digest,
                size,
                limit,
            });
        }
        let mut buf = Vec::with_capacity(size as usize);
        file.take(limit)
            .read_to_end(&mut buf)
            .map_err(ContentError::io("read", &path))?;
        Ok(buf)
    }

    /// Starts writing a blob that must hash to `expected` (and be `expected_size` bytes, when known).
    pub fn ingest(&self, expected: Digest, expected_size: Option<u64>) -> Result<Ingest, ContentError> {
        let n = self.inner.next_ingest.fetch_add(1, Ordering::Relaxed);
        let path = self.inner.ingest.join(format!("{}-{n}", expected.hex()));
        Ingest::create(self.clone(), path, expected, expected_size)
    }

    /// Starts or resumes the download of a blob of `size` bytes that must hash to `expected`: returns its
    /// ingest and the byte ranges an earlier, interrupted download already wrote. The ingest is kept when
    /// dropped without a commit (see [`Ingest`]). While another download of the same blob holds the
    /// resumable file, this one gets a fresh, non-resumable ingest.
    pub fn ingest_resumable(&self, expected: Digest, size: u64) -> Result<(Ingest, RangeSet), ContentError> {
        let taken = self
            .inner
            .resuming
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(expected);
        if !taken {
            return Ok((self.ingest(expected, Some(size))?, RangeSet::new()));
        }
        let hex = expected.hex();
        let path = self.inner.ingest.join(format!("{hex}.partial"));
        let ranges = self.inner.ingest.join(format!("{hex}.ranges"));
        Ingest::resume(self.clone(), path, ranges, expected, size).inspect_err(|_| self.resumed(&expected))
    }

    /// The resumable ingest of `digest` was dropped or committed.
    fn resumed(&self, digest: &Digest) {
        self.inner
            .resuming
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(digest);
    }

    /// Writes a small blob held in memory: verified and committed like any other.
    pub fn write_blob(&self, data: &[u8], expected: Digest) -> Result<(), ContentError> {
        if self.contains(&expected) {
            return Ok(());
        }
        let mut ingest = self.ingest(expected, Some(data.len() as u64))?;
        io::Write::write_all(&mut ingest, data).map_err(ContentError::io("write", ingest.path()))?;
        ingest.commit()
    }

    /// Deletes a blob unless a lease holds it or a recorded image references it
    /// ([`crate::lease::Locked::protects`]). Returns the bytes freed (0 if it was absent or protected).
    pub fn delete(&self, digest: &Digest) -> Result<u64, ContentError> {
        let leases = self.lock();
        if leases.protects(&crate::lease::Item::Blob(*digest)) {
            return Ok(0);
        }
        let path = self.blob_path(digest);
        let freed = match fs::symlink_metadata(&path) {
            Ok(m) => usage::allocated(&m),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(ContentError::io("stat", &path)(e)),
        };
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(ContentError::io("remove", &path)(e)),
        }
        self.inner.usage.sub(freed);
        drop(leases);
        Ok(freed)
    }

    /// The bytes a committed blob occupies on disk, or `None` if it is absent.
    pub fn allocated(&self, digest: &Digest) -> Option<u64> {
        fs::metadata(self.blob_path(digest)).ok().map(|m| usage::allocated(&m))
    }

    /// Removes ingest files that no lease protects (downloads that died without cleaning up), except the
    /// downloads that can resume. Returns how many were removed.
    pub fn remove_stale_ingests(&self) -> usize {
        let dir = &self.inner.ingest;
        let Ok(entries) = fs::read_dir(dir) else { return 0 };
        let mut removed = 0;
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let digest = name.split(['-', '.']).next().and_then(|h| Digest::from_hex(h).ok());
            let leases = self.lock();
            if digest.is_some_and(|d| leases.is_leased(&crate::lease::Item::Blob(d)))
                || resumable(&e.path(), SystemTime::now())
            {
                continue;
            }
            if fs::remove_file(e.path()).is_ok() {
                removed += 1;
            }
        }
        removed
    }

    /// Every committed blob's digest (for sweeping orphans).
    pub fn list(&self) -> Result<Vec<Digest>, ContentError> {
        let dir = &self.inner.blobs;
        let mut out = Vec::new();
        for entry in fs::read_dir(dir).map_err(ContentError::io("read directory", dir))? {
            let entry = entry.map_err(ContentError::io("read directory", dir))?;
            if let Some(d) = entry.file_name().to_str().and_then(|n| Digest::from_hex(n).ok()) {
                out.push(d);
            }
        }
        Ok(out)
    }

    /// Bytes and inodes the committed blobs take on disk.
    pub fn usage(&self) -> (u64, u64) {
        self.inner.usage.get()
    }

    /// Rewrites `index.json` to list exactly what `entries` returns, atomically. Writers are serialised and
    /// `entries` runs under the same lock, so an older listing never overwrites a newer one.
    pub fn write_index(&self, entries: impl FnOnce() -> Vec<IndexEntry>) -> Result<(), ContentError> {
        let _one = self.inner.index_lock.lock().unwrap_or_else(|p| p.into_inner());
        layout::write_index(&self.inner.root, &entries())
    }

    fn lock(&self) -> Locked<'_> {
        self.inner.leases.lock()
    }
}

/// Whether `path` in `ingest/` belongs to a download that can resume at `now`: a `.partial` file or its
/// `.ranges` record, both present, the record written within [`PARTIAL_MAX_AGE`].
pub fn resumable(path: &Path, now: SystemTime) -> bool {
    let ext = path.extension().and_then(|e| e.to_str());
    if !matches!(ext, Some("partial" | "ranges")) {
        return false;
    }
    let (data, ranges) = (path.with_extension("partial"), path.with_extension("ranges"));
    let fresh = fs::metadata(&ranges)
        .and_then(|m| m.modified())
        .is_ok_and(|t| now.duration_since(t).unwrap_or_default() < PARTIAL_MAX_AGE);
    fresh && data.is_file()
}

#[cfg(test)]
mod tests;
