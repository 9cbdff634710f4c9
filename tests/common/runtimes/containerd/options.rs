//! How a test containerd is configured: [`ContainerdOptions`], and imaged's side of it.

use std::path::{Path, PathBuf};

use super::Line;

/// imaged as containerd's snapshotter, configured as `imaged containerd-config` prints it.
#[derive(Clone, Debug)]
pub struct ImagedSide {
    /// The `imaged` binary that prints the configuration.
    pub bin: PathBuf,
    /// imaged's socket.
    pub socket: PathBuf,
    /// imaged's store.
    pub root: PathBuf,
}

/// How a test containerd is configured.
#[derive(Clone, Debug)]
pub struct ContainerdOptions {
    /// The release line whose binaries run (Debian 12's 1.6 unless set).
    pub line: Line,
    /// imaged's part of the config, from `imaged containerd-config` for this line (and its CRI snapshotter).
    pub imaged: Option<ImagedSide>,
    /// The CRI plugin's snapshotter (`[plugins."io.containerd.grpc.v1.cri".containerd] snapshotter`).
    pub snapshotter: String,
    /// Proxy snapshotter plugins: `[proxy_plugins.NAME] type = "snapshot" address = PATH`.
    pub proxy_snapshotters: Vec<(String, PathBuf)>,
    /// The pod sandbox (pause) image the CRI plugin runs for every pod.
    pub sandbox_image: String,
    /// The CRI plugin's registry `config_path`: a directory of `<host>/hosts.toml` files.
    pub hosts_dir: Option<PathBuf>,
    /// containerd's log level (`[debug] level`): `info` unless set; `debug` shows every snapshotter call.
    pub log_level: String,
    /// TOML appended to `config.toml` as is (whole tables, e.g. `[plugins."io.containerd.gc.v1.scheduler"]`).
    pub extra_config: String,
    /// Whether pods may have network namespaces of their own ([`network`]; containerd 2.x lines).
    pub pod_network: bool,
}

impl ContainerdOptions {
    /// containerd's own `overlayfs` snapshotter, no proxy plugins, no registry hosts, `sandbox_image`.
    pub fn new(sandbox_image: &str) -> Self {
        ContainerdOptions {
            line: Line::bookworm(),
            imaged: None,
            snapshotter: "overlayfs".into(),
            proxy_snapshotters: Vec::new(),
            sandbox_image: sandbox_image.into(),
            hosts_dir: None,
            log_level: "info".into(),
            extra_config: String::new(),
            pod_network: false,
        }
    }

    /// Runs `line`'s containerd.
    pub fn line(mut self, line: Line) -> Self {
        self.line = line;
        self
    }

    /// Uses imaged (socket, store) as the CRI plugin's snapshotter with exactly the configuration
    /// `bin containerd-config` (an `imaged` binary) prints for this line.
    pub fn imaged(mut self, bin: &Path, socket: &Path, root: &Path) -> Self {
        self.imaged = Some(ImagedSide {
            bin: bin.to_path_buf(),
            socket: socket.to_path_buf(),
            root: root.to_path_buf(),
        });
        self.snapshotter = "imaged".into();
        self
    }

    /// Sets the CRI plugin's snapshotter, e.g. `imaged` (with [`ContainerdOptions::proxy_snapshotter`]).
    pub fn snapshotter(mut self, name: &str) -> Self {
        self.snapshotter = name.into();
        self
    }

    /// Adds a proxy snapshotter plugin `name` served on the unix socket `address`.
    pub fn proxy_snapshotter(mut self, name: &str, address: &Path) -> Self {
        self.proxy_snapshotters.push((name.into(), address.to_path_buf()));
        self
    }

    /// Sets the registry hosts directory (e.g. one made by `registry::write_hosts_toml`).
    pub fn hosts_dir(mut self, dir: &Path) -> Self {
        self.hosts_dir = Some(dir.to_path_buf());
        self
    }

    /// Sets containerd's log level, e.g. `debug`.
    pub fn log_level(mut self, level: &str) -> Self {
        self.log_level = level.into();
        self
    }

    /// Appends `toml` (whole tables) to the generated `config.toml`.
    pub fn extra_config(mut self, toml: &str) -> Self {
        self.extra_config.push_str(toml);
        self.extra_config.push('\n');
        self
    }
}
