//! The differential test of unpacking (issue 3), for what a single file carries: permission bits (set-id and
//! sticky included), owners, symlinks (relative, absolute, dangling), directories a tar never lists, device
//! nodes, FIFOs, xattrs and sparse files. The root filesystem `imaged mount` materialises from imaged's
//! snapshots must equal the one `umoci unpack` (as root) makes from the same image, and what the layers
//! say. Changes across layers (whiteouts, opaque directories, hard links) are in `e2e_unpack.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::MetadataExt;

use common::daemon::setup::Setup;
use common::images::image::{Compression, Entry, ImageBuilder, Layer, MediaStyle, random_bytes};
use common::images::rawtar::{Kind as RawKind, RawHeader, RawTar};
use common::images::rootfs::same_as_umoci;
use common::images::tree::Kind;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permissions_owners_symlinks_and_implicit_dirs_match_umoci() {
    let s = Setup::start().await;
    let style = MediaStyle::Docker;
    let base = [
        Entry::dir("bin"),
        Entry::file_with("bin/busybox", "#!busybox\n", 0o755, 0, 0),
        Entry::symlink("bin/sh", "busybox"),
        Entry::file_with("bin/su", "setuid root", 0o4755, 0, 0),
        Entry::file_with("bin/wall", "setgid tty", 0o2755, 0, 5),
        Entry::file_with("bin/app-suid", "setuid app", 0o4750, 1002, 1002),
        Entry::file_with("bin/private", "owner only", 0o700, 0, 0),
        Entry::dir_with("tmp", 0o1777, 0, 0),
        Entry::dir_with("srv", 0o755, 0, 0),
        Entry::dir_with("srv/shared", 0o2775, 1002, 1002),
        Entry::dir_with("home", 0o755, 0, 0),
        Entry::dir_with("home/app", 0o700, 1002, 1002),
        Entry::file_with("home/app/.secret", "s3cret", 0o600, 1002, 1002),
        Entry::dir_with("nonexistent", 0o755, 65534, 65534),
        Entry::file_with("nonexistent/x", "nobody's", 0o644, 65534, 65534),
        Entry::dir("empty"),
        Entry::file("implicit/deeper/file", "in directories the tar never lists"),
        Entry::dir("usr"),
        Entry::dir("usr/lib"),
        Entry::file("usr/lib/libc.so", "libc"),
        Entry::symlink("lib", "usr/lib"),
        Entry::symlink("lib64", "/usr/lib"),
        Entry::dir("etc"),
        Entry::symlink("etc/localtime", "/usr/share/zoneinfo/UTC"),
        Entry::symlink("dangling", "../nowhere/at/all"),
    ];
    let top = [
        Entry::dir_with("tmp", 0o1777, 0, 0),
        Entry::file_with("tmp/.keep", "", 0o600, 65534, 65534),
        Entry::dir("bin"),
        Entry::file_with("bin/su", "setuid root, updated", 0o4711, 0, 0),
    ];
    let img = ImageBuilder::new(style)
        .layer(Layer::build(&base, Compression::Gzip, style))
        .layer(Layer::build(&top, Compression::Gzip, style))
        .build();
    s.push("unpack/perms", "v1", &img).await;
    let m = same_as_umoci(&s, "unpack/perms", "v1").await;

    let expect = [
        ("bin/su", 0o4711, 0, 0),
        ("bin/wall", 0o2755, 0, 5),
        ("bin/app-suid", 0o4750, 1002, 1002),
        ("bin/private", 0o700, 0, 0),
        ("tmp", 0o1777, 0, 0),
        ("tmp/.keep", 0o600, 65534, 65534),
        ("srv/shared", 0o2775, 1002, 1002),
        ("home/app", 0o700, 1002, 1002),
        ("home/app/.secret", 0o600, 1002, 1002),
        ("nonexistent/x", 0o644, 65534, 65534),
    ];
    for (p, mode, uid, gid) in expect {
        let n = m.node(p);
        assert_eq!((n.mode, n.uid, n.gid), (mode, uid, gid), "{p}: {n}");
    }
    assert_eq!(m.node("empty").kind, Kind::Dir);
    assert!(std::fs::read_dir(m.root.join("empty")).unwrap().next().is_none());
    assert_eq!(m.read("implicit/deeper/file"), "in directories the tar never lists");
    for (link, target) in [
        ("bin/sh", "busybox"),
        ("lib", "usr/lib"),
        ("lib64", "/usr/lib"),
        ("etc/localtime", "/usr/share/zoneinfo/UTC"),
        ("dangling", "../nowhere/at/all"),
    ] {
        assert_eq!(m.node(link).kind, Kind::Symlink(target.into()), "{link}");
    }
    assert_eq!(m.node("bin/busybox").mtime, Some(common::images::image::MTIME as i64));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_fifos_xattrs_and_sparse_files_match_umoci() {
    let s = Setup::start().await;
    let style = MediaStyle::Oci;
    let mut tty = RawHeader::new("dev/tty0", RawKind::Char);
    (tty.dev, tty.mode, tty.gid) = ((4, 0), 0o620, 5);
    let mut fifo = RawHeader::new("run/app.fifo", RawKind::Fifo);
    (fifo.mode, fifo.uid, fifo.gid) = (0o600, 1002, 1002);
    let nodes = RawTar::new()
        .dir("dev")
        .device("dev/null", RawKind::Char, (1, 3), 0o666)
        .device("dev/loop0", RawKind::Block, (7, 0), 0o660)
        .entry(tty, &[])
        .dir("run")
        .entry(fifo, &[])
        .dir("data")
        .pax(&[("SCHILY.xattr.user.origin", b"layer 0")])
        .file("data/labelled", b"has a user xattr")
        .finish();
    // 16 MiB of zeros with data in the middle and at the end, and a file that is one long hole.
    let mut sparse = vec![0u8; 16 << 20];
    sparse[5 << 20..(5 << 20) + 4096].copy_from_slice(&random_bytes(3, 4096));
    let n = sparse.len();
    sparse[n - 7..].copy_from_slice(b"the end");
    let big = [
        Entry::dir("data"),
        Entry::file("data/sparse", &sparse),
        Entry::file("data/zeros", vec![0u8; (3 << 20) + 1]),
    ];
    let img = ImageBuilder::new(style)
        .layer(Layer::from_tar(nodes, Compression::Gzip, style))
        .layer(Layer::build(&big, Compression::Zstd, style))
        .build();
    s.push("unpack/nodes", "v1", &img).await;
    let m = same_as_umoci(&s, "unpack/nodes", "v1").await;

    assert_eq!(m.node("dev/null").kind, Kind::Char(1, 3));
    assert_eq!(m.node("dev/null").mode, 0o666);
    assert_eq!(m.node("dev/loop0").kind, Kind::Block(7, 0));
    assert_eq!(
        (m.node("dev/tty0").kind.clone(), m.node("dev/tty0").gid),
        (Kind::Char(4, 0), 5)
    );
    let f = m.node("run/app.fifo");
    assert_eq!((&f.kind, f.mode, f.uid), (&Kind::Fifo, 0o600, 1002));
    assert_eq!(
        m.node("data/labelled").xattrs.get("user.origin").map(Vec::as_slice),
        Some(&b"layer 0"[..])
    );
    assert_eq!(std::fs::read(m.root.join("data/sparse")).unwrap(), sparse);
    for (p, len) in [("data/sparse", sparse.len()), ("data/zeros", (3 << 20) + 1)] {
        let meta = std::fs::metadata(m.root.join(p)).unwrap();
        assert_eq!(meta.len(), len as u64, "{p}");
        assert!(
            meta.blocks() * 512 < 1 << 20,
            "{p} is sparse ({} blocks)",
            meta.blocks()
        );
    }
}
