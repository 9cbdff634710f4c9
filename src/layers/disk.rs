//! The layer store's file-system helpers: meta.json, tree removal and measurement, placement.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use rustix::fs::{IFlags, Mode, OFlags};

use super::{LayerError, SnapshotMeta, err};

pub(super) fn read_meta(dir: &Path) -> Option<SnapshotMeta> {
    serde_json::from_slice(&fs::read(dir.join("meta.json")).ok()?).ok()
}

/// Replaces a committed snapshot's meta.json (write aside, fsync, rename): a crash leaves the old or the new.
pub(super) fn write_meta_atomically(dir: &Path, meta: &SnapshotMeta) -> Result<(), LayerError> {
    let tmp = dir.join("meta.json.tmp");
    let mut f = fs::File::create(&tmp).map_err(err("create", &tmp))?;
    f.write_all(&serde_json::to_vec(meta).unwrap_or_default())
        .and_then(|()| f.sync_all())
        .map_err(err("write", &tmp))?;
    let path = dir.join("meta.json");
    fs::rename(&tmp, &path).map_err(err("rename", &path))
}

pub(super) fn remove_tree(p: &Path) -> io::Result<()> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(p),
        Ok(_) => fs::remove_file(p),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Allocated bytes and inode count of a tree (hard links counted once), the tree's own directory excluded.
pub fn measure(dir: &Path) -> io::Result<(u64, u64)> {
    let mut seen = std::collections::HashSet::new();
    let (mut bytes, mut inodes) = (0u64, 0u64);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d)? {
            let entry = entry?;
            let m = fs::symlink_metadata(entry.path())?;
            if m.nlink() > 1 && !m.is_dir() && !seen.insert((m.dev(), m.ino())) {
                continue;
            }
            bytes += m.blocks() * 512;
            inodes += 1;
            if m.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    Ok((bytes, inodes))
}

/// Asks ext2/3/4's Orlov allocator to treat `root` as the top of independent trees (`chattr +T`): each
/// snapshot directory is then placed in a block group of its own choosing, with free inodes, instead of next
/// to its siblings. Without it, a new snapshot lands in the groups the last deleted one freed, and on ext4
/// without a journal every inode allocation there scans past the inodes deleted in the last minute
/// (`recently_deleted`), quadratic in the number of files just removed. Best effort: other filesystems
/// ignore or refuse the flag, which changes nothing but placement.
pub(super) fn mark_top_dir(root: &Path) {
    let set = || -> rustix::io::Result<()> {
        let dir = rustix::fs::open(
            root,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let flags = rustix::fs::ioctl_getflags(&dir)?;
        if !flags.contains(IFlags::TOPDIR) {
            rustix::fs::ioctl_setflags(&dir, flags | IFlags::TOPDIR)?;
        }
        Ok(())
    };
    if let Err(e) = set() {
        tracing::debug!(dir = %root.display(), error = %e, "top-directory flag not set (not ext2/3/4?)");
    }
}
