//! containerd's `config.toml` for a test or benchmark instance (see the parent module's doc for what it
//! sets up and why).

use std::path::Path;

use super::ContainerdOptions;

/// containerd's `config.toml` (version 2) for `opts`: root, state, opt, runc root and CNI dirs under `dir`,
/// gRPC on `socket` (ttrpc next to it), no TCP streaming port, the CRI plugin set up for this machine (see
/// the module doc). The benchmark's containerds are written by it too.
pub fn config_toml(dir: &Path, socket: &Path, opts: &ContainerdOptions) -> String {
    let d = dir.display();
    let socket = socket.display();
    let o = opts;
    let mut toml = format!(
        r#"version = 2
root = "{d}/root"
state = "{d}/state"
# Snapshotters that cannot run here (no btrfs, zfs, devmapper pool or aufs module); they would only log errors.
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
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

[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"

[plugins."io.containerd.grpc.v1.cri"]
  disable_tcp_service = true
  # Port 0: instances must not fight over the default streaming port (a bind failure is fatal).
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  disable_apparmor = true
  # No CAP_SYS_RESOURCE here: never ask for an oom_score_adj below containerd's own.
  restrict_oom_score_adj = true
  sandbox_image = "{sandbox}"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "{snapshotter}"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        # runc's state (default /run/containerd/runc) stays in this instance.
        Root = "{d}/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{d}/cni/bin"
    conf_dir = "{d}/cni/conf"
"#,
        sandbox = o.sandbox_image,
        snapshotter = o.snapshotter,
        level = o.log_level,
    );
    if let Some(hosts) = &o.hosts_dir {
        toml.push_str(&format!(
            "  [plugins.\"io.containerd.grpc.v1.cri\".registry]\n    config_path = \"{}\"\n",
            hosts.display()
        ));
    }
    for (name, address) in &o.proxy_snapshotters {
        toml.push_str(&format!(
            "\n[proxy_plugins.{name}]\n  type = \"snapshot\"\n  address = \"{}\"\n",
            address.display()
        ));
    }
    if !o.extra_config.is_empty() {
        toml.push('\n');
        toml.push_str(&o.extra_config);
    }
    toml
}
