//! Registry hosts as containerd's hosts.toml configures them: mirrors tried in order with the upstream
//! server last, so a pull survives a mirror that is down; plain HTTP only where configured.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::daemon::{Daemon, DaemonOptions, pull};
use common::push;
use common::registry::{RegistryOptions, TestRegistry};
use common::setup::small_image;
use tonic::Code;

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn write_hosts(dir: &std::path::Path, registry: &str, body: &str) {
    std::fs::create_dir_all(dir.join(registry)).unwrap();
    std::fs::write(dir.join(registry).join("hosts.toml"), body).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_that_is_down_falls_through_to_the_upstream_server() {
    let upstream = TestRegistry::start(RegistryOptions::default()).await;
    let img = small_image(1, None);
    push::push_image(&upstream.addr(), "app", "v1", &img, None).await;
    let hosts = tempfile::tempdir().unwrap();
    let dead = closed_port();
    write_hosts(
        hosts.path(),
        &upstream.addr(),
        &format!(
            "server = \"{}\"\n\n[host.\"http://127.0.0.1:{dead}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
            upstream.url()
        ),
    );
    let d = Daemon::start(DaemonOptions {
        hosts_dir: Some(hosts.path().into()),
        ..Default::default()
    })
    .await;
    let mut c = d.client().await;
    assert_eq!(
        pull(&mut c, &format!("{}/app:v1", upstream.addr()), None)
            .await
            .unwrap(),
        img.config_digest
    );
    assert!(
        d.log().contains(&format!("127.0.0.1:{dead}")),
        "the failed mirror attempt is logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_serves_when_the_upstream_is_down() {
    let mut upstream = TestRegistry::start(RegistryOptions::default()).await;
    let mirror = TestRegistry::start(RegistryOptions::default()).await;
    let img = small_image(2, None);
    push::push_image(&mirror.addr(), "team/app", "v1", &img, None).await;
    let upstream_addr = upstream.addr();
    upstream.stop();
    let hosts = tempfile::tempdir().unwrap();
    write_hosts(
        hosts.path(),
        &upstream_addr,
        &format!(
            "server = \"http://{upstream_addr}\"\n\n[host.\"{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
            mirror.url()
        ),
    );
    let d = Daemon::start(DaemonOptions {
        hosts_dir: Some(hosts.path().into()),
        ..Default::default()
    })
    .await;
    let mut c = d.client().await;
    assert_eq!(
        pull(&mut c, &format!("{upstream_addr}/team/app:v1"), None)
            .await
            .unwrap(),
        img.config_digest
    );
    // The mirror was asked with the upstream's name in `ns`, as containerd asks.
    let asked = mirror.requests();
    assert!(
        asked.iter().any(|r| r.path.starts_with("/v2/team/app/manifests/v1") && r.path.contains(&format!("ns={upstream_addr}"))),
        "{asked:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_without_resolve_is_used_for_blobs_only() {
    let upstream = TestRegistry::start(RegistryOptions::default()).await;
    let mirror = TestRegistry::start(RegistryOptions::default()).await;
    let img = small_image(3, None);
    push::push_image(&upstream.addr(), "app", "v1", &img, None).await;
    push::push_image(&mirror.addr(), "app", "v1", &img, None).await;
    let hosts = tempfile::tempdir().unwrap();
    write_hosts(
        hosts.path(),
        &upstream.addr(),
        &format!(
            "server = \"{}\"\n\n[host.\"{}\"]\n  capabilities = [\"pull\"]\n",
            upstream.url(),
            mirror.url()
        ),
    );
    let d = Daemon::start(DaemonOptions {
        hosts_dir: Some(hosts.path().into()),
        ..Default::default()
    })
    .await;
    let mut c = d.client().await;
    pull(&mut c, &format!("{}/app:v1", upstream.addr()), None)
        .await
        .unwrap();
    let on_mirror = mirror.requests();
    assert!(
        !on_mirror
            .iter()
            .any(|r| r.method == "GET" && r.path.contains("/manifests/v1")),
        "tags are not resolved on a pull-only mirror: {on_mirror:?}"
    );
    assert!(
        on_mirror
            .iter()
            .any(|r| r.method == "GET" && r.path.contains("/blobs/")),
        "blobs come from the mirror: {on_mirror:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_is_used_only_where_configured() {
    let registry = TestRegistry::start(RegistryOptions::default()).await;
    let img = small_image(4, None);
    push::push_image(&registry.addr(), "app", "v1", &img, None).await;
    let image = format!("{}/app:v1", registry.addr());

    let unconfigured = Daemon::start(DaemonOptions::default()).await;
    let mut c = unconfigured.client().await;
    let err = pull(&mut c, &image, None).await.unwrap_err();
    assert_eq!(
        err.code(),
        Code::Unknown,
        "https to a plain-http registry fails: {err:?}"
    );
    assert!(err.message().starts_with("RegistryUnavailable: "), "{}", err.message());
    assert!(
        !registry
            .requests()
            .iter()
            .any(|r| r.method == "GET" && r.path.contains("/manifests/")),
        "no plain-http request may be made without configuration"
    );

    let hosts = tempfile::tempdir().unwrap();
    registry.write_hosts_toml(hosts.path());
    let configured = Daemon::start(DaemonOptions {
        hosts_dir: Some(hosts.path().into()),
        ..Default::default()
    })
    .await;
    let mut c = configured.client().await;
    assert_eq!(pull(&mut c, &image, None).await.unwrap(), img.config_digest);
}
