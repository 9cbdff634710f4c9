//! Mounting a user-namespaced snapshot's mounts as containerd 2.1's mount code does
//! (`core/mount/mount_linux.go`): from the `uidmap=`/`gidmap=` options, a user namespace with those
//! mappings; for overlay, one read-only idmapped mount (`open_tree(OPEN_TREE_CLONE)`,
//! `mount_setattr(MOUNT_ATTR_IDMAP)`, `move_mount`) of the lower directories' common directory
//! (`getCommonDirectory`: the longest common prefix, then its parent), the lowerdirs rewritten through it,
//! and the overlay mounted over those; for a bind mount, the bind idmapped in place.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use containerd_client::types::Mount;
use rustix::fs::CWD;
use rustix::mount::{MoveMountFlags, OpenTreeFlags, move_mount, open_tree};

use crate::common::runtimes::snapshots_api;

/// A user namespace with given mappings, held by a sleeping process inside it until dropped.
pub struct UserNs {
    child: Child,
    fd: OwnedFd,
}

impl UserNs {
    /// A user namespace mapping uids by `uidmap` and gids by `gidmap` (`<inside>:<outside>:<len>[,…]`, the
    /// snapshot labels' format), as containerd's `GetUsernsFD` makes one.
    pub fn new(uidmap: &str, gidmap: &str) -> UserNs {
        let mut child = Command::new("unshare")
            .args(["--user", "sleep", "600"])
            .spawn()
            .expect("spawn unshare (util-linux)");
        let pid = child.id();
        let ours = std::fs::read_link("/proc/self/ns/user").unwrap();
        let started = Instant::now();
        while std::fs::read_link(format!("/proc/{pid}/ns/user")).unwrap() == ours {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "unshare --user did not unshare"
            );
            if let Some(status) = child.try_wait().unwrap() {
                panic!("unshare --user exited with {status}");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let lines = |m: &str| m.split(',').map(|r| r.replace(':', " ") + "\n").collect::<String>();
        std::fs::write(format!("/proc/{pid}/uid_map"), lines(uidmap)).unwrap();
        std::fs::write(format!("/proc/{pid}/gid_map"), lines(gidmap)).unwrap();
        let fd = std::fs::File::open(format!("/proc/{pid}/ns/user")).unwrap().into();
        UserNs { child, fd }
    }
}

impl UserNs {
    /// Runs `args` as the namespace's root (`nsenter --user`, which sets uid and gid 0), in our mounts.
    pub fn run(&self, args: &[&str]) -> std::process::Output {
        Command::new("nsenter")
            .arg(format!("--user=/proc/{}/ns/user", self.child.id()))
            .arg("--")
            .args(args)
            .output()
            .expect("run nsenter (util-linux)")
    }
}

impl Drop for UserNs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Clones the mount at `source` onto `target` (a directory), idmapped by `userns` and read-only if asked.
pub fn idmap_mount(source: &Path, target: &Path, userns: &UserNs, read_only: bool) {
    let tree = open_tree(
        CWD,
        source,
        OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC,
    )
    .unwrap_or_else(|e| panic!("open_tree {}: {e}", source.display()));
    let mut attr = libc::mount_attr {
        attr_set: libc::MOUNT_ATTR_IDMAP | if read_only { libc::MOUNT_ATTR_RDONLY } else { 0 },
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.fd.as_raw_fd() as u64,
    };
    // SAFETY: mount_setattr(2) reads `size` bytes of `attr`, a live `struct mount_attr`, and the empty
    // C string; `tree` is an open mount fd. No memory is shared beyond the call.
    #[allow(unsafe_code)]
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_fd().as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            &mut attr as *mut libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    assert_eq!(
        rc,
        0,
        "mount_setattr(MOUNT_ATTR_IDMAP) {}: {}",
        source.display(),
        std::io::Error::last_os_error()
    );
    move_mount(tree.as_fd(), "", CWD, target, MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH)
        .unwrap_or_else(|e| panic!("move_mount onto {}: {e}", target.display()));
}

/// Mounts `mounts` (one mount with `uidmap=` and `gidmap=` options, as Prepare answers for a pod with a
/// user namespace) on `target` as containerd 2.1 does; returns the pod's user namespace, to run commands
/// as its root. The overlay holds its lowers: nothing else stays mounted.
pub fn mount(mounts: &[Mount], target: &Path) -> UserNs {
    assert_eq!(mounts.len(), 1, "{mounts:?}");
    let m = &mounts[0];
    let opt = |k: &str| m.options.iter().find_map(|o| o.strip_prefix(k)).map(str::to_string);
    let (uidmap, gidmap) = (
        opt("uidmap=").expect("a uidmap= option"),
        opt("gidmap=").expect("a gidmap= option"),
    );
    let userns = UserNs::new(&uidmap, &gidmap);
    let options: Vec<String> = m
        .options
        .iter()
        .filter(|o| !o.starts_with("uidmap=") && !o.starts_with("gidmap="))
        .cloned()
        .collect();
    if m.r#type == "bind" {
        idmap_mount(Path::new(&m.source), target, &userns, options.iter().any(|o| o == "ro"));
        return userns;
    }
    let i = options
        .iter()
        .position(|o| o.starts_with("lowerdir="))
        .expect("a lowerdir= option");
    let lowers: Vec<&str> = options[i]["lowerdir=".len()..].split(':').collect();
    let common = common_directory(&lowers);
    let tree = tempfile::Builder::new().prefix("ovl-idmapped").tempdir().unwrap();
    idmap_mount(&common, tree.path(), &userns, true);
    let through: Vec<String> = lowers
        .iter()
        .map(|l| {
            tree.path()
                .join(Path::new(l).strip_prefix(&common).unwrap())
                .display()
                .to_string()
        })
        .collect();
    let mut options = options.clone();
    options[i] = format!("lowerdir={}", through.join(":"));
    let rewritten = Mount { options, ..m.clone() };
    snapshots_api::mount(&[rewritten], target);
    // As containerd: the overlay keeps its own references to the lowers.
    snapshots_api::umount(tree.path());
    userns
}

/// containerd's `getCommonDirectory`: the parent of the lowerdirs' longest common (byte) prefix.
pub fn common_directory(lowers: &[&str]) -> PathBuf {
    let mut prefix = lowers[0].to_string();
    for l in &lowers[1..] {
        let n = prefix.bytes().zip(l.bytes()).take_while(|(a, b)| a == b).count();
        prefix.truncate(n);
    }
    let dir = match prefix.rfind('/') {
        Some(0) | None => panic!("lowerdirs {lowers:?} have no common directory"),
        Some(p) => &prefix[..p],
    };
    PathBuf::from(dir)
}
