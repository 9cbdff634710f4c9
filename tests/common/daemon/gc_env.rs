//! The set-up of the disk-threshold GC tests (`e2e_gc.rs`): a registry and a daemon whose store is on a
//! tmpfs of fixed size, a GC config, and the measurements the tests compare imaged's figures with (bytes
//! allocated by given blobs and snapshots, as the kernel counts them).

use std::collections::BTreeSet;
use std::path::Path;

use imaged::proto::imaged::v1 as pb;
use imaged::proto::imaged::v1::images_client::ImagesClient;
use imaged::proto::runtime::v1::image_service_client::ImageServiceClient;
use tonic::transport::Channel;

use crate::common::daemon::setup::Setup;
use crate::common::daemon::tmpfs::{self, Tmpfs, du};
use crate::common::daemon::{Daemon, DaemonOptions, list};
use crate::common::registry::{RegistryOptions, TestRegistry, write_hosts_toml};

/// How far imaged's "freed" may be from the measured change in used bytes (metadata pages).
pub const SLACK: u64 = 64 * 1024;

/// A registry and a daemon whose store is on a tmpfs. The daemon is stopped before the tmpfs is unmounted.
pub struct Env {
    /// The tmpfs the store is on.
    pub fs: Tmpfs,
    /// The registry and the daemon.
    pub s: Setup,
}

impl Drop for Env {
    fn drop(&mut self) {
        self.s.daemon.stop();
    }
}

/// Starts a registry, then the daemon with the config `config(registry address)` on a tmpfs of `bytes`.
pub async fn start(bytes: u64, config: impl FnOnce(&str) -> String) -> Env {
    let registry = TestRegistry::start(RegistryOptions::default()).await;
    let hosts = tempfile::tempdir().unwrap();
    write_hosts_toml(hosts.path(), &registry.addr(), &registry.url());
    let opts = DaemonOptions {
        hosts_dir: Some(hosts.path().to_path_buf()),
        config: Some(config(&registry.addr())),
        ..Default::default()
    };
    let mut daemon = Daemon::start(opts).await;
    let fs = tmpfs::store_on_tmpfs(&mut daemon, bytes).await;
    Env {
        fs,
        s: Setup {
            registry,
            daemon,
            hosts,
        },
    }
}

/// A config with pull back-off off, GC thresholds, and only explicit GC runs.
pub fn config(high: u8, low: u8, min_age: &str, pinned: &[String], runtime: Option<&str>) -> String {
    let mut c = format!("pinned_images = {pinned:?}\n\n[pull]\nbackoff_initial = \"0s\"\n\n[gc]\n");
    c.push_str(&format!(
        "high_threshold_percent = {high}\nlow_threshold_percent = {low}\nmin_age = \"{min_age}\"\nperiod = \"1h\"\n"
    ));
    if let Some(r) = runtime {
        c.push_str(&format!("runtime_endpoint = \"{r}\"\n"));
    }
    c
}

/// Bytes allocated by the given blobs and snapshots of the store.
pub fn du_of(root: &Path, blobs: &BTreeSet<String>, snapshots: &BTreeSet<String>) -> u64 {
    let hex = |d: &String| d.strip_prefix("sha256:").unwrap().to_string();
    let b: u64 = blobs
        .iter()
        .map(|d| du(&root.join("content/blobs/sha256").join(hex(d))))
        .sum();
    b + snapshots
        .iter()
        .map(|c| du(&root.join("snapshots").join(hex(c))))
        .sum::<u64>()
}

/// Runs imaged's GarbageCollect (`dry_run` or not) and returns its answer.
pub async fn gc(s: &Setup, dry_run: bool) -> pb::GarbageCollectResponse {
    let mut c = ImagesClient::new(imaged::cli::channel(&s.daemon.socket).await.unwrap());
    c.garbage_collect(pb::GarbageCollectRequest { dry_run })
        .await
        .expect("GarbageCollect")
        .into_inner()
}

/// The ids of the images ListImages shows.
pub async fn ids(c: &mut ImageServiceClient<Channel>) -> BTreeSet<String> {
    list(c).await.into_iter().map(|i| i.id).collect()
}

/// Asserts that two byte counts differ by at most [`SLACK`].
#[track_caller]
pub fn assert_near(a: u64, b: u64, what: &str) {
    assert!(
        a.abs_diff(b) <= SLACK,
        "{what}: {a} vs {b} bytes, {} apart",
        a as i64 - b as i64
    );
}
