//! Leaving nothing behind: what dropping a [`super::Containerd`] does, and [`Traces`] to check it.
//!
//! Teardown does not ask containerd (it may be wedged, killed or mid-restart): it kills containerd, then
//! removes what containerd and its shims made, each by what this instance alone owns:
//! 1. containerd itself (SIGKILL);
//! 2. every container in this instance's runc root (`runc delete --force`: kills its processes, removes
//!    its cgroup and state);
//! 3. every shim: the pids in the bundles' `shim.pid`, and any process whose command line names this
//!    instance's socket (a shim whose bundle is gone), each checked to be a `containerd-shim` of this
//!    instance before SIGKILL; then the shims' sockets under `/run/containerd/s/`;
//! 4. every mount under the temp dir (rootfs overlays, sandbox `/dev/shm` tmpfs, leftover temp mounts),
//!    deepest first, lazily if busy;
//! 5. the pods' cgroup parent under every cgroup hierarchy, deepest first;
//! 6. the temp dir (by its `TempDir` owner, after this).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process};
use sha2::{Digest, Sha256};

use super::{NAMESPACE, cgroup_parent_of};

/// Where containerd 1.6's shims put their sockets, whatever the state dir (`runtime/v2/shim/util_unix.go`).
const SHIM_SOCKET_DIR: &str = "/run/containerd/s";

/// Tears down the instance in `dir` (see the module doc). Never panics: it runs in `Drop`.
pub(super) fn teardown(dir: &Path, socket: &Path, child: Option<Child>, sandboxes: &[String], runc: &Path) {
    if let Some(mut child) = child {
        let _ = child.kill();
        let _ = child.wait();
    }
    let runc_root = dir.join("runc").join(NAMESPACE);
    for id in subdirs(&runc_root) {
        let _ = Command::new(runc)
            .arg("--root")
            .arg(&runc_root)
            .args(["delete", "--force", &id])
            .output();
    }
    let mut shims: Vec<u32> = subdirs(&bundles(dir))
        .iter()
        .filter_map(|id| fs::read_to_string(bundles(dir).join(id).join("shim.pid")).ok())
        .filter_map(|pid| pid.trim().parse().ok())
        .collect();
    shims.extend(processes_naming(socket));
    shims.sort_unstable();
    shims.dedup();
    // Only shims: other processes may name the socket too (imaged's --containerd-address).
    shims.retain(|&p| is_our_shim(p, socket));
    for &pid in &shims {
        if let Some(p) = Pid::from_raw(pid as i32) {
            let _ = kill_process(p, Signal::KILL);
        }
    }
    wait_gone(&shims, Duration::from_secs(10));
    for path in shim_sockets(socket, sandboxes) {
        let _ = fs::remove_file(path);
    }
    for mount in mounts_under(dir) {
        let ok = Command::new("umount").arg(&mount).output().map(|o| o.status.success());
        if !matches!(ok, Ok(true)) {
            let _ = Command::new("umount").arg("-l").arg(&mount).output();
        }
    }
    for cgroup in cgroup_dirs(&cgroup_parent_of(dir)) {
        remove_cgroup(&cgroup);
    }
}

/// What a dropped instance could have left behind, recorded while it lived.
pub struct Traces {
    dir: PathBuf,
    socket: PathBuf,
    sandboxes: Arc<Mutex<Vec<String>>>,
}

impl Traces {
    pub(super) fn new(dir: &Path, socket: &Path, sandboxes: Arc<Mutex<Vec<String>>>) -> Traces {
        Traces {
            dir: dir.to_path_buf(),
            socket: socket.to_path_buf(),
            sandboxes,
        }
    }

    /// Everything of the instance still there, one line each: its temp dir, mounts under it, processes
    /// naming its socket or dir (containerd, shims), its cgroup dirs (which exist as long as a container
    /// process does), and shim sockets of its sandboxes. Empty after a clean teardown.
    pub fn remaining(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.dir.exists() {
            out.push(format!("temp dir {}", self.dir.display()));
        }
        out.extend(mounts_under(&self.dir).iter().map(|m| format!("mount {}", m.display())));
        let mut pids = processes_naming(&self.socket);
        pids.extend(processes_naming(&self.dir));
        pids.sort_unstable();
        pids.dedup();
        out.extend(pids.iter().map(|p| format!("process {p}: {}", cmdline(*p).join(" "))));
        out.extend(
            cgroup_dirs(&cgroup_parent_of(&self.dir))
                .iter()
                .filter(|c| c.exists())
                .map(|c| format!("cgroup {}", c.display())),
        );
        let sandboxes = self.sandboxes.lock().map(|s| s.clone()).unwrap_or_default();
        out.extend(
            shim_sockets(&self.socket, &sandboxes)
                .iter()
                .filter(|s| s.exists())
                .map(|s| format!("shim socket {}", s.display())),
        );
        out
    }

    /// Asserts [`Traces::remaining`] is empty.
    pub fn assert_none_left(&self) {
        let left = self.remaining();
        assert!(
            left.is_empty(),
            "the containerd instance left behind:\n{}",
            left.join("\n")
        );
    }
}

/// The runtime v2 bundles of the CRI namespace (one per container and sandbox).
fn bundles(dir: &Path) -> PathBuf {
    dir.join("state/io.containerd.runtime.v2.task").join(NAMESPACE)
}

fn subdirs(dir: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// The socket of the shim serving sandbox `id`: `/run/containerd/s/<sha256(socket/namespace/id)>`.
pub fn shim_socket(socket: &Path, sandbox_id: &str) -> PathBuf {
    let key = format!("{}/{NAMESPACE}/{sandbox_id}", socket.display());
    Path::new(SHIM_SOCKET_DIR).join(hex::encode(Sha256::digest(key.as_bytes())))
}

fn shim_sockets(socket: &Path, sandboxes: &[String]) -> Vec<PathBuf> {
    sandboxes.iter().map(|id| shim_socket(socket, id)).collect()
}

/// The argv of process `pid` (empty if it is gone).
fn cmdline(pid: u32) -> Vec<String> {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|c| *c == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Processes (other than this one) one of whose arguments contains `path`.
fn processes_naming(path: &Path) -> Vec<u32> {
    let needle = path.display().to_string();
    let me = std::process::id();
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me && cmdline(pid).iter().any(|a| a.contains(&needle)))
        .collect()
}

/// Whether `pid` is a containerd shim started by the containerd on `socket` (`-address <socket>`).
fn is_our_shim(pid: u32, socket: &Path) -> bool {
    let argv = cmdline(pid);
    let socket = socket.display().to_string();
    argv.first().is_some_and(|a| a.contains("containerd-shim")) && argv.contains(&socket)
}

fn wait_gone(pids: &[u32], timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline && pids.iter().any(|p| Path::new(&format!("/proc/{p}")).exists()) {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Mount points at or under `dir` (in this mount namespace), deepest first.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let prefix = dir.display().to_string();
    let mut out: Vec<PathBuf> = mountinfo()
        .into_iter()
        .filter(|(point, _)| point == &prefix || point.starts_with(&format!("{prefix}/")))
        .map(|(point, _)| PathBuf::from(point))
        .collect();
    out.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    out.dedup();
    out
}

/// `(mount point, fs type)` of every mount in this mount namespace, in mount order.
fn mountinfo() -> Vec<(String, String)> {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let sep = fields.iter().position(|f| *f == "-")?;
            Some((unescape(fields.get(4)?), fields.get(sep + 1)?.to_string()))
        })
        .collect()
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape(field: &str) -> String {
    let mut out = Vec::new();
    let bytes = field.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && let Some(Ok(v)) = field.get(i + 1..i + 4).map(|o| u8::from_str_radix(o, 8))
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `<hierarchy mount>/<parent>` for every cgroup (v1 and v2) hierarchy mounted here.
fn cgroup_dirs(parent: &str) -> Vec<PathBuf> {
    let rel = parent.trim_start_matches('/');
    mountinfo()
        .into_iter()
        .filter(|(_, fstype)| fstype == "cgroup" || fstype == "cgroup2")
        .map(|(point, _)| Path::new(&point).join(rel))
        .collect()
}

/// Removes cgroup dir `path` and its child cgroups, deepest first (cgroup dirs are removed with rmdir,
/// their control files go with them). A cgroup that still has processes stays.
fn remove_cgroup(path: &Path) {
    for child in subdirs(path) {
        remove_cgroup(&path.join(child));
    }
    let _ = fs::remove_dir(path);
}
