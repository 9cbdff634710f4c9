//! The differential test of unpacking (issue 3): for images exercising every kind of layer change, the
//! root filesystem `imaged mount` materialises from imaged's snapshots equals the one `umoci unpack` (run as
//! root, so owners and devices are kept) makes from the same image copied out of the same registry by
//! `skopeo copy`: same paths, types, permission bits (set-id and sticky included), owners, symlink
//! targets, contents, file mtimes, xattrs and hard-link groups. Directory mtimes are not compared (both
//! tools touch them). Each test also checks the outcome against what the layers say, so the two tools
//! cannot agree on a wrong answer unnoticed; that the snapshots are overlay-ready (whiteouts as 0/0
//! character devices, opaque directories marked `trusted.overlay.opaque=y`); that images sharing a base
//! layer share its snapshot; and how `imaged mount` fails. What a single file carries (modes, owners,
//! devices, xattrs, sparse files) is in `e2e_unpack_attrs.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::{FileTypeExt, MetadataExt};

use common::daemon::setup::Setup;
use common::daemon::{pull, remove};
use common::images::busybox::{assert_changes_applied, changes_layers};
use common::images::image::{Compression, Entry, ImageBuilder, Layer, MediaStyle};
use common::images::rawtar::{Kind as RawKind, RawHeader, RawTar};
use common::images::rootfs::{Mounted, mount, mount_fresh, same_as_umoci, snapshots, verbose_info};
use common::images::tree::{self, walk};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whiteouts_opaque_dirs_hard_links_and_type_changes_match_umoci() {
    let s = Setup::start().await;
    let mut img = ImageBuilder::new(MediaStyle::Oci);
    for layer in changes_layers() {
        img = img.layer(layer);
    }
    let img = img.build();
    s.push("unpack/changes", "v1", &img).await;
    let m = same_as_umoci(&s, "unpack/changes", "v1").await;

    assert_changes_applied(&m.tree);
    assert_eq!(m.read("opt/data/new"), "new in the opaque dir");
    assert_eq!(m.read("swap"), "a file again");
    assert_eq!(m.read("swap2"), "now a file");
    assert_eq!(m.read("etc/keep"), "replaced in layer 2\n");
    assert_eq!(m.read("etc/replaced"), "a file where a symlink was");

    // The snapshots: one per layer under its chain id, overlay-ready, lowerdir top first.
    let image = s.image("unpack/changes", "v1");
    let mut c = s.daemon.client().await;
    let snaps = snapshots(&mut c, &image).await;
    let info = verbose_info(&mut c, &image).await;
    let chains: Vec<&str> = info["chainIDs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(snaps.len(), 3);
    for (snap, chain) in snaps.iter().zip(&chains) {
        let hex = chain.strip_prefix("sha256:").unwrap();
        assert_eq!(*snap, s.daemon.root.join("snapshots").join(hex).join("fs"));
    }
    let lowerdir: Vec<String> = snaps.iter().rev().map(|p| p.display().to_string()).collect();
    assert_eq!(info["lowerdir"], lowerdir.join(":"));
    let mid = &snaps[1];
    for deleted in ["etc/old", "hl/link1"] {
        let meta = std::fs::symlink_metadata(mid.join(deleted)).unwrap();
        assert!(
            meta.file_type().is_char_device() && meta.rdev() == 0,
            "{deleted} in the layer-1 snapshot is an overlay whiteout (0/0 char device): {meta:?}"
        );
    }
    let opaque = tree::xattr(&mid.join("opt/data"), "trusted.overlay.opaque");
    assert_eq!(opaque.as_deref(), Some(&b"y"[..]), "opt/data is marked opaque");
    assert_eq!(tree::xattr(&snaps[0].join("opt/data"), "trusted.overlay.opaque"), None);
    let markers: Vec<_> = walk(mid)
        .into_keys()
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(".wh."))
        .collect();
    assert!(
        markers.is_empty(),
        "no OCI whiteout files are kept as root: {markers:?}"
    );
    assert!(
        !snaps[0].join("etc/added").exists(),
        "a snapshot holds only its own layer"
    );
}

/// A layer-0 directory header with an mtime older than [`common::images::image::MTIME`], so that a stale directory
/// time put on another path shows.
fn old_dir(name: &str) -> RawHeader {
    let mut h = RawHeader::new(name, RawKind::Dir);
    h.mtime = 1_000_000_000;
    h
}

/// Pushes and pulls `repo:v1` made of the raw `base` tar (gzip) and `top` (zstd), and compares the mount
/// with umoci's rootfs.
async fn base_and_top(s: &Setup, repo: &str, base: RawTar, top: &[Entry]) -> Mounted {
    let style = MediaStyle::Oci;
    let img = ImageBuilder::new(style)
        .layer(Layer::from_tar(base.finish(), Compression::Gzip, style))
        .layer(Layer::build(top, Compression::Zstd, style))
        .build();
    s.push(repo, "v1", &img).await;
    same_as_umoci(s, repo, "v1").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whited_out_directory_is_gone_with_its_subdirectories() {
    let s = Setup::start().await;
    let base = RawTar::new()
        .entry(old_dir("var"), &[])
        .entry(old_dir("var/cache"), &[])
        .file("var/cache/a", b"a")
        .entry(old_dir("var/cache/sub"), &[])
        .file("var/cache/sub/b", b"b")
        .file("var/keep", b"kept");
    let top = [Entry::dir("var"), Entry::whiteout("var/cache")];
    let m = base_and_top(&s, "unpack/rmdir", base, &top).await;
    assert!(!m.has("var/cache") && !m.has("var/cache/sub/b") && m.has("var/keep"));
    let mut c = s.daemon.client().await;
    let snaps = snapshots(&mut c, &s.image("unpack/rmdir", "v1")).await;
    let meta = std::fs::symlink_metadata(snaps[1].join("var/cache")).unwrap();
    assert!(meta.file_type().is_char_device() && meta.rdev() == 0, "{meta:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_opaque_directory_hides_lower_subdirectories() {
    let s = Setup::start().await;
    let base = RawTar::new()
        .entry(old_dir("opt"), &[])
        .entry(old_dir("opt/data"), &[])
        .entry(old_dir("opt/data/sub"), &[])
        .file("opt/data/sub/old", b"hidden");
    let top = [
        Entry::dir("opt/data"),
        Entry::opaque("opt/data"),
        Entry::file("opt/data/new", "new"),
    ];
    let m = base_and_top(&s, "unpack/opaque", base, &top).await;
    assert!(!m.has("opt/data/sub") && m.has("opt/data/new"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_replaced_by_a_file_has_the_files_mtime() {
    let s = Setup::start().await;
    let base = RawTar::new()
        .entry(old_dir("swap"), &[])
        .file("swap/x", b"in a directory first");
    let m = base_and_top(&s, "unpack/swap", base, &[Entry::file("swap", "now a file")]).await;
    assert_eq!(m.read("swap"), "now a file");
    assert_eq!(
        m.node("swap").mtime,
        Some(common::images::image::MTIME as i64),
        "the file's own mtime"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_sharing_a_base_layer_share_its_snapshot() {
    let s = Setup::start().await;
    let base = Layer::build(
        &[
            Entry::dir("etc"),
            Entry::file("etc/os-release", "ID=shared\n"),
            Entry::file("etc/motd", "deleted by image a only\n"),
            Entry::file_with("etc/shadow", "root:*:", 0o600, 0, 42),
        ],
        Compression::Gzip,
        MediaStyle::Oci,
    );
    // The same blob, listed with the Docker media type by the Docker-style image.
    let mut base_docker = base.clone();
    base_docker.media_type = Compression::Gzip.media_type(MediaStyle::Docker).into();
    let a = ImageBuilder::new(MediaStyle::Oci)
        .layer(base)
        .layer(Layer::build(
            &[
                Entry::dir("etc"),
                Entry::whiteout("etc/motd"),
                Entry::file("a", "image a"),
            ],
            Compression::Zstd,
            MediaStyle::Oci,
        ))
        .build();
    let b = ImageBuilder::new(MediaStyle::Docker)
        .layer(base_docker)
        .layer(Layer::build(
            &[Entry::file_with("b", "image b", 0o755, 1002, 1002)],
            Compression::Gzip,
            MediaStyle::Docker,
        ))
        .build();
    s.push("shared/a", "v1", &a).await;
    s.push("shared/b", "v1", &b).await;
    let ma = same_as_umoci(&s, "shared/a", "v1").await;
    let mb = same_as_umoci(&s, "shared/b", "v1").await;
    assert!(!ma.has("etc/motd") && ma.has("a") && !ma.has("b"));
    assert_eq!(
        mb.read("etc/motd"),
        "deleted by image a only\n",
        "a's whiteout did not touch the shared base"
    );
    assert!(mb.has("b") && !mb.has("a"));

    let (ia, ib) = (s.image("shared/a", "v1"), s.image("shared/b", "v1"));
    let mut c = s.daemon.client().await;
    let (sa, sb) = (snapshots(&mut c, &ia).await, snapshots(&mut c, &ib).await);
    assert_eq!(sa[0], sb[0], "one snapshot for the shared base layer");
    assert_ne!(sa[1], sb[1]);

    // Removing one image leaves the other whole.
    remove(&mut c, &ia).await.unwrap();
    assert!(sb[0].is_dir(), "the shared base snapshot survives the removal of a");
    let again = mount_fresh(&s, &ib);
    tree::assert_same("b after removing a", "before", &mb.tree, "after", &again.tree);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_layer_adding_to_a_lower_directory_keeps_its_mode_and_owner() {
    // Layer 1 adds a file to, and deletes one from, home/app without listing home/app itself (tars are
    // not required to list parents): the directory keeps the mode and owner layer 0 gave it.
    let s = Setup::start().await;
    let style = MediaStyle::Oci;
    let img = ImageBuilder::new(style)
        .layer(Layer::build(
            &[
                Entry::dir_with("home", 0o755, 0, 0),
                Entry::dir_with("home/app", 0o700, 1002, 1002),
                Entry::file_with("home/app/.profile", "old", 0o644, 1002, 1002),
                Entry::dir_with("srv", 0o2750, 65534, 65534),
            ],
            Compression::Gzip,
            style,
        ))
        .layer(Layer::build(
            &[
                Entry::file_with("home/app/.bashrc", "new", 0o644, 1002, 1002),
                Entry::whiteout("home/app/.profile"),
                Entry::file("srv/index.html", "hello"),
            ],
            Compression::Gzip,
            style,
        ))
        .build();
    s.push("unpack/implicit", "v1", &img).await;
    let m = same_as_umoci(&s, "unpack/implicit", "v1").await;
    let (app, srv) = (m.node("home/app"), m.node("srv"));
    assert_eq!((app.mode, app.uid, app.gid), (0o700, 1002, 1002), "home/app: {app}");
    assert_eq!((srv.mode, srv.uid, srv.gid), (0o2750, 65534, 65534), "srv: {srv}");
    assert!(!m.has("home/app/.profile") && m.has("home/app/.bashrc"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mount_refuses_a_non_empty_dir_and_an_absent_image() {
    let s = Setup::start().await;
    let img = common::daemon::setup::small_image(9, None);
    s.push("mnt", "v1", &img).await;
    let image = s.image("mnt", "v1");
    let mut c = s.daemon.client().await;
    pull(&mut c, &image, None).await.unwrap();

    let busy = tempfile::tempdir().unwrap();
    std::fs::write(busy.path().join("precious"), "do not touch").unwrap();
    let out = mount(&image, busy.path(), &s.daemon.socket);
    assert!(!out.ok, "mount into a non-empty dir must fail: {}", out.stdout);
    assert!(
        out.stderr.contains("not empty") && out.stderr.contains(&busy.path().display().to_string()),
        "{}",
        out.stderr
    );
    let left: Vec<_> = std::fs::read_dir(busy.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["precious"], "nothing was written into the non-empty dir");

    let absent = s.image("mnt", "nope");
    let target = busy.path().join("fresh");
    let out = mount(&absent, &target, &s.daemon.socket);
    assert!(!out.ok, "mount of an absent image must fail: {}", out.stdout);
    assert!(
        out.stderr.contains("not found") && out.stderr.contains(&absent),
        "{}",
        out.stderr
    );
    assert!(!target.exists(), "no directory is created for an absent image");

    let empty = busy.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let ok = mount(&image, &empty, &s.daemon.socket);
    assert!(ok.ok, "an existing empty dir is fine: {}", ok.stderr);
    assert_eq!(
        std::fs::read_to_string(empty.join("etc/os-release")).unwrap(),
        "ID=test9\n"
    );
}
