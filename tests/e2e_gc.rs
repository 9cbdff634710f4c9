//! Disk-threshold image GC (issue 5) end to end: a real registry, the real daemon over its unix socket, and its
//! store on a real filesystem of fixed size (a tmpfs the test mounts and measures with `statvfs` itself), so
//! "usage", "freed" and "shared layers" are checked against the kernel's figures, not against imaged's own.
//!
//! The one fake is the container runtime (`common::runtimes::fake_runtime`), which only answers `ListContainers`.
//! Layers are incompressible (pseudo-random) so that sizes on disk are predictable; GC runs only when the test
//! asks (`period = "1h"`), through `imaged.v1.Images/GarbageCollect`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::daemon::gc_env::{assert_near, config, du_of, gc, ids, start};
use common::daemon::tmpfs::MIB;
use common::daemon::{blobs, list, pull, remove, snapshot_dirs, status};
use common::images::image::{
    BuiltImage, Compression, Entry, Layer, MediaStyle, image_over, random_bytes, random_layer,
};
use common::runtimes::fake_runtime::{FakeRuntime, container};
use imaged::proto::imaged::v1 as pb;
use imaged::proto::imaged::v1::images_client::ImagesClient;
use imaged::proto::runtime::v1 as cri;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_frees_down_to_low_threshold_in_lru_order_sparing_pinned_and_in_use() {
    let rt = FakeRuntime::start().await;
    let endpoint = rt.endpoint();
    let env = start(64 * MIB, |addr| {
        config(60, 40, "0s", &[format!("{addr}/gc/pinned:*")], Some(&endpoint))
    })
    .await;
    let (s, root) = (&env.s, env.s.daemon.root.clone());
    // 3.5 MiB of data per image: ~7 MiB on disk (blob + snapshot). Six images fill 64 MiB past 60 %; three
    // victims bring it under 40 %, two would not.
    let names = ["pinned", "inuse", "a", "b", "c", "d"];
    let images: HashMap<&str, BuiltImage> = names
        .iter()
        .zip(1u64..)
        .map(|(n, seed)| (*n, image_over(&[&random_layer(seed, 3584 * 1024)])))
        .collect();
    let r = |n: &str| s.image(&format!("gc/{n}"), "v1");
    for n in names {
        s.push(&format!("gc/{n}"), "v1", &images[n]).await;
    }
    let inuse = &images["inuse"];
    let inuse_ref = format!("{}@{}", s.name("gc/inuse"), inuse.manifest_digest);
    rt.set_containers(vec![container(
        "exited-1",
        &inuse.config_digest,
        &inuse_ref,
        cri::ContainerState::ContainerExited,
    )]);

    let mut c = s.daemon.client().await;
    for n in ["c", "pinned", "a", "inuse", "d", "b"] {
        assert_eq!(
            pull(&mut c, &r(n), None).await.unwrap(),
            images[n].config_digest,
            "pull {n}"
        );
    }
    // Last use (ImageStatus) in this order: the LRU order is not the pull order.
    for n in ["pinned", "inuse", "b", "c", "a", "d"] {
        let st = status(&mut c, &r(n)).await.expect("pulled image has a status");
        assert_eq!(st.pinned, n == "pinned", "Image.pinned of {n}");
    }
    let id_of = |names: &[&str]| -> Vec<String> { names.iter().map(|n| images[n].config_digest.clone()).collect() };
    let expected = id_of(&["b", "c", "a"]);
    let full = env.fs.usage();
    assert!(full.percent() >= 60, "past the high threshold: {full:?}");
    let (blobs_full, snaps_full, ids_full) = (blobs(&root), snapshot_dirs(&root), ids(&mut c).await);
    // What the test itself counts for each expected victim: its blob files and snapshot directories.
    let own: Vec<u64> = ["b", "c", "a"]
        .iter()
        .map(|n| du_of(&root, &images[n].blob_set(), &images[n].chain_id_set()))
        .collect();

    let dry = gc(s, true).await;
    let victims = |r: &pb::GarbageCollectResponse| -> Vec<String> { r.removed.iter().map(|v| v.id.clone()).collect() };
    assert_eq!(victims(&dry), expected, "unused, unpinned images in LRU order");
    assert_eq!(blobs(&root), blobs_full, "a dry run removes no blob");
    assert_eq!(snapshot_dirs(&root), snaps_full, "a dry run removes no snapshot");
    assert_eq!(ids(&mut c).await, ids_full, "a dry run removes no image");
    for (v, du) in dry.removed.iter().zip(&own) {
        println!(
            "dry run: {} planned to free {} bytes; du of its own files: {du}",
            v.id, v.freed_bytes
        );
        assert_near(v.freed_bytes, *du, "planned freed bytes vs du of the victim's files");
    }

    let used_before = env.fs.used();
    let out = gc(s, false).await;
    let used_after = env.fs.used();
    let measured = used_before - used_after;
    println!(
        "gc: reported freed {} bytes, statvfs used {used_before} -> {used_after} (freed {measured}), difference {} \
         bytes; imaged saw {} -> {}",
        out.freed_bytes,
        out.freed_bytes as i64 - measured as i64,
        out.used_bytes_before,
        out.used_bytes_after
    );
    assert_eq!(victims(&out), expected, "removed exactly these, in LRU order");
    assert!(out.removed.iter().all(|v| v.reason == "space"), "{out:#?}");
    assert_eq!(out.removed, dry.removed, "the dry run said what the run did");
    assert_eq!(out.freed_bytes, out.removed.iter().map(|v| v.freed_bytes).sum::<u64>());
    assert!(out.shortfall.is_empty(), "target reached: {:?}", out.shortfall);
    assert_eq!(out.capacity_bytes, 64 * MIB);
    assert_near(out.used_bytes_before, used_before, "imaged's statvfs vs the test's");
    assert!(used_after * 100 <= 40 * full.capacity, "under the low threshold");
    assert_near(out.freed_bytes, measured, "reported vs measured freed bytes");

    let left: BTreeSet<String> = id_of(&["pinned", "inuse", "d"]).into_iter().collect();
    assert_eq!(ids(&mut c).await, left, "pinned, in use, most recently used");
    let (blobs_now, snaps_now): (BTreeSet<String>, BTreeSet<String>) =
        (blobs(&root).into_iter().collect(), snapshot_dirs(&root));
    for n in names {
        let gone = ["a", "b", "c"].contains(&n);
        for d in images[n].blob_set() {
            assert_eq!(!blobs_now.contains(&d), gone, "blob {d} of {n}");
        }
        for d in images[n].chain_id_set() {
            assert_eq!(!snaps_now.contains(&d), gone, "snapshot {d} of {n}");
        }
    }
    assert!(rt.calls() >= 2, "imaged asked the runtime which images are in use");
    assert!(gc(s, false).await.removed.is_empty(), "below the high threshold");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_an_image_frees_only_its_own_layers_not_the_shared_base() {
    // A 50 MB base (plain tar: its blob and its snapshot take 50 MB each) shared by two images with 1 MB of
    // their own. The thresholds make GC plan to remove both, so the dry run shows what each would free.
    let env = start(128 * MIB, |_| config(50, 10, "0s", &[], None)).await;
    let (s, root) = (&env.s, env.s.daemon.root.clone());
    let entries = [Entry::file("base/data", random_bytes(50, 50_000_000))];
    let base = Layer::build(&entries, Compression::None, MediaStyle::Oci);
    let a = image_over(&[&base, &random_layer(51, 1_000_000)]);
    let b = image_over(&[&base, &random_layer(52, 1_000_000)]);
    s.push("shared/a", "v1", &a).await;
    s.push("shared/b", "v1", &b).await;
    let mut c = s.daemon.client().await;
    let (ra, rb) = (s.image("shared/a", "v1"), s.image("shared/b", "v1"));
    assert_eq!(pull(&mut c, &ra, None).await.unwrap(), a.config_digest);
    assert_eq!(pull(&mut c, &rb, None).await.unwrap(), b.config_digest);
    let shared_blobs: BTreeSet<String> = a.blob_set().intersection(&b.blob_set()).cloned().collect();
    let shared_snaps: BTreeSet<String> = a.chain_id_set().intersection(&b.chain_id_set()).cloned().collect();
    assert_eq!(shared_blobs, BTreeSet::from([base.digest.clone()]));
    let only = |img: &BuiltImage| -> (BTreeSet<String>, BTreeSet<String>) {
        (
            img.blob_set().difference(&shared_blobs).cloned().collect(),
            img.chain_id_set().difference(&shared_snaps).cloned().collect(),
        )
    };
    let (a_blobs, a_snaps) = only(&a);
    let (b_blobs, b_snaps) = only(&b);
    let du_a = du_of(&root, &a_blobs, &a_snaps);
    let du_base = du_of(&root, &shared_blobs, &shared_snaps);
    let du_b = du_of(&root, &b_blobs, &b_snaps);
    assert!(du_base >= 100_000_000, "50 MB as blob and as snapshot: {du_base}");
    status(&mut c, &ra).await.unwrap();
    status(&mut c, &rb).await.unwrap();

    let plan = gc(s, true).await;
    let planned: Vec<(String, u64)> = plan.removed.iter().map(|v| (v.id.clone(), v.freed_bytes)).collect();
    println!("dry-run plan {planned:?}; du: a's own {du_a}, base {du_base}, b's own {du_b}");
    assert_eq!(plan.removed.len(), 2, "{plan:#?}");
    assert_eq!(
        (plan.removed[0].id.as_str(), plan.removed[1].id.as_str()),
        (a.config_digest.as_str(), b.config_digest.as_str())
    );
    assert_near(plan.removed[0].freed_bytes, du_a, "a frees only its own layer");
    assert_near(plan.removed[1].freed_bytes, du_base + du_b, "b frees the base too");

    let used0 = env.fs.used();
    remove(&mut c, &ra).await.unwrap();
    let used1 = env.fs.used();
    println!(
        "RemoveImage a: statvfs freed {} bytes; du of a's own files {du_a}",
        used0 - used1
    );
    assert_near(used0 - used1, du_a, "removing a frees its own files");
    let now: BTreeSet<String> = blobs(&root).into_iter().collect();
    assert!(now.contains(&base.digest), "the shared base blob stays");
    assert!(shared_snaps.is_subset(&snapshot_dirs(&root)), "the base snapshot stays");
    assert!(b.blob_set().is_subset(&now) && b.chain_id_set().is_subset(&snapshot_dirs(&root)));
    assert!(a_blobs.is_disjoint(&now) && a_snaps.is_disjoint(&snapshot_dirs(&root)));
    let replan = gc(s, true).await;
    assert_eq!(replan.removed.len(), 1, "{replan:#?}");
    assert_near(
        replan.removed[0].freed_bytes,
        du_base + du_b,
        "with a gone, b holds the base",
    );

    remove(&mut c, &rb).await.unwrap();
    let used2 = env.fs.used();
    println!(
        "RemoveImage b: statvfs freed {} bytes; du of base + b's own files {}",
        used1 - used2,
        du_base + du_b
    );
    assert_near(used1 - used2, du_base + du_b, "the last user of the base frees it");
    assert!(blobs(&root).is_empty() && snapshot_dirs(&root).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_never_removes_images_younger_than_min_age_and_says_why() {
    let env = start(32 * MIB, |_| config(50, 20, "1h", &[], None)).await;
    let s = &env.s;
    let mut c = s.daemon.client().await;
    for seed in 1..=3u64 {
        let img = image_over(&[&random_layer(seed, 3584 * 1024)]);
        let r = s.image(&format!("young/{seed}"), "v1");
        s.push(&format!("young/{seed}"), "v1", &img).await;
        assert_eq!(pull(&mut c, &r, None).await.unwrap(), img.config_digest);
    }
    let before = ids(&mut c).await;
    let full = env.fs.usage();
    assert!(full.percent() >= 50, "over the high threshold: {full:?}");

    let dry = gc(s, true).await;
    let out = gc(s, false).await;
    let after = env.fs.usage();
    println!("shortfall: {}", out.shortfall);
    assert!(out.removed.is_empty() && out.freed_bytes == 0, "{out:#?}");
    assert!(out.target_bytes > 0, "there was something to free: {out:#?}");
    assert!(
        out.shortfall
            .starts_with("failed to garbage collect required amount of images"),
        "kubelet's FreeDiskSpaceFailed wording: {:?}",
        out.shortfall
    );
    assert!(
        out.shortfall.contains("3 younger than the min age of 1h"),
        "says why: {:?}",
        out.shortfall
    );
    assert_eq!(dry.shortfall, out.shortfall, "a dry run explains the same");
    assert_eq!(ids(&mut c).await, before, "no image removed");
    assert_near(after.used, full.used, "nothing freed");
    let log = s.daemon.log();
    assert!(log.contains("FreeDiskSpaceFailed"), "the daemon logs the event:\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_and_prune_during_a_stream_of_pulls_break_no_pull_and_no_image() {
    // Low thresholds on 64 MiB: every GC run has something to remove while images keep arriving.
    let mut env = start(64 * MIB, |_| config(8, 4, "0s", &[], None)).await;
    let bases = [random_layer(1000, 1 << 20), random_layer(1001, 1 << 20)];
    let images: Vec<(String, BuiltImage)> = (0..10u64)
        .map(|i| {
            let own = random_layer(2000 + i, 1 << 20);
            let img = match i % 3 {
                0 => image_over(&[&own]),
                k => image_over(&[&bases[k as usize - 1], &own]),
            };
            (env.s.image(&format!("stream/{i}"), "v1"), img)
        })
        .collect();
    for (i, (_, img)) in images.iter().enumerate() {
        env.s.push(&format!("stream/{i}"), "v1", img).await;
    }
    let images = Arc::new(images);
    let done = Arc::new(AtomicBool::new(false));
    let socket = env.s.daemon.socket.clone();
    // Failures are collected, not panicked on inside tasks, so that the store is still checked and all are
    // reported. The collector alternates GC and an aggressive prune (nothing young, no or one revision kept).
    let collector = {
        let (done, socket) = (done.clone(), socket.clone());
        tokio::spawn(async move {
            let mut c = ImagesClient::new(imaged::cli::channel(&socket).await.unwrap());
            let (mut g, mut p, mut failures) = (0, 0, Vec::new());
            for round in 0u32.. {
                if done.load(Ordering::SeqCst) {
                    break;
                }
                match c.garbage_collect(pb::GarbageCollectRequest { dry_run: false }).await {
                    Ok(out) => g += out.into_inner().removed.len(),
                    Err(e) => failures.push(format!("GarbageCollect: {e:?}")),
                }
                let req = pb::PruneRequest {
                    keep_younger_than_seconds: Some(0),
                    keep_tag_revisions: Some(round % 2),
                    all: true,
                    dry_run: false,
                };
                match c.prune(req).await {
                    Ok(out) => p += out.into_inner().images.len(),
                    Err(e) => failures.push(format!("Prune: {e:?}")),
                }
                // A pause between rounds, not a wait for a state: the pulls get the daemon in between.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (g, p, failures)
        })
    };
    // Two streams over the same images in opposite orders, twice: pulls overlap each other, GC and prune.
    let streams: Vec<_> = [false, true]
        .into_iter()
        .map(|reverse| {
            let (images, socket) = (images.clone(), socket.clone());
            tokio::spawn(async move {
                let mut c = imaged::cli::connect(&socket).await.unwrap();
                let mut order: Vec<usize> = (0..images.len()).chain(0..images.len()).collect();
                if reverse {
                    order.reverse();
                }
                let mut failures = Vec::new();
                for (r, img) in order.into_iter().map(|i| &images[i]) {
                    match pull(&mut c, r, None).await {
                        Ok(id) if id == img.config_digest => {}
                        got => failures.push(format!("pull {r}: {got:?}")),
                    }
                }
                failures
            })
        })
        .collect();
    let mut failures = Vec::new();
    for t in streams {
        failures.extend(t.await.unwrap());
    }
    done.store(true, Ordering::SeqCst);
    let (g, p, more) = collector.await.unwrap();
    failures.extend(more);
    println!(
        "during 40 pulls GC removed {g} images and prune {p}; {} failures",
        failures.len()
    );

    let mut c = env.s.daemon.client().await;
    for img in list(&mut c).await {
        assert!(
            status(&mut c, &img.id).await.is_some(),
            "listed image {} has a status",
            img.id
        );
    }
    env.s.daemon.stop();
    let out = common::images::rootfs::fsck(&env.s.daemon.root);
    let report = format!("{}{}", out.stdout, out.stderr);
    println!("{report}");
    assert!(
        failures.is_empty(),
        "every pull, GC and prune succeeds:\n{}",
        failures.join("\n")
    );
    assert!(
        out.ok && report.lines().any(|l| l == "ok"),
        "fsck after the stream:\n{report}"
    );
    assert!(
        g > 0 && p > 0,
        "GC ({g}) and prune ({p}) both removed images while pulls ran"
    );
    // The same pulls still work on the checked store.
    env.s.daemon.start_again().await;
    let mut c = env.s.daemon.client().await;
    for (r, img) in images.iter() {
        assert_eq!(pull(&mut c, r, None).await.unwrap(), img.config_digest);
    }
}
