//! containerd's sandbox image, which imaged pins as containerd does (see `pinned`).
//!
//! Where containerd says which image it pins:
//! - 1.6 and 1.7: CRI `Status(verbose)` answers `info["config"]`, the CRI plugin's configuration as JSON,
//!   whose `sandboxImage` is the sandbox image (`pkg/cri/config/config.go`, `pkg/cri/server/status.go`).
//! - 2.x: `info["config"]` is the runtime half of the configuration only (`internal/cri/config/config.go`,
//!   `Config` = `RuntimeConfig` and directories); the sandbox image moved to the images plugin's
//!   `pinned_images` (`sandbox = "…"`), which no API shows. A configuration with a `pinned_images` (or
//!   `pinnedImages`) object is read all the same, should a version show it.
//! - every version from 1.7: the images containerd pulled itself as pinned carry its pinned label, and its
//!   CRI ListImages says `pinned: true` for them; their names are pinned too. (So on 2.x the sandbox image is
//!   known once containerd has pulled it, for its first pod.)
//!
//! None of these known, `pinned`'s default (`registry.k8s.io/pause`) stays.

use tonic::Code;

use super::{BridgeError, Conn, ContainerdBridge};
use crate::proto::runtime::v1 as cri;

/// The images containerd's CRI configuration (`Status(verbose)`'s `info["config"]`, JSON) pins: its
/// `sandboxImage` (1.x), or the values of a `pinned_images` / `pinnedImages` object. Empty when it names
/// none; an error when it is not a JSON object.
pub fn pinned_in_config(config_json: &str) -> Result<Vec<String>, String> {
    let value: serde_json::Value = serde_json::from_str(config_json).map_err(|e| e.to_string())?;
    let config = value
        .as_object()
        .ok_or_else(|| "the configuration is not a JSON object".to_string())?;
    let mut names = Vec::new();
    if let Some(s) = config.get("sandboxImage").and_then(|v| v.as_str()) {
        names.push(s.to_string());
    }
    for key in ["pinned_images", "pinnedImages"] {
        if let Some(map) = config.get(key).and_then(|v| v.as_object()) {
            names.extend(map.values().filter_map(|v| v.as_str()).map(str::to_string));
        }
    }
    names.retain(|n| !n.trim().is_empty());
    names.sort();
    names.dedup();
    Ok(names)
}

impl ContainerdBridge {
    /// Learns the images containerd pins (its configuration, and `pinned_listed`: the names of the images
    /// its CRI ListImages says are pinned) and pins them as the sandbox image. containerd without a CRI
    /// plugin pins nothing.
    pub(super) async fn learn_sandbox(&self, conn: &Conn, pinned_listed: &[String]) -> Result<(), BridgeError> {
        let req = conn.req(cri::StatusRequest { verbose: true }, None);
        let mut names = match conn.cri_runtime().status(req).await {
            Ok(r) => match r.get_ref().info.get("config").map(|c| pinned_in_config(c)) {
                Some(Ok(names)) => names,
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "containerd's CRI Status: cannot read its configuration");
                    Vec::new()
                }
                None => Vec::new(),
            },
            Err(s) if s.code() == Code::Unimplemented => Vec::new(),
            Err(s) => return Err(self.failed(BridgeError::rpc(conn.address(), "ask CRI for its status", &s))),
        };
        names.extend(pinned_listed.iter().cloned());
        names.sort();
        names.dedup();
        if self.pinned.set_sandbox_images(&names) {
            tracing::info!(
                pinned = ?self.pinned.sandbox_patterns(),
                "pinning the sandbox image containerd pins"
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containerd_1x_names_its_sandbox_image() {
        // Abridged from containerd 1.6's `crictl info` (pkg/cri/config.PluginConfig).
        let config = r#"{"containerd":{"snapshotter":"overlayfs","defaultRuntimeName":"runc"},
            "cni":{"binDir":"/opt/cni/bin","confDir":"/etc/cni/net.d"},"registry":{"configPath":""},
            "streamServerAddress":"127.0.0.1","enableSelinux":false,
            "sandboxImage":"registry.k8s.io/pause:3.6","statsCollectPeriod":10,
            "containerdRootDir":"/var/lib/containerd","stateDir":"/run/containerd/io.containerd.grpc.v1.cri"}"#;
        assert_eq!(pinned_in_config(config).unwrap(), ["registry.k8s.io/pause:3.6"]);
    }

    #[test]
    fn containerd_2x_shows_no_sandbox_image_in_its_runtime_configuration() {
        // Abridged from containerd 2.1's `crictl info` (internal/cri/config.Config: RuntimeConfig + dirs).
        let config = r#"{"containerd":{"defaultRuntimeName":"runc","runtimes":{"runc":{"runtimeType":
            "io.containerd.runc.v2","snapshotter":"","sandboxer":"podsandbox"}}},
            "cni":{"binDir":"/opt/cni/bin","confDir":"/etc/cni/net.d","maxConfNum":1},"enableSelinux":false,
            "enableCDI":true,"cdiSpecDirs":["/etc/cdi","/var/run/cdi"],"drainExecSyncIOTimeout":"0s",
            "containerdRootDir":"/var/lib/containerd","containerdEndpoint":"/run/containerd/containerd.sock",
            "rootDir":"/var/lib/containerd/io.containerd.grpc.v1.cri",
            "stateDir":"/run/containerd/io.containerd.grpc.v1.cri"}"#;
        assert_eq!(pinned_in_config(config).unwrap(), Vec::<String>::new());
    }

    #[test]
    fn an_image_configuration_with_pinned_images_is_read_too() {
        // 2.x's images plugin configuration (internal/cri/config.ImageConfig), `pinned_images` in JSON.
        let config = r#"{"snapshotter":"overlayfs","pinned_images":{"sandbox":"registry.k8s.io/pause:3.10",
            "base":"docker.io/library/busybox:1.36"},"maxConcurrentDownloads":3}"#;
        assert_eq!(
            pinned_in_config(config).unwrap(),
            ["docker.io/library/busybox:1.36", "registry.k8s.io/pause:3.10"]
        );
        let camel = r#"{"pinnedImages":{"sandbox":"mirror.example/pause:3.10"},"sandboxImage":""}"#;
        assert_eq!(pinned_in_config(camel).unwrap(), ["mirror.example/pause:3.10"]);
    }

    #[test]
    fn what_is_not_a_json_object_is_an_error() {
        assert!(pinned_in_config("not json").is_err());
        assert!(pinned_in_config("[1]").unwrap_err().contains("not a JSON object"));
    }
}
