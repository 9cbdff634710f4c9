//! A real pull-through cache as a node's mirror: Debian's docker-registry in proxy mode (`proxy.remoteurl`)
//! in front of the test registry, configured in hosts.toml. Pulls go through it; a second node (another
//! imaged, another root) gets the blobs from the cache without the upstream serving them again; with the
//! cache stopped, pulls fall back to the upstream.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::daemon::setup::sharing_a_base;
use common::daemon::{Daemon, DaemonOptions, pull};
use common::images::image::BuiltImage;
use common::registry::push;
use common::registry::{LoggedRequest, RegistryOptions, TestRegistry};

/// The blob GETs in `log` made by imaged (`by_imaged`) or by anyone else (the cache, for `false`).
fn blob_gets(log: &[LoggedRequest], by_imaged: bool) -> Vec<String> {
    log.iter()
        .filter(|r| r.method == "GET" && r.path.contains("/blobs/") && r.status == 200)
        .filter(|r| r.user_agent.starts_with("imaged/") == by_imaged)
        .map(|r| r.path.split('?').next().unwrap_or_default().to_string())
        .collect()
}

fn blobs_of(img: &BuiltImage) -> Vec<String> {
    let mut out: Vec<String> = img.layers.iter().map(|l| l.digest.clone()).collect();
    out.push(img.config_digest.clone());
    out
}

/// Waits until the cache's storage holds every blob of `img` (it stores what it fetched in the background).
async fn wait_cached(cache: &TestRegistry, img: &BuiltImage) {
    let stored = |d: &str| {
        let hex = &d["sha256:".len()..];
        cache
            .dir()
            .join("storage/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
            .is_file()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !blobs_of(img).iter().all(|d| stored(d)) {
        assert!(
            Instant::now() < deadline,
            "the cache never stored the blobs; log:\n{}",
            cache.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn node(hosts: &Path) -> Daemon {
    Daemon::start(DaemonOptions {
        hosts_dir: Some(hosts.into()),
        ..Default::default()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_through_cache_serves_the_nodes_and_the_upstream_takes_over_when_it_stops() {
    let upstream = TestRegistry::start(RegistryOptions::default()).await;
    let (_, img, other) = sharing_a_base(71, 256 * 1024);
    push::push_image(&upstream.addr(), "team/app", "v1", &img, None).await;
    push::push_image(&upstream.addr(), "team/app", "v2", &other, None).await;
    let mut cache = TestRegistry::start(RegistryOptions {
        proxy_remote: Some(upstream.url()),
        ..Default::default()
    })
    .await;
    let hosts = tempfile::tempdir().unwrap();
    let dir = hosts.path().join(upstream.addr());
    std::fs::create_dir_all(&dir).unwrap();
    let toml = format!(
        "server = \"{}\"\n\n[host.\"{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
        upstream.url(),
        cache.url()
    );
    std::fs::write(dir.join("hosts.toml"), toml).unwrap();
    let image = |tag: &str| format!("{}/team/app:{tag}", upstream.addr());

    // The first node pulls through the cache, which fetches from the upstream.
    let first = node(hosts.path()).await;
    let mut c = first.client().await;
    assert_eq!(pull(&mut c, &image("v1"), None).await.unwrap(), img.config_digest);
    let mut wanted = blobs_of(&img);
    wanted.sort();
    let mut at_cache = blob_gets(&cache.requests(), true);
    at_cache.sort();
    let expected: Vec<String> = wanted.iter().map(|d| format!("/v2/team/app/blobs/{d}")).collect();
    assert_eq!(at_cache, expected, "every blob came through the cache");
    assert!(
        blob_gets(&upstream.requests(), true).is_empty(),
        "imaged did not go to the upstream"
    );
    assert!(
        !blob_gets(&upstream.requests(), false).is_empty(),
        "the cache fetched from the upstream"
    );
    wait_cached(&cache, &img).await;

    // A second node gets the blobs from the cache alone.
    let upstream_before = upstream.requests().len();
    let second = node(hosts.path()).await;
    let mut c2 = second.client().await;
    assert_eq!(pull(&mut c2, &image("v1"), None).await.unwrap(), img.config_digest);
    assert_eq!(
        blob_gets(&cache.requests(), true).len(),
        2 * wanted.len(),
        "both nodes asked the cache"
    );
    let since = &upstream.requests()[upstream_before..];
    assert!(
        blob_gets(since, true).is_empty() && blob_gets(since, false).is_empty(),
        "the upstream served no blob for the second node: {since:?}"
    );

    // With the cache down, a node pulls from the upstream.
    cache.stop();
    let upstream_before = upstream.requests().len();
    assert_eq!(pull(&mut c2, &image("v2"), None).await.unwrap(), other.config_digest);
    let direct = blob_gets(&upstream.requests()[upstream_before..], true);
    // The base layer is already on the second node; the rest comes from the upstream.
    let fresh: Vec<String> = blobs_of(&other)
        .into_iter()
        .filter(|d| !blobs_of(&img).contains(d))
        .collect();
    for d in &fresh {
        assert!(
            direct.iter().any(|p| p.ends_with(d.as_str())),
            "{d} not fetched from the upstream: {direct:?}"
        );
    }
    assert!(
        second.log().contains(&cache.addr()),
        "the failed cache attempt is logged"
    );
}
