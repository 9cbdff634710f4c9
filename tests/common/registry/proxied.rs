//! The fault-test arrangement: a real registry, a [`FaultProxy`] in front of it, and a daemon that reaches
//! the registry only through the proxy (images are named by the proxy's address), plus small helpers for
//! what those tests read back: the daemon's Prometheus metrics and its log.

use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::common::daemon::{Daemon, DaemonOptions};
use crate::common::images::image::BuiltImage;
use crate::common::registry::fault_proxy::FaultProxy;
use crate::common::registry::{RegistryOptions, TestRegistry, write_hosts_toml};

/// A registry, a proxy in front of it, and a daemon pulling through the proxy.
pub struct Proxied {
    /// The daemon (declared first: stopped before the registry goes).
    pub daemon: Daemon,
    /// The proxy.
    pub proxy: FaultProxy,
    /// The real registry behind it.
    pub registry: TestRegistry,
    /// The hosts.toml directory (the proxy's address over plain HTTP).
    pub hosts: TempDir,
}

impl Proxied {
    /// Starts all three; the daemon gets `config` as its config file.
    pub async fn start(config: &str) -> Proxied {
        let registry = TestRegistry::start(RegistryOptions::default()).await;
        let proxy = FaultProxy::start(&registry.addr()).await;
        let hosts = tempfile::tempdir().expect("hosts dir");
        write_hosts_toml(hosts.path(), &proxy.addr(), &proxy.url());
        let daemon = Daemon::start(DaemonOptions {
            hosts_dir: Some(hosts.path().to_path_buf()),
            config: Some(config.to_string()),
            ..Default::default()
        })
        .await;
        Proxied {
            daemon,
            proxy,
            registry,
            hosts,
        }
    }

    /// `PROXY/repo:tag`: the image as the daemon pulls it.
    pub fn image(&self, repo: &str, tag: &str) -> String {
        self.proxy.image(repo, tag)
    }

    /// Pushes `image` as `repo:tag` straight to the registry.
    pub async fn push(&self, repo: &str, tag: &str, image: &BuiltImage) {
        crate::common::registry::push::push_image(&self.registry.addr(), repo, tag, image, None).await;
    }

    /// Waits (up to `within`) until the daemon's log contains `needle`; panics with the log otherwise.
    pub async fn wait_for_log(&self, needle: &str, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.daemon.log().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "the daemon never logged {needle:?}; log:\n{}",
                self.daemon.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A free loopback port for `metrics_addr`.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// The value of the metric line `name` (labels included, e.g. `imaged_pulls_total{result="success"}`) at
/// `http://127.0.0.1:{port}/metrics`, or `None` when the endpoint does not list it.
pub async fn metric(port: u16, name: &str) -> Option<f64> {
    let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .expect("scrape the metrics endpoint")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}
