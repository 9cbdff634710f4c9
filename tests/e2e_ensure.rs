//! kubelet's ensure logic in the server, end to end: coalescing (counted in the registry's access log),
//! back-off and recovery, pull limits, server-side pull policy (counting registry requests), the
//! progress timeout, stale-if-unavailable, events with the pod, and the metrics endpoint.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::daemon::setup::{Setup, small_image};
use common::daemon::{DaemonOptions, pull, spec};
use common::images::image::OCI_MANIFEST;
use common::registry::RegistryOptions;
use common::registry::fake_registry::{Canned, FakeRegistry, daemon_for};
use imaged::proto::runtime::v1 as cri;
use tonic::Code;

fn gets(s: &Setup, needle: &str) -> usize {
    s.registry
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path.contains(needle))
        .count()
}

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
    assert_eq!(gets(&s, "/manifests/v1"), 1, "{:?}", s.registry.requests());
    for blob in std::iter::once(&img.config_digest).chain(img.layers.iter().map(|l| &l.digest)) {
        assert_eq!(
            gets(&s, &format!("/blobs/{blob}")),
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

fn backoff_config(extra: &str) -> String {
    format!("[pull]\nbackoff_initial = \"1s\"\nbackoff_max = \"2s\"\n{extra}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_image_backs_off_and_recovers_when_served() {
    let s = Setup::start_with(
        RegistryOptions::default(),
        DaemonOptions {
            config: Some(backoff_config("")),
            ..Default::default()
        },
    )
    .await;
    let image = s.image("late", "v1");
    let sandbox = |uid: &str| cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: "web".into(),
            uid: uid.into(),
            namespace: "prod".into(),
            attempt: 0,
        }),
        ..Default::default()
    };
    let mut c = s.daemon.client().await;
    let req = |uid: &str| cri::PullImageRequest {
        image: spec(&image),
        auth: None,
        sandbox_config: Some(sandbox(uid)),
    };

    let first = c.pull_image(req("pod-1")).await.unwrap_err();
    assert_eq!(first.code(), Code::NotFound, "{first:?}");
    assert!(first.message().starts_with("pulling image "), "{}", first.message());
    common::runtimes::kubelet::assert_reason_once(&first, &image, "ErrImagePull");
    let manifests_before = gets(&s, "/manifests/v1");

    let second = c.pull_image(req("pod-1")).await.unwrap_err();
    assert!(
        second
            .message()
            .starts_with(&format!("Back-off pulling image \"{image}\": ")),
        "{}",
        second.message()
    );
    common::runtimes::kubelet::assert_reason_once(&second, &image, "ErrImagePull");
    assert_eq!(
        gets(&s, "/manifests/v1"),
        manifests_before,
        "a backing-off request does not reach the registry"
    );

    // Another pod has its own key.
    let other = c.pull_image(req("pod-2")).await.unwrap_err();
    assert_eq!(other.code(), Code::NotFound);

    // The registry starts serving the image; once the back-off has passed the pull succeeds. Until then
    // each request is refused by the back-off (a refusal does not extend it, as in kubelet).
    let img = small_image(3, None);
    s.push("late", "v1", &img).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let pulled = loop {
        match c.pull_image(req("pod-1")).await {
            Ok(r) => break r.into_inner().image_ref,
            Err(e) => assert!(
                e.message().starts_with("Back-off pulling image ") && Instant::now() < deadline,
                "{e:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(pulled, img.config_digest);
    let log = s.daemon.log();
    for event in ["Pulling", "Failed", "BackOff", "Pulled"] {
        assert!(
            log.contains(&format!("reason=\"{event}\"")) || log.contains(&format!("reason={event}")),
            "no {event} event:\n{log}"
        );
    }
    assert!(log.contains("pod-1") && log.contains("prod"), "events name the pod");
}

/// A fake registry serving `images` as `app{i}:v1`, each blob slowed down so overlap would show.
async fn slow_registry(images: &[common::images::image::BuiltImage]) -> FakeRegistry {
    let fake = FakeRegistry::start().await;
    for (i, img) in images.iter().enumerate() {
        let repo = format!("app{i}");
        fake.manifest(&repo, "v1", OCI_MANIFEST, &img.manifest);
        fake.blob(&repo, &img.config_digest, img.config.clone());
        for l in &img.layers {
            let mut c = Canned::ok("application/octet-stream", l.blob.clone());
            c.drip = Some((l.blob.len() / 2 + 1, Duration::from_millis(150)));
            fake.route(&format!("/v2/{repo}/blobs/{}", l.digest), c);
        }
    }
    fake
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_policies_decide_what_reaches_the_registry() {
    let config = "[pull]\nbackoff_initial = \"0s\"\nstale_if_unavailable = true\n[pull.policy]\ndefault = \"always\"\nrules = [\n  { pattern = \"*never*\", policy = \"never\" },\n  { pattern = \"*lazy*\", policy = \"if-not-present\" },\n]\n";
    let mut s = Setup::start_with(
        RegistryOptions::default(),
        DaemonOptions {
            config: Some(config.into()),
            ..Default::default()
        },
    )
    .await;
    let (never, lazy, always) = (small_image(60, None), small_image(61, None), small_image(62, None));
    s.push("never", "v1", &never).await;
    s.push("lazy", "v1", &lazy).await;
    s.push("always", "v1", &always).await;
    let mut c = s.daemon.client().await;

    let before = s.registry.requests().len();
    let err = pull(&mut c, &s.image("never", "v1"), None).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().starts_with("Container image"), "{}", err.message());
    common::runtimes::kubelet::assert_reason_once(&err, &s.image("never", "v1"), "ErrImagePull");
    assert_eq!(s.registry.requests().len(), before, "never: no registry request at all");

    pull(&mut c, &s.image("lazy", "v1"), None).await.unwrap();
    let before = s.registry.requests().len();
    pull(&mut c, &s.image("lazy", "v1"), None).await.unwrap();
    assert_eq!(
        s.registry.requests().len(),
        before,
        "if-not-present: a present image costs no request"
    );

    pull(&mut c, &s.image("always", "v1"), None).await.unwrap();
    let before = s.registry.requests();
    pull(&mut c, &s.image("always", "v1"), None).await.unwrap();
    let after = s.registry.requests();
    let new: Vec<_> = after[before.len()..].to_vec();
    assert!(
        !new.is_empty() && new.iter().all(|r| r.path.contains("/manifests/v1")),
        "always re-resolves the tag only: {new:?}"
    );

    // The registry goes away: the present tag is served (stale-if-unavailable), an absent one fails.
    s.registry.stop();
    assert_eq!(
        pull(&mut c, &s.image("always", "v1"), None).await.unwrap(),
        always.config_digest
    );
    assert!(s.daemon.log().contains("stale_if_unavailable"));
    let err = pull(&mut c, &s.image("absent", "v1"), None).await.unwrap_err();
    assert!(err.message().starts_with("RegistryUnavailable: "), "{}", err.message());
    common::runtimes::kubelet::assert_reason_once(&err, &s.image("absent", "v1"), "RegistryUnavailable");
}

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
