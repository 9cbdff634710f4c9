//! Caps on what one layer may contain, and the reader that enforces the size cap on the decompressed
//! stream.

use std::io::{self, Read};

use serde::Deserialize;

/// Caps on one layer. They bound the damage of a hostile layer (a decompression bomb, millions of empty
/// files, absurd paths) without getting in the way of real images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Most bytes of uncompressed tar per layer (default 64 GiB).
    pub max_layer_bytes: u64,
    /// Most entries per layer (default 4,000,000).
    pub max_entries: u64,
    /// Longest entry path in bytes (default 4096, Linux's PATH_MAX).
    pub max_path_bytes: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_layer_bytes: 64 << 30,
            max_entries: 4_000_000,
            max_path_bytes: 4096,
        }
    }
}

/// The marker error a [`CountingReader`] returns when the cap is passed (found again by downcasting).
#[derive(Debug, thiserror::Error)]
#[error("the uncompressed layer is larger than {0} bytes")]
pub struct TooLarge(pub u64);

/// Counts the bytes read through it and fails once they pass `limit`.
pub struct CountingReader<R> {
    inner: R,
    count: u64,
    limit: u64,
}

impl<R: Read> CountingReader<R> {
    /// Wraps `inner`.
    pub fn new(inner: R, limit: u64) -> CountingReader<R> {
        CountingReader { inner, count: 0, limit }
    }

    /// Bytes read so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The wrapped reader.
    pub fn into_inner(self) -> R {
        self.inner
    }
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        if self.count > self.limit {
            return Err(io::Error::other(TooLarge(self.limit)));
        }
        Ok(n)
    }
}

/// Whether `e` is a [`CountingReader`]'s cap error.
pub fn is_too_large(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|i| i.is::<TooLarge>())
}
