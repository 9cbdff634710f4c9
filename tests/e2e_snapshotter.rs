//! The snapshot API imaged serves on its socket, called with containerd's own Rust client
//! (`containerd-client`), RPC by RPC, as containerd's proxy snapshotter calls it; the mounts it answers are
//! really mounted and read. (containerd itself driving it is tests/e2e_containerd.rs.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;

use common::images::image::{BuiltImage, Compression, Entry, ImageBuilder, Layer, MediaStyle};
use common::runtimes::snapshots_api::{commit, list, mount, prepare, remove, stat, umount, world};
use containerd_client::services::v1::snapshots as api;
use tonic::Code;

const REF_LABEL: &str = "containerd.io/snapshot.ref";

fn two_layers() -> BuiltImage {
    let a = Layer::build(
        &[Entry::dir("a"), Entry::file("a/one", "1"), Entry::file("gone", "x")],
        Compression::Gzip,
        MediaStyle::Oci,
    );
    let b = Layer::build(
        &[Entry::dir("b"), Entry::file("b/two", "2"), Entry::whiteout("gone")],
        Compression::Zstd,
        MediaStyle::Oci,
    );
    ImageBuilder::new(MediaStyle::Oci).layer(a).layer(b).build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepare_commit_and_view_chains_mount_the_layers_as_overlay() {
    let w = world().await;
    let chains = w.pulled("two", &two_layers()).await;
    let mut c = w.client().await;
    // imaged's layers are committed snapshots with their parent and chain-id label.
    let top = stat(&mut c, &chains[1]).await.unwrap();
    assert_eq!(top.kind, api::Kind::Committed as i32);
    assert_eq!(top.parent, chains[0]);
    assert_eq!(top.labels.get(REF_LABEL), Some(&chains[1]));

    let mounts = prepare(&mut c, "k8s.io/1/c1", &chains[1]).await.unwrap();
    assert_eq!(mounts[0].r#type, "overlay");
    let mnt = tempfile::tempdir().unwrap();
    mount(&mounts, mnt.path());
    assert_eq!(std::fs::read_to_string(mnt.path().join("a/one")).unwrap(), "1");
    assert_eq!(std::fs::read_to_string(mnt.path().join("b/two")).unwrap(), "2");
    assert!(!mnt.path().join("gone").exists(), "the whiteout hides the file");
    std::fs::write(mnt.path().join("new"), "3").unwrap();
    umount(mnt.path());
    let again = c
        .mounts(api::MountsRequest {
            snapshotter: "imaged".into(),
            key: "k8s.io/1/c1".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .mounts;
    assert_eq!(again, mounts);
    let usage = c
        .usage(api::UsageRequest {
            snapshotter: "imaged".into(),
            key: "k8s.io/1/c1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(usage.inodes >= 1 && usage.size > 0, "{usage:?}");

    commit(&mut c, "k8s.io/2/committed", "k8s.io/1/c1").await.unwrap();
    assert_eq!(stat(&mut c, "k8s.io/1/c1").await.unwrap_err().code(), Code::NotFound);
    let committed = stat(&mut c, "k8s.io/2/committed").await.unwrap();
    assert_eq!(
        (committed.kind, committed.parent.as_str()),
        (api::Kind::Committed as i32, chains[1].as_str())
    );
    let view = c
        .view(api::ViewSnapshotRequest {
            snapshotter: "imaged".into(),
            key: "k8s.io/3/view".into(),
            parent: "k8s.io/2/committed".into(),
            labels: HashMap::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .mounts;
    assert!(
        !view[0].options.iter().any(|o| o.starts_with("upperdir=")),
        "a view is read-only"
    );
    mount(&view, mnt.path());
    assert_eq!(std::fs::read_to_string(mnt.path().join("new")).unwrap(), "3");
    assert_eq!(std::fs::read_to_string(mnt.path().join("a/one")).unwrap(), "1");
    assert!(
        std::fs::write(mnt.path().join("x"), "x").is_err(),
        "the view is read-only"
    );
    umount(mnt.path());
    assert_eq!(
        stat(&mut c, "k8s.io/3/view").await.unwrap().kind,
        api::Kind::View as i32
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_containerds_codes_and_layers_cannot_be_removed() {
    let w = world().await;
    let chains = w.pulled("two", &two_layers()).await;
    let mut c = w.client().await;
    // The remote snapshot protocol: a Prepare for a layer imaged has, on its parent, answers AlreadyExists.
    let req = api::PrepareSnapshotRequest {
        snapshotter: "imaged".into(),
        key: "k8s.io/9/extract-1".into(),
        parent: chains[0].clone(),
        labels: [(REF_LABEL.to_string(), chains[1].clone())].into(),
    };
    assert_eq!(c.prepare(req).await.unwrap_err().code(), Code::AlreadyExists);
    let found = list(
        &mut c,
        &[&format!(
            r#"labels."{REF_LABEL}"=={},parent=="{}""#,
            chains[1], chains[0]
        )],
    )
    .await
    .unwrap();
    assert_eq!(
        found.iter().map(|i| i.name.as_str()).collect::<Vec<_>>(),
        [chains[1].as_str()]
    );

    prepare(&mut c, "p", &chains[1]).await.unwrap();
    assert_eq!(prepare(&mut c, "p", "").await.unwrap_err().code(), Code::AlreadyExists);
    assert_eq!(
        prepare(&mut c, "x", "missing").await.unwrap_err().code(),
        Code::NotFound
    );
    assert_eq!(
        prepare(&mut c, "x", "p").await.unwrap_err().code(),
        Code::InvalidArgument
    );
    commit(&mut c, "P", "p").await.unwrap();
    prepare(&mut c, "child", "P").await.unwrap();
    assert_eq!(remove(&mut c, "P").await.unwrap_err().code(), Code::FailedPrecondition);
    // imaged's layers: containerd's garbage collection gets FailedPrecondition, which it logs and skips.
    let e = remove(&mut c, &chains[1]).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e}");
    assert_eq!(remove(&mut c, "missing").await.unwrap_err().code(), Code::NotFound);
    assert_eq!(
        commit(&mut c, "Q", "P").await.unwrap_err().code(),
        Code::FailedPrecondition
    );
    assert_eq!(
        list(&mut c, &["kind=="]).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    remove(&mut c, "child").await.unwrap();
    remove(&mut c, "P").await.unwrap();
    assert_eq!(stat(&mut c, "P").await.unwrap_err().code(), Code::NotFound);
    // The layers were never touched.
    assert_eq!(
        stat(&mut c, &chains[1]).await.unwrap().kind,
        api::Kind::Committed as i32
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn walk_filters_labels_update_and_cleanup() {
    let w = world().await;
    let chains = w.pulled("two", &two_layers()).await;
    let mut c = w.client().await;
    let req = api::PrepareSnapshotRequest {
        snapshotter: "imaged".into(),
        key: "red".into(),
        parent: chains[1].clone(),
        labels: [("team".to_string(), "red".to_string())].into(),
    };
    c.prepare(req).await.unwrap();
    prepare(&mut c, "plain", "").await.unwrap();
    let names = |v: Vec<api::Info>| {
        let mut n: Vec<String> = v.into_iter().map(|i| i.name).collect();
        n.sort();
        n
    };
    assert_eq!(names(list(&mut c, &["labels.team==red"]).await.unwrap()), ["red"]);
    assert_eq!(names(list(&mut c, &["kind==active"]).await.unwrap()), ["plain", "red"]);
    assert_eq!(names(list(&mut c, &["kind==committed"]).await.unwrap()), {
        let mut v = chains.clone();
        v.sort();
        v
    });
    assert_eq!(
        names(list(&mut c, &[&format!("parent=={}", chains[1])]).await.unwrap()),
        ["red"]
    );
    assert_eq!(list(&mut c, &[]).await.unwrap().len(), 4);

    let req = api::UpdateSnapshotRequest {
        snapshotter: "imaged".into(),
        info: Some(api::Info {
            name: "red".into(),
            labels: [
                ("team".to_string(), "blue".to_string()),
                ("x".to_string(), "y".to_string()),
            ]
            .into(),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["labels.team".into()],
        }),
    };
    let info = c.update(req).await.unwrap().into_inner().info.unwrap();
    assert_eq!(info.labels, [("team".to_string(), "blue".to_string())].into());
    assert_eq!(
        stat(&mut c, "red")
            .await
            .unwrap()
            .labels
            .get("team")
            .map(String::as_str),
        Some("blue")
    );
    let req = api::UpdateSnapshotRequest {
        snapshotter: "imaged".into(),
        info: Some(api::Info {
            name: "red".into(),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["parent".into()],
        }),
    };
    assert_eq!(c.update(req).await.unwrap_err().code(), Code::InvalidArgument);

    // A directory no snapshot owns (a crash between directory and record) goes with Cleanup.
    let orphan = w.setup.daemon.root.join("snapshotter/snapshots/424242");
    std::fs::create_dir_all(orphan.join("fs")).unwrap();
    c.cleanup(api::CleanupRequest {
        snapshotter: "imaged".into(),
    })
    .await
    .unwrap();
    assert!(!orphan.exists());
    assert_eq!(
        list(&mut c, &[]).await.unwrap().len(),
        4,
        "cleanup removed nothing else"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_128_layer_chain_mounts_within_a_page_and_reads_every_layer() {
    let w = world().await;
    let mut b = ImageBuilder::new(MediaStyle::Oci);
    for i in 0..128 {
        let entries = [
            Entry::dir("layers"),
            Entry::file(&format!("layers/{i}"), format!("{i}")),
        ];
        b = b.layer(Layer::build(&entries, Compression::Gzip, MediaStyle::Oci));
    }
    let chains = w.pulled("deep", &b.build()).await;
    assert_eq!(chains.len(), 128);
    let mut c = w.client().await;
    let mounts = prepare(&mut c, "deep", chains.last().unwrap()).await.unwrap();
    let lower = mounts[0].options.iter().find(|o| o.starts_with("lowerdir=")).unwrap();
    assert_eq!(lower.split(':').count(), 128);
    let mnt = tempfile::tempdir().unwrap();
    mount(&mounts, mnt.path());
    let mut found: Vec<String> = std::fs::read_dir(mnt.path().join("layers"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    found.sort_by_key(|s| s.parse::<u32>().unwrap());
    umount(mnt.path());
    assert_eq!(found, (0..128).map(|i| i.to_string()).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_namespaced_prepare_mounts_with_idmapped_lowers_and_the_pods_root_owns_it() {
    use std::os::unix::fs::MetadataExt;
    let w = world().await;
    let a = Layer::build(
        &[
            Entry::dir("etc"),
            Entry::file("etc/root-file", "0"),
            Entry::file_with("etc/user-file", "1000", 0o644, 1000, 1000),
        ],
        Compression::Gzip,
        MediaStyle::Oci,
    );
    let b = Layer::build(
        &[Entry::dir("b"), Entry::file("b/two", "2")],
        Compression::Gzip,
        MediaStyle::Oci,
    );
    let chains = w
        .pulled("userns", &ImageBuilder::new(MediaStyle::Oci).layer(a).layer(b).build())
        .await;
    let mut c = w.client().await;
    let map = "0:100000:65536";
    let req = api::PrepareSnapshotRequest {
        snapshotter: "imaged".into(),
        key: "k8s.io/1/pod-rootfs".into(),
        parent: chains[1].clone(),
        labels: [
            ("containerd.io/snapshot/uidmapping".to_string(), map.to_string()),
            ("containerd.io/snapshot/gidmapping".to_string(), map.to_string()),
        ]
        .into(),
    };
    let mounts = c.prepare(req).await.unwrap().into_inner().mounts;
    assert_eq!(mounts[0].r#type, "overlay");
    assert_eq!(
        mounts[0].options[..2],
        [format!("uidmap={map}"), format!("gidmap={map}")]
    );
    let upper = mounts[0]
        .options
        .iter()
        .find_map(|o| o.strip_prefix("upperdir="))
        .unwrap();
    let owner = |p: &std::path::Path| std::fs::metadata(p).map(|m| (m.uid(), m.gid())).unwrap();
    assert_eq!(
        owner(upper.as_ref()),
        (100000, 100000),
        "the upper dir belongs to the pod's root"
    );

    let mnt = tempfile::tempdir().unwrap();
    let pod = common::runtimes::idmapped::mount(&mounts, mnt.path());
    // From the host, through the idmapped lowers, the layers' files show the mapped owners...
    assert_eq!(owner(&mnt.path().join("etc/root-file")), (100000, 100000));
    assert_eq!(owner(&mnt.path().join("etc/user-file")), (101000, 101000));
    assert_eq!(owner(&mnt.path().join("b/two")), (100000, 100000));
    // ...inside the pod, the image's own...
    let inside = pod.run(&[
        "stat",
        "-c",
        "%u:%g",
        &mnt.path().join("etc/user-file").display().to_string(),
    ]);
    assert_eq!(
        String::from_utf8_lossy(&inside.stdout).trim(),
        "1000:1000",
        "{inside:?}"
    );
    // ...and the pod's root can make what a runtime makes at the root and change the image's files.
    let root = mnt.path().display().to_string();
    let made = pod.run(&[
        "sh",
        "-c",
        &format!("mkdir {root}/proc && echo x >> {root}/etc/root-file"),
    ]);
    assert!(made.status.success(), "{made:?}");
    umount(mnt.path());
    assert_eq!(owner(&std::path::Path::new(upper).join("proc")), (100000, 100000));
    assert_eq!(
        std::fs::read_to_string(std::path::Path::new(upper).join("etc/root-file")).unwrap(),
        "0x\n"
    );
    // The layer on disk is untouched: still root's.
    let layer_file = w
        .setup
        .daemon
        .root
        .join("snapshots")
        .join(chains[0].trim_start_matches("sha256:"))
        .join("fs/etc/root-file");
    assert_eq!(
        (
            owner(&layer_file),
            std::fs::read_to_string(&layer_file).unwrap().as_str()
        ),
        ((0, 0), "0")
    );
}
