//! AI-sized images (issue 22, points 1 and 2), through the real socket, with the real registry behind the
//! front of `common::registry::fault_proxy`, which stands for a CDN or an object store: it caps each
//! connection at 48 MiB/s, and on demand ignores `Range` or cuts every blob response at a total.
//!
//! One 768 MiB one-layer image (an uncompressed tar of one file: what is measured is the download, not
//! gzip) is built and pushed once, then pulled by a fresh daemon in each scenario:
//!
//! - through the capped front as a mirror: on at least 4 connections at once, each a `Range` request;
//! - through a front that ignores `Range` (answers 200): one stream, the bytes read not fetched again;
//! - with every connection cut when 30 % of the blob has been served: each cut range asked again from
//!   the byte it reached;
//! - with the daemon SIGKILLed at 40 %: `fsck` keeps the partial download, and the pull after the restart
//!   fetches only what is missing.
//!
//! Each ends with the image verified (the daemon checks the blob digest and the diff id; the unpacked file
//! has its size), the registry having served at most 1.15× the image's bytes, and `fsck` clean.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::daemon::{Daemon, DaemonOptions, fsck, pull};
use common::images::big::{BigImage, big_layer_image, push_big_image};
use common::images::image::Compression;
use common::registry::fault_proxy::FaultProxy;
use common::registry::{RegistryOptions, TestRegistry, write_hosts_toml};

const MIB: u64 = 1 << 20;
/// The image's one file.
const SIZE: u64 = 768 * MIB;
/// What the front lets through each connection.
const CAP: u64 = 48 * MIB;
/// Up to 8 connections, as containerd's transfer service in the benchmark; default chunks (8 MiB) above
/// the default threshold (64 MiB); no back-off between pulls.
const CONFIG: &str = "[registry]\nmax_concurrent_downloads = 8\n[pull]\nbackoff_initial = \"0s\"\n";
const REPO: &str = "ai/model";

/// A daemon pulling `image` through `proxy`.
struct Scenario {
    daemon: Daemon,
    proxy: FaultProxy,
    image: String,
    _hosts: tempfile::TempDir,
}

impl Scenario {
    /// The front as the registry's host (`mirror: false`, the image named by the front's address) or as
    /// a mirror of it in hosts.toml (`mirror: true`, the image named by the registry's address).
    async fn start(registry: &TestRegistry, mirror: bool) -> Scenario {
        let proxy = FaultProxy::start(&registry.addr()).await;
        let hosts = tempfile::tempdir().unwrap();
        let image = if mirror {
            proxy.write_mirror_hosts_toml(hosts.path(), &registry.addr(), &registry.url());
            format!("{}/{REPO}:v1", registry.addr())
        } else {
            write_hosts_toml(hosts.path(), &proxy.addr(), &proxy.url());
            proxy.image(REPO, "v1")
        };
        let daemon = Daemon::start(DaemonOptions {
            hosts_dir: Some(hosts.path().to_path_buf()),
            config: Some(CONFIG.into()),
            ..Default::default()
        })
        .await;
        Scenario {
            daemon,
            proxy,
            image,
            _hosts: hosts,
        }
    }

    async fn pull(&self) -> Result<String, tonic::Status> {
        let mut c = self.daemon.client().await;
        pull(&mut c, &self.image, None).await
    }

    /// Body bytes the front served, every request counted.
    fn served(&self) -> u64 {
        self.proxy.requests().iter().map(|r| r.body_bytes).sum()
    }

    /// Asserts the pull's result, the bytes served for it, the unpacked file and a clean fsck.
    fn verify(mut self, what: &str, result: Result<String, tonic::Status>, big: &BigImage) {
        let pulled = result.unwrap_or_else(|e| panic!("{what}: {e:?}\n{}", self.daemon.log()));
        assert_eq!(pulled, big.image.config_digest, "{what}");
        let image_bytes = big.blob_size + (big.image.config.len() + big.image.manifest.len()) as u64;
        let served = self.served();
        assert!(
            served as f64 <= 1.15 * image_bytes as f64,
            "{what}: the registry served {served} bytes for an image of {image_bytes} ({:.2}x)",
            served as f64 / image_bytes as f64
        );
        assert_eq!(
            unpacked_size(&self.daemon.root, &big.file_path),
            Some(big.file_size),
            "{what}"
        );
        self.daemon.stop();
        let (ok, report) = fsck(&self.daemon.root);
        assert!(ok && report.lines().any(|l| l == "ok"), "{what}: fsck:\n{report}");
        assert!(
            !report.contains("kept:") && !report.contains("repaired"),
            "{what}: fsck:\n{report}"
        );
        eprintln!(
            "{what}: served {:.3}x the image, at most {} blob GETs at once",
            served as f64 / image_bytes as f64,
            self.proxy.max_concurrent_blob_gets()
        );
    }
}

/// The size of `path` in the one snapshot that holds it.
fn unpacked_size(root: &Path, path: &str) -> Option<u64> {
    let snapshots = std::fs::read_dir(root.join("snapshots")).unwrap();
    snapshots
        .flatten()
        .find_map(|e| std::fs::metadata(e.path().join("fs").join(path)).ok())
        .map(|m| m.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_768_mib_layer_arrives_verified_in_parallel_ranges_without_ranges_after_cuts_and_after_a_sigkill() {
    let registry = TestRegistry::start(RegistryOptions::default()).await;
    let big = big_layer_image(SIZE, Compression::None);
    push_big_image(&registry.addr(), REPO, "v1", &big, None).await;

    // Parallel ranges through a mirror that caps each connection.
    let s = Scenario::start(&registry, true).await;
    s.proxy.cap_per_connection(Some(CAP));
    let t = Instant::now();
    let result = s.pull().await;
    let took = t.elapsed();
    let layer = big.layer_digest();
    let blob_gets: Vec<_> = s
        .proxy
        .requests()
        .into_iter()
        .filter(|r| r.is_blob_get() && r.path.contains(layer))
        .collect();
    assert!(
        s.proxy.max_concurrent_blob_gets() >= 4,
        "at most {} blob GETs at once: {blob_gets:?}",
        s.proxy.max_concurrent_blob_gets()
    );
    assert!(blob_gets.len() >= 96, "8 MiB ranges: {} GETs", blob_gets.len());
    assert!(
        blob_gets.iter().all(|r| r.header("range").len() == 1),
        "every GET of the layer asks for a range: {blob_gets:?}"
    );
    eprintln!("parallel ranges: {took:?} at {} MiB/s per connection", CAP / MIB);
    s.verify("parallel ranges", result, &big);

    // A front that ignores Range: the first answer is the whole blob, read to its end on that one stream.
    let s = Scenario::start(&registry, false).await;
    s.proxy.ignore_range(true);
    let result = s.pull().await;
    let layer_gets = s
        .proxy
        .requests()
        .into_iter()
        .filter(|r| r.path.contains(layer))
        .count();
    assert_eq!(layer_gets, 1, "one stream: {:?}", s.proxy.requests());
    s.verify("Range ignored", result, &big);

    // Every connection cut at 30 % of the blob: each cut range is asked again from the byte it reached.
    let s = Scenario::start(&registry, false).await;
    s.proxy.cap_per_connection(Some(CAP));
    s.proxy.cut_all_at(big.blob_size * 3 / 10);
    let result = s.pull().await;
    assert!(!s.proxy.cut_armed(), "the cut happened");
    let cut = s.proxy.requests().iter().filter(|r| r.cut).count();
    assert!(cut >= 1, "{:?}", s.proxy.requests());
    eprintln!("{cut} connections cut at 30 %");
    s.verify("connections cut at 30 %", result, &big);

    // SIGKILL at 40 %: fsck keeps the partial; after the restart only what is missing is fetched.
    let mut s = Scenario::start(&registry, false).await;
    s.proxy.cap_per_connection(Some(CAP));
    let mut c = s.daemon.client().await;
    let image = s.image.clone();
    let pulling = tokio::spawn(async move { pull(&mut c, &image, None).await });
    let deadline = Instant::now() + Duration::from_secs(120);
    while s.proxy.blob_body_bytes() < big.blob_size * 4 / 10 {
        assert!(
            Instant::now() < deadline,
            "the pull never reached 40 %:\n{}",
            s.daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    s.daemon.kill();
    let at_kill = s.proxy.blob_body_bytes();
    assert!(pulling.await.unwrap().is_err(), "the pull died with the daemon");
    let (ok, report) = fsck(&s.daemon.root);
    assert!(ok, "fsck after the kill:\n{report}");
    let kept = format!("kept: partial download of {}", big.layer_digest());
    assert!(report.contains(&kept), "fsck keeps the partial download:\n{report}");
    s.daemon.start_again().await;
    let result = s.pull().await;
    eprintln!(
        "killed at {:.1} % of the blob served; the second pull fetched {:.1} %",
        100.0 * at_kill as f64 / big.blob_size as f64,
        100.0 * (s.proxy.blob_body_bytes() - at_kill) as f64 / big.blob_size as f64
    );
    assert!(
        s.daemon.log().contains("resuming an interrupted download"),
        "{}",
        s.daemon.log()
    );
    s.verify("SIGKILL at 40 %", result, &big);
}
