//! The usual test arrangement: a real registry, a `hosts.toml` directory that makes it reachable over
//! plain HTTP (also as `docker.io`, so short names like `busybox` resolve to it), and a daemon using it;
//! or, with [`Setup::with_hosts`], a registry the test started and the `hosts.toml` it wrote for it.

use std::path::PathBuf;

use tempfile::TempDir;

use crate::common::daemon::{Daemon, DaemonOptions};
use crate::common::images::image::{BuiltImage, Compression, Entry, ImageBuilder, Layer, MediaStyle, random_bytes};
use crate::common::registry::push;
use crate::common::registry::{RegistryOptions, TestRegistry, write_hosts_toml};

/// A registry and a daemon configured to pull from it.
pub struct Setup {
    /// The registry.
    pub registry: TestRegistry,
    /// The daemon.
    pub daemon: Daemon,
    /// The hosts.toml directory.
    pub hosts: TempDir,
}

impl Setup {
    /// Starts both, with `opts` for the daemon (its hosts dir is set here).
    pub async fn start_with(reg: RegistryOptions, mut opts: DaemonOptions) -> Setup {
        let registry = TestRegistry::start(reg).await;
        let hosts = tempfile::tempdir().expect("hosts dir");
        write_hosts_toml(hosts.path(), &registry.addr(), &registry.url());
        write_hosts_toml(hosts.path(), "docker.io", &registry.url());
        opts.hosts_dir = Some(hosts.path().to_path_buf());
        let daemon = Daemon::start(opts).await;
        Setup {
            registry,
            daemon,
            hosts,
        }
    }

    /// Starts a daemon with `opts` for the already running `registry`, whose hosts dir holds one
    /// `hosts.toml` for it: `text` (mirrors, headers, timeouts, TLS: whatever a test configures). Unlike
    /// [`Setup::start_with`], `docker.io` is not aliased to the registry.
    pub async fn with_hosts(registry: TestRegistry, text: &str, mut opts: DaemonOptions) -> Setup {
        let hosts = tempfile::tempdir().expect("hosts dir");
        write_hosts(hosts.path(), &registry.addr(), text);
        opts.hosts_dir = Some(hosts.path().to_path_buf());
        let daemon = Daemon::start(opts).await;
        Setup {
            registry,
            daemon,
            hosts,
        }
    }

    /// Replaces the registry's `hosts.toml` with `text`; the daemon reads it again on its next pull.
    pub fn write_hosts(&self, text: &str) {
        write_hosts(self.hosts.path(), &self.registry.addr(), text);
    }

    /// Starts both with defaults.
    pub async fn start() -> Setup {
        Setup::start_with(RegistryOptions::default(), DaemonOptions::default()).await
    }

    /// `127.0.0.1:PORT/repo:tag`.
    pub fn image(&self, repo: &str, tag: &str) -> String {
        format!("{}/{repo}:{tag}", self.registry.addr())
    }

    /// `127.0.0.1:PORT/repo`.
    pub fn name(&self, repo: &str) -> String {
        format!("{}/{repo}", self.registry.addr())
    }

    /// Pushes `image` as `repo:tag`.
    pub async fn push(&self, repo: &str, tag: &str, image: &BuiltImage) {
        push::push_image(&self.registry.addr(), repo, tag, image, self.registry.credentials()).await;
    }

    /// The hosts dir path.
    pub fn hosts_dir(&self) -> PathBuf {
        self.hosts.path().to_path_buf()
    }
}

/// Writes `text` as `dir/<registry>/hosts.toml`.
fn write_hosts(dir: &std::path::Path, registry: &str, text: &str) {
    std::fs::create_dir_all(dir.join(registry)).expect("create hosts dir");
    std::fs::write(dir.join(registry).join("hosts.toml"), text).expect("write hosts.toml");
}

/// A small two-layer OCI gzip image whose content depends on `seed`, with `user` in its config.
pub fn small_image(seed: u64, user: Option<&str>) -> BuiltImage {
    let base = Layer::build(
        &[
            Entry::dir("etc"),
            Entry::file("etc/os-release", format!("ID=test{seed}\n")),
        ],
        Compression::Gzip,
        MediaStyle::Oci,
    );
    let app = Layer::build(
        &[Entry::file("app/data", random_bytes(seed, 4096))],
        Compression::Gzip,
        MediaStyle::Oci,
    );
    let mut b = ImageBuilder::new(MediaStyle::Oci).layer(base).layer(app);
    if let Some(u) = user {
        b = b.user(u);
    }
    b.build()
}

/// An image of `style` over the given layers.
pub fn image_of(style: MediaStyle, layers: Vec<Layer>) -> BuiltImage {
    layers
        .into_iter()
        .fold(ImageBuilder::new(style), |b, l| b.layer(l))
        .build()
}

/// Two OCI images over one shared gzip base layer of `base_len` pseudo-random bytes, each with a tiny
/// layer of its own: `(base, a, b)`.
pub fn sharing_a_base(seed: u64, base_len: usize) -> (Layer, BuiltImage, BuiltImage) {
    let base = Layer::build(
        &[Entry::file("base", random_bytes(seed, base_len))],
        Compression::Gzip,
        MediaStyle::Oci,
    );
    let own = |name: &str| Layer::build(&[Entry::file(name, name)], Compression::Gzip, MediaStyle::Oci);
    let a = image_of(MediaStyle::Oci, vec![base.clone(), own("a")]);
    let b = image_of(MediaStyle::Oci, vec![base.clone(), own("b")]);
    (base, a, b)
}
