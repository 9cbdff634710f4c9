//! containerd 2.x's `config.toml` (version 3) for a test instance, and where `hack/install-test-runtimes`
//! unpacks containerd 2.1 and a runc with idmapped mounts: the same instance as [`super::config`]'s,
//! in the plugin layout of 2.x (`io.containerd.cri.v1.images` / `.runtime`), with what 2.1 needs besides:
//! the transfer service's `unpack_config` for each proxy snapshotter (2.1 pulls through it and unpacks only
//! into the snapshotters listed; overlayfs kept, as a list replaces the default) and each proxy's
//! `capabilities`.

use std::path::{Path, PathBuf};

use super::super::registry::require_tool;
use super::ContainerdOptions;

/// The private directory of `hack/install-test-runtimes` (`$IMAGED_TEST_DEPS`, else
/// `/opt/imaged-test-deps`).
pub fn test_deps() -> PathBuf {
    std::env::var_os("IMAGED_TEST_DEPS").map_or_else(|| PathBuf::from("/opt/imaged-test-deps"), PathBuf::from)
}

/// The directory of containerd 2.1's `containerd` and `containerd-shim-runc-v2` (Debian unstable's).
pub fn containerd_2_1_bin() -> PathBuf {
    test_deps().join("containerd-sid/usr/bin")
}

/// runc 1.3 (Debian unstable's), which has idmapped mounts (`runc features`: `mountExtensions.idmap`).
pub fn runc_1_3() -> PathBuf {
    test_deps().join("runc-sid/usr/sbin/runc")
}

impl ContainerdOptions {
    /// Runs containerd 2.1 and runc 1.3 from `hack/install-test-runtimes`' directory, with a version-3
    /// config.
    pub fn containerd_2_1(mut self) -> Self {
        self.binaries = Some(containerd_2_1_bin());
        self.runc = Some(runc_1_3());
        self.config_v3 = true;
        self
    }

    /// Declares `capabilities` for the proxy snapshotters (containerd 1.7.23+ and 2.x read them).
    pub fn proxy_capabilities(mut self, capabilities: &[&str]) -> Self {
        self.proxy_capabilities = capabilities.iter().map(|c| c.to_string()).collect();
        self
    }
}

/// Panics, saying what to run, unless the containerd, shim and runc that `opts` name are there.
pub fn require_binaries(opts: &ContainerdOptions) {
    match &opts.binaries {
        None => ["containerd", "containerd-shim-runc-v2"]
            .into_iter()
            .for_each(require_tool),
        Some(dir) => {
            for tool in ["containerd", "containerd-shim-runc-v2"] {
                let path = dir.join(tool);
                assert!(
                    path.is_file(),
                    "{} is missing: run hack/install-test-runtimes",
                    path.display()
                );
            }
        }
    }
    match &opts.runc {
        None => require_tool("runc"),
        Some(path) => assert!(
            path.is_file(),
            "{} is missing: run hack/install-test-runtimes",
            path.display()
        ),
    }
}

/// Debian's CNI plugins (`containernetworking-plugins`).
const CNI_PLUGINS: &str = "/usr/lib/cni";

/// The CNI network of an instance with [`ContainerdOptions::pod_network`]: a `ptp` veth pair per pod and
/// an address from a /24 of 10.213.0.0/16 picked by the instance's directory name (host-local's state in
/// `dir`), no masquerading, no bridge: what a user-namespaced pod needs (its own network namespace), and
/// nothing on the host outlives the pod.
pub fn cni_conflist(dir: &Path) -> String {
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

/// containerd's `config.toml` (version 3) for `opts`; see [`super::config::config_toml`] for the layout.
pub fn config_v3_toml(dir: &Path, socket: &Path, opts: &ContainerdOptions) -> String {
    let d = dir.display();
    let socket = socket.display();
    let o = opts;
    let runc = o
        .runc
        .as_ref()
        .map_or(String::new(), |r| format!("BinaryName = \"{}\"", r.display()));
    let shim = o.binaries.as_ref().map_or(String::new(), |b| {
        format!("runtime_path = \"{}\"", b.join("containerd-shim-runc-v2").display())
    });
    let mut toml = format!(
        r#"version = 3
root = "{d}/root"
state = "{d}/state"
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.erofs",
]

[grpc]
  address = "{socket}"

[ttrpc]
  address = "{socket}.ttrpc"

[debug]
  address = ""
  level = "{level}"

[metrics]
  address = ""

[plugins.'io.containerd.internal.v1.opt']
  path = "{d}/opt"

[plugins.'io.containerd.grpc.v1.cri']
  disable_tcp_service = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"

[plugins.'io.containerd.cri.v1.images']
  snapshotter = "{snapshotter}"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "{sandbox}"
{registry}
[plugins.'io.containerd.cri.v1.runtime']
  enable_selinux = false
  disable_apparmor = true
  restrict_oom_score_adj = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      {shim}
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        Root = "{d}/runc"
        {runc}
  # Network namespaces (a user-namespaced pod needs its own) stay in this instance.
  netns_mounts_under_state_dir = true
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["{cni_bin}"]
    conf_dir = "{d}/cni/conf"
"#,
        sandbox = o.sandbox_image,
        snapshotter = o.snapshotter,
        level = o.log_level,
        cni_bin = if o.pod_network {
            CNI_PLUGINS.to_string()
        } else {
            format!("{d}/cni/bin")
        },
        registry = o.hosts_dir.as_ref().map_or(String::new(), |h| format!(
            "  [plugins.'io.containerd.cri.v1.images'.registry]\n    config_path = \"{}\"\n",
            h.display()
        )),
    );
    toml.push_str("\n[plugins.'io.containerd.transfer.v1.local']\n");
    for name in o
        .proxy_snapshotters
        .iter()
        .map(|(n, _)| n.as_str())
        .chain(["overlayfs"])
    {
        toml.push_str(&format!(
            "  [[plugins.'io.containerd.transfer.v1.local'.unpack_config]]\n    platform = \"linux/amd64\"\n    \
             snapshotter = \"{name}\"\n"
        ));
    }
    let capabilities: Vec<String> = o.proxy_capabilities.iter().map(|c| format!("{c:?}")).collect();
    for (name, address) in &o.proxy_snapshotters {
        toml.push_str(&format!(
            "\n[proxy_plugins.{name}]\n  type = \"snapshot\"\n  address = \"{}\"\n  capabilities = [{}]\n",
            address.display(),
            capabilities.join(", ")
        ));
    }
    if !o.extra_config.is_empty() {
        toml.push('\n');
        toml.push_str(&o.extra_config);
    }
    toml
}
