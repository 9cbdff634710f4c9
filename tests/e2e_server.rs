//! The daemon as an operator meets it: socket and store permissions, a stale socket replaced, a live one
//! never stolen, one daemon per store, graceful shutdown, config errors that name the key, images kept
//! across a restart and crash leftovers cleaned, and ListImages' cached answer following every change.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::process::Stdio;

use common::daemon::setup::{Setup, small_image};
use common::daemon::{Daemon, DaemonOptions, list, pull, remove, status};
use imaged::proto::runtime::v1 as cri;

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

/// Runs a second `imaged serve` to completion (it must fail) and returns its stderr.
fn run_failing(mut cmd: std::process::Command) -> String {
    let out = cmd.stdin(Stdio::null()).output().expect("run imaged");
    assert!(!out.status.success(), "imaged should have refused to start");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_and_store_have_safe_permissions() {
    let d = Daemon::start(DaemonOptions::default()).await;
    let meta = std::fs::symlink_metadata(&d.socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(mode(&d.socket), 0o660);
    assert_eq!(mode(d.socket.parent().unwrap()), 0o750);
    assert_eq!(mode(&d.root), 0o700);
    assert!(d.root.join("content/oci-layout").is_file());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_socket_is_replaced_and_a_live_one_is_not_stolen() {
    let mut d = Daemon::start(DaemonOptions::default()).await;

    // Another daemon (own store) must not take over the live socket.
    let err = run_failing(d.command_for(&d.dir().join("other-root"), &d.socket));
    assert!(err.contains("in use"), "{err}");
    let mut c = d.client().await;
    c.image_fs_info(imaged::proto::runtime::v1::ImageFsInfoRequest {})
        .await
        .expect("the first daemon still serves");

    // After a crash the socket file remains; the next start replaces it.
    d.kill();
    assert!(d.socket.exists());
    d.start_again().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_daemon_per_store() {
    let d = Daemon::start(DaemonOptions::default()).await;
    let err = run_failing(d.command_for(&d.root, &d.dir().join("other.sock")));
    assert!(
        err.contains(&d.root.display().to_string()) && err.contains("another imaged"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_shuts_down_cleanly_and_removes_the_socket() {
    let mut d = Daemon::start(DaemonOptions::default()).await;
    let status = d.stop().unwrap();
    assert!(status.success(), "exit status {status}; log:\n{}", d.log());
    assert!(!d.socket.exists());
    assert!(d.log().contains("shutting down"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_errors_name_the_key_and_settings_apply() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.toml");
    std::fs::write(&cfg, "root = \"/tmp/x\"\n[registry]\nhost_dir = \"/etc/x\"\n").unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_imaged"));
    cmd.args(["serve", "--config", cfg.to_str().unwrap()]);
    let err = run_failing(cmd);
    assert!(err.contains("host_dir") && err.contains(cfg.to_str().unwrap()), "{err}");

    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_imaged"));
    cmd.args(["serve", "--config", dir.path().join("missing.toml").to_str().unwrap()]);
    let err = run_failing(cmd);
    assert!(err.contains("missing.toml"), "{err}");

    // A valid file is honoured: the handler it lists is accepted.
    let d = Daemon::start(DaemonOptions {
        config: Some("runtime_handlers = [\"runc\"]\n[registry]\nmax_concurrent_downloads = 2\n".into()),
        ..Default::default()
    })
    .await;
    let mut c = d.client().await;
    let err = common::daemon::pull_with_handler(&mut c, "registry.invalid/x:1", "runc")
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        tonic::Code::Unknown,
        "runc is accepted, the host is not reachable: {err:?}"
    );
    assert!(err.message().starts_with("RegistryUnavailable: "), "{}", err.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_during_a_pull_leaves_a_consistent_store() {
    use common::registry::fake_registry::{Canned, FakeRegistry};
    let fake = FakeRegistry::start().await;
    let img = common::daemon::setup::small_image(42, None);
    fake.manifest("app", "v1", common::images::image::OCI_MANIFEST, &img.manifest);
    fake.blob("app", &img.config_digest, img.config.clone());
    fake.blob("app", &img.layers[0].digest, img.layers[0].blob.clone());
    // The second layer sends a few bytes and then nothing: the pull is in flight when SIGTERM comes.
    let mut stalled = Canned::ok("application/octet-stream", img.layers[1].blob.clone());
    stalled.stall_after = Some((10, std::time::Duration::from_secs(120)));
    fake.route(&format!("/v2/app/blobs/{}", img.layers[1].digest), stalled);
    let hosts = tempfile::tempdir().unwrap();
    common::registry::write_hosts_toml(hosts.path(), fake.addr(), &format!("http://{}", fake.addr()));
    let mut d = Daemon::start(DaemonOptions {
        hosts_dir: Some(hosts.path().into()),
        ..Default::default()
    })
    .await;

    let mut c = d.client().await;
    let image = format!("{}/app:v1", fake.addr());
    let pulling = tokio::spawn(async move { common::daemon::pull(&mut c, &image, None).await });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !fake.seen().iter().any(|r| r.contains(&img.layers[1].digest)) {
        assert!(
            std::time::Instant::now() < deadline,
            "the pull never reached the stalled layer"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let started = std::time::Instant::now();
    let status = d.stop().unwrap();
    assert!(status.success(), "exit status {status}; log:\n{}", d.log());
    assert!(
        started.elapsed() < std::time::Duration::from_secs(15),
        "shutdown took {:?}",
        started.elapsed()
    );
    assert!(
        pulling.await.unwrap().is_err(),
        "the cut pull reports failure to its caller"
    );

    // The next start finds no partial blob, no orphan and no image.
    d.start_again().await;
    assert_eq!(common::daemon::ingest_files(&d.root), 0);
    assert!(
        common::daemon::blobs(&d.root).is_empty(),
        "{:?}",
        common::daemon::blobs(&d.root)
    );
    let mut c = d.client().await;
    assert!(common::daemon::list(&mut c).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_client_connection_does_not_delay_shutdown() {
    let mut d = Daemon::start(DaemonOptions::default()).await;
    // kubelet keeps its connection open for the daemon's whole life.
    let mut c = d.client().await;
    c.image_fs_info(imaged::proto::runtime::v1::ImageFsInfoRequest {})
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let status = d.stop().unwrap();
    assert!(status.success(), "{status}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(3),
        "shutdown took {:?}",
        started.elapsed()
    );
    drop(c);
}

/// ListImages answers from a cached encoding: every change (pull, tag moved, removal) must show at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_images_follows_every_change_of_the_store() {
    let s = Setup::start().await;
    let (a, b) = (small_image(11, None), small_image(12, Some("1002")));
    s.push("app", "v1", &a).await;
    let mut c = s.daemon.client().await;
    let summary = |images: Vec<cri::Image>| -> Vec<(String, Vec<String>)> {
        let mut v: Vec<_> = images.into_iter().map(|i| (i.id, i.repo_tags)).collect();
        v.sort();
        v
    };
    assert!(list(&mut c).await.is_empty());
    assert!(list(&mut c).await.is_empty(), "the cached empty answer");

    pull(&mut c, &s.image("app", "v1"), None).await.unwrap();
    let tag = s.image("app", "v1");
    assert_eq!(
        summary(list(&mut c).await),
        vec![(a.config_digest.clone(), vec![tag.clone()])]
    );

    // The tag moves to another image: both are listed, the old one untagged.
    s.push("app", "v1", &b).await;
    pull(&mut c, &s.image("app", "v1"), None).await.unwrap();
    let mut expected = vec![
        (a.config_digest.clone(), vec![]),
        (b.config_digest.clone(), vec![tag.clone()]),
    ];
    expected.sort();
    assert_eq!(summary(list(&mut c).await), expected);
    let listed_b = list(&mut c)
        .await
        .into_iter()
        .find(|i| i.id == b.config_digest)
        .unwrap();
    assert_eq!(listed_b.uid.map(|u| u.value), Some(1002));
    assert_eq!(
        Some(listed_b),
        status(&mut c, &b.config_digest).await,
        "ListImages and ImageStatus agree"
    );

    remove(&mut c, &a.config_digest).await.unwrap();
    assert_eq!(summary(list(&mut c).await), vec![(b.config_digest.clone(), vec![tag])]);
    remove(&mut c, &b.config_digest).await.unwrap();
    assert!(list(&mut c).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_survive_a_restart_and_crash_leftovers_are_cleaned() {
    let mut s = Setup::start().await;
    let img = small_image(20, Some("nobody"));
    s.push("keep", "v1", &img).await;
    let mut c = s.daemon.client().await;
    pull(&mut c, &s.image("keep", "v1"), None).await.unwrap();
    let before = common::daemon::blobs(&s.daemon.root);

    s.daemon.restart().await;
    let mut c = s.daemon.client().await;
    assert_eq!(status(&mut c, &s.image("keep", "v1")).await.unwrap().username, "nobody");

    // A crash: the daemon dies with a partial ingest and a committed blob no image got to reference.
    s.daemon.kill();
    std::fs::write(s.daemon.root.join("content/ingest/partial-1"), b"half a layer").unwrap();
    let orphan = b"committed but never recorded";
    let orphan_hex = common::images::image::sha256_digest(orphan)
        .trim_start_matches("sha256:")
        .to_string();
    std::fs::write(s.daemon.root.join("content/blobs/sha256").join(&orphan_hex), orphan).unwrap();
    s.daemon.start_again().await;
    assert_eq!(common::daemon::ingest_files(&s.daemon.root), 0);
    // The sweep runs in the background once the socket is served.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while common::daemon::blobs(&s.daemon.root) != before && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(
        common::daemon::blobs(&s.daemon.root),
        before,
        "the orphan is swept, the image's blobs kept"
    );
    let mut c = s.daemon.client().await;
    assert!(status(&mut c, &s.image("keep", "v1")).await.is_some());
    pull(&mut c, &s.image("keep", "v1"), None)
        .await
        .expect("pulls work after a crash");
}
