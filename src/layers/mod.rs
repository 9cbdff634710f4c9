//! The layer store: each layer applied once, under its chain id (containerd would call each one a committed
//! snapshot; the on-disk names keep that word).
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

mod disk;
mod implicit;
pub mod link;

pub use disk::measure;
use disk::{mark_top_dir, read_meta, remove_tree, write_meta_atomically};

use std::fs;

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
pub struct LayerError {
    op: &'static str,
    path: PathBuf,
    source: io::Error,
}

impl Classify for LayerError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::Internal
    }
}

fn err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> LayerError {
    let path = path.to_path_buf();
    move |source| LayerError { op, path, source }
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
    /// [`LayerStore::inherit_implicit_dirs`]).
    #[serde(default)]
    pub implicit_dirs: Vec<PathBuf>,
    /// The chain id of the layer below: `""` for a base layer, absent in stores written before imaged
    /// recorded it (filled in from the image records at start: [`LayerStore::fill_parents`]).
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

/// A snapshot being built: apply the layer into [`Pending::fs`], then [`LayerStore::commit`].
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
pub struct LayerStore {
    inner: Arc<Inner>,
}

struct Inner {
    root: PathBuf,
    leases: Arc<LeaseTable>,
    usage: Usage,
    next_tmp: AtomicU64,
    building: KeyedLocks<Digest>,
}

impl LayerStore {
    /// Opens (creating) the store under `root`, removing unfinished builds and deletions, and links that
    /// lead nowhere; gives every snapshot its link (stores written before links existed get them here).
    pub fn open(root: &Path, leases: Arc<LeaseTable>) -> Result<LayerStore, LayerError> {
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
        Ok(LayerStore {
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
    pub fn fill_parents<'a>(&self, chains: impl IntoIterator<Item = &'a [Digest]>) -> Result<usize, LayerError> {
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
    pub fn prepare(&self) -> Result<Pending, LayerError> {
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
    ) -> Result<SnapshotMeta, LayerError> {
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
            created_ns: crate::clock::now_ns(),
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

    /// Records the size of the tar a snapshot was applied from, for snapshots committed before imaged
    /// recorded it (measured again from the layer's blob by whoever needs it).
    pub fn record_diff_size(&self, chain: &Digest, diff_size: u64) -> Result<(), LayerError> {
        let dir = self.dir(chain);
        let Some(mut meta) = read_meta(&dir) else {
            return Ok(()); // Deleted meanwhile: nothing to record.
        };
        meta.diff_size = Some(diff_size);
        write_meta_atomically(&dir, &meta)
    }

    /// Deletes a snapshot unless leased or referenced by a recorded image; returns the bytes freed.
    pub fn delete(&self, chain: &Digest) -> Result<u64, LayerError> {
        let dir = self.dir(chain);
        let (meta, tmp) = {
            let leases = self.inner.leases.lock();
            if leases.protects(&crate::lease::Item::Snapshot(*chain)) {
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
    pub fn list(&self) -> Result<Vec<Digest>, LayerError> {
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

#[cfg(test)]
mod tests;
