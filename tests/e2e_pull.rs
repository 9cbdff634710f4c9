//! End to end: PullImage, ImageStatus, ListImages, RemoveImage and ImageFsInfo through a real unix socket,
//! against a real registry, checking every point of the CRI contract kubelet relies on.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::daemon::setup::{Setup, image_of, small_image};
use common::daemon::{self, DaemonOptions, blobs, list, pull, remove, status};
use common::images::image::{BuiltIndex, Compression, Entry, ImageBuilder, Layer, MediaStyle, random_bytes};
use common::registry::push;
use imaged::proto::runtime::v1 as cri;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulled_image_is_answered_by_every_name_form() {
    let s = Setup::start().await;
    let img = small_image(1, None);
    push::push_image(&s.registry.addr(), "library/busybox", "latest", &img, None).await;
    let mut c = s.daemon.client().await;

    let image_ref = pull(&mut c, "busybox", None).await.expect("pull busybox");
    assert_eq!(image_ref, img.config_digest, "image_ref is the config digest");

    let hex = img.config_digest.strip_prefix("sha256:").unwrap();
    let repo_digest = format!("docker.io/library/busybox@{}", img.manifest_digest);
    for name in [
        "busybox",
        "busybox:latest",
        "library/busybox",
        "docker.io/library/busybox:latest",
        "index.docker.io/library/busybox",
        img.config_digest.as_str(),
        hex,
        &hex[..12],
        repo_digest.as_str(),
    ] {
        let got = status(&mut c, name)
            .await
            .unwrap_or_else(|| panic!("ImageStatus({name}) found nothing"));
        assert_eq!(got.id, image_ref, "ImageStatus({name})");
        assert_eq!(got.repo_tags, vec!["docker.io/library/busybox:latest"]);
        assert_eq!(got.repo_digests, vec![repo_digest.clone()]);
        let expected: u64 =
            img.manifest.len() as u64 + img.config.len() as u64 + img.layers.iter().map(|l| l.size()).sum::<u64>();
        assert_eq!(got.size, expected, "size is manifest + config + compressed layers");
        assert!(got.uid.is_none() && got.username.is_empty());
    }
    assert!(
        status(&mut c, "busybox:other").await.is_none(),
        "absent image: empty response, not an error"
    );
    assert!(status(&mut c, &format!("sha256:{}", "0".repeat(64))).await.is_none());

    let all = list(&mut c).await;
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].id, image_ref);
    let filtered = c
        .list_images(cri::ListImagesRequest {
            filter: Some(cri::ImageFilter {
                image: daemon::spec("busybox"),
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .images;
    assert_eq!(filtered.len(), 1);
    let none = c
        .list_images(cri::ListImagesRequest {
            filter: Some(cri::ImageFilter {
                image: daemon::spec("nginx"),
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .images;
    assert!(none.is_empty());

    // Every blob is in the OCI layout under its digest, byte for byte.
    let stored = blobs(&s.daemon.root);
    for d in std::iter::once(&img.config_digest)
        .chain(std::iter::once(&img.manifest_digest))
        .chain(img.layers.iter().map(|l| &l.digest))
    {
        assert!(stored.contains(d), "blob {d} missing from the store");
    }
    let layout = s.daemon.root.join("content");
    let cfg = std::fs::read(layout.join("blobs/sha256").join(hex)).unwrap();
    assert_eq!(cfg, img.config);
    let index: serde_json::Value = serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"][0]["digest"], img.manifest_digest.as_str());
    assert_eq!(
        index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"],
        "docker.io/library/busybox:latest"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verbose_status_carries_manifest_chain_ids_layers_and_config() {
    let s = Setup::start().await;
    let img = small_image(2, Some("1002"));
    s.push("app", "v1", &img).await;
    let mut c = s.daemon.client().await;
    pull(&mut c, &s.image("app", "v1"), None).await.unwrap();
    let resp = c
        .image_status(cri::ImageStatusRequest {
            image: daemon::spec(&s.image("app", "v1")),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner();
    let info: serde_json::Value = serde_json::from_str(&resp.info["info"]).unwrap();
    assert_eq!(info["manifestDigest"], img.manifest_digest.as_str());
    assert_eq!(info["layers"].as_array().unwrap().len(), 2);
    assert_eq!(info["layers"][0]["diffID"], img.layers[0].diff_id.as_str());
    assert_eq!(
        info["chainIDs"][0],
        img.layers[0].diff_id.as_str(),
        "the first chain id is the first diff id"
    );
    assert_eq!(info["chainIDs"].as_array().unwrap().len(), 2);
    assert_eq!(info["imageSpec"]["config"]["User"], "1002");
    assert_eq!(info["platform"], "linux/amd64");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_user_maps_to_uid_or_username() {
    let s = Setup::start().await;
    let mut c = s.daemon.client().await;
    for (i, (user, uid, name)) in [
        ("1002", Some(1002), ""),
        ("1002:1002", Some(1002), ""),
        ("nobody", None, "nobody"),
        ("nobody:nogroup", None, "nobody"),
        ("0", Some(0), ""),
    ]
    .into_iter()
    .enumerate()
    {
        let img = small_image(100 + i as u64, Some(user));
        s.push("users", &format!("u{i}"), &img).await;
        pull(&mut c, &s.image("users", &format!("u{i}")), None).await.unwrap();
        let got = status(&mut c, &s.image("users", &format!("u{i}"))).await.unwrap();
        assert_eq!(got.uid.map(|u| u.value), uid, "user {user:?}");
        assert_eq!(got.username, name, "user {user:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_schema2_zstd_plain_and_manifest_without_media_type() {
    let s = Setup::start().await;
    let mut c = s.daemon.client().await;
    let docker = image_of(
        MediaStyle::Docker,
        vec![
            Layer::build(&[Entry::file("a", "docker")], Compression::Gzip, MediaStyle::Docker),
            Layer::build(
                &[Entry::file("b", random_bytes(7, 10_000))],
                Compression::Gzip,
                MediaStyle::Docker,
            ),
        ],
    );
    s.push("docker", "v1", &docker).await;
    assert_eq!(
        pull(&mut c, &s.image("docker", "v1"), None).await.unwrap(),
        docker.config_digest
    );

    let mixed = image_of(
        MediaStyle::Oci,
        vec![
            Layer::build(&[Entry::file("z", "zstd layer")], Compression::Zstd, MediaStyle::Oci),
            Layer::build(&[Entry::file("p", "plain layer")], Compression::None, MediaStyle::Oci),
        ],
    );
    s.push("mixed", "v1", &mixed).await;
    assert_eq!(
        pull(&mut c, &s.image("mixed", "v1"), None).await.unwrap(),
        mixed.config_digest
    );

    let bare = ImageBuilder::new(MediaStyle::Oci)
        .layer(Layer::build(
            &[Entry::file("x", "no media type")],
            Compression::Gzip,
            MediaStyle::Oci,
        ))
        .omit_media_type()
        .build();
    assert!(!String::from_utf8_lossy(&bare.manifest).contains("mediaType\":\"application/vnd.oci.image.manifest"));
    s.push("bare", "v1", &bare).await;
    assert_eq!(
        pull(&mut c, &s.image("bare", "v1"), None).await.unwrap(),
        bare.config_digest
    );
}

fn two_platform_index(style: MediaStyle) -> BuiltIndex {
    let amd = ImageBuilder::new(style)
        .layer(Layer::build(&[Entry::file("arch", "amd64")], Compression::Gzip, style))
        .build();
    let arm = ImageBuilder::new(style)
        .platform("linux", "arm64", Some("v8"))
        .layer(Layer::build(&[Entry::file("arch", "arm64")], Compression::Gzip, style))
        .build();
    BuiltIndex::build(style, vec![arm, amd])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_selects_the_node_platform_including_variant() {
    let mut s = Setup::start().await;
    let index = two_platform_index(MediaStyle::Oci);
    push::push_index(&s.registry.addr(), "multi", "v1", &index, None).await;
    let list_index = two_platform_index(MediaStyle::Docker);
    push::push_index(&s.registry.addr(), "multi", "docker", &list_index, None).await;
    let (arm, amd) = (&index.images[0], &index.images[1]);

    let mut c = s.daemon.client().await;
    assert_eq!(
        pull(&mut c, &s.image("multi", "v1"), None).await.unwrap(),
        amd.config_digest
    );
    let got = status(&mut c, &s.image("multi", "v1")).await.unwrap();
    assert_eq!(
        got.repo_digests,
        vec![format!("{}@{}", s.name("multi"), index.digest)],
        "the repo digest is the index's"
    );
    assert_eq!(
        pull(&mut c, &s.image("multi", "docker"), None).await.unwrap(),
        list_index.images[1].config_digest
    );

    // The same store, restarted for an arm64/v8 node.
    s.daemon.stop();
    let arm_daemon = common::daemon::Daemon::start(DaemonOptions {
        hosts_dir: Some(s.hosts_dir()),
        platform: Some("linux/arm64/v8".into()),
        ..Default::default()
    })
    .await;
    let mut c = arm_daemon.client().await;
    assert_eq!(
        pull(&mut c, &s.image("multi", "v1"), None).await.unwrap(),
        arm.config_digest
    );

    let s390 = common::daemon::Daemon::start(DaemonOptions {
        hosts_dir: Some(s.hosts_dir()),
        platform: Some("linux/s390x".into()),
        ..Default::default()
    })
    .await;
    let mut c = s390.client().await;
    let err = pull(&mut c, &s.image("multi", "v1"), None).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    assert!(
        err.message().contains("linux/s390x") && err.message().contains("linux/arm64/v8"),
        "{}",
        err.message()
    );
    assert!(common::daemon::list(&mut c).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_tag_adds_and_a_moved_tag_leaves_the_old_image() {
    let s = Setup::start().await;
    let old = small_image(10, None);
    let new = small_image(11, None);
    s.push("app", "v1", &old).await;
    s.push("app", "stable", &old).await;
    let mut c = s.daemon.client().await;
    pull(&mut c, &s.image("app", "v1"), None).await.unwrap();
    pull(&mut c, &s.image("app", "stable"), None).await.unwrap();
    let got = status(&mut c, &old.config_digest).await.unwrap();
    assert_eq!(got.repo_tags, vec![s.image("app", "v1"), s.image("app", "stable")]);
    assert_eq!(list(&mut c).await.len(), 1);

    s.push("app", "stable", &new).await;
    assert_eq!(
        pull(&mut c, &s.image("app", "stable"), None).await.unwrap(),
        new.config_digest
    );
    assert_eq!(
        status(&mut c, &old.config_digest).await.unwrap().repo_tags,
        vec![s.image("app", "v1")]
    );
    assert_eq!(
        status(&mut c, &s.image("app", "stable")).await.unwrap().id,
        new.config_digest
    );
    assert_eq!(list(&mut c).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_drops_every_tag_and_only_unshared_blobs_and_is_idempotent() {
    let s = Setup::start().await;
    let (base, a, b) = common::daemon::setup::sharing_a_base(1, 50_000);
    s.push("a", "v1", &a).await;
    s.push("a", "v2", &a).await;
    s.push("b", "v1", &b).await;
    let mut c = s.daemon.client().await;
    for r in [s.image("a", "v1"), s.image("a", "v2"), s.image("b", "v1")] {
        pull(&mut c, &r, None).await.unwrap();
    }
    let fs_before = fs_info(&mut c).await;

    remove(&mut c, &s.image("a", "v1")).await.unwrap();
    assert!(
        status(&mut c, &s.image("a", "v2")).await.is_none(),
        "every tag of the image goes"
    );
    assert!(status(&mut c, &a.config_digest).await.is_none());
    let stored = blobs(&s.daemon.root);
    assert!(stored.contains(&base.digest), "the shared base layer stays for b");
    assert!(
        !stored.contains(&a.layers[1].digest)
            && !stored.contains(&a.config_digest)
            && !stored.contains(&a.manifest_digest)
    );
    assert!(status(&mut c, &s.image("b", "v1")).await.is_some());
    let fs_after = fs_info(&mut c).await;
    assert!(fs_after.used_bytes.unwrap().value < fs_before.used_bytes.unwrap().value);
    assert_eq!(
        fs_after.inodes_used.unwrap().value,
        fs_before.inodes_used.unwrap().value - 7,
        "a's 3 blobs and its own layer's snapshot (directory, fs/, meta.json, one file); the shared base stays"
    );

    remove(&mut c, &s.image("a", "v1"))
        .await
        .expect("removing an absent image is not an error");
    remove(&mut c, &a.config_digest)
        .await
        .expect("removing an absent image by id is not an error");
    remove(&mut c, &b.config_digest).await.unwrap();
    assert!(
        blobs(&s.daemon.root).is_empty(),
        "nothing is left once no image needs it"
    );
    assert!(list(&mut c).await.is_empty());
}

async fn fs_info(
    c: &mut imaged::proto::runtime::v1::image_service_client::ImageServiceClient<tonic::transport::Channel>,
) -> cri::FilesystemUsage {
    let resp = c.image_fs_info(cri::ImageFsInfoRequest {}).await.unwrap().into_inner();
    assert_eq!(resp.image_filesystems.len(), 1);
    resp.image_filesystems[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_fs_info_reports_the_store_and_tracks_usage() {
    let s = Setup::start().await;
    let mut c = s.daemon.client().await;
    let empty = fs_info(&mut c).await;
    assert!(empty.timestamp > 0);
    assert_eq!(
        empty.fs_id.as_ref().unwrap().mountpoint,
        s.daemon.root.display().to_string()
    );
    let big = image_of(
        MediaStyle::Oci,
        vec![Layer::build(
            &[Entry::file("big", random_bytes(3, 2_000_000))],
            Compression::Gzip,
            MediaStyle::Oci,
        )],
    );
    s.push("big", "v1", &big).await;
    pull(&mut c, &s.image("big", "v1"), None).await.unwrap();
    let full = fs_info(&mut c).await;
    let grown = full.used_bytes.unwrap().value - empty.used_bytes.unwrap().value;
    assert!(
        grown >= big.layers[0].size(),
        "used bytes grew by {grown}, less than the layer"
    );
    assert_eq!(
        full.inodes_used.unwrap().value - empty.inodes_used.unwrap().value,
        7,
        "3 blobs (manifest, config, layer) and the layer's snapshot: its directory, fs/, meta.json, one file"
    );
    assert!(full.timestamp >= empty.timestamp);
}
