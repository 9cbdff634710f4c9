//! Hostile layers against the real daemon: entries that climb out with `..`, go through symlinks, hard-link
//! out of the layer, decompression bombs, too many entries, too long paths. Each is refused with a clear
//! error (FailedPrecondition for unsafe entries, ResourceExhausted for limits, `pulling image` first, kubelet's ErrImagePull once);
//! nothing is written outside the store (a sentinel directory next to the daemon's, which the hostile
//! paths aim at by absolute path and by `../` climbing from the snapshot's depth, stays as it was, and so
//! does the daemon's directory outside `<root>`); and the store is left clean: no image, no blob, no
//! snapshot, no ingest file, no `tmp-` directory, and `imaged fsck` says ok once the daemon is stopped. An
//! absolute entry path is neutralised instead: it lands inside the snapshot.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::daemon::hostile::{Arena, after_benign, refused_entry, snapshot_names, usage};
use common::daemon::{blobs, ingest_files, pull};
use common::images::image::{Compression, Entry, ImageBuilder, Layer, MediaStyle};
use common::images::rawtar::{Kind, RawTar, zero_bomb};
use common::images::rootfs::{mount, snapshots};
use tonic::Code;

/// What a case adds to a layer after its benign start.
type Evil<'a> = Box<dyn FnOnce(RawTar) -> RawTar + 'a>;

#[test]
fn raw_tars_read_back_with_the_tar_crate() {
    let long = format!("{}/file", "d".repeat(295));
    let tar = RawTar::new()
        .file("../../up", b"climbs")
        .file(&long, b"long")
        .symlink("s", "x".repeat(150))
        .device("dev/null", Kind::Char, (1, 3), 0o666)
        .fifo("fifo", 0o600)
        .pax(&[("SCHILY.xattr.user.k", b"v")])
        .hardlink("h", "/etc/passwd")
        .finish();
    let mut archive = tar::Archive::new(tar.as_slice());
    let mut seen = Vec::new();
    for e in archive.entries().unwrap() {
        let mut e = e.unwrap();
        let path = String::from_utf8(e.path_bytes().into_owned()).unwrap();
        let link = e.link_name_bytes().map(|l| String::from_utf8(l.into_owned()).unwrap());
        let dev = (e.header().device_major().unwrap(), e.header().device_minor().unwrap());
        let pax: Vec<(String, Vec<u8>)> = e
            .pax_extensions()
            .unwrap()
            .map(|exts| {
                exts.map(Result::unwrap)
                    .map(|x| (x.key().unwrap().to_owned(), x.value_bytes().to_vec()))
            })
            .map(Iterator::collect)
            .unwrap_or_default();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        seen.push((path, e.header().entry_type(), link, dev, pax, data));
    }
    let kinds: Vec<_> = seen.iter().map(|s| (s.0.as_str(), s.1)).collect();
    use tar::EntryType as T;
    assert_eq!(
        kinds,
        [
            ("../../up", T::Regular),
            (long.as_str(), T::Regular),
            ("s", T::Symlink),
            ("dev/null", T::Char),
            ("fifo", T::Fifo),
            ("h", T::Link)
        ]
    );
    assert_eq!(seen[0].5, b"climbs");
    assert_eq!(seen[1].5, b"long");
    assert_eq!(seen[2].2.as_deref(), Some("x".repeat(150).as_str()));
    assert_eq!(seen[3].3, (Some(1), Some(3)));
    assert_eq!(seen[5].4, [("SCHILY.xattr.user.k".to_owned(), b"v".to_vec())]);
    assert_eq!(seen[5].2.as_deref(), Some("/etc/passwd"));

    // The bomb is a valid multi-member gzip of a tar holding one all-zero file, with the right diff id.
    let bomb = zero_bomb("zeros", 3_000_000, MediaStyle::Oci);
    let mut tar = Vec::new();
    flate2::read::MultiGzDecoder::new(bomb.blob.as_slice())
        .read_to_end(&mut tar)
        .unwrap();
    assert_eq!(common::images::image::sha256_digest(&tar), bomb.diff_id);
    let mut archive = tar::Archive::new(tar.as_slice());
    let mut entries = archive.entries().unwrap().map(Result::unwrap);
    let mut zeros = entries.next().unwrap();
    assert_eq!((zeros.path_bytes().as_ref(), zeros.size()), (&b"zeros"[..], 3_000_000));
    let mut data = Vec::new();
    zeros.read_to_end(&mut data).unwrap();
    assert!(data.len() == 3_000_000 && data.iter().all(|b| *b == 0));
    drop(zeros);
    assert!(entries.next().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_climbing_out_with_dotdot_are_refused() {
    let a = Arena::start(None).await;
    let climb = a.climb_to_sentinel();
    let over = format!("{}{}", "../".repeat(16), a.sentinel().trim_start_matches('/'));
    let cases = [
        format!("{climb}/pwned"),
        format!("{over}/pwned"),
        "a/../../x".to_owned(),
        format!("a/../{climb}/x"),
        format!("etc/../../{climb}/deep/pwned"),
    ];
    for (i, name) in cases.iter().enumerate() {
        let tar = after_benign(|t| t.file(name.as_bytes(), b"escaped"));
        let why = "climbs out of the layer with \"..\"";
        a.refused(
            &format!("dotdot/f{i}"),
            tar,
            Code::FailedPrecondition,
            &[&refused_entry(name), why],
        )
        .await;
    }
    let dir = format!("{climb}/newdir");
    let tar = after_benign(|t| t.dir(dir.as_bytes()));
    a.refused("dotdot/dir", tar, Code::FailedPrecondition, &[&refused_entry(&dir)])
        .await;
    let link = format!("{climb}/link");
    let tar = after_benign(|t| t.symlink(link.as_bytes(), "/etc/passwd"));
    a.refused(
        "dotdot/symlink",
        tar,
        Code::FailedPrecondition,
        &[&refused_entry(&link)],
    )
    .await;
    a.stop_and_fsck();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absolute_entry_path_is_neutralised_inside_the_snapshot() {
    let a = Arena::start(None).await;
    let abs = format!("{}/abs", a.sentinel());
    let tar = RawTar::new()
        .file(abs.as_bytes(), b"kept inside")
        .dir("/data")
        .file("/data/f", b"linked")
        .hardlink("/data/h", "/data/f")
        .finish();
    let img = ImageBuilder::new(MediaStyle::Oci)
        .layer(Layer::from_tar(tar, Compression::Gzip, MediaStyle::Oci))
        .build();
    a.s.push("abs/path", "v1", &img).await;
    let image = a.s.image("abs/path", "v1");
    let mut c = a.s.daemon.client().await;
    pull(&mut c, &image, None)
        .await
        .expect("an absolute path is made relative, not refused");
    let snap = &snapshots(&mut c, &image).await[0];
    let inside = snap.join(abs.trim_start_matches('/'));
    assert_eq!(std::fs::read(&inside).unwrap(), b"kept inside", "{}", inside.display());
    let ino = |p: &str| std::fs::metadata(snap.join(p)).unwrap().ino();
    assert_eq!(
        ino("data/h"),
        ino("data/f"),
        "an absolute hard-link target names a file of this layer"
    );
    a.assert_nothing_outside();

    let mnt = tempfile::tempdir().unwrap();
    let out = mount(&image, &mnt.path().join("rootfs"), &a.s.daemon.socket);
    assert!(out.ok, "{}", out.stderr);
    let mounted = mnt.path().join("rootfs").join(abs.trim_start_matches('/'));
    assert_eq!(std::fs::read(mounted).unwrap(), b"kept inside");
    a.assert_nothing_outside();
    a.stop_and_fsck();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_through_symlinks_are_refused() {
    let a = Arena::start(None).await;
    let sentinel = a.sentinel();
    let through = "entries are never created through symlinks";
    let cases: Vec<(&str, Evil<'_>, &str)> = vec![
        (
            "abs",
            Box::new(|t| t.symlink("link", &sentinel).file("link/pwned", b"x")),
            "link/pwned",
        ),
        (
            "rel",
            Box::new(|t| t.symlink("link", "../../../..").file("link/x", b"x")),
            "link/x",
        ),
        (
            "inner",
            Box::new(|t| t.dir("inner").symlink("shortcut", "inner").file("shortcut/f", b"x")),
            "shortcut/f",
        ),
        (
            "replaced-dir",
            Box::new(|t| {
                t.dir("d")
                    .file("d/ok", b"ok")
                    .symlink("d", &sentinel)
                    .file("d/pwned", b"x")
            }),
            "d/pwned",
        ),
        (
            "subdir",
            Box::new(|t| t.symlink("link", &sentinel).dir("link/sub")),
            "link/sub",
        ),
        (
            "whiteout",
            Box::new(|t| t.symlink("link", &sentinel).file("link/.wh.victim", b"")),
            "link/.wh.victim",
        ),
        (
            "opaque",
            Box::new(|t| t.symlink("link", &sentinel).file("link/.wh..wh..opq", b"")),
            "link/.wh..wh..opq",
        ),
    ];
    for (name, evil, entry) in cases {
        let tar = after_benign(evil);
        a.refused(
            &format!("symlink/{name}"),
            tar,
            Code::FailedPrecondition,
            &[&refused_entry(entry), through],
        )
        .await;
    }
    a.stop_and_fsck();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hard_links_out_of_the_layer_are_refused() {
    let a = Arena::start(None).await;
    let victim = format!("{}/victim", a.sentinel());
    let climb_victim = format!("{}/victim", a.climb_to_sentinel());
    let outside = "is outside the layer";
    let not_ours = "is not a regular file of this layer";
    let cases: Vec<(&str, Evil<'_>, &str)> = vec![
        ("dotdot", Box::new(|t| t.hardlink("h", "../../etc/passwd")), outside),
        ("climb", Box::new(|t| t.hardlink("h", &climb_victim)), outside),
        ("abs-etc", Box::new(|t| t.hardlink("h", "/etc/passwd")), not_ours),
        ("abs-victim", Box::new(|t| t.hardlink("h", &victim)), not_ours),
        (
            "to-symlink",
            Box::new(|t| t.symlink("s", &victim).hardlink("h", "s")),
            not_ours,
        ),
        (
            "through-symlink",
            Box::new(|t| t.symlink("d", a.sentinel()).hardlink("h", "d/victim")),
            not_ours,
        ),
        ("to-dir", Box::new(|t| t.hardlink("h", "etc")), not_ours),
    ];
    for (name, evil, why) in cases {
        let tar = after_benign(evil);
        a.refused(
            &format!("hardlink/{name}"),
            tar,
            Code::FailedPrecondition,
            &[&refused_entry("h"), why],
        )
        .await;
    }
    a.stop_and_fsck();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decompression_bomb_is_refused() {
    let limit: u64 = 50_000_000;
    let a = Arena::start(Some(&format!("[unpack]\nmax_layer_bytes = {limit}\n"))).await;
    let bomb = zero_bomb("zeros", 200_000_000, MediaStyle::Oci);
    assert!(
        bomb.size() < 1_000_000,
        "200 MB of zeros compress to {} bytes",
        bomb.size()
    );
    // Sample how much the store holds while the daemon works on the bomb.
    let root = a.s.daemon.root.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut peak = (0, 0);
            while !stop.load(Ordering::Relaxed) {
                let (len, alloc) = usage(&root);
                peak = (peak.0.max(len), peak.1.max(alloc));
                std::thread::sleep(Duration::from_millis(20));
            }
            peak
        })
    };
    let needles = [
        "exceeds the limit of 50000000 (unpack.max_layer_bytes)",
        "decompression bomb",
    ];
    a.refused_layers("bomb/zeros", vec![bomb], Code::ResourceExhausted, &needles)
        .await;
    stop.store(true, Ordering::Relaxed);
    let (peak_len, peak_alloc) = sampler.join().unwrap();
    let bound = limit + 10_000_000;
    assert!(
        peak_len < bound,
        "the store never held more than the limit: peak {peak_len} bytes"
    );
    assert!(
        peak_alloc < bound,
        "disk use never grew past the limit: peak {peak_alloc} bytes"
    );
    assert_eq!(usage(&a.s.daemon.root.join("snapshots")), (0, 0));
    a.stop_and_fsck();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_entries_and_too_long_paths_are_refused() {
    let a = Arena::start(Some("[unpack]\nmax_entries = 1000\nmax_path_bytes = 200\n")).await;
    let many: Vec<Entry> = (0..2000).map(|i| Entry::file(&format!("f/{i:05}"), "")).collect();
    let layer = Layer::build(&many, Compression::Gzip, MediaStyle::Oci);
    let needles = ["exceeds the limit of 1000 (unpack.max_entries)"];
    a.refused_layers("limits/entries", vec![layer], Code::ResourceExhausted, &needles)
        .await;

    let long = format!("{}/{}", "d".repeat(150), "f".repeat(149));
    assert_eq!(long.len(), 300);
    let layer = Layer::build(&[Entry::file(&long, "x")], Compression::Gzip, MediaStyle::Oci);
    let needles = ["exceeds the limit of 200 (unpack.max_path_bytes)"];
    a.refused_layers("limits/path", vec![layer], Code::ResourceExhausted, &needles)
        .await;

    // Just under both limits: pulled.
    let mut ok: Vec<Entry> = (0..900).map(|i| Entry::file(&format!("f/{i:05}"), "")).collect();
    ok.push(Entry::file(&format!("{}/{}", "d".repeat(100), "f".repeat(99)), "x"));
    let img = ImageBuilder::new(MediaStyle::Oci)
        .layer(Layer::build(&ok, Compression::Gzip, MediaStyle::Oci))
        .build();
    a.s.push("limits/ok", "v1", &img).await;
    let mut c = a.s.daemon.client().await;
    pull(&mut c, &a.s.image("limits/ok", "v1"), None)
        .await
        .expect("under the limits");
    a.stop_and_fsck();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_layer_leaves_nothing_even_while_another_layer_is_unpacking() {
    // The base layer (thousands of small files, a small blob that is wholly downloaded at once) is still
    // being applied when the top layer is refused. Once that work has finished (its ingest file and `tmp-`
    // snapshot are gone), neither its blob nor its snapshot may be left behind: no image references them.
    let a = Arena::start(None).await;
    let base = (0..20_000).fold(RawTar::new(), |t, i| {
        t.file(format!("usr/share/{:02}/{i:05}", i % 50), b"")
    });
    let base = Layer::from_tar(base.finish(), Compression::Zstd, MediaStyle::Oci);
    assert!(base.size() < 200_000, "the base blob is small: {} bytes", base.size());
    // The top layer is refused only after a few thousand entries, when the base is surely downloaded.
    let evil = (0..3000).fold(RawTar::new(), |t, i| t.file(format!("opt/{i:05}"), b""));
    let evil = evil.file("../escape", b"x").finish();
    let evil = Layer::from_tar(evil, Compression::Gzip, MediaStyle::Oci);
    let img = ImageBuilder::new(MediaStyle::Oci)
        .layer(base.clone())
        .layer(evil)
        .build();
    a.s.push("race/base", "v1", &img).await;
    let mut c = a.s.daemon.client().await;
    let status = pull(&mut c, &a.s.image("race/base", "v1"), None).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{}", status.message());
    let root = &a.s.daemon.root;
    let deadline = Instant::now() + Duration::from_secs(60);
    while ingest_files(root) > 0 || snapshot_names(root).iter().any(|n| n.starts_with("tmp-")) {
        assert!(Instant::now() < deadline, "the base layer's work never finished");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The failed pull's own clean-up may still be running: wait for it, then say what it left.
    let deadline = Instant::now() + Duration::from_secs(10);
    while (!blobs(root).is_empty() || !snapshot_names(root).is_empty()) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (blobs, snaps) = (blobs(root), snapshot_names(root));
    assert!(
        blobs.is_empty() && snaps.is_empty(),
        "a failed pull left blobs {blobs:?} (the base layer is {}) and snapshots {snaps:?} (its chain id is {})",
        base.digest,
        base.diff_id
    );
    a.assert_nothing_outside();
    a.stop_and_fsck();
}
