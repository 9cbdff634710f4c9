//! kubelet's ensure logic in the server, end to end: the progress timeout (a stalled pull ends, a slow one
//! does not), the metrics endpoint after a scripted workload, and a caller going away from a shared pull.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::daemon::setup::{Setup, small_image};
use common::daemon::{DaemonOptions, pull};
use common::images::image::OCI_MANIFEST;
use common::registry::RegistryOptions;
use common::registry::fake_registry::{Canned, FakeRegistry, daemon_for, slow_registry};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_pull_times_out_and_a_slow_one_does_not() {
    let img = small_image(70, None);
    let fake = FakeRegistry::start().await;
    for repo in ["stalled", "slow"] {
        fake.manifest(repo, "v1", OCI_MANIFEST, &img.manifest);
        fake.blob(repo, &img.config_digest, img.config.clone());
        fake.blob(repo, &img.layers[0].digest, img.layers[0].blob.clone());
    }
    let big = &img.layers[1];
    let mut stalled = Canned::ok("application/octet-stream", big.blob.clone());
    stalled.stall_after = Some((64, Duration::from_secs(60)));
    fake.route(&format!("/v2/stalled/blobs/{}", big.digest), stalled);
    let mut slow = Canned::ok("application/octet-stream", big.blob.clone());
    slow.drip = Some((big.blob.len() / 8 + 1, Duration::from_millis(400))); // ~3 s in all, never idle 1.5 s.
    fake.route(&format!("/v2/slow/blobs/{}", big.digest), slow);
    let (_h, d) = daemon_for(
        &fake,
        Some("[pull]\nbackoff_initial = \"0s\"\nprogress_timeout = \"1500ms\"\n"),
    )
    .await;
    let mut c = d.client().await;

    let started = Instant::now();
    let err = pull(&mut c, &format!("{}/stalled:v1", fake.addr()), None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert!(err.message().contains("no progress"), "{}", err.message());
    assert!(started.elapsed() < Duration::from_secs(10));
    // The cancelled download's worker notices the cut stream and drops its partial file.
    let deadline = Instant::now() + Duration::from_secs(5);
    while common::daemon::ingest_files(&d.root) > 0 {
        assert!(Instant::now() < deadline, "the cancelled download is never cleaned up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    assert_eq!(
        pull(&mut c, &format!("{}/slow:v1", fake.addr()), None).await.unwrap(),
        img.config_digest
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_a_scripted_workload() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = format!("metrics_addr = \"127.0.0.1:{port}\"\n[pull]\nbackoff_initial = \"0s\"\n");
    let s = Setup::start_with(
        RegistryOptions::default(),
        DaemonOptions {
            config: Some(config),
            ..Default::default()
        },
    )
    .await;
    let img = small_image(80, None);
    s.push("m", "v1", &img).await;
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let mut c = s.daemon.client().await;
        let image = s.image("m", "v1");
        tasks.push(tokio::spawn(async move { pull(&mut c, &image, None).await }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let mut c = s.daemon.client().await;
    pull(&mut c, &s.image("absent", "v1"), None).await.unwrap_err();

    let out = std::process::Command::new("curl")
        .args(["-sf", &format!("http://127.0.0.1:{port}/metrics")])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let value = |name: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
    };
    let total_blobs: u64 = img.config.len() as u64 + img.layers.iter().map(|l| l.size()).sum::<u64>();
    assert_eq!(value("imaged_pulls_total{result=\"success\"}"), 3.0);
    assert_eq!(value("imaged_pulls_total{result=\"failure\"}"), 1.0);
    // Every request either ran a pull or joined one: pulls run = 3 - joined + the failed one.
    let joined = value("imaged_coalesced_pulls_total");
    assert_eq!(
        value("imaged_pull_duration_seconds_count"),
        3.0 - joined + 1.0,
        "joined pulls counted"
    );
    assert!(
        value("imaged_pulled_bytes_total") >= (total_blobs - img.config.len() as u64) as f64,
        "layer bytes counted"
    );
    assert_eq!(value("imaged_pulls_in_progress"), 0.0);
    assert_eq!(value("imaged_images"), 1.0);
    assert!(value("imaged_store_bytes") > 0.0);
    assert!(text.contains("imaged_gc_freed_bytes_total"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_going_away_does_not_cancel_the_shared_pull() {
    let images = vec![small_image(90, None)];
    let fake = slow_registry(&images).await;
    let (_h, d) = daemon_for(&fake, Some("[pull]\nbackoff_initial = \"0s\"\n")).await;
    let image = format!("{}/app0:v1", fake.addr());
    let mut first = d.client().await;
    let i1 = image.clone();
    let leaving = tokio::spawn(async move { pull(&mut first, &i1, None).await });
    // The first request's pull has reached the registry, whose layers then take at least 300 ms to drip.
    common::wait::until(
        "the first pull to reach the registry",
        Duration::from_secs(30),
        || async { fake.seen().iter().any(|r| r.contains("/manifests/v1")) },
    )
    .await;
    let mut second = d.client().await;
    let i2 = image.clone();
    let staying = tokio::spawn(async move { pull(&mut second, &i2, None).await });
    let pulling = format!("reason=\"Pulling\" image={image}");
    common::wait::until("the second request to join", Duration::from_secs(30), || async {
        d.log().matches(&pulling).count() == 2
    })
    .await;
    leaving.abort(); // The first caller hangs up mid-pull (its RPC is cancelled).
    assert_eq!(staying.await.unwrap().unwrap(), images[0].config_digest);
    let manifests = fake.seen().iter().filter(|r| r.contains("/manifests/v1")).count();
    assert_eq!(manifests, 1, "one shared pull: {:?}", fake.seen());
}
