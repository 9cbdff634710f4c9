//! The snapshot store: each layer applied once, under its chain id.
//!
//! ```text
//! <root>/snapshots/<chain-id hex>/fs         the layer's changes, overlay-ready (see `unpack`)
//! <root>/snapshots/<chain-id hex>/meta.json  bytes and inodes it takes, how deletions are represented
//! <root>/snapshots/tmp-<n>/                  a snapshot being built, or being deleted
//! <root>/snapshots/l/<name>                  a short link to `../<chain-id hex>/fs` (see [`link`])
//! ```
//!
//! A snapshot is built in a `tmp-` directory, synced with one `syncfs` (not one fsync per file), then
//! renamed under its chain id, and the directory synced: a chain id either names a complete snapshot or
//! nothing. Deletion renames to `tmp-` first, so a crash mid-way never leaves half a snapshot under a chain
//! id. Leftover `tmp-` directories and links to nothing are removed when the store opens. Snapshots are
//! leased like blobs: by pulls in flight, and by the snapshots runtimes build on them (`snapshotter`).
//!
//! Each snapshot records its parent (the chain id below it), so the whole chain of an image's top layer
//! can be mounted without the image record, after the image is gone.

pub mod link;

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
    /// The chain id of the layer below: `""` for a base layer, absent in stores written before imaged
    /// recorded it (filled in from the image records at start: [`SnapshotStore::fill_parents`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// The name of the snapshot's link in `l/` (absent in older stores until the store opens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// When the snapshot was committed (Unix nanoseconds; 0 if unknown).
    #[serde(default)]
    pub created_ns: i64,
    /// Bytes of the uncompressed layer tar it was applied from (absent in stores written before imaged
    /// recorded it): containers/storage reports it as the layer's size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff_size: Option<u64>,
}

/// What a layer sits on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerParent {
    /// Nothing: a base layer.
    Base,
    /// The layer with this chain id.
    Layer(Digest),
}

impl SnapshotMeta {
    /// The layer's parent, if known.
    pub fn parent(&self) -> Option<LayerParent> {
        match self.parent.as_deref()? {
            "" => Some(LayerParent::Base),
            d => d.parse().ok().map(LayerParent::Layer),
        }
    }
}

fn parent_field(parent: Option<&Digest>) -> Option<String> {
    Some(parent.map(|d| d.to_string()).unwrap_or_default())
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
    /// Opens (creating) the store under `root`, removing unfinished builds and deletions, and links that
    /// lead nowhere; gives every snapshot its link (stores written before links existed get them here).
    pub fn open(root: &Path, leases: Arc<LeaseTable>) -> Result<SnapshotStore, SnapshotError> {
        fs::create_dir_all(root).map_err(err("create", root))?;
        mark_top_dir(root);
        let links = root.join(link::LINK_DIR);
        fs::create_dir_all(&links).map_err(err("create", &links))?;
        let usage = Usage::default();
        let mut linked = std::collections::HashSet::new();
        for entry in fs::read_dir(root).map_err(err("read", root))? {
            let entry = entry.map_err(err("read", root))?;
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name == link::LINK_DIR {
                continue;
            }
            let meta = (Digest::from_hex(&name).is_ok()).then(|| read_meta(&path)).flatten();
            match meta {
                Some(mut m) => {
                    usage.add_many(m.bytes, m.inodes);
                    let target = link::target_of(&name);
                    match &m.link {
                        Some(l) => link::restore(&links, l, &target).map_err(err("link", &links))?,
                        None => {
                            m.link = Some(link::create(&links, &target).map_err(err("link", &links))?);
                            write_meta_atomically(&path, &m)?;
                        }
                    }
                    linked.extend(m.link);
                }
                // tmp-*, or anything else that is not a complete snapshot.
                None => remove_tree(&path).map_err(err("remove leftover", &path))?,
            }
        }
        for entry in fs::read_dir(&links).map_err(err("read", &links))? {
            let entry = entry.map_err(err("read", &links))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !linked.contains(&name) {
                remove_tree(&entry.path()).map_err(err("remove stale link", &entry.path()))?;
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

    /// Records the parents of snapshots written before imaged recorded them, from the images' chains
    /// (each base first). Snapshots no image names keep an unknown parent; the start's sweep removes them.
    pub fn fill_parents<'a>(&self, chains: impl IntoIterator<Item = &'a [Digest]>) -> Result<usize, SnapshotError> {
        let mut filled = 0;
        for chain in chains {
            for (i, c) in chain.iter().enumerate() {
                let dir = self.dir(c);
                let Some(mut meta) = read_meta(&dir) else { continue };
                if meta.parent.is_some() {
                    continue;
                }
                meta.parent = parent_field(i.checked_sub(1).map(|p| &chain[p]));
                write_meta_atomically(&dir, &meta)?;
                filled += 1;
            }
        }
        Ok(filled)
    }

    /// The directory of a snapshot (whether or not it exists).
    pub fn dir(&self, chain: &Digest) -> PathBuf {
        self.inner.root.join(chain.hex())
    }

    /// The layer directory of a snapshot, as overlayfs takes it in `lowerdir`.
    pub fn fs_dir(&self, chain: &Digest) -> PathBuf {
        self.dir(chain).join("fs")
    }

    /// The short link to the layer directory of a snapshot (see [`link`]), if it exists.
    pub fn link_path(&self, chain: &Digest) -> Option<PathBuf> {
        let name = self.meta(chain)?.link?;
        Some(self.inner.root.join(link::LINK_DIR).join(name))
    }

    /// The directory of the links: a lower directory given as `<links dir>/<name>` is short.
    pub fn links_dir(&self) -> PathBuf {
        self.inner.root.join(link::LINK_DIR)
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

    /// Makes a built snapshot durable and visible under `chain`, on top of `parent` (`None` for a base
    /// layer), applied from a tar of `diff_size` bytes. An existing snapshot is success.
    pub fn commit(
        &self,
        mut pending: Pending,
        chain: &Digest,
        parent: Option<&Digest>,
        overlay_whiteouts: bool,
        implicit_dirs: Vec<PathBuf>,
        diff_size: Option<u64>,
    ) -> Result<SnapshotMeta, SnapshotError> {
        // The recorded size is everything the snapshot's directory holds, meta.json and the directories
        // included, so that GC's "bytes freed" is what deleting it really releases. meta.json is written
        // once to be measured and again with the figure (a small file keeps its one block).
        let meta_path = pending.dir.join("meta.json");
        // The link first: its name goes into meta.json. It dangles until the rename below; a crash in
        // between leaves a link to nothing, removed at the next start.
        let links = self.links_dir();
        let link_name = link::create(&links, &link::target_of(&chain.hex())).map_err(err("link", &links))?;
        let unlink = |name: &str| {
            let _ = link::remove(&links, name);
        };
        let mut meta = SnapshotMeta {
            bytes: 0,
            inodes: 0,
            overlay_whiteouts,
            implicit_dirs,
            parent: parent_field(parent),
            link: Some(link_name.clone()),
            created_ns: crate::service::now_ns(),
            diff_size,
        };
        let written = (|| {
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
            Ok(())
        })();
        if let Err(e) = written {
            unlink(&link_name);
            return Err(e);
        }
        let target = self.dir(chain);
        {
            let _order = self.inner.leases.lock();
            if self.exists(chain) {
                unlink(&link_name);
                return Ok(self.meta(chain).unwrap_or(meta)); // Pending's drop removes our copy.
            }
            if let Err(e) = fs::rename(&pending.dir, &target) {
                unlink(&link_name);
                return Err(err("rename", &target)(e));
            }
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

    /// Records the size of the tar a snapshot was applied from, for snapshots committed before imaged
    /// recorded it (measured again from the layer's blob by whoever needs it).
    pub fn record_diff_size(&self, chain: &Digest, diff_size: u64) -> Result<(), SnapshotError> {
        let dir = self.dir(chain);
        let Some(mut meta) = read_meta(&dir) else {
            return Ok(()); // Deleted meanwhile: nothing to record.
        };
        meta.diff_size = Some(diff_size);
        write_meta_atomically(&dir, &meta)
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
            if let Some(name) = &meta.link {
                let links = self.links_dir();
                link::remove(&links, name).map_err(err("remove link", &links.join(name)))?;
            }
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

/// Replaces a committed snapshot's meta.json (write aside, fsync, rename): a crash leaves the old or the new.
fn write_meta_atomically(dir: &Path, meta: &SnapshotMeta) -> Result<(), SnapshotError> {
    let tmp = dir.join("meta.json.tmp");
    let mut f = fs::File::create(&tmp).map_err(err("create", &tmp))?;
    f.write_all(&serde_json::to_vec(meta).unwrap_or_default())
        .and_then(|()| f.sync_all())
        .map_err(err("write", &tmp))?;
    let path = dir.join("meta.json");
    fs::rename(&tmp, &path).map_err(err("rename", &path))
}

fn remove_tree(p: &Path) -> io::Result<()> {
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

    fn commit(store: &SnapshotStore, n: u8, parent: Option<&Digest>) -> Digest {
        let chain = Digest::of(&[n]);
        let p = store.prepare().unwrap();
        fs::write(p.fs().join("f"), [n]).unwrap();
        store.commit(p, &chain, parent, true, Vec::new(), Some(1)).unwrap();
        chain
    }

    #[test]
    fn layers_get_links_and_parents_which_survive_reopening_and_go_with_the_layer() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("snapshots");
        let leases = Arc::new(LeaseTable::default());
        let store = SnapshotStore::open(&root, leases.clone()).unwrap();
        let a = commit(&store, 1, None);
        let b = commit(&store, 2, Some(&a));
        assert_eq!(store.meta(&a).unwrap().parent(), Some(LayerParent::Base));
        assert_eq!(store.meta(&b).unwrap().parent(), Some(LayerParent::Layer(a)));
        let link = store.link_path(&b).unwrap();
        assert!(link.file_name().unwrap().len() <= 10);
        assert_eq!(fs::read(link.join("f")).unwrap(), [2]);

        // A link lost, a stray link, a link to a removed layer: repaired at open.
        fs::remove_file(store.link_path(&a).unwrap()).unwrap();
        std::os::unix::fs::symlink("../nowhere/fs", root.join("l/strayabcde")).unwrap();
        drop(store);
        let store = SnapshotStore::open(&root, leases.clone()).unwrap();
        assert_eq!(fs::read(store.link_path(&a).unwrap().join("f")).unwrap(), [1]);
        assert!(!root.join("l/strayabcde").exists());
        assert!(store.delete(&b).unwrap() > 0);
        assert!(
            !link.exists() && fs::symlink_metadata(&link).is_err(),
            "the link goes with the layer"
        );
        assert_eq!(fs::read_dir(root.join("l")).unwrap().count(), 1);
    }

    #[test]
    fn parents_of_an_older_store_come_from_the_image_chains() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("snapshots");
        let store = SnapshotStore::open(&root, Arc::new(LeaseTable::default())).unwrap();
        let a = commit(&store, 1, None);
        let b = commit(&store, 2, Some(&a));
        // As written before parents and links were recorded.
        for c in [&a, &b] {
            let mut m = store.meta(c).unwrap();
            m.parent = None;
            m.link = None;
            write_meta_atomically(&store.dir(c), &m).unwrap();
        }
        drop(store);
        let store = SnapshotStore::open(&root, Arc::new(LeaseTable::default())).unwrap();
        assert!(store.link_path(&b).is_some(), "links are made at open");
        assert_eq!(store.meta(&b).unwrap().parent(), None);
        assert_eq!(store.fill_parents([[a, b].as_slice()]).unwrap(), 2);
        assert_eq!(store.meta(&b).unwrap().parent(), Some(LayerParent::Layer(a)));
        assert_eq!(store.meta(&a).unwrap().parent(), Some(LayerParent::Base));
        assert_eq!(store.fill_parents([[a, b].as_slice()]).unwrap(), 0);
    }
}
