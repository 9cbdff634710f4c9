//! Registry hosts as containerd's hosts.toml configures them: mirrors tried in order with the upstream
//! server last, so a pull survives a mirror that is down; plain HTTP only where configured.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::daemon::setup::{Setup, small_image};
use common::daemon::{Daemon, DaemonOptions, pull};
use common::registry::push;
use common::registry::{RegistryOptions, TestRegistry, plain_hosts_toml};
use tonic::Code;

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_that_is_down_falls_through_to_the_upstream_server() {
    let upstream = TestRegistry::start(RegistryOptions::default()).await;
    let img = small_image(1, None);
    push::push_image(&upstream.addr(), "app", "v1", &img, None).await;
    let dead = closed_port();
    let hosts = format!(
        "server = \"{}\"\n\n[host.\"http://127.0.0.1:{dead}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
        upstream.url()
    );
    let s = Setup::with_hosts(upstream, &hosts, DaemonOptions::default()).await;
    let mut c = s.daemon.client().await;
    assert_eq!(
        pull(&mut c, &s.image("app", "v1"), None).await.unwrap(),
        img.config_digest
    );
    assert!(
        s.daemon.log().contains(&format!("127.0.0.1:{dead}")),
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
    let hosts = format!(
        "server = \"http://{upstream_addr}\"\n\n[host.\"{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
        mirror.url()
    );
    let s = Setup::with_hosts(upstream, &hosts, DaemonOptions::default()).await;
    let mut c = s.daemon.client().await;
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
    let hosts = format!(
        "server = \"{}\"\n\n[host.\"{}\"]\n  capabilities = [\"pull\"]\n",
        upstream.url(),
        mirror.url()
    );
    let s = Setup::with_hosts(upstream, &hosts, DaemonOptions::default()).await;
    let mut c = s.daemon.client().await;
    pull(&mut c, &s.image("app", "v1"), None).await.unwrap();
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

    let hosts = plain_hosts_toml(&registry.url());
    let configured = Setup::with_hosts(registry, &hosts, DaemonOptions::default()).await;
    let mut c = configured.daemon.client().await;
    assert_eq!(pull(&mut c, &image, None).await.unwrap(), img.config_digest);
}
