//! The `[pull]` and `[gc]` sections of the config file.

use std::time::Duration;

use serde::Deserialize;

pub use crate::bridge::containerd::ContainerdConfig;
pub use crate::bridge::containers_storage::ContainersStorageConfig;
use crate::duration::ConfigDuration;

/// `[pull]`: limits, back-off, policy and progress timeout (kubelet's image manager, in the server).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PullSection {
    /// Pulls running at once; 0 = unlimited, 1 = one at a time (kubelet's serialize-image-pulls). Default 0.
    pub max_parallel_pulls: Option<usize>,
    /// Pull starts per second (token bucket); 0 = unlimited. Default 0 (kubelet: 5).
    pub qps: Option<f64>,
    /// Token bucket size. Default 10.
    pub burst: Option<u32>,
    /// Longest a pull waits for a token before failing. Default 1m.
    pub max_qps_wait: Option<ConfigDuration>,
    /// First back-off after a failed pull. Default 10s.
    pub backoff_initial: Option<ConfigDuration>,
    /// Longest back-off. Default 5m.
    pub backoff_max: Option<ConfigDuration>,
    /// Cancel a pull whose bytes stop moving for this long (containerd's image_pull_progress_timeout).
    /// Default 5m; 0 disables.
    pub progress_timeout: Option<ConfigDuration>,
    /// When a tag's registry is unreachable and the tag is present, serve it and log a warning.
    pub stale_if_unavailable: Option<bool>,
    /// Server-side pull policy: `default` and `[[pull.policy.rules]]` of `pattern` and `policy`
    /// (`always`, `if-not-present`, `never`).
    pub policy: Option<crate::ensure::policy::PolicyConfig>,
    /// kubelet's `imagePullCredentialsVerificationPolicy`, spelled as kubelet spells it: which requests for
    /// an image in the store must first have their credentials confirmed by the registry
    /// (`NeverVerify`, `NeverVerifyPreloadedImages`, `NeverVerifyAllowlistedImages`, `AlwaysVerify`).
    /// Default `NeverVerifyPreloadedImages`, as kubelet's.
    pub credentials_verification_policy: Option<crate::ensure::verify::VerifyPolicy>,
    /// kubelet's `preloadedImagesVerificationAllowlist`, read by `NeverVerifyAllowlistedImages` only:
    /// repositories (`registry.example/team/app`) or prefixes (`registry.example/team/*`) never verified.
    pub preloaded_images_verification_allowlist: Option<Vec<String>>,
}

impl PullSection {
    /// `max_qps_wait` or its default.
    pub fn max_qps_wait(&self) -> Duration {
        self.max_qps_wait.map_or(Duration::from_secs(60), |d| d.0)
    }

    /// `backoff_initial` or its default.
    pub fn backoff_initial(&self) -> Duration {
        self.backoff_initial.map_or(Duration::from_secs(10), |d| d.0)
    }

    /// `backoff_max` or its default.
    pub fn backoff_max(&self) -> Duration {
        self.backoff_max.map_or(Duration::from_secs(300), |d| d.0)
    }

    /// The credential verification policy and its allowlist, checked.
    pub fn verify_rules(&self) -> Result<crate::ensure::verify::VerifyRules, crate::ensure::verify::AllowlistError> {
        crate::ensure::verify::VerifyRules::new(
            self.credentials_verification_policy.unwrap_or_default(),
            self.preloaded_images_verification_allowlist
                .as_deref()
                .unwrap_or_default(),
        )
    }

    /// `progress_timeout` or its default; `None` when disabled.
    pub fn progress_timeout(&self) -> Option<Duration> {
        let d = self.progress_timeout.map_or(Duration::from_secs(300), |d| d.0);
        (!d.is_zero()).then_some(d)
    }
}

/// `[gc]`: kubelet's disk-threshold image GC.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GcSection {
    /// Collect when the store's filesystem is at least this full. Default 85; 100 disables.
    pub high_threshold_percent: Option<u8>,
    /// Collect down to this. Default 80.
    pub low_threshold_percent: Option<u8>,
    /// Never collect images younger than this. Default 2m.
    pub min_age: Option<ConfigDuration>,
    /// Collect images unused for longer than this. Default off.
    pub max_age: Option<ConfigDuration>,
    /// How often the background GC runs. Default 5m.
    pub period: Option<ConfigDuration>,
    /// CRI runtime endpoint to ask which images containers use (`unix:///run/containerd/containerd.sock`).
    pub runtime_endpoint: Option<String>,
}

impl GcSection {
    /// The policy these settings describe.
    pub fn policy(&self) -> crate::gc::policy::GcPolicy {
        let d = crate::gc::policy::GcPolicy::default();
        crate::gc::policy::GcPolicy {
            high_threshold_percent: self.high_threshold_percent.unwrap_or(d.high_threshold_percent),
            low_threshold_percent: self.low_threshold_percent.unwrap_or(d.low_threshold_percent),
            min_age: self.min_age.map_or(d.min_age, |m| m.0),
            max_age: self.max_age.map(|m| m.0).filter(|m| !m.is_zero()),
        }
    }

    /// `period` or its default.
    pub fn period(&self) -> Duration {
        self.period.map_or(Duration::from_secs(300), |d| d.0)
    }
}

/// `[containerd]`: publish imaged's images into containerd, whose CRI plugin runs them through imaged's
/// proxy snapshotter. Off unless `address` is set.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerdSection {
    /// containerd's gRPC socket (`/run/containerd/containerd.sock`). Unset: nothing is published.
    pub address: Option<std::path::PathBuf>,
    /// The namespace to publish into. Default `k8s.io` (containerd's CRI plugin).
    pub namespace: Option<String>,
    /// The name containerd loaded imaged's snapshotter under (`[proxy_plugins.<name>]`). Default `imaged`.
    pub snapshotter: Option<String>,
}

impl ContainerdSection {
    /// The resolved section with `address` (from the file or `--containerd-address`), if any.
    pub fn resolve(&self, address: Option<std::path::PathBuf>) -> Option<ContainerdConfig> {
        let address = address.or_else(|| self.address.clone())?;
        let address = match address.to_str().and_then(|s| s.strip_prefix("unix://")) {
            Some(p) => std::path::PathBuf::from(p),
            None => address,
        };
        Some(ContainerdConfig {
            address,
            namespace: self.namespace.clone().unwrap_or_else(|| "k8s.io".into()),
            snapshotter: self.snapshotter.clone().unwrap_or_else(|| "imaged".into()),
        })
    }
}

/// `[containers_storage]`: keep a read-only containers/storage image store over imaged's layers, for
/// CRI-O, podman and buildah to list in `additionalimagestores`. Off unless `root` is set.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainersStorageSection {
    /// The store's directory (`/var/lib/imaged-storage`). Unset: no store is kept.
    pub root: Option<std::path::PathBuf>,
    /// The runtimes' own (primary) stores whose containers may sit on imaged's layers: those layers are
    /// kept while they do. Default `["/var/lib/containers/storage"]`.
    pub primary_roots: Option<Vec<std::path::PathBuf>>,
}

/// Where CRI-O and podman keep their own images and containers by default.
pub const DEFAULT_PRIMARY_ROOT: &str = "/var/lib/containers/storage";

impl ContainersStorageSection {
    /// The resolved section with `root` (from the file or `--containers-storage-root`), if any.
    pub fn resolve(&self, root: Option<std::path::PathBuf>) -> Option<ContainersStorageConfig> {
        let root = root.or_else(|| self.root.clone())?;
        let primary_roots = self
            .primary_roots
            .clone()
            .unwrap_or_else(|| vec![DEFAULT_PRIMARY_ROOT.into()]);
        Some(ContainersStorageConfig { root, primary_roots })
    }
}

/// How image ids are written in CRI answers (`Image.id`, `PullImageResponse.image_ref`): kubelet passes
/// them to the runtime's CreateContainer and matches them against the runtime's `Container.image_ref`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageIdFormat {
    /// `sha256:<hex>`, as containerd writes and resolves them.
    #[default]
    Digest,
    /// The bare 64-hex id, as CRI-O writes them and as its CreateContainer resolves them.
    Hex,
}

impl ImageIdFormat {
    /// `id` in this format.
    pub fn render(self, id: &crate::digest::Digest) -> String {
        match self {
            ImageIdFormat::Digest => id.to_string(),
            ImageIdFormat::Hex => id.hex(),
        }
    }

    /// Parses `digest` or `hex` (the command line's spelling).
    pub fn parse(s: &str) -> Option<ImageIdFormat> {
        match s {
            "digest" => Some(ImageIdFormat::Digest),
            "hex" => Some(ImageIdFormat::Hex),
            _ => None,
        }
    }
}
