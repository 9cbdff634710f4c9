//! Crash safety: the daemon is killed with SIGKILL at pseudo-random moments while pulls (and a removal)
//! are in flight, many times over the same store. After every kill, `imaged fsck` (which first does what
//! a start does) must find a consistent store: every blob matches its digest, every recorded image has all
//! its blobs and snapshots, nothing is half-written or unreferenced. At the end the same pulls succeed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::daemon::setup::Setup;
use common::daemon::{DaemonOptions, fsck, pull, remove};
use common::images::image::{Compression, Entry, ImageBuilder, Layer, MediaStyle, random_bytes};

const ITERATIONS: u64 = 16;

/// A few megabytes in several layers of different kinds, so a kill lands in every phase of a pull.
fn image(seed: u64) -> common::images::image::BuiltImage {
    let files: Vec<Entry> = (0..300)
        .map(|i| Entry::file(&format!("small/{i}"), format!("file {i} of {seed}")))
        .collect();
    ImageBuilder::new(MediaStyle::Oci)
        .layer(Layer::build(
            &[Entry::file("blob", random_bytes(seed, 3 << 20))],
            Compression::Gzip,
            MediaStyle::Oci,
        ))
        .layer(Layer::build(&files, Compression::Zstd, MediaStyle::Oci))
        .layer(Layer::build(
            &[Entry::file("text", "x".repeat(2 << 20))],
            Compression::Gzip,
            MediaStyle::Oci,
        ))
        .layer(Layer::build(
            &[Entry::whiteout("small/1")],
            Compression::None,
            MediaStyle::Oci,
        ))
        .build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_pulls_never_corrupts_the_store() {
    let mut s = Setup::start_with(Default::default(), DaemonOptions::default()).await;
    let images: Vec<_> = (0..3).map(|i| image(1000 + i)).collect();
    for (i, img) in images.iter().enumerate() {
        s.push("crash", &format!("v{i}"), img).await;
    }
    let refs: Vec<String> = (0..3).map(|i| s.image("crash", &format!("v{i}"))).collect();

    // Calibrate: how long the three pulls take together, so kills land inside them.
    let started = std::time::Instant::now();
    let mut c = s.daemon.client().await;
    for r in &refs {
        pull(&mut c, r, None).await.unwrap();
    }
    let span = started.elapsed().as_millis().max(50) as u64;
    for r in &refs {
        remove(&mut c, r).await.unwrap();
    }

    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    for i in 0..ITERATIONS {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let delay = rng % (span + span / 2);
        let mut tasks = Vec::new();
        for r in refs.clone() {
            let mut c = s.daemon.client().await;
            tasks.push(tokio::spawn(async move { pull(&mut c, &r, None).await }));
        }
        if i % 4 == 3 {
            // Also crash in the middle of removals.
            let mut c = s.daemon.client().await;
            let r = refs[0].clone();
            tasks.push(tokio::spawn(
                async move { remove(&mut c, &r).await.map(|_| String::new()) },
            ));
        }
        // The kill's moment is what each iteration varies (no state to wait for: any moment must be safe).
        tokio::time::sleep(Duration::from_millis(delay)).await;
        s.daemon.kill();
        for t in tasks {
            let _ = t.await; // Cut calls fail; finished ones succeed. Either is fine.
        }
        let (ok, report) = fsck(&s.daemon.root);
        assert!(ok, "iteration {i} (killed after {delay} ms of ~{span} ms): {report}");
        s.daemon.start_again().await;
    }

    let mut c = s.daemon.client().await;
    for (r, img) in refs.iter().zip(&images) {
        assert_eq!(
            pull(&mut c, r, None).await.unwrap(),
            img.config_digest,
            "the same pulls succeed after the crashes"
        );
    }
    s.daemon.stop();
    let (ok, report) = fsck(&s.daemon.root);
    assert!(ok, "{report}");
    assert!(report.contains("checked 3 images"), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fsck_reports_the_leftovers_it_repairs() {
    let mut s = Setup::start().await;
    let img = image(7);
    s.push("app", "v1", &img).await;
    let mut c = s.daemon.client().await;
    pull(&mut c, &s.image("app", "v1"), None).await.unwrap();
    s.daemon.stop();
    // What a crash leaves: a partial download, a half-built snapshot, a blob no image references.
    let root = s.daemon.root.clone();
    let ingest = root.join("content/ingest").join(format!("{}-0", "ab".repeat(32)));
    std::fs::write(&ingest, b"partial").unwrap();
    let tmp = root.join("snapshots/tmp-4242-0");
    std::fs::create_dir_all(tmp.join("fs/etc")).unwrap();
    let orphan = common::images::image::sha256_digest(b"orphan");
    let orphan_path = root
        .join("content/blobs/sha256")
        .join(orphan.strip_prefix("sha256:").unwrap());
    std::fs::write(&orphan_path, b"orphan").unwrap();

    let (ok, report) = fsck(&root);
    assert!(ok, "{report}");
    for what in [ingest.display().to_string(), tmp.display().to_string(), orphan.clone()] {
        assert!(
            report.lines().any(|l| l.starts_with("repaired: ") && l.contains(&what)),
            "fsck names {what}:\n{report}"
        );
    }
    assert!(report.contains("repaired 3 leftovers"), "{report}");
    assert_eq!(report.lines().last(), Some("ok"), "{report}");
    assert!(!ingest.exists() && !tmp.exists() && !orphan_path.exists());

    let (ok, again) = fsck(&root);
    assert!(ok && !again.contains("repaired"), "nothing left to repair:\n{again}");
}
