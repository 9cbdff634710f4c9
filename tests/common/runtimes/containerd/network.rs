//! A pod network for test instances that run pods in network namespaces of their own (user-namespaced
//! pods: containerd pins a pod's user namespace through its network namespace, so such a pod cannot use
//! the host network): one CNI network of Debian's plugins, set up by [`ContainerdOptions::pod_network`].

use std::path::Path;

use super::ContainerdOptions;

/// Debian's CNI plugins (`containernetworking-plugins`).
pub const CNI_PLUGINS: &str = "/usr/lib/cni";

/// The file the network is written to, under the instance's CNI `conf_dir`.
pub const CONFLIST: &str = "10-imaged-test.conflist";

impl ContainerdOptions {
    /// Gives pods that ask for their own network namespace one, on the network of [`conflist`]; containerd's
    /// network namespaces are then mounted under its state dir, inside the instance.
    pub fn pod_network(mut self) -> Self {
        self.pod_network = true;
        self
    }
}

/// The CNI network of the instance in `dir`: a `ptp` veth pair per pod and an address from a /24 of
/// 10.213.0.0/16 picked by the directory's name (host-local's state under `dir`), no masquerading and no
/// bridge, so nothing on the host outlives the pod's network namespace.
pub fn conflist(dir: &Path) -> String {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let net = name
        .bytes()
        .fold(7u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)))
        % 250;
    format!(
        r#"{{"cniVersion": "1.0.0", "name": "imaged-test-{net}", "plugins": [{{"type": "ptp", "ipMasq": false,
  "ipam": {{"type": "host-local", "subnet": "10.213.{net}.0/24", "dataDir": "{}/cni/ipam"}}}}]}}"#,
        dir.display()
    )
}
