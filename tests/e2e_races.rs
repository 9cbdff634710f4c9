//! Pulls racing removals (issues 12 and 13), through the real socket with the real registry: a pull that was
//! accepted succeeds and leaves its image present and complete whatever a concurrent RemoveImage or GC did,
//! a removal keeps its own promise, and a local conflict never arms back-off.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::daemon::setup::{Setup, small_image};
use common::daemon::{Daemon, DaemonOptions, blobs, pull, remove, snapshot_dirs, status};
use common::images::image::BuiltImage;
use imaged::proto::imaged::v1 as pb;
use imaged::proto::imaged::v1::images_client::ImagesClient;

/// Panics unless every blob and snapshot of `img` is in the store.
#[track_caller]
fn assert_complete(d: &Daemon, img: &BuiltImage, when: &str) {
    let have: BTreeSet<String> = blobs(&d.root).into_iter().collect();
    let missing: Vec<String> = img.blob_set().into_iter().filter(|b| !have.contains(b)).collect();
    assert!(missing.is_empty(), "{when}: blobs missing: {missing:?}");
    let snaps = snapshot_dirs(&d.root);
    let missing: Vec<String> = img.chain_id_set().into_iter().filter(|c| !snaps.contains(c)).collect();
    assert!(missing.is_empty(), "{when}: snapshots missing: {missing:?}");
}

/// Stops the daemon and runs `imaged fsck` on its store; panics with the report unless it is clean and
/// had nothing to repair (no blob or snapshot left that no image references).
fn assert_fsck_clean(d: &mut Daemon) {
    d.stop();
    let out = common::images::rootfs::fsck(&d.root);
    let report = format!("{}{}", out.stdout, out.stderr);
    assert!(
        out.ok && report.lines().any(|l| l == "ok") && !report.contains("repaired"),
        "fsck:\n{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_of_one_tag_racing_removals_through_another_all_succeed() {
    // Back-off as kubelet has it: one armed back-off would fail every later pull of the test.
    let mut s = Setup::start_with(
        common::registry::RegistryOptions::default(),
        DaemonOptions {
            config: Some("[pull]\nbackoff_initial = \"10s\"\n".into()),
            ..Default::default()
        },
    )
    .await;
    let img = small_image(150, None);
    s.push("racy", "a", &img).await;
    s.push("racy", "b", &img).await;
    let (a, b) = (s.image("racy", "a"), s.image("racy", "b"));
    let socket = s.daemon.socket.clone();
    let connect = || imaged::cli::connect(&socket);
    let (mut puller, mut remover, mut remover2) = (
        connect().await.unwrap(),
        connect().await.unwrap(),
        connect().await.unwrap(),
    );
    let mut failures = Vec::new();
    for round in 0..200 {
        if let Err(e) = pull(&mut puller, &a, None).await {
            failures.push(format!("round {round}: pull {a}: {e:?}"));
        }
        // The removals start at a different moment of the pull each round (0 to 10 ms in).
        let delay = Duration::from_micros(500 * (round % 21));
        let (pulled, removed, removed2) = tokio::join!(
            pull(&mut puller, &b, None),
            async {
                tokio::time::sleep(delay).await;
                remove(&mut remover, &a).await
            },
            async {
                tokio::time::sleep(delay).await;
                remove(&mut remover2, &a).await
            },
        );
        match pulled {
            Ok(id) if id == img.config_digest => {}
            other => failures.push(format!("round {round}: pull {b}: {other:?}")),
        }
        for r in [removed, removed2] {
            if let Err(e) = r {
                failures.push(format!("round {round}: remove {a}: {e:?}"));
            }
        }
        // Whichever came last, an image that is listed is whole.
        if status(&mut puller, &b).await.is_some() {
            assert_complete(&s.daemon, &img, &format!("round {round}"));
        }
    }
    let first: Vec<&String> = failures.iter().take(10).collect();
    assert!(
        failures.is_empty(),
        "{} failures, the first:\n{first:#?}",
        failures.len()
    );
    let log = s.daemon.log();
    assert!(
        !log.contains("reason=\"BackOff\"") && !log.contains("reason=\"Failed\""),
        "no pull failed, no back-off was armed"
    );

    let mut c = s.daemon.client().await;
    assert_eq!(pull(&mut c, &b, None).await.unwrap(), img.config_digest);
    assert!(status(&mut c, &b).await.is_some());
    assert_complete(&s.daemon, &img, "after the last pull");
    assert_fsck_clean(&mut s.daemon);
}

/// GC that removes every image unused for 200 ms, and runs only when asked.
const MAX_AGE_GC: &str = "[pull]\nbackoff_initial = \"0s\"\n[gc]\nhigh_threshold_percent = 100\nmin_age = \"0s\"\n\
                          max_age = \"200ms\"\nperiod = \"1h\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_racing_pulls_of_its_planned_victims_removes_none_of_them() {
    let mut s = Setup::start_with(
        common::registry::RegistryOptions::default(),
        DaemonOptions {
            config: Some(MAX_AGE_GC.into()),
            ..Default::default()
        },
    )
    .await;
    let images: Vec<(String, BuiltImage)> = (0..3u64)
        .map(|i| (s.image(&format!("victim{i}"), "v1"), small_image(160 + i, None)))
        .collect();
    for (i, (_, img)) in images.iter().enumerate() {
        s.push(&format!("victim{i}"), "v1", img).await;
    }
    let socket = s.daemon.socket.clone();
    let mut gc = ImagesClient::new(imaged::cli::channel(&socket).await.unwrap());
    let mut clients = Vec::new();
    for _ in &images {
        clients.push(imaged::cli::connect(&socket).await.unwrap());
    }
    let mut removed_total = 0;
    let mut last_pull = Instant::now();
    for round in 0..100 {
        // Every image was last used more than 200 ms ago: a GC that plans now makes them all victims.
        tokio::time::sleep(Duration::from_millis(250).saturating_sub(last_pull.elapsed())).await;
        let collect = gc.garbage_collect(pb::GarbageCollectRequest { dry_run: false });
        let pulls = futures_util::future::join_all(
            clients
                .iter_mut()
                .zip(&images)
                .map(|(c, (name, _))| pull(c, name, None)),
        );
        let (collected, pulled) = tokio::join!(collect, pulls);
        last_pull = Instant::now();
        removed_total += collected.expect("GarbageCollect").into_inner().removed.len();
        for (r, (name, img)) in pulled.into_iter().zip(&images) {
            assert_eq!(r.unwrap(), img.config_digest, "round {round}: pull {name}");
        }
        // Each pull answered success before or after GC planned: either way its image stays.
        let mut c = s.daemon.client().await;
        for (name, img) in &images {
            assert!(
                status(&mut c, name).await.is_some(),
                "round {round}: {name} was removed after its pull succeeded"
            );
            assert_complete(&s.daemon, img, &format!("round {round}, {name}"));
        }
    }
    println!("GC removed {removed_total} images in 100 rounds (each re-pulled at once)");
    assert_fsck_clean(&mut s.daemon);
}

/// An uncompressed base layer's blob digest is its diff id, which is also its snapshot's chain id: when the
/// image holding that blob goes, the blob goes, although another image still sits on the same base snapshot
/// (from a gzip blob). Keeping the snapshot must not keep the blob.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_whose_digest_is_a_kept_chain_id_still_goes_with_its_image() {
    use common::images::image::{Compression, Entry, ImageBuilder, Layer, MediaStyle};
    let mut s = Setup::start().await;
    let entries = [Entry::dir("base"), Entry::file("base/f", "same tar, two blobs")];
    let plain = Layer::build(&entries, Compression::None, MediaStyle::Oci);
    let gzip = Layer::build(&entries, Compression::Gzip, MediaStyle::Oci);
    assert_eq!(plain.digest, plain.diff_id, "a plain layer's blob is its tar");
    let top = Layer::build(&[Entry::file("top", "y")], Compression::Gzip, MediaStyle::Oci);
    let x = ImageBuilder::new(MediaStyle::Oci).layer(plain.clone()).build();
    let y = ImageBuilder::new(MediaStyle::Oci).layer(gzip).layer(top).build();
    s.push("refs", "x", &x).await;
    s.push("refs", "y", &y).await;
    let mut c = s.daemon.client().await;
    pull(&mut c, &s.image("refs", "x"), None).await.unwrap();
    pull(&mut c, &s.image("refs", "y"), None).await.unwrap();
    remove(&mut c, &s.image("refs", "x")).await.unwrap();
    assert!(!blobs(&s.daemon.root).contains(&plain.digest), "the plain blob stayed");
    assert_complete(&s.daemon, &y, "after removing x");
    assert_fsck_clean(&mut s.daemon);
}

/// Two forms of one image (same config, so same id; gzip and zstd layers, so other blobs and another
/// manifest): the record names the form pulled last, and what only the other form named goes at once, also
/// when pulls of both forms race each other and removals. An idle store holds exactly the last form.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_of_two_forms_of_one_image_leave_only_the_last_forms_blobs() {
    use common::images::image::{Compression, Entry, Layer, MediaStyle};
    let mut s = Setup::start().await;
    let entries = [Entry::dir("etc"), Entry::file("etc/os-release", "ID=forms\n")];
    let form = |c| common::daemon::setup::image_of(MediaStyle::Oci, vec![Layer::build(&entries, c, MediaStyle::Oci)]);
    let (gz, zst) = (form(Compression::Gzip), form(Compression::Zstd));
    assert_eq!(gz.config_digest, zst.config_digest, "one image id");
    s.push("forms", "gzip", &gz).await;
    s.push("forms", "zstd", &zst).await;
    let (a, b) = (s.image("forms", "gzip"), s.image("forms", "zstd"));
    let on_disk = |d: &Daemon| blobs(&d.root).into_iter().collect::<BTreeSet<String>>();
    let mut c = s.daemon.client().await;
    pull(&mut c, &a, None).await.unwrap();
    pull(&mut c, &b, None).await.unwrap();
    assert_eq!(
        on_disk(&s.daemon),
        zst.blob_set(),
        "the gzip form's manifest and layer went"
    );

    let socket = s.daemon.socket.clone();
    let (mut c1, mut c2, mut c3) = (
        imaged::cli::connect(&socket).await.unwrap(),
        imaged::cli::connect(&socket).await.unwrap(),
        imaged::cli::connect(&socket).await.unwrap(),
    );
    for round in 0..100u64 {
        // The removal starts at a different moment of the two pulls each round (0 to 5 ms in).
        let delay = Duration::from_micros(300 * (round % 17));
        let (x, y, r) = tokio::join!(pull(&mut c1, &a, None), pull(&mut c2, &b, None), async {
            tokio::time::sleep(delay).await;
            if round % 3 == 0 {
                remove(&mut c3, &a).await
            } else {
                Ok(())
            }
        });
        assert_eq!(x.unwrap(), gz.config_digest, "round {round}: pull {a}");
        assert_eq!(y.unwrap(), gz.config_digest, "round {round}: pull {b}");
        r.unwrap();
    }
    pull(&mut c, &b, None).await.unwrap();
    assert_eq!(on_disk(&s.daemon), zst.blob_set(), "after the races");
    assert_complete(&s.daemon, &zst, "after the races");
    assert_fsck_clean(&mut s.daemon);
}
