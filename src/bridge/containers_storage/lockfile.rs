//! containers/storage's lock files (`pkg/lockfile`), spoken as its readers expect.
//!
//! Each of `layers.json` and `images.json` sits next to a lock file (`layers.lock`, `images.lock`). A
//! writer takes a POSIX record lock (`fcntl(F_SETLKW)`, `F_WRLCK`, the whole file) on it, replaces the
//! JSON file, and writes a new 64-byte "last writer" token at offset 0 (`Touch`); readers take `F_RDLCK`,
//! compare the token with the one they saw last (`Modified`) and reload only when it changed. So a reader
//! never sees a half-written file (writers replace files by rename, under the lock) and always notices a
//! change (the token).
//!
//! POSIX record locks belong to the process, and closing *any* descriptor of the file drops them all: the
//! bridge takes every lock under one mutex and opens each lock file once at a time, which is why nothing
//! else in imaged may open these files.
//!
//! Locks are taken by polling (`F_SETLK` every few milliseconds) rather than waiting in the kernel, so
//! that a runtime holding a lock for long (a stuck podman) makes imaged give up after a deadline and retry
//! later instead of blocking a thread forever.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rustix::fs::FlockOperation;

/// Length of the last-writer token (containers/storage's `lastWriterIDSize`).
pub const TOKEN_LEN: usize = 64;

/// Per-process counter in the token, as containers/storage keeps one.
static TOKENS: AtomicU64 = AtomicU64::new(0);

/// A lock file, opened to be locked.
#[derive(Debug)]
pub struct LockFile {
    path: PathBuf,
    file: File,
}

/// How a lock is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Readers: any number at once (`F_RDLCK`).
    Shared,
    /// One writer, no readers (`F_WRLCK`).
    Exclusive,
}

impl LockFile {
    /// Opens `path` to write under it, creating it (mode 0644, as containers/storage does).
    pub fn open_rw(path: &Path) -> io::Result<LockFile> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(path)?;
        Ok(LockFile {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Opens an existing lock file to read under it (another program's store: never created here);
    /// `None` when it does not exist.
    pub fn open_ro(path: &Path) -> io::Result<Option<LockFile>> {
        match File::open(path) {
            Ok(file) => Ok(Some(LockFile {
                path: path.to_path_buf(),
                file,
            })),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Takes the lock, waiting up to `timeout` for holders to let go.
    pub fn lock(self, mode: Mode, timeout: Duration) -> io::Result<Locked> {
        let op = match mode {
            Mode::Shared => FlockOperation::NonBlockingLockShared,
            Mode::Exclusive => FlockOperation::NonBlockingLockExclusive,
        };
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_millis(1);
        loop {
            match rustix::fs::fcntl_lock(&self.file, op) {
                Ok(()) => return Ok(Locked { lock: self, mode }),
                Err(e) if e == rustix::io::Errno::AGAIN || e == rustix::io::Errno::ACCESS => {}
                Err(e) if e == rustix::io::Errno::INTR => continue,
                Err(e) => return Err(e.into()),
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "{} is still locked by another process after {timeout:?}",
                        self.path.display()
                    ),
                ));
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(10));
        }
    }
}

/// A held lock; released when dropped (the descriptor is closed).
#[derive(Debug)]
pub struct Locked {
    lock: LockFile,
    mode: Mode,
}

impl Locked {
    /// Records that this process wrote last (`Touch`): a new token at offset 0, so readers reload.
    pub fn touch(&self) -> io::Result<()> {
        debug_assert_eq!(self.mode, Mode::Exclusive);
        self.lock.file.write_all_at(&new_token()?, 0)
    }

    /// The token now in the file (what readers compare).
    pub fn token(&self) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; TOKEN_LEN];
        let n = self.lock.file.read_at(&mut buf, 0)?;
        buf.truncate(n);
        Ok(buf)
    }
}

/// A last-writer token laid out as containers/storage's `newLastWriterID`: time (ns), a per-process counter,
/// the pid (little-endian), then random bytes; different on every call and across processes.
fn new_token() -> io::Result<[u8; TOKEN_LEN]> {
    let mut t = [0u8; TOKEN_LEN];
    let now = crate::clock::now_ns() as u64;
    t[0..8].copy_from_slice(&now.to_le_bytes());
    t[8..16].copy_from_slice(&TOKENS.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    t[16..20].copy_from_slice(&std::process::id().to_le_bytes());
    let mut filled = 20;
    while filled < TOKEN_LEN {
        filled += rustix::rand::getrandom(&mut t[filled..], rustix::rand::GetRandomFlags::empty())?;
    }
    Ok(t)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    #[test]
    fn every_touch_writes_a_new_token_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("layers.lock");
        let w = LockFile::open_rw(&path)
            .unwrap()
            .lock(Mode::Exclusive, Duration::from_secs(1))
            .unwrap();
        w.touch().unwrap();
        let first = w.token().unwrap();
        w.touch().unwrap();
        let second = w.token().unwrap();
        assert_eq!((first.len(), second.len()), (TOKEN_LEN, TOKEN_LEN));
        assert_ne!(first, second);
        assert_eq!(&second[16..20], &std::process::id().to_le_bytes());
        drop(w);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), TOKEN_LEN as u64);
        assert!(LockFile::open_ro(&dir.path().join("absent.lock")).unwrap().is_none());
    }

    /// Another process holds the lock with `fcntl(F_SETLKW)`, as containers/storage's Go code does: imaged
    /// waits for it, gives up at its deadline, and gets the lock once the holder is gone.
    #[test]
    fn a_lock_another_process_holds_is_waited_for_and_then_timed_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("images.lock");
        LockFile::open_rw(&path).unwrap();
        let mut child = hold_lock_elsewhere(&path, 1);
        let err = LockFile::open_rw(&path)
            .unwrap()
            .lock(Mode::Shared, Duration::from_millis(100))
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
        let got = LockFile::open_rw(&path)
            .unwrap()
            .lock(Mode::Exclusive, Duration::from_secs(30))
            .unwrap();
        assert!(child.wait().unwrap().success());
        drop(got);
    }

    /// Holds `path` (a lock file) for writing from another process for `secs` seconds, as a stuck runtime
    /// would; returns once it holds it.
    pub(in crate::bridge::containers_storage) fn hold_lock_elsewhere(path: &Path, secs: u32) -> std::process::Child {
        // `perl` is in every Debian base system; it takes a POSIX write lock on the whole file (struct flock
        // on x86-64 Linux: type, whence, padding, start, len, pid, padding) and holds it.
        let script = format!(
            "use Fcntl; open(my $f, '+<', '{}') or die; my $l = pack('s s x4 q q l x4', F_WRLCK, 0, 0, 0, 0); \
             fcntl($f, F_SETLKW, $l) or die; $| = 1; print \"locked\\n\"; sleep {secs};",
            path.display()
        );
        let mut child = std::process::Command::new("perl")
            .arg("-e")
            .arg(&script)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
        assert_eq!(line, "locked\n");
        child
    }
}
