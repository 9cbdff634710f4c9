//! Sparing the registry (issue 22, point 3), through the real socket, with the real registry behind the
//! fault-injecting proxy (`common::registry::fault_proxy`), which stands for what a busy registry says and
//! Debian's `docker-registry` does not: a tag revalidated under pull policy `always` costs a manifest HEAD
//! (which Docker Hub does not count as a pull), not a GET; a `429` with `Retry-After` is waited out within
//! `registry.rate_limit_wait`, and one asking for longer fails `RegistryRateLimited` at once; a 4xx's OCI
//! error body is in the message kubelet shows; `Warning` headers are logged and counted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant, SystemTime};

use common::daemon::setup::small_image;
use common::daemon::{Daemon, DaemonOptions, pull};
use common::registry::fault_proxy::{Fault, FaultProxy};
use common::registry::proxied::{Proxied, free_port, metric};
use common::registry::{RegistryOptions, TestRegistry};

const NO_BACKOFF: &str = "[pull]\nbackoff_initial = \"0s\"\n";

/// `metrics_addr` on a free port, and no back-off: each request reaches the registry.
fn config(extra_registry: &str) -> (u16, String) {
    let port = free_port();
    let text = format!("metrics_addr = \"127.0.0.1:{port}\"\n[registry]\n{extra_registry}\n{NO_BACKOFF}");
    (port, text)
}

/// Starts the arrangement with the proxy as the registry's only host (`server` alone, no `[host]` entry for
/// it too), so every request is made once and the counts below are the daemon's.
async fn start(config: &str) -> Proxied {
    let p = Proxied::start(config).await;
    let file = p.hosts.path().join(p.proxy.addr()).join("hosts.toml");
    std::fs::write(file, format!("server = \"{}\"\n", p.proxy.url())).unwrap();
    p
}

/// The manifest requests the proxy saw, as `METHOD path`.
fn manifest_requests(p: &Proxied) -> Vec<String> {
    let requests = p.proxy.requests();
    let manifests = requests.iter().filter(|r| r.path.contains("/manifests/"));
    manifests.map(|r| format!("{} {}", r.method, r.path)).collect()
}

/// A 429 answer asking to come back after `retry_after`, with Docker Hub's error body.
fn too_many(retry_after: &str) -> Fault {
    Fault::Respond {
        status: 429,
        headers: vec![
            ("Retry-After".into(), retry_after.into()),
            ("Content-Type".into(), "application/json".into()),
        ],
        body: r#"{"errors":[{"code":"TOOMANYREQUESTS","message":"You have reached your pull rate limit."}]}"#.into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_present_tag_under_always_is_revalidated_with_a_head_and_no_get() {
    let p = start(NO_BACKOFF).await; // `always` is the default policy.
    let img = small_image(220, None);
    p.push("app", "v1", &img).await;
    let image = p.image("app", "v1");
    let mut c = p.daemon.client().await;
    assert_eq!(pull(&mut c, &image, None).await.unwrap(), img.config_digest);

    // Unchanged: one HEAD, the store's manifest, no GET (of the manifest or of anything else).
    p.proxy.clear_log();
    assert_eq!(pull(&mut c, &image, None).await.unwrap(), img.config_digest);
    assert_eq!(
        manifest_requests(&p),
        ["HEAD /v2/app/manifests/v1"],
        "{:?}",
        p.proxy.requests()
    );
    let gets: Vec<_> = p.proxy.requests().into_iter().filter(|r| r.method == "GET").collect();
    assert!(
        gets.iter()
            .all(|r| !r.path.contains("/manifests/") && !r.path.contains("/blobs/")),
        "{gets:?}"
    );
    assert!(
        p.registry
            .requests()
            .iter()
            .any(|r| r.method == "HEAD" && r.path == "/v2/app/manifests/v1")
    );

    // The tag moves: the HEAD tells a digest the store lacks, and the new manifest is fetched.
    let moved = small_image(221, None);
    p.push("app", "v1", &moved).await;
    p.proxy.clear_log();
    assert_eq!(pull(&mut c, &image, None).await.unwrap(), moved.config_digest);
    assert_eq!(
        manifest_requests(&p),
        ["HEAD /v2/app/manifests/v1", "GET /v2/app/manifests/v1"]
    );

    // A registry that does not allow HEAD: the GET answers.
    p.proxy.set_for_times("/manifests/v1", Fault::Status(405), 1);
    p.proxy.clear_log();
    assert_eq!(pull(&mut c, &image, None).await.unwrap(), moved.config_digest);
    assert_eq!(
        manifest_requests(&p),
        ["HEAD /v2/app/manifests/v1", "GET /v2/app/manifests/v1"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revalidation_asks_the_mirror_first_and_falls_through_as_a_get_does() {
    let registry = TestRegistry::start(RegistryOptions::default()).await;
    let mirror = FaultProxy::start(&registry.addr()).await;
    let hosts = tempfile::tempdir().unwrap();
    mirror.write_mirror_hosts_toml(hosts.path(), &registry.addr(), &registry.url());
    let d = Daemon::start(DaemonOptions {
        hosts_dir: Some(hosts.path().into()),
        config: Some(NO_BACKOFF.into()),
        ..Default::default()
    })
    .await;
    let img = small_image(225, None);
    common::registry::push::push_image(&registry.addr(), "app", "v1", &img, None).await;
    let image = registry.image_ref("app", "v1");
    let mut c = d.client().await;
    assert_eq!(pull(&mut c, &image, None).await.unwrap(), img.config_digest);
    let manifests = |from: &[common::registry::LoggedRequest]| -> Vec<String> {
        let m = from.iter().filter(|r| r.path.contains("/manifests/"));
        m.map(|r| format!("{} {}", r.method, r.path)).collect()
    };

    // The mirror answers the HEAD; nobody gets a GET.
    mirror.clear_log();
    let before = registry.requests().len();
    assert_eq!(pull(&mut c, &image, None).await.unwrap(), img.config_digest);
    let asked: Vec<String> = mirror
        .requests()
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert_eq!(asked, [format!("HEAD /v2/app/manifests/v1?ns={}", registry.addr())]);
    let forwarded = format!("HEAD /v2/app/manifests/v1?ns={}", registry.addr());
    assert_eq!(manifests(&registry.requests()[before..]), [forwarded]);

    // The mirror does not have it (404 once): the upstream's HEAD answers, still no GET.
    mirror.set_for_times("/manifests/v1", Fault::Status(404), 1);
    let before = registry.requests().len();
    assert_eq!(pull(&mut c, &image, None).await.unwrap(), img.config_digest);
    assert_eq!(manifests(&registry.requests()[before..]), ["HEAD /v2/app/manifests/v1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_with_retry_after_is_waited_out_and_the_pull_succeeds() {
    let (port, config) = config("");
    let p = start(&config).await;
    let img = small_image(222, None);
    p.push("app", "v1", &img).await;
    // The manifest once, and one blob once.
    p.proxy.set_for_times("/manifests/v1", too_many("1"), 1);
    p.proxy.set_for_times("/blobs/", too_many("1"), 1);
    let mut c = p.daemon.client().await;
    let started = Instant::now();
    assert_eq!(
        pull(&mut c, &p.image("app", "v1"), None).await.unwrap(),
        img.config_digest
    );
    assert!(started.elapsed() >= Duration::from_secs(2), "{:?}", started.elapsed());
    let limited: Vec<_> = p
        .proxy
        .requests()
        .into_iter()
        .filter(|r| r.status == Some(429))
        .collect();
    assert_eq!(limited.len(), 2, "{limited:?}");
    assert_eq!(metric(port, "imaged_registry_rate_limited_total").await, Some(2.0));
    assert!(p.daemon.log().contains("waiting as its Retry-After asks"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_asking_for_more_than_imaged_waits_fails_rate_limited_at_once() {
    let (port, config) = config("rate_limit_wait = \"3s\"");
    let p = start(&config).await;
    let img = small_image(223, None);
    p.push("app", "v1", &img).await;
    let image = p.image("app", "v1");
    let mut c = p.daemon.client().await;

    // An hour, in seconds and as an HTTP-date: the answer comes at once.
    let in_an_hour = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(3600));
    for retry_after in ["3600", in_an_hour.as_str()] {
        p.proxy.set_for("/manifests/v1", too_many(retry_after));
        let started = Instant::now();
        let err = pull(&mut c, &image, None).await.unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
        let msg = err.message();
        assert!(msg.contains("RegistryRateLimited: "), "{msg}");
        assert!(msg.contains("registry.rate_limit_wait"), "{msg}");
        assert!(
            msg.contains("TOOMANYREQUESTS: You have reached your pull rate limit."),
            "{msg}"
        );
        common::runtimes::kubelet::assert_reason_once(&err, &image, "ErrImagePull");
    }

    // Retry-After: 1 every time: waited out three times (the 3 s of rate_limit_wait), then the fourth 429
    // fails the pull.
    p.proxy.set_for("/manifests/v1", too_many("1"));
    let started = Instant::now();
    let err = pull(&mut c, &image, None).await.unwrap_err();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(10),
        "{took:?}"
    );
    assert!(err.message().contains("RegistryRateLimited: "), "{}", err.message());
    assert_eq!(metric(port, "imaged_registry_rate_limited_total").await, Some(6.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registrys_error_body_is_in_the_message() {
    let p = start(NO_BACKOFF).await;
    let mut c = p.daemon.client().await;
    // The real registry's 404 body.
    let err = pull(&mut c, &p.image("app", "absent"), None).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    assert!(
        err.message().contains("MANIFEST_UNKNOWN: manifest unknown"),
        "{}",
        err.message()
    );

    // A 403 with an OCI error body and a detail.
    p.proxy.set_for(
        "/manifests/",
        Fault::Respond {
            status: 403,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: r#"{"errors":[{"code":"DENIED","message":"storage quota exceeded","detail":{"project":"team"}}]}"#
                .into(),
        },
    );
    let err = pull(&mut c, &p.image("app", "v1"), None).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    assert!(
        err.message()
            .contains(r#"DENIED: storage quota exceeded ({"project":"team"})"#),
        "{}",
        err.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warning_headers_are_logged_once_and_counted_each_time() {
    let (port, config) = config("");
    let p = start(&config).await;
    let img = small_image(224, None);
    p.push("app", "v1", &img).await;
    // The registry's own manifest, with a warning, as distribution sends one.
    let text = "this registry will enforce pull rate limits from June";
    p.proxy.set_for(
        "/manifests/v1",
        Fault::Respond {
            status: 200,
            headers: vec![
                ("Content-Type".into(), img.manifest_media_type.clone()),
                ("Docker-Content-Digest".into(), img.manifest_digest.clone()),
                ("Warning".into(), format!("299 - \"{text}\"")),
            ],
            body: String::from_utf8(img.manifest.clone()).unwrap(),
        },
    );
    let image = p.image("app", "v1");
    let mut c = p.daemon.client().await;
    assert_eq!(pull(&mut c, &image, None).await.unwrap(), img.config_digest);
    // Again: the HEAD carries the warning too.
    assert_eq!(pull(&mut c, &image, None).await.unwrap(), img.config_digest);
    assert_eq!(
        manifest_requests(&p),
        ["GET /v2/app/manifests/v1", "HEAD /v2/app/manifests/v1"]
    );
    assert_eq!(metric(port, "imaged_registry_warnings_total").await, Some(2.0));
    let log = p.daemon.log();
    let logged: Vec<&str> = log.lines().filter(|l| l.contains(text)).collect();
    assert_eq!(logged.len(), 1, "once per host and text:\n{log}");
    assert!(logged[0].contains("WARN"), "at warn level: {}", logged[0]);
}
