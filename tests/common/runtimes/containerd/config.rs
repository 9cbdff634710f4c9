//! containerd's `config.toml` for a test or benchmark instance (see the parent module's doc for what it
//! sets up and why), in the format of its line: version 2 for 1.6 / 1.7, version 3 for 2.x.
//!
//! With [`super::ContainerdOptions::imaged`], imaged's part is exactly what `imaged containerd-config`
//! prints for that release, applied as README.md tells a user: on 2.x the drop-in file, imported from
//! `conf.d/`; on 1.x its tables merged into `config.toml`.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::ContainerdOptions;
use super::line::Line;

/// Snapshotters that cannot run here (no btrfs, zfs, devmapper pool, aufs or erofs module); they would
/// only log errors.
const DISABLED: &str = r#"disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.erofs",
  "io.containerd.snapshotter.v1.blockfile",
]"#;

/// containerd's `config.toml` for `opts`: root, state, opt, runc root and CNI dirs under `dir`, gRPC on
/// `socket` (ttrpc next to it), no TCP streaming port, the CRI plugin set up for this machine (see the
/// module doc). Writes imaged's drop-in under `dir/conf.d/` when the line reads one. The benchmark's
/// containerds are written by it too.
pub fn config_toml(dir: &Path, socket: &Path, opts: &ContainerdOptions) -> String {
    let mut toml = if opts.line.is_v2() {
        v3(dir, socket, opts)
    } else {
        v2(dir, socket, opts)
    };
    if let Some(imaged) = &opts.imaged {
        let snippet = imaged_containerd_config(&imaged.bin, &opts.line, &imaged.socket, &imaged.root);
        if opts.line.is_v2() {
            let conf_d = dir.join("conf.d");
            std::fs::create_dir_all(&conf_d).expect("create containerd conf.d");
            std::fs::write(conf_d.join("imaged.toml"), &snippet).expect("write imaged's drop-in");
        } else {
            toml = merged(&toml, &snippet);
        }
    }
    if !opts.extra_config.is_empty() {
        toml.push('\n');
        toml.push_str(&opts.extra_config);
    }
    toml
}

/// What `imaged containerd-config` (`bin`) prints for `line`'s release, imaged at `socket` with store `root`.
pub fn imaged_containerd_config(bin: &Path, line: &Line, socket: &Path, root: &Path) -> String {
    let out = Command::new(bin)
        .arg("containerd-config")
        .args(["--containerd-version", &line.version().to_string()])
        .arg("--socket")
        .arg(socket)
        .arg("--root")
        .arg(root)
        // No /etc/imaged/config.toml of this machine.
        .args(["--config", "/dev/null"])
        .output()
        .expect("run imaged containerd-config");
    assert!(
        out.status.success(),
        "imaged containerd-config failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("containerd-config prints UTF-8")
}

/// `base` with the tables of `add` merged in, key by key, as a user adds lines to `config.toml`.
fn merged(base: &str, add: &str) -> String {
    fn merge(into: &mut toml::Table, from: toml::Table) {
        for (k, v) in from {
            match (into.get_mut(&k), v) {
                (Some(toml::Value::Table(a)), toml::Value::Table(b)) => merge(a, b),
                (_, v) => {
                    into.insert(k, v);
                }
            }
        }
    }
    let mut table: toml::Table = base.parse().expect("the test's config.toml parses");
    merge(&mut table, add.parse().expect("imaged containerd-config prints TOML"));
    toml::to_string(&table).expect("config.toml serialises")
}

/// What both formats write alike: root, state, disabled plugins, sockets, log level, no metrics.
fn common(dir: &Path, socket: &Path, o: &ContainerdOptions) -> String {
    let d = dir.display();
    let socket = socket.display();
    format!(
        r#"root = "{d}/root"
state = "{d}/state"
{DISABLED}

[grpc]
  address = "{socket}"

[ttrpc]
  address = "{socket}.ttrpc"

[debug]
  address = ""
  level = "{level}"

[metrics]
  address = ""
"#,
        level = o.log_level,
    )
}

fn v2(dir: &Path, socket: &Path, o: &ContainerdOptions) -> String {
    let d = dir.display();
    let mut toml = format!(
        r#"version = 2
{common}
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
        BinaryName = "{runc}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{d}/cni/bin"
    conf_dir = "{d}/cni/conf"
"#,
        sandbox = o.sandbox_image,
        snapshotter = o.snapshotter,
        runc = o.line.runc().display(),
        common = common(dir, socket, o),
    );
    if let Some(hosts) = &o.hosts_dir {
        toml.push_str(&format!(
            "  [plugins.\"io.containerd.grpc.v1.cri\".registry]\n    config_path = \"{}\"\n",
            hosts.display()
        ));
    }
    push_proxies(&mut toml, &o.proxy_snapshotters);
    toml
}

fn v3(dir: &Path, socket: &Path, o: &ContainerdOptions) -> String {
    let d = dir.display();
    let mut toml = format!(
        r#"version = 3
imports = ["{d}/conf.d/*.toml"]
{common}
[plugins.'io.containerd.internal.v1.opt']
  path = "{d}/opt"

[plugins.'io.containerd.grpc.v1.cri']
  disable_tcp_service = true
  # Port 0: instances must not fight over the default streaming port (a bind failure is fatal).
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"

[plugins.'io.containerd.cri.v1.runtime']
  enable_selinux = false
  disable_apparmor = true
  # No CAP_SYS_RESOURCE here: never ask for an oom_score_adj below containerd's own.
  restrict_oom_score_adj = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        # runc's state (default /run/containerd/runc) stays in this instance.
        Root = "{d}/runc"
        BinaryName = "{runc}"
  # Network namespaces (with a pod network) stay in this instance.
  netns_mounts_under_state_dir = true
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dir = "{cni_bin}"
    conf_dir = "{d}/cni/conf"

[plugins.'io.containerd.cri.v1.images']
  snapshotter = "{snapshotter}"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "{sandbox}"
"#,
        sandbox = o.sandbox_image,
        snapshotter = o.snapshotter,
        runc = o.line.runc().display(),
        common = common(dir, socket, o),
        cni_bin = if o.pod_network {
            super::network::CNI_PLUGINS.to_string()
        } else {
            format!("{d}/cni/bin")
        },
    );
    if let Some(hosts) = &o.hosts_dir {
        toml.push_str(&format!(
            "  [plugins.'io.containerd.cri.v1.images'.registry]\n    config_path = \"{}\"\n",
            hosts.display()
        ));
    }
    push_proxies(&mut toml, &o.proxy_snapshotters);
    toml
}

fn push_proxies(toml: &mut String, proxies: &[(String, PathBuf)]) {
    for (name, address) in proxies {
        toml.push_str(&format!(
            "\n[proxy_plugins.{name}]\n  type = \"snapshot\"\n  address = \"{}\"\n",
            address.display()
        ));
    }
}
