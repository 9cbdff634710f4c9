//! Proves the test fixtures in `tests/common` right with independent tools: images built by
//! `common::images::image` and pushed by `common::registry::push` to a `common::registry` are read back with `skopeo` and
//! unpacked with `umoci`. A missing tool fails the test (run `hack/install-test-deps`); nothing is skipped.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use common::images::image::{
    BuiltImage, BuiltIndex, Compression, DOCKER_CONFIG, DOCKER_MANIFEST, Entry, ImageBuilder, Layer, MediaStyle,
    passwd_entries, random_bytes, sha256_digest,
};
use common::images::tools::{assert_served, exists_in, skopeo_copy, skopeo_raw_manifest};
use common::registry::push::{push_image, push_index};
use common::registry::{RegistryOptions, TestRegistry, write_hosts_toml};
use serde_json::Value;
use tempfile::TempDir;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oci_gzip_image_with_whiteout_links_and_opaque_dir() {
    let reg = TestRegistry::start(RegistryOptions::default()).await;
    let style = MediaStyle::Oci;
    let mut lower = passwd_entries();
    lower.extend([
        Entry::file("etc/hello", "hello from layer 0\n"),
        Entry::file("etc/gone", "deleted by layer 1"),
        Entry::symlink("etc/link", "hello"),
        Entry::hardlink("etc/hard", "etc/hello"),
        Entry::dir("opt/data"),
        Entry::file("opt/data/old", "hidden by the opaque dir"),
    ]);
    let upper = [
        Entry::whiteout("etc/gone"),
        Entry::opaque("opt/data"),
        Entry::file_with("opt/data/new", "new", 0o600, 1002, 1002),
    ];
    let image = ImageBuilder::new(style)
        .layer(Layer::build(&lower, Compression::Gzip, style))
        .layer(Layer::build(&upper, Compression::Gzip, style))
        .user("1002:1002")
        .build();
    push_image(&reg.addr(), "fixtures/oci", "v1", &image, None).await;
    assert_served(&reg, "fixtures/oci", "v1", &image.manifest, &image.manifest_digest).await;

    let pulled = skopeo_copy(&reg, "fixtures/oci", "v1", &[], true).await;
    let rootfs = pulled.rootfs();
    assert_eq!(pulled.read("etc/hello"), "hello from layer 0\n");
    assert_eq!(std::fs::read_link(rootfs.join("etc/link")).unwrap(), Path::new("hello"));
    let ino = |p: &str| std::fs::metadata(rootfs.join(p)).unwrap().ino();
    assert_eq!(ino("etc/hard"), ino("etc/hello"), "hard link shares the inode");
    assert!(!exists_in(&rootfs, "etc/gone"), "whiteout removed etc/gone");
    assert!(!exists_in(&rootfs, "opt/data/old"), "opaque dir hid opt/data/old");
    assert_eq!(pulled.read("opt/data/new"), "new");
    assert!(!exists_in(&rootfs, "etc/.wh.gone") && !exists_in(&rootfs, "opt/data/.wh..wh..opq"));
    let config: Value = serde_json::from_slice(&pulled.blob(&image.config_digest)).unwrap();
    assert_eq!(config["config"]["User"], "1002:1002");
    assert_eq!(config["rootfs"]["diff_ids"][1], image.layers[1].diff_id);
    assert_eq!(config["history"].as_array().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uncompressed_and_zstd_layers_round_trip() {
    let reg = TestRegistry::start(RegistryOptions::default()).await;
    let style = MediaStyle::Oci;
    let big = [Entry::file("big", random_bytes(7, 100_000))];
    let image = ImageBuilder::new(style)
        .layer(Layer::build(&[Entry::file("plain", "plain")], Compression::None, style))
        .layer(Layer::build(&big, Compression::Zstd, style))
        .build();
    push_image(&reg.addr(), "fixtures/zstd", "v1", &image, None).await;
    assert_served(&reg, "fixtures/zstd", "v1", &image.manifest, &image.manifest_digest).await;
    for layer in &image.layers {
        let url = format!("{}/v2/fixtures/zstd/blobs/{}", reg.url(), layer.digest);
        let blob = reqwest::get(&url).await.unwrap().bytes().await.unwrap();
        assert!(
            blob.as_ref() == layer.blob.as_slice(),
            "GET {url} returns the pushed bytes"
        );
    }
    // skopeo gzips the plain layer on its way into an OCI layout but keeps the zstd one as it is.
    let pulled = skopeo_copy(&reg, "fixtures/zstd", "v1", &[], false).await;
    let zstd = pulled.blob(&image.layers[1].digest);
    assert!(zstd == image.layers[1].blob, "zstd layer blob copied as is");
    assert_eq!(&zstd[..4], &[0x28, 0xb5, 0x2f, 0xfd], "zstd magic");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_schema2_image() {
    let reg = TestRegistry::start(RegistryOptions::default()).await;
    let style = MediaStyle::Docker;
    let app = [Entry::dir("app"), Entry::file("app/msg", "docker schema2")];
    let image = ImageBuilder::new(style)
        .layer(Layer::build(&passwd_entries(), Compression::Gzip, style))
        .layer(Layer::build(&app, Compression::Gzip, style))
        .user("nobody:nogroup")
        .cmd(&["/app/run"])
        .label("org.example", "yes")
        .build();
    assert_eq!(image.manifest_media_type, DOCKER_MANIFEST);
    let manifest: Value = serde_json::from_slice(&image.manifest).unwrap();
    assert_eq!(manifest["mediaType"], DOCKER_MANIFEST);
    assert_eq!(manifest["config"]["mediaType"], DOCKER_CONFIG);
    let gzip_type = "application/vnd.docker.image.rootfs.diff.tar.gzip";
    assert_eq!(manifest["layers"][1]["mediaType"], gzip_type);
    push_image(&reg.addr(), "fixtures/docker", "latest", &image, None).await;
    assert_served(
        &reg,
        "fixtures/docker",
        "latest",
        &image.manifest,
        &image.manifest_digest,
    )
    .await;
    let pulled = skopeo_copy(&reg, "fixtures/docker", "latest", &[], true).await;
    assert_eq!(pulled.read("app/msg"), "docker schema2");
    assert!(pulled.read("etc/passwd").contains("nobody:x:65534"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_without_media_type() {
    let reg = TestRegistry::start(RegistryOptions::default()).await;
    let style = MediaStyle::Oci;
    let image = ImageBuilder::new(style)
        .layer(Layer::build(
            &[Entry::file("m", "no media type")],
            Compression::Gzip,
            style,
        ))
        .omit_media_type()
        .build();
    let manifest: Value = serde_json::from_slice(&image.manifest).unwrap();
    assert!(manifest.get("mediaType").is_none(), "mediaType omitted");
    push_image(&reg.addr(), "fixtures/nomt", "v1", &image, None).await;
    assert_served(&reg, "fixtures/nomt", "v1", &image.manifest, &image.manifest_digest).await;
    let pulled = skopeo_copy(&reg, "fixtures/nomt", "v1", &[], true).await;
    assert_eq!(pulled.read("m"), "no media type");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_platform_index_and_manifest_list() {
    let reg = TestRegistry::start(RegistryOptions::default()).await;
    for (style, repo) in [
        (MediaStyle::Oci, "fixtures/index"),
        (MediaStyle::Docker, "fixtures/list"),
    ] {
        let arch_image = |arch: &str, variant: Option<&str>| -> BuiltImage {
            ImageBuilder::new(style)
                .platform("linux", arch, variant)
                .layer(Layer::build(&[Entry::file("arch", arch)], Compression::Gzip, style))
                .build()
        };
        let images = vec![arch_image("amd64", None), arch_image("arm64", Some("v8"))];
        let index = BuiltIndex::build(style, images);
        push_index(&reg.addr(), repo, "multi", &index, None).await;
        assert_served(&reg, repo, "multi", &index.manifest, &index.digest).await;
        let listed: Value = serde_json::from_slice(&index.manifest).unwrap();
        assert_eq!(listed["manifests"][1]["platform"]["variant"], "v8");

        let amd64 = skopeo_copy(&reg, repo, "multi", &["--override-arch=amd64"], true).await;
        assert_eq!(amd64.read("arch"), "amd64");
        let arm = ["--override-arch=arm64", "--override-variant=v8"];
        assert_eq!(skopeo_copy(&reg, repo, "multi", &arm, true).await.read("arch"), "arm64");
        let child = &index.images[1];
        let digest = &child.manifest_digest;
        assert_served(&reg, repo, digest, &child.manifest, digest).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn htpasswd_registry_requires_credentials() {
    let reg = TestRegistry::start(RegistryOptions::with_htpasswd("tester", "s3cret")).await;
    let anon = reqwest::get(format!("{}/v2/", reg.url())).await.unwrap();
    assert_eq!(anon.status(), 401);
    let challenge = anon.headers()["www-authenticate"].to_str().unwrap().to_owned();
    assert!(challenge.starts_with("Basic"), "challenge {challenge}");

    let style = MediaStyle::Oci;
    let image = ImageBuilder::new(style)
        .layer(Layer::build(
            &[Entry::file("secret", "behind auth")],
            Compression::Gzip,
            style,
        ))
        .build();
    push_image(&reg.addr(), "private/app", "v1", &image, reg.credentials()).await;
    assert_served(&reg, "private/app", "v1", &image.manifest, &image.manifest_digest).await;
    assert_eq!(skopeo_raw_manifest(&reg, "private/app", "v1").await, image.manifest);
    let pulled = skopeo_copy(&reg, "private/app", "v1", &[], true).await;
    assert_eq!(pulled.read("secret"), "behind auth");

    let src = format!("docker://{}", reg.image_ref("private/app", "v1"));
    let anonymous = std::process::Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", "--no-creds", "--raw", &src])
        .output()
        .unwrap();
    assert!(!anonymous.status.success(), "anonymous inspect must fail");
    let url = format!("{}/v2/private/app/manifests/v1", reg.url());
    let wrong = reqwest::Client::new().get(&url).basic_auth("tester", Some("wrong"));
    assert_eq!(wrong.send().await.unwrap().status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_hosts_toml_and_stop() {
    let mut reg = TestRegistry::start(RegistryOptions::default()).await;
    let style = MediaStyle::Oci;
    let image = ImageBuilder::new(style)
        .layer(Layer::build(&[Entry::file("a", "a")], Compression::Gzip, style))
        .build();
    push_image(&reg.addr(), "logged", "v1", &image, None).await;
    push_image(&reg.addr(), "logged", "v1", &image, None).await;
    let requests = reg.requests();
    let count = |method: &str, path: &str| requests.iter().filter(|r| r.method == method && r.path == path).count();
    assert_eq!(count("PUT", "/v2/logged/manifests/v1"), 2, "log:\n{}", reg.log());
    assert_eq!(
        count("HEAD", &format!("/v2/logged/blobs/{}", image.layers[0].digest)),
        2
    );
    let uploads = |r: &&common::registry::LoggedRequest| r.method == "PUT" && r.path.contains("/uploads/");
    assert_eq!(
        requests.iter().filter(uploads).count(),
        2,
        "layer and config uploaded once"
    );
    assert!(requests.iter().all(|r| r.status < 500));

    let dir = TempDir::new().unwrap();
    let path = reg.write_hosts_toml(dir.path());
    assert_eq!(path, dir.path().join(reg.host()).join("hosts.toml"));
    let text = std::fs::read_to_string(&path).unwrap();
    let server = format!("http://127.0.0.1:{}", reg.port());
    assert!(text.contains(&format!("server = \"{server}\"")), "{text}");
    assert!(text.contains(&format!("[host.\"{server}\"]")), "{text}");
    assert!(text.contains("capabilities = [\"pull\", \"resolve\"]"), "{text}");
    let other = write_hosts_toml(dir.path(), "example.com", "http://127.0.0.1:1");
    assert_eq!(other, dir.path().join("example.com/hosts.toml"));

    reg.stop();
    let after = reqwest::get(format!("{}/v2/", reg.url())).await;
    assert!(after.is_err(), "a stopped registry must not answer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_proxy_passes_refuses_fails_blackholes_stalls_and_drips() {
    use common::registry::fault_proxy::{Fault, FaultProxy};
    use std::time::Duration;
    let reg = TestRegistry::start(RegistryOptions::default()).await;
    let style = MediaStyle::Oci;
    let image = ImageBuilder::new(style)
        .layer(Layer::build(
            &[Entry::file("big", common::images::image::random_bytes(7, 64 * 1024))],
            Compression::None,
            style,
        ))
        .build();
    push_image(&reg.addr(), "faulty", "v1", &image, None).await;
    let proxy = FaultProxy::start(&reg.addr()).await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let blob_url = format!("{}/v2/faulty/blobs/{}", proxy.url(), image.layers[0].digest);
    let quick = |url: &str| http.get(url).timeout(Duration::from_millis(500)).send();

    let pass = http.get(&blob_url).send().await.unwrap();
    assert_eq!(pass.status(), 200);
    assert_eq!(pass.bytes().await.unwrap().as_ref(), image.layers[0].blob.as_slice());

    proxy.set(Fault::Status(500));
    assert_eq!(http.get(&blob_url).send().await.unwrap().status(), 500);

    proxy.set(Fault::Refuse);
    proxy.wait_listening(false).await;
    let refused = quick(&blob_url).await.unwrap_err();
    assert!(refused.is_connect(), "{refused:?}");

    proxy.set(Fault::Blackhole);
    proxy.wait_listening(true).await;
    let hung = quick(&blob_url).await.unwrap_err();
    assert!(hung.is_timeout(), "{hung:?}");

    // A rule for blobs only: manifests pass, the blob stalls after 1000 body bytes.
    proxy.set(Fault::Pass);
    proxy.set_for("/blobs/", Fault::Stall(1000));
    let manifest = http
        .get(format!("{}/v2/faulty/manifests/v1", proxy.url()))
        .header("Accept", common::images::image::OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(manifest.status(), 200);
    let mut stalled = http
        .get(&blob_url)
        .timeout(Duration::from_secs(1))
        .send()
        .await
        .unwrap();
    assert_eq!(stalled.status(), 200, "the head comes at once");
    let mut got = 0;
    let end = loop {
        match stalled.chunk().await {
            Ok(Some(c)) => got += c.len(),
            other => break other,
        }
    };
    assert!(end.is_err() && got == 1000, "{got} bytes, then {end:?}");

    proxy.set_for(
        "/blobs/",
        Fault::Drip {
            chunk: 16 * 1024,
            pause: Duration::from_millis(50),
        },
    );
    let dripped = http.get(&blob_url).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(dripped.as_ref(), image.layers[0].blob.as_slice());

    let log = proxy.requests();
    let faults: Vec<&Fault> = log.iter().filter(|r| r.is_blob_get()).map(|r| &r.fault).collect();
    assert_eq!(
        faults,
        [
            &Fault::Pass,
            &Fault::Status(500),
            &Fault::Blackhole,
            &Fault::Stall(1000),
            &Fault::Drip {
                chunk: 16 * 1024,
                pause: Duration::from_millis(50)
            }
        ],
        "the refused request never reached the proxy: {log:?}"
    );
    let done: Vec<bool> = log
        .iter()
        .filter(|r| r.is_blob_get())
        .map(|r| r.finished.is_some())
        .collect();
    assert_eq!(done, [true, true, false, false, true], "{log:?}");
    assert!(
        log.iter()
            .filter(|r| r.fault == Fault::Pass)
            .all(|r| r.status == Some(200)),
        "{log:?}"
    );
}

#[test]
fn builds_are_deterministic_and_diff_ids_match() {
    let entries = [
        Entry::dir("d"),
        Entry::file("d/f", random_bytes(1, 4096)),
        Entry::whiteout("d/x"),
        Entry::opaque("e"),
        Entry::symlink("l", "d/f"),
        Entry::hardlink("h", "d/f"),
    ];
    for compression in [Compression::None, Compression::Gzip, Compression::Zstd] {
        let a = Layer::build(&entries, compression, MediaStyle::Oci);
        let b = Layer::build(&entries, compression, MediaStyle::Oci);
        assert_eq!(a, b, "{compression:?} layers are deterministic");
        assert_eq!(a.digest, sha256_digest(&a.blob));
        let tar = match compression {
            Compression::None => a.blob.clone(),
            Compression::Gzip => {
                let mut out = Vec::new();
                let mut gz = flate2::read::GzDecoder::new(a.blob.as_slice());
                gz.read_to_end(&mut out).unwrap();
                out
            }
            Compression::Zstd => zstd::decode_all(a.blob.as_slice()).unwrap(),
        };
        assert_eq!(sha256_digest(&tar), a.diff_id);
        let mut archive = tar::Archive::new(tar.as_slice());
        let names: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                assert_eq!(e.header().mtime().unwrap(), common::images::image::MTIME);
                e.path().unwrap().display().to_string()
            })
            .collect();
        assert_eq!(names, ["d/", "d/f", "d/.wh.x", "e/.wh..wh..opq", "l", "h"]);
    }
    assert_eq!(random_bytes(3, 10), random_bytes(3, 10));
    assert_ne!(random_bytes(3, 10), random_bytes(4, 10));
    let layer = Layer::build(&entries, Compression::Gzip, MediaStyle::Oci);
    let build = |user| {
        ImageBuilder::new(MediaStyle::Oci)
            .layer(layer.clone())
            .user(user)
            .build()
    };
    assert_eq!(build("1002").manifest, build("1002").manifest);
    assert_ne!(build("1002").config_digest, build("nobody").config_digest);
}
