//! A daemon to feed hostile layers to, with a sentinel directory beside its own that the hostile paths aim
//! at, and the checks that follow every refusal: the pull failed with the expected code and message, the
//! store holds nothing (no image, blob, snapshot, ingest file or `tmp-` directory), and nothing changed
//! outside it (the sentinel, and the daemon's directory outside `<root>`).

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tonic::Code;

use crate::common::daemon::setup::Setup;
use crate::common::daemon::{DaemonOptions, blobs, ingest_files, list, pull};
use crate::common::images::image::{Compression, ImageBuilder, Layer, MediaStyle};
use crate::common::images::rawtar::RawTar;
use crate::common::images::rootfs::fsck;
use crate::common::images::tree::{self, Tree, walk};
use crate::common::registry::RegistryOptions;

/// A daemon, and a sentinel directory beside its own that hostile layers aim at.
pub struct Arena {
    /// The registry and the daemon.
    pub s: Setup,
    sentinel: TempDir,
    sentinel_before: Tree,
    outside_before: Tree,
}

impl Arena {
    /// Starts a registry and a daemon with `config` (TOML), and creates the sentinel holding one file,
    /// `victim`.
    pub async fn start(config: Option<&str>) -> Arena {
        let opts = DaemonOptions {
            config: config.map(str::to_owned),
            ..Default::default()
        };
        let s = Setup::start_with(RegistryOptions::default(), opts).await;
        let parent = s.daemon.dir().parent().unwrap().to_path_buf();
        let sentinel = tempfile::Builder::new()
            .prefix("imaged-sentinel-")
            .tempdir_in(&parent)
            .unwrap();
        std::fs::write(sentinel.path().join("victim"), "original").unwrap();
        Arena {
            sentinel_before: walk(sentinel.path()),
            outside_before: outside_root(&s),
            s,
            sentinel,
        }
    }

    /// The sentinel's absolute path.
    pub fn sentinel(&self) -> String {
        self.sentinel.path().display().to_string()
    }

    /// `../` as many times as it takes to climb from a snapshot's `fs` directory to the sentinel's parent,
    /// then the sentinel's name.
    pub fn climb_to_sentinel(&self) -> String {
        let parent = self.sentinel.path().parent().unwrap();
        let fs = self.s.daemon.root.join("snapshots/tmp-0-0/fs");
        let depth = fs
            .strip_prefix(parent)
            .expect("store beside the sentinel")
            .components()
            .count();
        let name = self.sentinel.path().file_name().unwrap().to_string_lossy();
        format!("{}{name}", "../".repeat(depth))
    }

    /// Pushes a one-layer image of `tar` as `repo:v1`, pulls it and expects it refused with `code` and a
    /// message holding each of `needles`; then checks the store is clean and nothing was written outside.
    pub async fn refused(&self, repo: &str, tar: Vec<u8>, code: Code, needles: &[&str]) {
        let layer = Layer::from_tar(tar, Compression::Gzip, MediaStyle::Oci);
        self.refused_layers(repo, vec![layer], code, needles).await;
    }

    /// [`Arena::refused`] for an image of `layers`.
    pub async fn refused_layers(&self, repo: &str, layers: Vec<Layer>, code: Code, needles: &[&str]) {
        let img = layers
            .into_iter()
            .fold(ImageBuilder::new(MediaStyle::Oci), |b, l| b.layer(l))
            .build();
        self.s.push(repo, "v1", &img).await;
        let mut c = self.s.daemon.client().await;
        let image = self.s.image(repo, "v1");
        let status = pull(&mut c, &image, None)
            .await
            .expect_err("the hostile layer must be refused");
        let msg = status.message();
        assert_eq!(status.code(), code, "{repo}: {msg}");
        assert!(msg.starts_with("pulling image "), "{repo}: {msg}");
        crate::common::runtimes::kubelet::assert_reason_once(&status, &image, "ErrImagePull");
        for n in needles {
            assert!(msg.contains(n), "{repo}: the message names {n:?}: {msg}");
        }
        self.assert_store_clean(repo).await;
        self.assert_nothing_outside();
    }

    /// Waits (the cleanup of a failed pull runs in the background) until the store holds nothing.
    pub async fn assert_store_clean(&self, what: &str) {
        let root = &self.s.daemon.root;
        let mut c = self.s.daemon.client().await;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let images = list(&mut c).await;
            let (blobs, ingest, snaps) = (blobs(root), ingest_files(root), snapshot_names(root));
            if images.is_empty() && blobs.is_empty() && ingest == 0 && snaps.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: the store is not clean: images {images:?}, blobs {blobs:?}, {ingest} ingest files, \
                 snapshots dir {snaps:?}; log:\n{}",
                self.s.daemon.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The sentinel and the daemon's directory outside `<root>` are as they were.
    pub fn assert_nothing_outside(&self) {
        let now = walk(self.sentinel.path());
        tree::assert_same("the sentinel", "before", &self.sentinel_before, "after", &now);
        let victim = std::fs::metadata(self.sentinel.path().join("victim")).unwrap();
        assert_eq!(victim.nlink(), 1, "nothing hard-linked the sentinel's file");
        tree::assert_same(
            "outside <root>",
            "before",
            &self.outside_before,
            "after",
            &outside_root(&self.s),
        );
    }

    /// Stops the daemon (which removes its socket) and runs `imaged fsck` on its store.
    pub fn stop_and_fsck(mut self) {
        self.s.daemon.stop();
        let out = fsck(&self.s.daemon.root);
        assert!(
            out.ok && out.stdout.lines().any(|l| l == "ok"),
            "fsck: {}{}",
            out.stdout,
            out.stderr
        );
        self.outside_before.remove(Path::new("run/imaged.sock"));
        self.assert_nothing_outside();
    }
}

/// The daemon's directory, without `<root>` and the log (which grows).
fn outside_root(s: &Setup) -> Tree {
    let mut t = walk(s.daemon.dir());
    t.retain(|p, _| !p.starts_with("root") && p != Path::new("imaged.log"));
    t
}

/// The names in `dir`, sorted (none if it does not exist).
pub fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// What the snapshot store holds: its entries, and each layer link as `l/<name>` (the `l/` directory itself,
/// which always exists, is not an entry).
pub fn snapshot_names(root: &Path) -> Vec<String> {
    let dir = root.join("snapshots");
    let mut v: Vec<String> = names(&dir).into_iter().filter(|n| n != "l").collect();
    v.extend(names(&dir.join("l")).into_iter().map(|n| format!("l/{n}")));
    v
}

/// A layer starting with harmless entries (so its snapshot has begun), then `evil`.
pub fn after_benign(evil: impl FnOnce(RawTar) -> RawTar) -> Vec<u8> {
    evil(RawTar::new().dir("etc").file("etc/benign", b"fine")).finish()
}

/// How the daemon's message names a refused entry.
pub fn refused_entry(entry: &str) -> String {
    format!("entry {entry:?} refused")
}

/// Bytes (apparent, allocated) of the files under `dir`.
pub fn usage(dir: &Path) -> (u64, u64) {
    let mut stack = vec![dir.to_path_buf()];
    let (mut len, mut alloc) = (0, 0);
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let Ok(m) = std::fs::symlink_metadata(e.path()) else {
                continue;
            };
            if m.is_dir() {
                stack.push(e.path());
            } else {
                len += m.len();
                alloc += m.blocks() * 512;
            }
        }
    }
    (len, alloc)
}
