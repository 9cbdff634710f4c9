//! A small real filesystem of fixed size for disk-usage tests: a tmpfs the test mounts (it runs as root) and
//! measures with `statvfs` itself, independently of what imaged reports.
//!
//! tmpfs suits exact accounting: file data is counted in whole pages the moment it is written and released
//! the moment the last link goes (no journal, no delayed allocation, no reserved blocks), directories and
//! inodes take no data pages, and the size is whatever the test asks.
//!
//! [`store_on_tmpfs`] puts a running [`Daemon`]'s store on one: it stops the daemon, mounts a tmpfs over its
//! root (hiding the store the first start created) and starts it again on the empty filesystem, so every
//! other fixture (log, socket, client, restart) keeps working.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::daemon::Daemon;

/// The page size tmpfs counts in.
pub const PAGE: u64 = 4096;

/// One MiB.
pub const MIB: u64 = 1024 * 1024;

/// Size and use of a filesystem, as kubelet (and imaged) compute them from `statvfs`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FsUsage {
    /// `f_blocks * f_frsize`.
    pub capacity: u64,
    /// Capacity minus `f_bavail * f_frsize`.
    pub used: u64,
}

impl FsUsage {
    /// Used bytes as an integer percent the way kubelet rounds it: `100 - available * 100 / capacity`.
    pub fn percent(&self) -> u64 {
        100 - (self.capacity - self.used) * 100 / self.capacity
    }
}

/// `statvfs` of the filesystem holding `path`.
pub fn usage(path: &Path) -> FsUsage {
    let s = rustix::fs::statvfs(path).unwrap_or_else(|e| panic!("statvfs {}: {e}", path.display()));
    let capacity = s.f_blocks * s.f_frsize;
    FsUsage {
        capacity,
        used: capacity - s.f_bavail * s.f_frsize,
    }
}

/// Bytes allocated under `path` (a file, or a tree walked without following links), as `du` counts them.
pub fn du(path: &Path) -> u64 {
    let meta = std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("stat {}: {e}", path.display()));
    let mut n = meta.blocks() * 512;
    if meta.is_dir() {
        for e in std::fs::read_dir(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display())) {
            n += du(&e.expect("directory entry").path());
        }
    }
    n
}

/// A tmpfs mounted by the test, unmounted on drop (lazily, `umount -l`, if something still holds it open).
#[derive(Debug)]
pub struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `bytes` (a multiple of [`PAGE`]) on the existing directory `path`; what the directory
    /// held is hidden until the unmount.
    pub fn mount_at(path: &Path, bytes: u64) -> Tmpfs {
        assert_eq!(bytes % PAGE, 0, "tmpfs size {bytes} is not a whole number of pages");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes},mode=0755"), "tmpfs"])
            .arg(path)
            .output()
            .unwrap_or_else(|e| panic!("run mount (the GC tests mount a tmpfs and must run as root): {e}"));
        assert!(
            out.status.success(),
            "mount -t tmpfs -o size={bytes} tmpfs {} failed (the GC tests must run as root): {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let fs = Tmpfs {
            path: path.to_path_buf(),
        };
        assert_eq!(
            fs.usage().capacity,
            bytes,
            "tmpfs at {} has not the asked size",
            path.display()
        );
        fs
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its `statvfs` figures now.
    pub fn usage(&self) -> FsUsage {
        usage(&self.path)
    }

    /// Used bytes now.
    pub fn used(&self) -> u64 {
        self.usage().used
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.path)
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.path).output();
        }
    }
}

/// Stops `daemon`, mounts a tmpfs of `bytes` over its store root and starts it again there (on an empty store).
/// Stop the daemon before dropping the returned guard, or the unmount is lazy.
pub async fn store_on_tmpfs(daemon: &mut Daemon, bytes: u64) -> Tmpfs {
    daemon.stop();
    let fs = Tmpfs::mount_at(&daemon.root, bytes);
    daemon.start_again().await;
    fs
}
