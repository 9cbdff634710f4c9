//! The daemon's configuration: embedded defaults, an optional TOML file, and command-line overrides.
//!
//! With no file at all, imaged runs: as root it keeps its store in `/var/lib/imaged` and listens on
//! `/run/imaged/imaged.sock`; as another user, under `$XDG_DATA_HOME/imaged` and
//! `$XDG_RUNTIME_DIR/imaged/imaged.sock` (falling back to `~/.local/share/imaged` for both). Unknown keys
//! in the file are an error naming the key, so a typo never silently falls back to a default.

use std::path::{Path, PathBuf};

use serde::Deserialize;

mod sections;

pub use sections::{
    ContainerdConfig, ContainerdSection, ContainersStorageConfig, ContainersStorageSection, DEFAULT_PRIMARY_ROOT,
    GcSection, ImageIdFormat, PullSection,
};

use crate::platform::Platform;
use crate::registry::auth::default_auth_paths;
use crate::unpack::Limits;

/// The file read when `--config` is not given, if it exists.
pub const DEFAULT_CONFIG_FILE: &str = "/etc/imaged/config.toml";

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not valid TOML for imaged (unknown keys included).
    #[error("invalid config file {path}: {detail}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, which names the key and line.
        detail: String,
    },
    /// A value is out of range.
    #[error("invalid config: {0}")]
    Invalid(String),
}

/// The whole configuration, as written in `config.toml`. Every field is optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Directory of the image store (content, metadata).
    pub root: Option<PathBuf>,
    /// Path of the CRI unix socket.
    pub socket: Option<PathBuf>,
    /// Platform images are selected for, `os/arch[/variant]`; default: the host's.
    pub platform: Option<String>,
    /// Runtime handlers accepted in `ImageSpec.runtime_handler` (the empty handler is always accepted).
    pub runtime_handlers: Option<Vec<String>>,
    /// Registry access.
    #[serde(default)]
    pub registry: RegistrySection,
    /// Caps on each layer (`max_layer_bytes`, `max_entries`, `max_path_bytes`).
    #[serde(default)]
    pub unpack: Option<Limits>,
    /// Images never garbage-collected or pruned: exact references or globs (`quay.io/acme/agent:*`). The
    /// sandbox image is pinned on top of these, always (`pinned`).
    pub pinned_images: Option<Vec<String>>,
    /// Address for Prometheus metrics (`127.0.0.1:9090`); off when absent.
    pub metrics_addr: Option<String>,
    /// Pull behaviour: limits, back-off, policy, progress timeout.
    #[serde(default)]
    pub pull: PullSection,
    /// Image garbage collection.
    #[serde(default)]
    pub gc: GcSection,
    /// Publishing images into containerd.
    #[serde(default)]
    pub containerd: ContainerdSection,
    /// The read-only containers/storage image store for CRI-O and podman.
    #[serde(default)]
    pub containers_storage: ContainersStorageSection,
    /// How image ids are written in CRI answers: `digest` (`sha256:<hex>`, containerd; the default) or
    /// `hex` (CRI-O).
    pub image_id_format: Option<ImageIdFormat>,
}

/// The `[registry]` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrySection {
    /// containerd-style `hosts.toml` directory (`<dir>/<registry>/hosts.toml`) for mirrors, plain-http
    /// registries and TLS settings.
    pub hosts_dir: Option<PathBuf>,
    /// Docker `config.json` files with credentials; default: `$DOCKER_CONFIG/config.json`,
    /// `~/.docker/config.json`, `/var/lib/kubelet/config.json`.
    pub auth_files: Option<Vec<PathBuf>>,
    /// Blob downloads at once, across all pulls (default 3, as containerd); also the most connections
    /// one big blob is fetched on, in parallel ranges.
    pub max_concurrent_downloads: Option<usize>,
    /// Bytes per `Range` request when a big blob is fetched in parallel ranges (default 8 MiB; 0: every
    /// blob as one stream), as containerd's transfer service names it.
    pub concurrent_layer_fetch_buffer: Option<u64>,
    /// Blobs larger than this many bytes are fetched in parallel ranges (default 64 MiB).
    pub concurrent_layer_fetch_above: Option<u64>,
    /// Seconds to wait for a connection to a registry (default 10); a host's `dial_timeout` in hosts.toml
    /// wins for that host.
    pub connect_timeout_secs: Option<u64>,
    /// How long a registry may take to send a response's headers, and stay silent in the middle of a body,
    /// before the request fails as unavailable and the next host is tried (default 20s).
    pub response_timeout: Option<crate::duration::ConfigDuration>,
    /// How long a docker credential helper (`credsStore`, `credHelpers`) may take before it is killed and
    /// the pull fails naming it (default 20s).
    pub credential_helper_timeout: Option<crate::duration::ConfigDuration>,
    /// The most one registry request waits, over all its `429 Too Many Requests`, as their `Retry-After`
    /// asks, before it fails `RegistryRateLimited` (default 1m; `"0s"` never waits).
    pub rate_limit_wait: Option<crate::duration::ConfigDuration>,
}

/// The effective configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Directory of the image store.
    pub root: PathBuf,
    /// Path of the CRI unix socket.
    pub socket: PathBuf,
    /// Platform images are selected for.
    pub platform: Platform,
    /// Accepted runtime handlers.
    pub runtime_handlers: Vec<String>,
    /// `hosts.toml` directory.
    pub hosts_dir: Option<PathBuf>,
    /// Credential files, first match wins.
    pub auth_files: Vec<PathBuf>,
    /// Layers downloaded at once per pull.
    pub max_concurrent_downloads: usize,
    /// How blobs are split into requests.
    pub fetch: crate::pull::FetchOptions,
    /// Registry connect timeout in seconds.
    pub connect_timeout_secs: u64,
    /// Registry response deadline.
    pub response_timeout: std::time::Duration,
    /// Time limit of a docker credential helper.
    pub credential_helper_timeout: std::time::Duration,
    /// The most one registry request waits on `Retry-After`s.
    pub rate_limit_wait: std::time::Duration,
    /// Caps on each layer.
    pub unpack: Limits,
    /// Pinned image patterns (file and `--pinned-image`).
    pub pinned_images: Vec<String>,
    /// Metrics address.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Pull behaviour.
    pub pull: PullSection,
    /// Image garbage collection.
    pub gc: GcSection,
    /// Publishing into containerd, when on.
    pub containerd: Option<ContainerdConfig>,
    /// The containers/storage image store, when on.
    pub containers_storage: Option<ContainersStorageConfig>,
    /// How image ids are written in CRI answers.
    pub image_id_format: ImageIdFormat,
}

/// Settings given on the command line; they win over the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--root`.
    pub root: Option<PathBuf>,
    /// `--socket`.
    pub socket: Option<PathBuf>,
    /// `--hosts-dir`.
    pub hosts_dir: Option<PathBuf>,
    /// `--auth-file` (repeatable).
    pub auth_files: Vec<PathBuf>,
    /// `--platform`.
    pub platform: Option<String>,
    /// `--pinned-image` (repeatable; added to the file's).
    pub pinned_images: Vec<String>,
    /// `--metrics-addr`.
    pub metrics_addr: Option<String>,
    /// `--runtime-endpoint`.
    pub runtime_endpoint: Option<String>,
    /// `--containerd-address`.
    pub containerd_address: Option<PathBuf>,
    /// `--containers-storage-root`.
    pub containers_storage_root: Option<PathBuf>,
    /// `--image-id-format`.
    pub image_id_format: Option<ImageIdFormat>,
}

impl FileConfig {
    /// Parses a config file's text; `path` is for messages.
    pub fn parse(text: &str, path: &Path) -> Result<FileConfig, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })
    }

    /// Reads `path`; with `explicit == false` a missing file is the empty config.
    pub fn load(path: &Path, explicit: bool) -> Result<FileConfig, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => FileConfig::parse(&text, path),
            Err(e) if !explicit && e.kind() == std::io::ErrorKind::NotFound => Ok(FileConfig::default()),
            Err(source) => Err(ConfigError::Read {
                path: path.to_path_buf(),
                source,
            }),
        }
    }
}

impl Config {
    /// Merges defaults, the file and the overrides.
    pub fn resolve(file: FileConfig, o: Overrides) -> Result<Config, ConfigError> {
        let (root, socket) = default_paths(rustix::process::geteuid().is_root(), |k: &str| std::env::var_os(k));
        let platform = match o.platform.or(file.platform) {
            Some(p) => Platform::parse(&p)
                .ok_or_else(|| ConfigError::Invalid(format!("platform {p:?} is not os/arch[/variant]")))?,
            None => Platform::host(),
        };
        let max = file.registry.max_concurrent_downloads.unwrap_or(3);
        if max == 0 {
            return Err(ConfigError::Invalid(
                "registry.max_concurrent_downloads must be at least 1".into(),
            ));
        }
        let containerd = file.containerd.resolve(o.containerd_address);
        if let Some(c) = &containerd
            && (c.namespace.is_empty() || c.snapshotter.is_empty())
        {
            return Err(ConfigError::Invalid(
                "containerd.namespace and containerd.snapshotter must not be empty".into(),
            ));
        }
        let containers_storage = file.containers_storage.resolve(o.containers_storage_root);
        if let Some(c) = &containers_storage
            && c.primary_roots.contains(&c.root)
        {
            return Err(ConfigError::Invalid(format!(
                "containers_storage.root {} is also one of its primary_roots: imaged's store must be a store of \
                 its own, listed in the runtimes' additionalimagestores",
                c.root.display()
            )));
        }
        let response_timeout = file
            .registry
            .response_timeout
            .map_or(crate::registry::DEFAULT_RESPONSE_TIMEOUT, |d| d.0);
        if response_timeout.is_zero() {
            return Err(ConfigError::Invalid(
                "registry.response_timeout must be more than 0s".into(),
            ));
        }
        let credential_helper_timeout = file
            .registry
            .credential_helper_timeout
            .map_or(crate::registry::helper::DEFAULT_HELPER_TIMEOUT, |d| d.0);
        if credential_helper_timeout.is_zero() {
            return Err(ConfigError::Invalid(
                "registry.credential_helper_timeout must be more than 0s".into(),
            ));
        }
        Ok(Config {
            root: o.root.or(file.root).unwrap_or(root),
            socket: o.socket.or(file.socket).unwrap_or(socket),
            platform,
            runtime_handlers: file.runtime_handlers.unwrap_or_default(),
            hosts_dir: o.hosts_dir.or(file.registry.hosts_dir),
            auth_files: if o.auth_files.is_empty() {
                file.registry.auth_files.unwrap_or_else(default_auth_paths)
            } else {
                o.auth_files
            },
            max_concurrent_downloads: max,
            fetch: {
                let d = crate::pull::FetchOptions::default();
                crate::pull::FetchOptions {
                    chunk: file.registry.concurrent_layer_fetch_buffer.unwrap_or(d.chunk),
                    parallel_above: file.registry.concurrent_layer_fetch_above.unwrap_or(d.parallel_above),
                    connections: max,
                }
            },
            connect_timeout_secs: file
                .registry
                .connect_timeout_secs
                .unwrap_or(crate::registry::DEFAULT_CONNECT_TIMEOUT.as_secs()),
            response_timeout,
            credential_helper_timeout,
            rate_limit_wait: file
                .registry
                .rate_limit_wait
                .map_or(crate::registry::rate_limit::DEFAULT_RATE_LIMIT_WAIT, |d| d.0),
            unpack: file.unpack.unwrap_or_default(),
            pinned_images: file
                .pinned_images
                .unwrap_or_default()
                .into_iter()
                .chain(o.pinned_images)
                .collect(),
            metrics_addr: match o.metrics_addr.or(file.metrics_addr) {
                Some(a) => Some(
                    a.parse()
                        .map_err(|e| ConfigError::Invalid(format!("metrics_addr {a:?}: {e}")))?,
                ),
                None => None,
            },
            pull: file.pull,
            // With containerd set up, its containers are the ones whose images are in use.
            gc: GcSection {
                runtime_endpoint: o
                    .runtime_endpoint
                    .or(file.gc.runtime_endpoint)
                    .or_else(|| containerd.as_ref().map(|c| format!("unix://{}", c.address.display()))),
                ..file.gc
            },
            containerd,
            containers_storage,
            image_id_format: o.image_id_format.or(file.image_id_format).unwrap_or_default(),
        })
    }
}

/// The embedded default store and socket paths, for root or for another user whose environment `var`
/// reads.
pub fn default_paths(root_user: bool, var: impl Fn(&str) -> Option<std::ffi::OsString>) -> (PathBuf, PathBuf) {
    if root_user {
        return (
            PathBuf::from("/var/lib/imaged"),
            PathBuf::from("/run/imaged/imaged.sock"),
        );
    }
    let env = |k: &str| var(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    let home_data = env("HOME").map(|h| h.join(".local/share"));
    let data = env("XDG_DATA_HOME")
        .or_else(|| home_data.clone())
        .unwrap_or_else(|| PathBuf::from("."));
    let run = env("XDG_RUNTIME_DIR")
        .or(home_data)
        .unwrap_or_else(|| PathBuf::from("."));
    (data.join("imaged"), run.join("imaged").join("imaged.sock"))
}

/// The socket path clients use when `--socket` is not given: the same default as the daemon's.
pub fn default_socket() -> PathBuf {
    default_paths(rustix::process::geteuid().is_root(), |k: &str| std::env::var_os(k)).1
}

#[cfg(test)]
mod tests;
