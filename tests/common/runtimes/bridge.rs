//! imaged and a real containerd wired together as on a node: containerd loads imaged as its proxy
//! snapshotter and its CRI plugin uses it; imaged publishes its images into containerd (`--containerd-address`).
//! Both pull from one test registry, which serves the pause image containerd's `sandbox_image` names.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use imaged::proto::runtime::v1 as cri;
use tempfile::TempDir;

use crate::common::daemon::{Daemon, DaemonOptions};
use crate::common::images::busybox::push_pause;
use crate::common::registry::{LoggedRequest, RegistryOptions, TestRegistry};
use crate::common::runtimes::containerd::{Containerd, ContainerdOptions, Line};

/// The name containerd's config gives imaged's proxy snapshotter.
pub const SNAPSHOTTER: &str = "imaged";

/// A registry, a containerd and an imaged serving it.
pub struct Node {
    /// The test registry (pause image pushed).
    pub registry: TestRegistry,
    /// The hosts dir both use to reach the registry over plain http.
    pub hosts: TempDir,
    /// containerd's `sandbox_image`.
    pub pause: String,
    /// containerd, its CRI plugin on imaged's snapshotter.
    pub ctd: Containerd,
    /// imaged, publishing into `ctd`.
    pub imaged: Daemon,
    /// Holds imaged's socket and store (known before imaged starts, for containerd's config).
    pub sockets: TempDir,
}

impl Node {
    /// Starts the three on Debian 12's containerd 1.6, with imaged's config `config` (TOML; the default
    /// turns back-off off).
    pub async fn start(config: Option<&str>) -> Node {
        Node::start_on(Line::bookworm(), config).await
    }

    /// Starts the three on containerd `line`, configured as `imaged containerd-config` prints for it.
    pub async fn start_on(line: Line, config: Option<&str>) -> Node {
        Node::start_with(line, config, |o| o).await
    }

    /// [`Node::start_on`] with containerd's options changed by `ctd` (e.g. a pod network).
    pub async fn start_with(
        line: Line,
        config: Option<&str>,
        ctd: impl FnOnce(ContainerdOptions) -> ContainerdOptions,
    ) -> Node {
        let registry = TestRegistry::start(RegistryOptions::default()).await;
        let hosts = TempDir::new().expect("hosts dir");
        registry.write_hosts_toml(hosts.path());
        let pause = push_pause(&registry).await;
        let sockets = tempfile::Builder::new()
            .prefix("imaged-sock-")
            .tempdir()
            .expect("socket dir");
        let socket = sockets.path().join("imaged.sock");
        let root = sockets.path().join("root");
        let ctd = Containerd::start(ctd(ContainerdOptions::new(&pause)
            .line(line)
            .imaged(Path::new(env!("CARGO_BIN_EXE_imaged")), &socket, &root)
            .hosts_dir(hosts.path())))
        .await;
        let imaged = Daemon::start(DaemonOptions {
            hosts_dir: Some(hosts.path().to_path_buf()),
            socket: Some(socket),
            root: Some(root),
            config: config.map(str::to_string),
            extra_args: vec!["--containerd-address".into(), ctd.socket().display().to_string()],
            ..Default::default()
        })
        .await;
        Node {
            registry,
            hosts,
            pause,
            ctd,
            imaged,
            sockets,
        }
    }

    /// imaged's socket.
    pub fn socket(&self) -> PathBuf {
        self.imaged.socket.clone()
    }

    /// PullImage of `repo:tag` from the test registry through imaged; returns the image ref (the id).
    pub async fn pull(&self, repo: &str, tag: &str) -> String {
        let image = self.registry.image_ref(repo, tag);
        let mut c = self.imaged.client().await;
        match crate::common::daemon::pull(&mut c, &image, None).await {
            Ok(id) => id,
            Err(e) => panic!("imaged PullImage {image}: {e}; imaged log:\n{}", self.imaged.log()),
        }
    }

    /// CRI PullImage of `reference` on containerd itself (containerd fetches and unpacks it, through imaged's
    /// snapshotter); returns its image ref. Panics with containerd's answer if it fails.
    pub async fn ctd_pull(&self, reference: &str) -> String {
        let req = cri::PullImageRequest {
            image: crate::common::daemon::spec(reference),
            ..Default::default()
        };
        let mut c = self.ctd.images().await.expect("connect to containerd");
        match c.pull_image(req).await {
            Ok(r) => r.into_inner().image_ref,
            Err(e) => panic!(
                "containerd's PullImage {reference}: {e}; containerd log:\n{}",
                self.ctd.log()
            ),
        }
    }

    /// containerd's CRI ImageStatus of `name`.
    pub async fn ctd_status(&self, name: &str) -> Option<cri::Image> {
        let mut c = self.ctd.images().await.expect("connect to containerd");
        crate::common::daemon::status(&mut c, name).await
    }

    /// Waits (up to `timeout`) until containerd's CRI ImageStatus of `name` is `present` or not.
    pub async fn wait_ctd_status(&self, name: &str, present: bool, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.ctd_status(name).await.is_some() != present {
            assert!(
                Instant::now() < deadline,
                "containerd's CRI still says {name} is {}present after {timeout:?}; imaged log:\n{}",
                if present { "not " } else { "" },
                self.imaged.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The keys of the snapshots containerd holds on `snapshotter` (its metadata, namespace `k8s.io`).
    pub async fn ctd_snapshots(&self, snapshotter: &str) -> Vec<String> {
        use containerd_client::services::v1::snapshots as api;
        let channel = self.ctd.channel().await.expect("connect to containerd");
        let mut c = api::snapshots_client::SnapshotsClient::new(channel);
        let req = api::ListSnapshotsRequest {
            snapshotter: snapshotter.into(),
            filters: Vec::new(),
        };
        let mut stream = c
            .list(crate::common::runtimes::containerd::in_namespace(req))
            .await
            .expect("containerd's snapshots List")
            .into_inner();
        let mut keys = Vec::new();
        while let Some(msg) = stream.message().await.expect("containerd's snapshots List") {
            keys.extend(msg.info.into_iter().map(|i| i.name));
        }
        keys.sort();
        keys
    }

    /// Layer and config blob fetches containerd made from the registry (its User-Agent names it).
    pub fn containerd_blob_fetches(&self, repo: &str) -> Vec<LoggedRequest> {
        self.registry
            .requests()
            .into_iter()
            .filter(|r| r.path.starts_with(&format!("/v2/{repo}/blobs/")) && r.user_agent.contains("containerd"))
            .collect()
    }

    /// The chain-id directories in imaged's layer store.
    pub fn layer_dirs(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.imaged.root.join("snapshots"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.len() == 64)
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
}
