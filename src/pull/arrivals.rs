//! Between a blob's download and its reader: the download writes bytes at their offsets into the ingest
//! file, in any order; [`Arrivals`] tells the reader how far the file holds every byte from the first, and
//! [`FileReader`] reads it in order, waiting for what has not arrived yet. The reader is what hashes the
//! blob and feeds the decoder, so both see the blob from its first byte to its last while the download
//! runs ahead on several connections.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Condvar, Mutex};

/// How far a blob's bytes are in the file, and whether the download ended.
pub(super) struct Arrivals {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Default)]
struct State {
    /// Every byte below this offset is in the file.
    prefix: u64,
    /// The download ended (with every byte, or not).
    ended: bool,
    /// The reader went away: nobody needs more bytes.
    abandoned: bool,
}

impl Arrivals {
    pub(super) fn new(prefix: u64) -> Arc<Arrivals> {
        Arc::new(Arrivals {
            state: Mutex::new(State {
                prefix,
                ..State::default()
            }),
            changed: Condvar::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every byte below `prefix` is in the file now.
    pub(super) fn advance(&self, prefix: u64) {
        let mut s = self.lock();
        if prefix > s.prefix {
            s.prefix = prefix;
            self.changed.notify_all();
        }
    }

    /// The download ended: no more bytes come.
    pub(super) fn end(&self) {
        self.lock().ended = true;
        self.changed.notify_all();
    }

    /// Whether the reader went away (the download can stop).
    pub(super) fn abandoned(&self) -> bool {
        self.lock().abandoned
    }

    /// Waits until the file holds bytes at `pos`; returns the prefix then, or `None` if the download ended
    /// without them.
    fn wait_past(&self, pos: u64) -> Option<u64> {
        let mut s = self.lock();
        loop {
            if s.prefix > pos {
                return Some(s.prefix);
            }
            if s.ended {
                return None;
            }
            s = self.changed.wait(s).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// Reads a blob of `size` bytes from its ingest file in order, as its bytes arrive.
pub(super) struct FileReader {
    file: Arc<File>,
    pos: u64,
    size: u64,
    arrivals: Arc<Arrivals>,
}

impl FileReader {
    pub(super) fn new(file: Arc<File>, size: u64, arrivals: Arc<Arrivals>) -> FileReader {
        FileReader {
            file,
            pos: 0,
            size,
            arrivals,
        }
    }
}

/// Whether a read failed because the download stopped (not because of the bytes).
pub(super) fn download_stopped(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::ConnectionAborted
}

impl Read for FileReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.size || buf.is_empty() {
            return Ok(0);
        }
        let Some(prefix) = self.arrivals.wait_past(self.pos) else {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                format!("the download stopped at byte {} of {}", self.pos, self.size),
            ));
        };
        let n = (prefix.min(self.size) - self.pos).min(buf.len() as u64) as usize;
        let n = self.file.read_at(&mut buf[..n], self.pos)?;
        if n == 0 {
            return Err(io::Error::other(format!(
                "the ingest file ends at byte {} although the download wrote up to {prefix}",
                self.pos
            )));
        }
        self.pos += n as u64;
        Ok(n)
    }
}

impl Drop for FileReader {
    fn drop(&mut self) {
        self.arrivals.lock().abandoned = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn the_reader_waits_for_the_prefix_and_fails_when_the_download_ends_short() {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(b"abcdef").unwrap();
        let arrivals = Arrivals::new(2);
        let mut r = FileReader::new(Arc::new(f), 6, arrivals.clone());
        let mut buf = [0u8; 8];
        assert_eq!(r.read(&mut buf).unwrap(), 2);
        let later = arrivals.clone();
        let t = std::thread::spawn(move || {
            later.advance(4);
            later.end();
        });
        let mut got = Vec::new();
        let err = loop {
            match r.read(&mut buf) {
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => break e,
            }
        };
        t.join().unwrap();
        assert_eq!(got, b"cd");
        assert!(download_stopped(&err), "{err}");
        drop(r);
        assert!(arrivals.abandoned());
    }
}
