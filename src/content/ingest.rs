//! Writing one blob: hashed as it is written, visible only after a verified commit.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::{ContentError, ContentStore, layout, usage};
use crate::digest::{Digest, Hasher};

/// A blob being written into `ingest/`. Dropping it without [`Ingest::commit`] removes the partial file.
pub struct Ingest {
    store: ContentStore,
    file: Option<fs::File>,
    path: PathBuf,
    hasher: Hasher,
    written: u64,
    expected: Digest,
    expected_size: Option<u64>,
}

impl Ingest {
    pub(super) fn create(
        store: ContentStore,
        path: PathBuf,
        expected: Digest,
        expected_size: Option<u64>,
    ) -> Result<Ingest, ContentError> {
        let file = fs::File::create_new(&path).map_err(ContentError::io("create", &path))?;
        Ok(Ingest {
            store,
            file: Some(file),
            path,
            hasher: Hasher::new(),
            written: 0,
            expected,
            expected_size,
        })
    }

    /// The ingest file's path (for error messages).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Syncs, verifies size and digest, and moves the blob under its digest. A blob that already exists
    /// is success (the partial copy is dropped).
    pub fn commit(mut self) -> Result<(), ContentError> {
        let Some(file) = self.file.take() else {
            return Err(ContentError::io("commit", &self.path)(io::Error::other(
                "already committed",
            )));
        };
        if let Some(size) = self.expected_size
            && size != self.written
        {
            return Err(ContentError::SizeMismatch {
                digest: self.expected,
                expected: size,
                actual: self.written,
            });
        }
        let actual = std::mem::take(&mut self.hasher).finish();
        if actual != self.expected {
            return Err(ContentError::DigestMismatch {
                expected: self.expected,
                actual,
                size: self.written,
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
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("write after commit"))?;
        if let Some(size) = self.expected_size
            && self.written + buf.len() as u64 > size
        {
            // Stop a registry that sends more than announced before it fills the disk.
            return Err(io::Error::other(format!(
                "blob {} is larger than its announced size of {size} bytes",
                self.expected
            )));
        }
        let n = file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for Ingest {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.path);
        }
    }
}
