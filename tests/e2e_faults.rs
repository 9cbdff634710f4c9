//! Faults a node meets on its way to a registry (issue 13), through the real socket, with the real registry
//! behind a fault-injecting proxy (`common::registry::fault_proxy`): callers that go away mid-pull, a registry that
//! accepts connections and never answers, a mirror that does so, bytes that drip slowly, and the download
//! limit seen from the registry's side.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::daemon::setup::small_image;
use common::daemon::{Daemon, DaemonOptions, pull, remove, status};
use common::images::image::{Compression, Entry, ImageBuilder, Layer, MediaStyle, random_bytes};
use common::registry::fault_proxy::{Fault, FaultProxy};
use common::registry::proxied::{Proxied, free_port, metric};
use common::registry::{RegistryOptions, TestRegistry};
use tonic::Code;

const NO_BACKOFF: &str = "[pull]\nbackoff_initial = \"0s\"\n";

/// Counts log lines containing `needle`.
fn log_count(d: &Daemon, needle: &str) -> usize {
    d.log().lines().filter(|l| l.contains(needle)).count()
}

/// Starts a pull of `image` and hangs up once the proxy has seen a request containing `seen`.
async fn pull_and_hang_up(p: &Proxied, image: &str, seen: &str) {
    let mut c = p.daemon.client().await;
    let i = image.to_string();
    let leaving = tokio::spawn(async move { pull(&mut c, &i, None).await });
    common::wait::until("the pull to reach the registry", Duration::from_secs(20), || async {
        p.proxy.requests().iter().any(|r| r.path.contains(seen))
    })
    .await;
    leaving.abort(); // The client is killed mid-pull: its RPC is cancelled.
    let _ = leaving.await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_pull_whose_caller_left_is_forgotten() {
    let port = free_port();
    let p = Proxied::start(&format!("metrics_addr = \"127.0.0.1:{port}\"\n{NO_BACKOFF}")).await;
    let img = small_image(130, None);
    p.push("left", "v1", &img).await;
    let image = p.image("left", "v1");
    p.proxy.set_for(
        "/blobs/",
        Fault::Drip {
            chunk: 1024,
            pause: Duration::from_millis(100),
        },
    );
    pull_and_hang_up(&p, &image, "/blobs/").await;

    // The pull runs on without its caller, records the image and says so.
    let mut c = p.daemon.client().await;
    p.wait_for_log("Successfully pulled image", Duration::from_secs(30))
        .await;
    assert!(status(&mut c, &image).await.is_some());
    assert_eq!(metric(port, "imaged_pulls_total{result=\"success\"}").await, Some(1.0));

    // Removed; the same request again is a real pull, not the old answer.
    remove(&mut c, &image).await.unwrap();
    p.proxy.clear_rules();
    p.proxy.clear_log();
    assert_eq!(pull(&mut c, &image, None).await.unwrap(), img.config_digest);
    assert!(
        p.proxy.requests().iter().any(|r| r.path.ends_with("/manifests/v1")),
        "the second request reached the registry: {:?}",
        p.proxy.requests()
    );
    assert!(status(&mut c, &image).await.is_some(), "the image is present again");
    assert_eq!(
        log_count(&p.daemon, "Successfully pulled image"),
        2,
        "one Pulled per request"
    );
    assert_eq!(metric(port, "imaged_pulls_total{result=\"success\"}").await, Some(2.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_pull_whose_caller_left_is_not_the_next_answer() {
    let p = Proxied::start("[pull]\nbackoff_initial = \"0s\"\nprogress_timeout = \"3s\"\n").await;
    let img = small_image(131, None);
    p.push("stuck", "v1", &img).await;
    let image = p.image("stuck", "v1");
    p.proxy.set_for("/blobs/", Fault::Stall(16));
    pull_and_hang_up(&p, &image, "/blobs/").await;
    // The pull fails on its own (no progress), with nobody left to tell, and says so.
    p.wait_for_log("Failed to pull image", Duration::from_secs(30)).await;

    // The registry recovers: the next request goes to it and succeeds.
    p.proxy.clear_rules();
    p.proxy.clear_log();
    let mut c = p.daemon.client().await;
    assert_eq!(pull(&mut c, &image, None).await.unwrap(), img.config_digest);
    assert!(
        p.proxy.requests().iter().any(|r| r.path.ends_with("/manifests/v1")),
        "the new request reached the registry: {:?}",
        p.proxy.requests()
    );
}

/// The request deadline the blackhole tests configure.
const DEADLINE: &str = "[registry]\nresponse_timeout = \"2s\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blackholed_registry_is_unavailable_within_the_deadline_and_stale_applies() {
    let p = Proxied::start(&format!("{DEADLINE}{NO_BACKOFF}stale_if_unavailable = true\n")).await;
    let img = small_image(132, None);
    p.push("app", "v1", &img).await;
    let present = p.image("app", "v1");
    let mut c = p.daemon.client().await;
    pull(&mut c, &present, None).await.unwrap();

    p.proxy.set(Fault::Blackhole);
    let started = Instant::now();
    let err = pull(&mut c, &p.image("app", "absent"), None).await.unwrap_err();
    assert_eq!(err.code(), Code::Unknown, "{err:?}");
    assert!(err.message().starts_with("RegistryUnavailable: "), "{}", err.message());
    common::runtimes::kubelet::assert_reason_once(&err, &p.image("app", "absent"), "RegistryUnavailable");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "a 2 s deadline, not the 5 min progress timeout: {:?}",
        started.elapsed()
    );
    assert!(
        p.proxy.requests().iter().any(|r| r.fault == Fault::Blackhole),
        "the request reached the blackhole"
    );

    // A present tag is served from the store (pull.stale_if_unavailable).
    let started = Instant::now();
    assert_eq!(pull(&mut c, &present, None).await.unwrap(), img.config_digest);
    assert!(started.elapsed() < Duration::from_secs(15), "{:?}", started.elapsed());
    assert!(p.daemon.log().contains("stale_if_unavailable"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blackholed_mirror_falls_through_to_the_upstream() {
    let registry = TestRegistry::start(RegistryOptions::default()).await;
    let mirror = FaultProxy::start(&registry.addr()).await;
    mirror.set(Fault::Blackhole);
    let hosts = tempfile::tempdir().unwrap();
    mirror.write_mirror_hosts_toml(hosts.path(), &registry.addr(), &registry.url());
    let d = Daemon::start(DaemonOptions {
        hosts_dir: Some(hosts.path().into()),
        config: Some(format!("{DEADLINE}{NO_BACKOFF}")),
        ..Default::default()
    })
    .await;
    let (a, b) = (small_image(133, None), small_image(134, None));
    common::registry::push::push_image(&registry.addr(), "a", "v1", &a, None).await;
    common::registry::push::push_image(&registry.addr(), "b", "v1", &b, None).await;
    let mut c = d.client().await;

    let image = registry.image_ref("a", "v1");
    assert_eq!(pull(&mut c, &image, None).await.unwrap(), a.config_digest);
    let tried = mirror.requests().len();
    assert!(tried >= 1, "the mirror was tried first");
    // A mirror that just failed is tried after the upstream for a while: the next pull does not wait on it.
    let image = registry.image_ref("b", "v1");
    assert_eq!(pull(&mut c, &image, None).await.unwrap(), b.config_digest);
    assert_eq!(mirror.requests().len(), tried, "{:?}", mirror.requests());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_after_recovery_does_not_join_a_hung_pull() {
    // A long request deadline: the first pull stays hung for the whole test.
    let p = Proxied::start(&format!("[registry]\nresponse_timeout = \"60s\"\n{NO_BACKOFF}")).await;
    let img = small_image(135, None);
    p.push("app", "v1", &img).await;
    let image = p.image("app", "v1");
    p.proxy.set(Fault::Blackhole);
    let mut first = p.daemon.client().await;
    let i = image.clone();
    let hung = tokio::spawn(async move { pull(&mut first, &i, None).await });
    common::wait::until(
        "the first pull to reach the blackhole",
        Duration::from_secs(10),
        || async { !p.proxy.requests().is_empty() },
    )
    .await;
    // Hung for longer than a moving pull ever pauses (`JOIN_IDLE_LIMIT`, 5 s, in src/ensure/flight.rs); then
    // the registry recovers. The window is what the test is about, so it is a sleep: only past it does a new
    // request start its own pull instead of joining. The pull stood still since before its request reached
    // the blackhole, so 5 s from then and a margin suffice.
    tokio::time::sleep(Duration::from_millis(5_250)).await;
    p.proxy.set(Fault::Pass);
    let mut second = p.daemon.client().await;
    let started = Instant::now();
    let got = tokio::time::timeout(Duration::from_secs(30), pull(&mut second, &image, None)).await;
    assert_eq!(
        got.expect("the new request did not wait for the hung pull").unwrap(),
        img.config_digest
    );
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(!hung.is_finished(), "the first pull is still hung on its own request");
    hung.abort();
}

/// The same layer as gzip (`:latest`) and zstd (`:zstd`): one image id, one snapshot, two blobs.
fn two_compressions() -> (common::images::image::BuiltImage, common::images::image::BuiltImage) {
    let entries = [Entry::file("data", random_bytes(136, 96 * 1024))];
    let build = |c| {
        ImageBuilder::new(MediaStyle::Oci)
            .layer(Layer::build(&entries, c, MediaStyle::Oci))
            .build()
    };
    (build(Compression::Gzip), build(Compression::Zstd))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_of_a_blob_whose_layer_is_unpacked_count_as_progress() {
    let port = free_port();
    let p = Proxied::start(&format!(
        "metrics_addr = \"127.0.0.1:{port}\"\n[pull]\nbackoff_initial = \"0s\"\nprogress_timeout = \"1500ms\"\n"
    ))
    .await;
    let (gzip, zstd) = two_compressions();
    p.push("same", "latest", &gzip).await;
    p.push("same", "zstd", &zstd).await;
    let mut c = p.daemon.client().await;
    pull(&mut c, &p.image("same", "zstd"), None).await.unwrap();
    let before = metric(port, "imaged_pulled_bytes_total").await.unwrap();

    // Now the gzip blob, slowly: 8 chunks 400 ms apart, never idle for the 1.5 s timeout.
    let chunk = gzip.layers[0].blob.len() / 8 + 1;
    p.proxy.set_for(
        &gzip.layers[0].digest,
        Fault::Drip {
            chunk,
            pause: Duration::from_millis(400),
        },
    );
    assert_eq!(
        pull(&mut c, &p.image("same", "latest"), None).await.unwrap(),
        gzip.config_digest
    );
    let after = metric(port, "imaged_pulled_bytes_total").await.unwrap();
    assert!(
        after - before >= gzip.layers[0].size() as f64,
        "the gzip blob's {} bytes are counted: {before} -> {after}",
        gzip.layers[0].size()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_concurrent_downloads_1_fetches_one_blob_at_a_time() {
    let p = Proxied::start(&format!("[registry]\nmax_concurrent_downloads = 1\n{NO_BACKOFF}")).await;
    let layers: Vec<Layer> = (0..5)
        .map(|i| {
            let entries = [Entry::file(&format!("l{i}"), random_bytes(140 + i, 24 * 1024))];
            Layer::build(&entries, Compression::Gzip, MediaStyle::Oci)
        })
        .collect();
    let img = layers
        .into_iter()
        .fold(ImageBuilder::new(MediaStyle::Oci), |b, l| b.layer(l))
        .build();
    p.push("five", "v1", &img).await;
    p.proxy.set_for(
        "/blobs/",
        Fault::Drip {
            chunk: 8 * 1024,
            pause: Duration::from_millis(40),
        },
    );
    let mut c = p.daemon.client().await;
    assert_eq!(
        pull(&mut c, &p.image("five", "v1"), None).await.unwrap(),
        img.config_digest
    );
    let mut gets: Vec<_> = p.proxy.requests().into_iter().filter(|r| r.is_blob_get()).collect();
    gets.sort_by_key(|r| r.started);
    assert_eq!(gets.len(), 6, "config and five layers: {gets:?}");
    for pair in gets.windows(2) {
        let ended = pair[0].finished.expect("every blob was sent whole");
        assert!(
            pair[1].started >= ended,
            "{} started {:?} before {} ended",
            pair[1].path,
            ended - pair[1].started,
            pair[0].path
        );
    }
}
