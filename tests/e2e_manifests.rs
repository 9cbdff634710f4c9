//! Manifests as registries hold them today, pushed to the real registry and pulled through the socket:
//! indexes that list buildx attestations and SOCI indexes beside the images, zstd:chunked layers (skippable
//! frames carrying containers/storage's table of contents), and manifests that are not UTF-8 JSON.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;

use common::daemon::setup::{Setup, small_image};
use common::daemon::{DaemonOptions, blobs, ingest_files, list, pull};
use common::images::image::{
    BuiltImage, Compression, Entry, ImageBuilder, Layer, MediaStyle, OCI_CONFIG, OCI_INDEX, OCI_MANIFEST, build_tar,
    sha256_digest,
};
use common::images::rootfs::mount_fresh;
use common::registry::RegistryOptions;
use common::registry::push;
use serde_json::{Value, json};
use tonic::Code;

const SOCI_V1: &str = "application/vnd.amazon.soci.index.v1+json";
const SOCI_V2: &str = "application/vnd.amazon.soci.index.v2+json";

async fn setup() -> Setup {
    let opts = DaemonOptions {
        platform: Some("linux/amd64".into()),
        ..Default::default()
    };
    Setup::start_with(RegistryOptions::default(), opts).await
}

fn descriptor(media_type: &str, body: &[u8]) -> Value {
    json!({ "mediaType": media_type, "digest": sha256_digest(body), "size": body.len() })
}

/// Pushes a manifest by digest (its blobs must be there) and returns its bytes.
async fn push_by_digest(s: &Setup, repo: &str, manifest: &Value) -> Vec<u8> {
    let body = serde_json::to_vec(manifest).unwrap();
    push::push_manifest(
        &s.registry.addr(),
        repo,
        &sha256_digest(&body),
        OCI_MANIFEST,
        &body,
        None,
    )
    .await;
    body
}

/// buildx's attestation manifest for `image`: an in-toto statement as its one layer, platform unknown.
async fn attestation(s: &Setup, repo: &str, image: &BuiltImage) -> Vec<u8> {
    let statement = format!(
        r#"{{"_type":"https://in-toto.io/Statement/v0.1","predicateType":"https://spdx.dev/Document","subject":[{{"digest":{{"sha256":"{}"}}}}]}}"#,
        &image.manifest_digest["sha256:".len()..]
    );
    let config = json!({
        "architecture": "unknown", "os": "unknown", "config": {},
        "rootfs": { "type": "layers", "diff_ids": [sha256_digest(statement.as_bytes())] }
    });
    let config = serde_json::to_vec(&config).unwrap();
    let addr = s.registry.addr();
    push::push_blob(&addr, repo, statement.as_bytes(), None).await;
    push::push_blob(&addr, repo, &config, None).await;
    let mut layer = descriptor("application/vnd.in-toto+json", statement.as_bytes());
    layer["annotations"] = json!({ "in-toto.io/predicate-type": "https://spdx.dev/Document" });
    let manifest = json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": descriptor(OCI_CONFIG, &config), "layers": [layer]
    });
    push_by_digest(s, repo, &manifest).await
}

/// A SOCI index of `version` (its artifact type) for `image`: an OCI manifest whose config is `{}` typed as
/// the artifact and whose layers are zTOCs; v1 refers to the image as its `subject`.
async fn soci_index(s: &Setup, repo: &str, version: &str, image: &BuiltImage) -> Vec<u8> {
    let addr = s.registry.addr();
    push::push_blob(&addr, repo, b"{}", None).await;
    let ztoc = common::images::layer::random_bytes(77, 512);
    push::push_blob(&addr, repo, &ztoc, None).await;
    let layer = &image.layers[0];
    let mut ztoc_desc = descriptor("application/octet-stream", &ztoc);
    ztoc_desc["annotations"] = json!({
        "com.amazon.soci.image-layer-digest": layer.digest,
        "com.amazon.soci.image-layer-mediaType": layer.media_type,
    });
    let mut manifest = json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": version,
        "config": descriptor(version, b"{}"), "layers": [ztoc_desc],
        "annotations": { "com.amazon.soci.build-tool-identifier": "AWS SOCI CLI v0.2" }
    });
    if version == SOCI_V1 {
        manifest["subject"] = descriptor(OCI_MANIFEST, &image.manifest);
    }
    push_by_digest(s, repo, &manifest).await
}

/// Whether imaged asked the registry for `digest`.
fn requested(s: &Setup, digest: &str) -> bool {
    s.registry
        .requests()
        .iter()
        .any(|r| r.user_agent.starts_with("imaged/") && r.path.contains(digest))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attestations_and_a_soci_index_beside_the_image_are_not_chosen() {
    let s = setup().await;
    let img = small_image(51, None);
    push::push_image(&s.registry.addr(), "app", &img.manifest_digest, &img, None).await;
    let att = attestation(&s, "app", &img).await;
    let soci = soci_index(&s, "app", SOCI_V2, &img).await;
    let linux = json!({ "os": "linux", "architecture": "amd64" });
    let mut att_entry = descriptor(OCI_MANIFEST, &att);
    att_entry["platform"] = json!({ "os": "unknown", "architecture": "unknown" });
    att_entry["annotations"] = json!({
        "vnd.docker.reference.digest": img.manifest_digest,
        "vnd.docker.reference.type": "attestation-manifest",
    });
    // As `soci convert` lists it: the image's own platform, before the image here.
    let mut soci_entry = descriptor(OCI_MANIFEST, &soci);
    soci_entry["artifactType"] = json!(SOCI_V2);
    soci_entry["platform"] = linux.clone();
    soci_entry["annotations"] = json!({ "com.amazon.soci.image-manifest-digest": img.manifest_digest });
    let mut image_entry = descriptor(OCI_MANIFEST, &img.manifest);
    image_entry["platform"] = linux;
    image_entry["annotations"] = json!({ "com.amazon.soci.index-digest": sha256_digest(&soci) });
    let index = json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [att_entry, soci_entry, image_entry]
    });
    let index = serde_json::to_vec(&index).unwrap();
    push::push_manifest(&s.registry.addr(), "app", "v1", OCI_INDEX, &index, None).await;

    let mut c = s.daemon.client().await;
    assert_eq!(
        pull(&mut c, &s.image("app", "v1"), None).await.unwrap(),
        img.config_digest
    );
    for (what, body) in [("attestation", &att), ("SOCI index", &soci)] {
        assert!(!requested(&s, &sha256_digest(body)), "the {what} was fetched");
    }

    // An index with nothing but those for this platform has no image to offer.
    let only = json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        serde_json::from_slice::<Value>(&index).unwrap()["manifests"][0].clone(),
        serde_json::from_slice::<Value>(&index).unwrap()["manifests"][1].clone(),
    ]});
    let only = serde_json::to_vec(&only).unwrap();
    push::push_manifest(&s.registry.addr(), "app", "none", OCI_INDEX, &only, None).await;
    let err = pull(&mut c, &s.image("app", "none"), None).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(!err.message().contains("unknown/unknown"), "{}", err.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_soci_v1_index_referring_to_the_image_leaves_its_pull_alone() {
    let s = setup().await;
    let img = small_image(52, None);
    s.push("app", "v1", &img).await;
    let soci = soci_index(&s, "app", SOCI_V1, &img).await;
    // Registries without the referrers API list referrers under the tag `sha256-<hex>` (tag schema).
    let mut entry = descriptor(OCI_MANIFEST, &soci);
    entry["artifactType"] = json!(SOCI_V1);
    let referrers = json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry] });
    let referrers = serde_json::to_vec(&referrers).unwrap();
    let fallback_tag = img.manifest_digest.replace(':', "-");
    push::push_manifest(&s.registry.addr(), "app", &fallback_tag, OCI_INDEX, &referrers, None).await;

    let mut c = s.daemon.client().await;
    assert_eq!(
        pull(&mut c, &s.image("app", "v1"), None).await.unwrap(),
        img.config_digest
    );
    assert!(!requested(&s, &sha256_digest(&soci)));
    // Pulled by name, the SOCI index is refused for what it is, and nothing is kept.
    let by_digest = format!("{}@{}", s.name("app"), sha256_digest(&soci));
    let err = pull(&mut c, &by_digest, None).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("not a container image"), "{}", err.message());
    assert_eq!(list(&mut c).await.len(), 1);
    assert_eq!(ingest_files(&s.daemon.root), 0);
}

/// A zstd:chunked blob of `tar` as containers/storage writes one: the tar in several zstd frames (here one
/// per 512-byte block run of each entry), then skippable frames holding the zstd-compressed table of
/// contents, the tar-split data and the footer.
fn zstd_chunked(tar: &[u8]) -> (Vec<u8>, Value) {
    let frame = |data: &[u8]| zstd::encode_all(data, 3).unwrap();
    let skippable = |out: &mut Vec<u8>, data: &[u8]| {
        out.write_all(&[0x50, 0x2a, 0x4d, 0x18]).unwrap();
        out.write_all(&(data.len() as u32).to_le_bytes()).unwrap();
        out.write_all(data).unwrap();
    };
    let mut blob = Vec::new();
    for chunk in tar.chunks(1024) {
        blob.extend(frame(chunk));
    }
    let toc = br#"{"version":1,"entries":[{"type":"reg","name":"chunked/a","size":5}]}"#;
    let toc_z = frame(toc);
    let toc_offset = blob.len() + 8;
    skippable(&mut blob, &toc_z);
    let split_z = frame(br#"{"type":1,"name":"chunked/a","size":5}"#);
    let split_offset = blob.len() + 8;
    skippable(&mut blob, &split_z);
    let mut footer = Vec::new();
    for v in [toc_offset, toc_z.len(), toc.len(), 1, split_offset, split_z.len(), 40] {
        footer.extend((v as u64).to_le_bytes());
    }
    footer.extend(b"GNUlInUx");
    skippable(&mut blob, &footer);
    let annotations = json!({
        "io.github.containers.zstd-chunked.manifest-checksum": sha256_digest(&toc_z),
        "io.github.containers.zstd-chunked.manifest-position": format!("{toc_offset}:{}:{}:1", toc_z.len(), toc.len()),
    });
    (blob, annotations)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zstd_chunked_layer_unpacks_and_its_diff_id_is_the_plain_tars() {
    let s = setup().await;
    let big = common::images::layer::random_bytes(53, 5000);
    let tar = build_tar(&[
        Entry::dir("chunked"),
        Entry::file("chunked/a", "hello"),
        Entry::file("chunked/big", &big),
    ]);
    let (blob, annotations) = zstd_chunked(&tar);
    let layer = Layer {
        diff_id: sha256_digest(&tar),
        digest: sha256_digest(&blob),
        media_type: Compression::Zstd.media_type(MediaStyle::Oci).into(),
        blob,
    };
    let plain = Layer::build(&[Entry::file("base", "base")], Compression::Gzip, MediaStyle::Oci);
    let img = ImageBuilder::new(MediaStyle::Oci).layer(plain).layer(layer).build();
    // The layer descriptor carries the annotations containers/storage writes.
    let mut manifest: Value = serde_json::from_slice(&img.manifest).unwrap();
    manifest["layers"][1]["annotations"] = annotations;
    let addr = s.registry.addr();
    for l in &img.layers {
        push::push_blob(&addr, "app", &l.blob, None).await;
    }
    push::push_blob(&addr, "app", &img.config, None).await;
    let body = serde_json::to_vec(&manifest).unwrap();
    push::push_manifest(&addr, "app", "v1", OCI_MANIFEST, &body, None).await;

    let mut c = s.daemon.client().await;
    let image = s.image("app", "v1");
    assert_eq!(pull(&mut c, &image, None).await.unwrap(), img.config_digest);
    let m = mount_fresh(&s, &image);
    assert_eq!(m.read("chunked/a"), "hello");
    assert_eq!(std::fs::read(m.root.join("chunked/big")).unwrap(), big);
    assert_eq!(m.read("base"), "base");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifests_that_are_not_utf8_json_are_refused_and_nothing_is_kept() {
    let s = setup().await;
    let img = small_image(54, None);
    let addr = s.registry.addr();
    push::push_image(&addr, "app", &img.manifest_digest, &img, None).await;
    // An annotation in Latin-1: "café" with é as the single byte 0xe9.
    let latin1 = |json: &[u8]| -> Vec<u8> {
        let text = String::from_utf8(json.to_vec()).unwrap();
        let marked = text.replacen(
            "\"schemaVersion\"",
            "\"annotations\":{\"description\":\"caf@\"},\"schemaVersion\"",
            1,
        );
        marked
            .into_bytes()
            .into_iter()
            .map(|b| if b == b'@' { 0xe9 } else { b })
            .collect()
    };
    let bad_manifest = latin1(&img.manifest);
    push::push_manifest(&addr, "app", "manifest", OCI_MANIFEST, &bad_manifest, None).await;
    let index = json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [{
        "mediaType": OCI_MANIFEST, "digest": img.manifest_digest, "size": img.manifest.len(),
        "platform": { "os": "linux", "architecture": "amd64" }
    }]});
    let bad_index = latin1(&serde_json::to_vec(&index).unwrap());
    push::push_manifest(&addr, "app", "index", OCI_INDEX, &bad_index, None).await;

    let mut c = s.daemon.client().await;
    for tag in ["manifest", "index"] {
        let err = pull(&mut c, &s.image("app", tag), None).await.unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{tag}: {err:?}");
        assert!(err.message().starts_with("pulling image "), "{}", err.message());
        common::runtimes::kubelet::assert_reason_once(&err, tag, "ErrImagePull");
        assert!(err.message().contains("not UTF-8 JSON"), "{}", err.message());
        assert!(list(&mut c).await.is_empty(), "no image may be recorded");
        assert!(
            blobs(&s.daemon.root).is_empty(),
            "no blob may be kept: {:?}",
            blobs(&s.daemon.root)
        );
        assert_eq!(ingest_files(&s.daemon.root), 0);
    }
    // The same image in valid JSON pulls.
    assert_eq!(
        pull(&mut c, &format!("{}@{}", s.name("app"), img.manifest_digest), None)
            .await
            .unwrap(),
        img.config_digest
    );
}
