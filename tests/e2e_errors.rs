//! Bad input gets a clear error with the right gRPC code, kubelet derives the right reason from it and shows
//! it once, and it changes nothing: no image recorded, no blob kept, no ingest left behind.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::daemon::setup::{Setup, small_image};
use common::daemon::{Daemon, blobs, ingest_files, list, pull, spec, status};
use common::images::image::{Compression, Entry, ImageBuilder, Layer, MediaStyle, OCI_MANIFEST, sha256_digest};
use common::registry::fake_registry::{Canned, FakeRegistry, daemon_for};
use imaged::proto::runtime::v1 as cri;
use tonic::Code;

/// Asserts the failure (its code, kubelet's `reason` for it shown once), and that the store holds nothing.
async fn assert_failed_cleanly(d: &Daemon, err: tonic::Status, code: Code, reason: &str, needle: &str) {
    assert_eq!(err.code(), code, "{err:?}");
    let shown = common::runtimes::kubelet::assert_reason_once(&err, "the image", reason);
    assert!(
        shown.contains(needle),
        "kubelet's message should mention {needle:?}: {shown}"
    );
    assert!(
        err.message().contains(needle),
        "message should mention {needle:?}: {}",
        err.message()
    );
    let mut c = d.client().await;
    assert!(list(&mut c).await.is_empty(), "no image may be recorded");
    assert!(blobs(&d.root).is_empty(), "no blob may be kept: {:?}", blobs(&d.root));
    assert_eq!(ingest_files(&d.root), 0, "no partial download may be left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_references_are_invalid_image_names() {
    let s = Setup::start().await;
    let mut c = s.daemon.client().await;
    for bad in [
        "Busybox:latest",
        "foo bar",
        "busybox:",
        "busybox@sha256:abc",
        "-x/y",
        "a//b",
    ] {
        let err = pull(&mut c, bad, None).await.unwrap_err();
        // kubelet parses names before it pulls; one it passes and imaged refuses is its ErrImagePull.
        assert!(
            err.message().starts_with("invalid image reference"),
            "{}",
            err.message()
        );
        assert_failed_cleanly(&s.daemon, err, Code::InvalidArgument, "ErrImagePull", bad).await;
    }
    let err = pull(&mut c, "", None).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_list_and_remove_answer_invalid_names_as_invalid_image_names() {
    let s = Setup::start().await;
    let mut c = s.daemon.client().await;
    for bad in ["Busybox:latest", "foo bar", "-x/y"] {
        let status = c
            .image_status(cri::ImageStatusRequest {
                image: spec(bad),
                verbose: false,
            })
            .await
            .unwrap_err();
        let filter = cri::ImageFilter { image: spec(bad) };
        let list = c
            .list_images(cri::ListImagesRequest { filter: Some(filter) })
            .await
            .unwrap_err();
        let remove = c
            .remove_image(cri::RemoveImageRequest { image: spec(bad) })
            .await
            .unwrap_err();
        for (rpc, err) in [("ImageStatus", status), ("ListImages", list), ("RemoveImage", remove)] {
            assert_eq!(err.code(), Code::InvalidArgument, "{rpc} {bad}: {err:?}");
            // kubelet calls a failed ImageStatus its own ImageInspectError: the message names no reason.
            assert!(
                err.message().starts_with("invalid image reference") && err.message().contains(bad),
                "{rpc} {bad}: {}",
                err.message()
            );
            assert!(
                common::runtimes::kubelet::REASONS
                    .iter()
                    .all(|r| !err.message().contains(r)),
                "{rpc} {bad}: {}",
                err.message()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_host_and_down_registry_are_registry_unavailable() {
    let mut s = Setup::start().await;
    let mut c = s.daemon.client().await;
    let err = pull(&mut c, "registry.invalid/app:v1", None).await.unwrap_err();
    // UNKNOWN: the one code kubelet strips before it reads RegistryUnavailable from the message.
    assert!(err.message().starts_with("RegistryUnavailable: "), "{}", err.message());
    assert_failed_cleanly(&s.daemon, err, Code::Unknown, "RegistryUnavailable", "registry.invalid").await;

    s.push("app", "v1", &small_image(1, None)).await;
    s.registry.stop();
    let err = pull(&mut c, &s.image("app", "v1"), None).await.unwrap_err();
    assert_failed_cleanly(&s.daemon, err, Code::Unknown, "RegistryUnavailable", &s.registry.addr()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_tag_and_repository_are_not_found() {
    let s = Setup::start().await;
    s.push("app", "v1", &small_image(1, None)).await;
    let mut c = s.daemon.client().await;
    let err = pull(&mut c, &s.image("app", "v2"), None).await.unwrap_err();
    assert_failed_cleanly(&s.daemon, err, Code::NotFound, "ErrImagePull", "app:v2").await;
    let err = pull(&mut c, &s.image("nothing", "v1"), None).await.unwrap_err();
    assert_failed_cleanly(&s.daemon, err, Code::NotFound, "ErrImagePull", "nothing").await;
    let absent = format!("{}@sha256:{}", s.name("app"), "1".repeat(64));
    let err = pull(&mut c, &absent, None).await.unwrap_err();
    assert_failed_cleanly(&s.daemon, err, Code::NotFound, "ErrImagePull", "app").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_runtime_handler_is_rejected() {
    let s = Setup::start().await;
    let mut c = s.daemon.client().await;
    let err = common::daemon::pull_with_handler(&mut c, "busybox", "kata")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("kata"), "{}", err.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_not_matching_their_digest_fail_the_pull_and_keep_nothing() {
    let fake = FakeRegistry::start().await;
    let img = small_image(5, None);
    fake.manifest("app", "v1", OCI_MANIFEST, &img.manifest);
    fake.blob("app", &img.config_digest, img.config.clone());
    fake.blob("app", &img.layers[0].digest, img.layers[0].blob.clone());
    // The second layer's bytes are altered: same size, different content.
    let mut bad = img.layers[1].blob.clone();
    let last = bad.len() - 1;
    bad[last] ^= 0xff;
    fake.blob("app", &img.layers[1].digest, bad);
    let (_hosts, d) = daemon_for(&fake, None).await;
    let mut c = d.client().await;
    let err = pull(&mut c, &format!("{}/app:v1", fake.addr()), None)
        .await
        .unwrap_err();
    assert_failed_cleanly(&d, err, Code::FailedPrecondition, "ErrImagePull", &img.layers[1].digest).await;

    // A manifest fetched by digest must hash to that digest.
    let wanted = sha256_digest(b"some other manifest");
    fake.manifest("app", &wanted, OCI_MANIFEST, &img.manifest);
    let err = pull(&mut c, &format!("{}/app@{wanted}", fake.addr()), None)
        .await
        .unwrap_err();
    assert_failed_cleanly(&d, err, Code::FailedPrecondition, "ErrImagePull", "does not match").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_media_types_are_refused_with_what_they_are() {
    let fake = FakeRegistry::start().await;
    // An artifact (a Helm chart) is not a container image.
    let img = small_image(6, None);
    let helm = String::from_utf8(img.manifest.clone()).unwrap().replace(
        "application/vnd.oci.image.config.v1+json",
        "application/vnd.cncf.helm.config.v1+json",
    );
    fake.manifest("chart", "v1", OCI_MANIFEST, helm.as_bytes());
    // A Docker schema 1 manifest.
    let s1 = br#"{"schemaVersion":1,"name":"old","tag":"v1","architecture":"amd64","fsLayers":[],"history":[]}"#;
    fake.manifest(
        "old",
        "v1",
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
        s1,
    );
    // A foreign (Windows) layer.
    let foreign = String::from_utf8(img.manifest.clone()).unwrap().replacen(
        "application/vnd.oci.image.layer.v1.tar+gzip",
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
        1,
    );
    fake.manifest("win", "v1", OCI_MANIFEST, foreign.as_bytes());
    let (_hosts, d) = daemon_for(&fake, None).await;
    let mut c = d.client().await;
    for (repo, needle) in [
        ("chart", "not a container image"),
        ("old", "schema 1"),
        ("win", "foreign"),
    ] {
        let err = pull(&mut c, &format!("{}/{repo}:v1", fake.addr()), None)
            .await
            .unwrap_err();
        assert_failed_cleanly(&d, err, Code::FailedPrecondition, "ErrImagePull", needle).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_over_4_mib_is_refused() {
    let fake = FakeRegistry::start().await;
    let img = ImageBuilder::new(MediaStyle::Oci)
        .layer(Layer::build(
            &[Entry::file("x", "x")],
            Compression::Gzip,
            MediaStyle::Oci,
        ))
        .build();
    let mut manifest: serde_json::Value = serde_json::from_slice(&img.manifest).unwrap();
    manifest["annotations"] = serde_json::json!({ "padding": "p".repeat(4 << 20) });
    let body = serde_json::to_vec(&manifest).unwrap();
    assert!(body.len() > 4 << 20);
    fake.manifest("huge", "v1", OCI_MANIFEST, &body);
    let (_hosts, d) = daemon_for(&fake, None).await;
    let mut c = d.client().await;
    let err = pull(&mut c, &format!("{}/huge:v1", fake.addr()), None)
        .await
        .unwrap_err();
    assert_failed_cleanly(
        &d,
        err,
        Code::ResourceExhausted,
        "ErrImagePull",
        "larger than the limit",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_unavailable() {
    let fake = FakeRegistry::start().await;
    fake.route("/v2/app/manifests/v1", Canned::status(503));
    let (_hosts, d) = daemon_for(&fake, None).await;
    let mut c = d.client().await;
    let err = pull(&mut c, &format!("{}/app:v1", fake.addr()), None)
        .await
        .unwrap_err();
    assert_failed_cleanly(&d, err, Code::Unknown, "RegistryUnavailable", "503").await;
    assert!(status(&mut c, &format!("{}/app:v1", fake.addr())).await.is_none());
}
