//! The snapshot store: each layer applied once, under its chain id.
//!
//! ```text
//! <root>/snapshots/<chain-id hex>/fs         the layer's changes, overlay-ready (see `unpack`)
//! <root>/snapshots/<chain-id hex>/meta.json  bytes and inodes it takes, how deletions are represented
//! <root>/snapshots/tmp-<n>/                  a snapshot being built, or being deleted
//! ```
//!
//! A snapshot is built in a `tmp-` directory, synced with one `syncfs` (not one fsync per file), then
//! renamed under its chain id, and the directory synced: a chain id either names a complete snapshot or
//! nothing. Deletion renames to `tmp-` first, so a crash mid-way never leaves half a snapshot under a chain
//! id. Leftover `tmp-` directories are removed when the store opens. Snapshots are leased like blobs.

use std::fs;

use rustix::fs::{IFlags, Mode, OFlags};
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::content::Usage;
use crate::digest::Digest;
use crate::error::{Classify, ErrorKind};
use crate::keyed_lock::KeyedLocks;
use crate::lease::LeaseTable;

/// What went wrong in the snapshot store.
#[derive(Debug, thiserror::Error)]
#[error("snapshot store: cannot {op} {path}: {source}")]
pub struct SnapshotError {
    op: &'static str,
    path: PathBuf,
    source: io::Error,
}

impl Classify for SnapshotError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::Internal
    }
}

fn err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> SnapshotError {
    let path = path.to_path_buf();
    move |source| SnapshotError { op, path, source }
}

/// What a committed snapshot records about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    /// Bytes allocated on disk by the snapshot's files.
    pub bytes: u64,
    /// Files, directories and nodes in it.
    pub inodes: u64,
    /// Whether deletions are in overlay form (true) or OCI marker files (false).
    pub overlay_whiteouts: bool,
    /// Directories the layer only implies; they take their attributes from the layers below (see
    /// [`SnapshotStore::inherit_implicit_dirs`]).
    #[serde(default)]
    pub implicit_dirs: Vec<PathBuf>,
}

/// A snapshot being built: apply the layer into [`Pending::fs`], then [`SnapshotStore::commit`].
#[derive(Debug)]
pub struct Pending {
    dir: PathBuf,
    committed: bool,
}

impl Pending {
    /// The directory to apply the layer into.
    pub fn fs(&self) -> PathBuf {
        self.dir.join("fs")
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// The snapshot store; cheap to clone.
#[derive(Clone)]
pub struct SnapshotStore {
    inner: Arc<Inner>,
}

struct Inner {
    root: PathBuf,
    leases: Arc<LeaseTable>,
    usage: Usage,
    next_tmp: AtomicU64,
    building: KeyedLocks<Digest>,
}

impl SnapshotStore {
    /// Opens (creating) the store under `root`, removing unfinished builds and deletions.
    pub fn open(root: &Path, leases: Arc<LeaseTable>) -> Result<SnapshotStore, SnapshotError> {
        fs::create_dir_all(root).map_err(err("create", root))?;
        mark_top_dir(root);
        let usage = Usage::default();
        for entry in fs::read_dir(root).map_err(err("read", root))? {
            let entry = entry.map_err(err("read", root))?;
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let meta = (Digest::from_hex(&name).is_ok()).then(|| read_meta(&path)).flatten();
            match meta {
                Some(m) => usage.add_many(m.bytes, m.inodes),
                // tmp-*, or anything else that is not a complete snapshot.
                None => remove_tree(&path).map_err(err("remove leftover", &path))?,
            }
        }
        Ok(SnapshotStore {
            inner: Arc::new(Inner {
                root: root.to_path_buf(),
                leases,
                usage,
                next_tmp: AtomicU64::new(0),
                building: KeyedLocks::default(),
            }),
        })
    }

    /// The directory of a snapshot (whether or not it exists).
    pub fn dir(&self, chain: &Digest) -> PathBuf {
        self.inner.root.join(chain.hex())
    }

    /// The layer directory of a snapshot, as overlayfs takes it in `lowerdir`.
    pub fn fs_dir(&self, chain: &Digest) -> PathBuf {
        self.dir(chain).join("fs")
    }

    /// Whether a complete snapshot exists under `chain`.
    pub fn exists(&self, chain: &Digest) -> bool {
        self.dir(chain).join("meta.json").is_file()
    }

    /// The recorded facts of a snapshot.
    pub fn meta(&self, chain: &Digest) -> Option<SnapshotMeta> {
        read_meta(&self.dir(chain))
    }

    /// Waits until no one else is building `chain`; hold the guard while checking and building.
    pub async fn lock_build(&self, chain: &Digest) -> tokio::sync::OwnedMutexGuard<()> {
        self.inner.building.lock(chain).await
    }

    /// A fresh directory to build a snapshot in.
    pub fn prepare(&self) -> Result<Pending, SnapshotError> {
        let n = self.inner.next_tmp.fetch_add(1, Ordering::Relaxed);
        let dir = self.inner.root.join(format!("tmp-{}-{n}", std::process::id()));
        let _ = remove_tree(&dir);
        fs::create_dir(&dir).map_err(err("create", &dir))?;
        fs::create_dir(dir.join("fs")).map_err(err("create", &dir))?;
        Ok(Pending { dir, committed: false })
    }

    /// Makes a built snapshot durable and visible under `chain`. An existing snapshot is success.
    pub fn commit(
        &self,
        mut pending: Pending,
        chain: &Digest,
        overlay_whiteouts: bool,
        implicit_dirs: Vec<PathBuf>,
    ) -> Result<SnapshotMeta, SnapshotError> {
        // The recorded size is everything the snapshot's directory holds, meta.json and the directories
        // included, so that GC's "bytes freed" is what deleting it really releases. meta.json is written
        // once to be measured and again with the figure (a small file keeps its one block).
        let meta_path = pending.dir.join("meta.json");
        let mut meta = SnapshotMeta {
            bytes: 0,
            inodes: 0,
            overlay_whiteouts,
            implicit_dirs,
        };
        fs::write(&meta_path, serde_json::to_vec(&meta).unwrap_or_default()).map_err(err("write", &meta_path))?;
        let (bytes, inodes) = measure(&pending.dir).map_err(err("measure", &pending.dir))?;
        let own = fs::symlink_metadata(&pending.dir).map_err(err("measure", &pending.dir))?;
        meta.bytes = bytes + own.blocks() * 512;
        meta.inodes = inodes + 1;
        let mut f = fs::File::create(&meta_path).map_err(err("create", &meta_path))?;
        f.write_all(&serde_json::to_vec(&meta).unwrap_or_default())
            .map_err(err("write", &meta_path))?;
        // One syncfs for the whole tree instead of an fsync per file.
        rustix::fs::syncfs(&f).map_err(|e| err("sync", &pending.dir)(e.into()))?;
        drop(f);
        let target = self.dir(chain);
        {
            let _order = self.inner.leases.lock();
            if self.exists(chain) {
                return Ok(self.meta(chain).unwrap_or(meta)); // Pending's drop removes our copy.
            }
            fs::rename(&pending.dir, &target).map_err(err("rename", &target))?;
            pending.committed = true;
            self.inner.usage.add_many(meta.bytes, meta.inodes);
        }
        fs::File::open(&self.inner.root)
            .and_then(|d| d.sync_all())
            .map_err(err("sync", &self.inner.root))?;
        Ok(meta)
    }

    /// Gives the implicit directories of each layer of `chains` (base first) the mode, owner and time of
    /// the same directory in the nearest layer below that has it, as containerd's applier does when it
    /// creates a missing parent. Layers are applied concurrently and independently, so this runs once the
    /// whole chain exists; it is idempotent, and a chain id fixes the layers below, so every image sharing
    /// a snapshot computes the same result.
    pub fn inherit_implicit_dirs(&self, chains: &[Digest]) -> Result<(), SnapshotError> {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        for (i, chain) in chains.iter().enumerate().skip(1) {
            let Some(meta) = self.meta(chain) else { continue };
            for rel in &meta.implicit_dirs {
                let below = chains[..i].iter().rev().find_map(|c| {
                    let m = fs::symlink_metadata(self.fs_dir(c).join(rel)).ok()?;
                    // A layer that deletes or replaces the path ends the search: nothing below shows.
                    Some(m)
                });
                let Some(below) = below.filter(|m| m.is_dir()) else {
                    continue;
                };
                let path = self.fs_dir(chain).join(rel);
                let e = |op| err(op, &path);
                fs::set_permissions(&path, fs::Permissions::from_mode(below.mode() & 0o7777)).map_err(e("chmod"))?;
                if rustix::process::geteuid().is_root() {
                    rustix::fs::chownat(
                        rustix::fs::CWD,
                        &path,
                        Some(rustix::fs::Uid::from_raw(below.uid())),
                        Some(rustix::fs::Gid::from_raw(below.gid())),
                        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
                    )
                    .map_err(|x| err("chown", &path)(x.into()))?;
                    // chown clears set-id bits: set the mode again.
                    fs::set_permissions(&path, fs::Permissions::from_mode(below.mode() & 0o7777))
                        .map_err(e("chmod"))?;
                }
                let t = rustix::fs::Timespec {
                    tv_sec: below.mtime(),
                    tv_nsec: below.mtime_nsec(),
                };
                let times = rustix::fs::Timestamps {
                    last_access: t,
                    last_modification: t,
                };
                rustix::fs::utimensat(rustix::fs::CWD, &path, &times, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|x| err("set the time of", &path)(x.into()))?;
            }
        }
        Ok(())
    }

    /// Deletes a snapshot unless leased or referenced by a recorded image; returns the bytes freed.
    pub fn delete(&self, chain: &Digest) -> Result<u64, SnapshotError> {
        let dir = self.dir(chain);
        let (meta, tmp) = {
            let leases = self.inner.leases.lock();
            if leases.protects(chain) {
                return Ok(0);
            }
            let Some(meta) = self.meta(chain) else { return Ok(0) };
            let n = self.inner.next_tmp.fetch_add(1, Ordering::Relaxed);
            let tmp = self.inner.root.join(format!("tmp-del-{}-{n}", std::process::id()));
            fs::rename(&dir, &tmp).map_err(err("rename", &dir))?;
            self.inner.usage.sub_many(meta.bytes, meta.inodes);
            (meta, tmp)
        };
        remove_tree(&tmp).map_err(err("remove", &tmp))?;
        Ok(meta.bytes)
    }

    /// Every complete snapshot's chain id.
    pub fn list(&self) -> Result<Vec<Digest>, SnapshotError> {
        let root = &self.inner.root;
        let mut out = Vec::new();
        for entry in fs::read_dir(root).map_err(err("read", root))? {
            let entry = entry.map_err(err("read", root))?;
            if let Ok(d) = Digest::from_hex(&entry.file_name().to_string_lossy())
                && self.exists(&d)
            {
                out.push(d);
            }
        }
        Ok(out)
    }

    /// Bytes and inodes the snapshots take.
    pub fn usage(&self) -> (u64, u64) {
        self.inner.usage.get()
    }
}

fn read_meta(dir: &Path) -> Option<SnapshotMeta> {
    serde_json::from_slice(&fs::read(dir.join("meta.json")).ok()?).ok()
}

fn remove_tree(p: &Path) -> io::Result<()> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(p),
        Ok(_) => fs::remove_file(p),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Allocated bytes and inode count of a tree (hard links counted once).
fn measure(dir: &Path) -> io::Result<(u64, u64)> {
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
fn mark_top_dir(root: &Path) {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// On ext2/3/4 (where this machine's and CI's temp dirs live) the store root carries the Orlov
    /// top-directory flag; elsewhere opening must still work.
    #[test]
    fn store_root_is_a_top_directory_on_ext4() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("snapshots");
        SnapshotStore::open(&root, Arc::new(LeaseTable::default())).unwrap();
        let fs = rustix::fs::statfs(&root).unwrap();
        const EXT_SUPER_MAGIC: i64 = 0xEF53;
        if fs.f_type as i64 == EXT_SUPER_MAGIC {
            let dir = rustix::fs::open(&root, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap();
            assert!(rustix::fs::ioctl_getflags(&dir).unwrap().contains(IFlags::TOPDIR));
        }
    }
}
