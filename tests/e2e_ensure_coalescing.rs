//! kubelet's ensure logic in the server, end to end: coalescing (counted in the registry's access log) and
//! the pull limits (parallel pulls, the registry rate limit). Back-off and policy are in
//! `e2e_ensure_backoff.rs`; the progress watchdog, metrics and callers leaving in `e2e_ensure_watchdog.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::daemon::pull;
use common::daemon::setup::{Setup, small_image};
use common::registry::fake_registry::{daemon_for, slow_registry};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_pulls_share_one_registry_pull() {
    let s = Setup::start().await;
    let img = small_image(1, None);
    s.push("app", "v1", &img).await;
    let image = s.image("app", "v1");
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let mut c = s.daemon.client().await;
        let image = image.clone();
        tasks.push(tokio::spawn(async move { pull(&mut c, &image, None).await }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), img.config_digest);
    }
    assert_eq!(s.registry.gets("/manifests/v1"), 1, "{:?}", s.registry.requests());
    for blob in std::iter::once(&img.config_digest).chain(img.layers.iter().map(|l| &l.digest)) {
        assert_eq!(
            s.registry.gets(&format!("/blobs/{blob}")),
            1,
            "blob {blob} fetched more than once"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_images_sharing_a_base_fetch_it_once() {
    let s = Setup::start().await;
    let (base, a, b) = common::daemon::setup::sharing_a_base(5, 3 << 20);
    s.push("a", "v1", &a).await;
    s.push("b", "v1", &b).await;
    let (mut c1, mut c2) = (s.daemon.client().await, s.daemon.client().await);
    let (ia, ib) = (s.image("a", "v1"), s.image("b", "v1"));
    let (ra, rb) = tokio::join!(pull(&mut c1, &ia, None), pull(&mut c2, &ib, None));
    assert_eq!(
        (ra.unwrap(), rb.unwrap()),
        (a.config_digest.clone(), b.config_digest.clone())
    );
    let base_gets = s
        .registry
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path.ends_with(&base.digest))
        .count();
    assert_eq!(base_gets, 1, "the shared base layer is downloaded once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_parallel_pulls_1_runs_pulls_one_at_a_time_in_order() {
    let images: Vec<_> = (0..3).map(|i| small_image(40 + i, None)).collect();
    let fake = slow_registry(&images).await;
    let (_h, d) = daemon_for(
        &fake,
        Some("[pull]\nbackoff_initial = \"0s\"\nmax_parallel_pulls = 1\n"),
    )
    .await;
    let mut tasks = Vec::new();
    for i in 0..3 {
        let mut c = d.client().await;
        let image = format!("{}/app{i}:v1", fake.addr());
        let pulling = format!("reason=\"Pulling\" image={image}");
        tasks.push(tokio::spawn(async move { pull(&mut c, &image, None).await }));
        // Arrival order 0, 1, 2: the next request is sent once the daemon has taken this one (a spawned
        // client on a loaded machine can otherwise overtake the one before).
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !d.log().contains(&pulling) {
            assert!(
                std::time::Instant::now() < deadline,
                "request {i} never arrived:\n{}",
                d.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    // Each image's requests form one block, in arrival order: no pull started before the previous ended.
    let order: Vec<usize> = fake
        .seen()
        .iter()
        .filter_map(|r| r.split("/v2/app").nth(1).and_then(|rest| rest[..1].parse().ok()))
        .collect();
    let mut blocks = order.clone();
    blocks.dedup();
    assert_eq!(blocks, vec![0, 1, 2], "requests interleaved: {order:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_waits_for_a_token_and_refuses_only_past_its_bound() {
    let images: Vec<_> = (0..3).map(|i| small_image(50 + i, None)).collect();
    let fake = slow_registry(&images).await;
    let (_h, d) = daemon_for(
        &fake,
        Some("[pull]\nbackoff_initial = \"0s\"\nqps = 2.0\nburst = 1\nmax_qps_wait = \"10s\"\n"),
    )
    .await;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..3 {
        let mut c = d.client().await;
        let image = format!("{}/app{i}:v1", fake.addr());
        tasks.push(tokio::spawn(async move { pull(&mut c, &image, None).await }));
    }
    for t in tasks {
        t.await.unwrap().expect("a pull over the rate waits instead of failing");
    }
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "three pulls at 2/s with burst 1 take at least 1 s"
    );

    let (_h2, strict) = daemon_for(
        &fake,
        Some("[pull]\nbackoff_initial = \"0s\"\nqps = 0.5\nburst = 1\nmax_qps_wait = \"100ms\"\n"),
    )
    .await;
    let mut c = strict.client().await;
    pull(&mut c, &format!("{}/app0:v1", fake.addr()), None).await.unwrap();
    let err = pull(&mut c, &format!("{}/app1:v1", fake.addr()), None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("pull QPS exceeded"), "{}", err.message());
}
