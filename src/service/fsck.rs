//! `imaged fsck`: is the store consistent? Run offline (the daemon stopped), after the same cleanup a
//! start does: every blob matches its digest, every image's blobs and snapshots exist, nothing is left
//! half-written, nothing is unreferenced. What that cleanup repairs (what an interrupted pull or removal
//! left) is found first, so fsck can say what it was: [`leftovers`] before the store is opened,
//! [`ImageService::unreferenced`] before the sweep.

use std::io::Read;
use std::path::Path;
use std::time::SystemTime;

use super::ImageService;
use crate::content;
use crate::digest::{Digest, Hasher};
use crate::stores::{referenced_blobs, referenced_snapshots};

/// What a consistency check found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FsckReport {
    /// Images checked.
    pub images: usize,
    /// Blobs whose content was hashed.
    pub blobs: usize,
    /// Snapshots checked.
    pub snapshots: usize,
    /// Every inconsistency, one line each.
    pub problems: Vec<String>,
}

/// What a start removes before opening the stores: partial downloads (`content/ingest/*`) that cannot
/// resume and snapshots being built or deleted (`snapshots/tmp-*`), one line each naming the path. Run on
/// a stopped store.
pub fn leftovers(root: &Path) -> Vec<String> {
    let now = SystemTime::now();
    let mut out = Vec::new();
    let mut scan = |dir: std::path::PathBuf, what: &str, only_tmp: bool| {
        let Ok(entries) = std::fs::read_dir(&dir) else { return };
        let mut found: Vec<String> = entries
            .flatten()
            .filter(|e| !only_tmp || e.file_name().to_string_lossy().starts_with("tmp-"))
            .filter(|e| only_tmp || !content::resumable(&e.path(), now))
            .map(|e| format!("{what} {}", e.path().display()))
            .collect();
        found.sort();
        out.extend(found);
    };
    scan(root.join("content/ingest"), "partial download", false);
    scan(root.join("snapshots"), "unfinished snapshot", true);
    out
}

/// The interrupted downloads a start keeps, to resume on the next pull of their blob
/// ([`content::resumable`]): one line each, with the bytes they hold. Not problems.
pub fn resumable_downloads(root: &Path) -> Vec<String> {
    let now = SystemTime::now();
    let Ok(entries) = std::fs::read_dir(root.join("content/ingest")) else {
        return Vec::new();
    };
    let mut out: Vec<String> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "ranges") && content::resumable(p, now))
        .filter_map(|p| {
            let (size, written) = content::partial::read(&p)?;
            let hex = p.file_stem()?.to_string_lossy().into_owned();
            Some(format!(
                "partial download of sha256:{hex}: {} of {size} bytes, resumes on its next pull",
                written.total()
            ))
        })
        .collect();
    out.sort();
    out
}

impl ImageService {
    /// Blobs and snapshots no image references (what the sweep at start removes), one line each.
    pub fn unreferenced(&self) -> Vec<String> {
        let s = &self.stores;
        let images = s.metadata.list();
        let (keep_blobs, keep_snaps) = (referenced_blobs(&images), referenced_snapshots(&images));
        let blobs = s.content.list().unwrap_or_default().into_iter();
        let snaps = s.layers.list().unwrap_or_default().into_iter();
        blobs
            .filter(|d| !keep_blobs.contains(d))
            .map(|d| format!("unreferenced blob {d}"))
            .chain(
                snaps
                    .filter(|c| !keep_snaps.contains(c))
                    .map(|c| format!("unreferenced snapshot {c}")),
            )
            .collect()
    }

    /// Checks the store; see the module doc.
    pub fn fsck(&self) -> FsckReport {
        let s = &self.stores;
        let images = s.metadata.list();
        let mut r = FsckReport {
            images: images.len(),
            ..Default::default()
        };
        let blobs = s.content.list().unwrap_or_else(|e| {
            r.problems.push(format!("cannot list blobs: {e}"));
            Vec::new()
        });
        for d in &blobs {
            r.blobs += 1;
            match hash_file(&s.content.blob_path(d)) {
                Ok(actual) if actual == *d => {}
                Ok(actual) => r.problems.push(format!("blob {d} has content {actual}")),
                Err(e) => r.problems.push(format!("blob {d} is unreadable: {e}")),
            }
        }
        for img in &images {
            for l in img
                .index
                .iter()
                .chain([&img.manifest, &img.config])
                .chain(img.layers.iter().map(|l| &l.blob))
            {
                match s.content.size(&l.digest) {
                    Some(n) if n == l.size => {}
                    Some(n) => r.problems.push(format!(
                        "image {}: blob {} is {n} bytes, not {}",
                        img.id, l.digest, l.size
                    )),
                    None => r
                        .problems
                        .push(format!("image {}: blob {} is missing", img.id, l.digest)),
                }
            }
            for c in img.chain_ids() {
                if !s.layers.exists(&c) {
                    r.problems.push(format!("image {}: snapshot {c} is missing", img.id));
                }
            }
        }
        let snapshots = s.layers.list().unwrap_or_default();
        r.snapshots = snapshots.len();
        let (keep_blobs, keep_snaps) = (referenced_blobs(&images), referenced_snapshots(&images));
        r.problems.extend(
            blobs
                .iter()
                .filter(|d| !keep_blobs.contains(d))
                .map(|d| format!("blob {d} is unreferenced")),
        );
        // A layer whose image is gone stays while a runtime's snapshot sits on it (the snapshotter leases it).
        r.problems.extend(
            snapshots
                .iter()
                .filter(|c| !keep_snaps.contains(c) && !s.leases.is_leased(&crate::lease::Item::Snapshot(**c)))
                .map(|c| format!("snapshot {c} is unreferenced")),
        );
        for c in &snapshots {
            if !s.layers.link_path(c).is_some_and(|l| l.is_dir()) {
                r.problems.push(format!("snapshot {c} has no link in snapshots/l/"));
            }
        }
        r.problems.extend(self.snapshotter.check());
        r.problems.extend(self.bridges.check());
        let now = SystemTime::now();
        let leftovers = |dir: std::path::PathBuf, what: &str, r: &mut FsckReport| {
            if let Ok(entries) = std::fs::read_dir(&dir) {
                for e in entries.flatten() {
                    let name = e.file_name().to_string_lossy().into_owned();
                    if (what == "ingest" && !content::resumable(&e.path(), now)) || name.starts_with("tmp-") {
                        r.problems.push(format!("{what} leftover {}", e.path().display()));
                    }
                }
            }
        };
        leftovers(self.root.join("content/ingest"), "ingest", &mut r);
        leftovers(self.root.join("snapshots"), "snapshot", &mut r);
        r
    }
}

fn hash_file(path: &std::path::Path) -> std::io::Result<Digest> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Hasher::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(h.finish());
        }
        h.update(&buf[..n]);
    }
}
