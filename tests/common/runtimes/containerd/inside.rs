//! A container's root filesystem as the container sees it, as a [`Tree`] comparable with `umoci unpack`'s
//! rootfs of the same image (`rootfs::umoci_unpack`, `tree::walk`).
//!
//! The probe is a busybox script ([`PROBE_SCRIPT`]) run with the host's static busybox bind-mounted at
//! [`PROBE_BUSYBOX`] (`ContainerSpec::probe`), so it works for any image: it prints the container's
//! mount table, then, without crossing into other filesystems, `stat` of every path (type, permission
//! bits, owner, size, mtime, inode, link count, device numbers), the sha256 of every regular file and the
//! target of every symlink. [`parse_probe`] turns that into a [`Tree`] with the same fields `tree::walk`
//! records, hard-link groups found by inode as it does.
//!
//! What the runtime adds is left out of the comparison, on both sides ([`comparable`]): every mount point
//! of the container other than `/` (`/proc`, `/sys`, `/dev`, `/etc/hosts`, `/etc/hostname`,
//! `/etc/resolv.conf`, the probe, …) with everything under it, and the directories runc created to hold a
//! mount point (ancestors of one that the image lacks). Extended attributes are not compared: busybox
//! cannot read them (and `trusted.*` is invisible inside anyway). Paths must not contain `|` or newlines.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use super::Containerd;
use super::pods::{ContainerSpec, PROBE_BUSYBOX, Pod};
use crate::common::images::tree::{Kind, Node, Tree};

/// The probe, run as `PROBE_BUSYBOX sh -c PROBE_SCRIPT`.
pub const PROBE_SCRIPT: &str = r#"B=/.imaged-probe/busybox
echo @mounts
$B cat /proc/self/mountinfo
echo @stat
$B find / -xdev ! -path / -exec $B stat -c '%n|%F|%a|%u|%g|%s|%Y|%i|%h|%t|%T' {} +
echo @sha256
$B find / -xdev -type f -exec $B sha256sum {} +
echo @links
$B find / -xdev -type l -exec $B sh -c 'for f; do echo "$f|$(/.imaged-probe/busybox readlink "$f")"; done' sh {} +
echo @end
"#;

/// The probe's command line.
pub fn probe_command() -> Vec<&'static str> {
    vec![PROBE_BUSYBOX, "sh", "-c", PROBE_SCRIPT]
}

/// A root filesystem as seen from inside a container.
#[derive(Clone, Debug)]
pub struct Inside {
    /// The container's mount points (absolute, as inside), `/` included.
    pub mounts: BTreeSet<String>,
    /// Every path of the root filesystem (relative), mount points included, nothing under them.
    pub tree: Tree,
}

/// Parses the probe's output (see [`PROBE_SCRIPT`]).
pub fn parse_probe(out: &str) -> Inside {
    assert!(out.contains("\n@end"), "probe output is incomplete:\n{out}");
    let mut section = "";
    let mut mounts = BTreeSet::new();
    let mut stats: Vec<Vec<String>> = Vec::new();
    let mut sha: HashMap<String, String> = HashMap::new();
    let mut links: HashMap<String, String> = HashMap::new();
    for line in out.lines() {
        if let Some(name) = line.strip_prefix('@') {
            section = match name {
                "mounts" => "mounts",
                "stat" => "stat",
                "sha256" => "sha256",
                "links" => "links",
                _ => "",
            };
            continue;
        }
        match section {
            // mountinfo: id parent major:minor root mount-point options … (mountinfo escapes spaces)
            "mounts" => {
                let point = line
                    .split(' ')
                    .nth(4)
                    .unwrap_or_else(|| panic!("mountinfo line {line:?}"));
                mounts.insert(point.replace("\\040", " "));
            }
            "stat" => stats.push(line.split('|').map(str::to_owned).collect()),
            "sha256" => {
                let (hash, path) = line
                    .split_once("  ")
                    .unwrap_or_else(|| panic!("sha256sum line {line:?}"));
                sha.insert(path.to_owned(), hash.to_owned());
            }
            "links" => {
                let (path, target) = line.split_once('|').unwrap_or_else(|| panic!("link line {line:?}"));
                links.insert(path.to_owned(), target.to_owned());
            }
            _ => {}
        }
    }
    let mut tree = Tree::new();
    let mut inodes: HashMap<u64, Vec<PathBuf>> = HashMap::new();
    for f in &stats {
        assert_eq!(f.len(), 11, "stat line {f:?}");
        let num = |i: usize| f[i].parse::<u64>().unwrap_or_else(|_| panic!("field {i} of {f:?}"));
        let hex = |i: usize| u32::from_str_radix(&f[i], 16).unwrap_or_else(|_| panic!("field {i} of {f:?}"));
        let abs = &f[0];
        let kind = match f[1].as_str() {
            "regular file" | "regular empty file" => Kind::File {
                len: num(5),
                sha256: sha.get(abs).unwrap_or_else(|| panic!("no sha256 of {abs}")).clone(),
            },
            "directory" => Kind::Dir,
            "symbolic link" => Kind::Symlink(PathBuf::from(
                links.get(abs).unwrap_or_else(|| panic!("no target of {abs}")),
            )),
            "character special file" => Kind::Char(hex(9), hex(10)),
            "block special file" => Kind::Block(hex(9), hex(10)),
            "fifo" => Kind::Fifo,
            "socket" => Kind::Socket,
            other => panic!("unknown file type {other:?} of {abs}"),
        };
        let rel = PathBuf::from(abs.trim_start_matches('/'));
        let is_dir = kind == Kind::Dir;
        if !is_dir && num(8) > 1 {
            inodes.entry(num(7)).or_default().push(rel.clone());
        }
        let mode = u32::from_str_radix(&f[2], 8).unwrap_or_else(|_| panic!("mode of {f:?}"));
        let node = Node {
            mode: if matches!(kind, Kind::Symlink(_)) { 0 } else { mode },
            uid: num(3) as u32,
            gid: num(4) as u32,
            mtime: (!is_dir).then(|| num(6) as i64),
            xattrs: BTreeMap::new(),
            link_group: None,
            kind,
        };
        tree.insert(rel, node);
    }
    for mut group in inodes.into_values().filter(|g| g.len() > 1) {
        group.sort();
        for p in &group {
            tree.get_mut(p).expect("grouped path").link_group = Some(group[0].clone());
        }
    }
    Inside { mounts, tree }
}

/// `(inside, reference)` with what the runtime adds left out of both (see the module doc) and the
/// reference's xattrs dropped.
pub fn comparable(inside: &Inside, reference: &Tree) -> (Tree, Tree) {
    let points: Vec<PathBuf> = inside
        .mounts
        .iter()
        .filter(|m| m.as_str() != "/")
        .map(|m| PathBuf::from(m.trim_start_matches('/')))
        .collect();
    let covered = |p: &Path| points.iter().any(|m| p.starts_with(m));
    let holds_mount = |p: &Path| points.iter().any(|m| m.starts_with(p) && m != p);
    let ours = inside
        .tree
        .iter()
        // What runc made to hold a mount point: a directory on the way to one that the image lacks.
        .filter(|(p, n)| {
            let runtime_made = n.kind == Kind::Dir && holds_mount(p) && !reference.contains_key(*p);
            !covered(p) && !runtime_made
        })
        .map(|(p, n)| (p.clone(), n.clone()))
        .collect();
    let theirs = reference
        .iter()
        .filter(|(p, _)| !covered(p))
        .map(|(p, n)| {
            let mut n = n.clone();
            n.xattrs.clear();
            (p.clone(), n)
        })
        .collect();
    (ours, theirs)
}

impl Containerd {
    /// Runs the probe in a new container of `image` in `pod` (created with the probe mount, named
    /// `name`) and returns what it saw.
    pub async fn probe_rootfs(&self, pod: &Pod, name: &str, image: &str) -> Inside {
        let spec = ContainerSpec::new(name, image).probe().command(&probe_command());
        let (code, out) = self.run_to_exit(pod, &spec).await;
        assert_eq!(code, 0, "the probe in {image} failed:\n{out}");
        parse_probe(&out)
    }

    /// Runs the probe with ExecSync in running container `id` (created with `ContainerSpec::probe`).
    pub async fn probe_running(&self, id: &str) -> Inside {
        let r = self.exec(id, &probe_command()).await;
        let out = String::from_utf8_lossy(&r.stdout);
        assert_eq!(
            r.exit_code,
            0,
            "the probe in {id} failed: {out}{}",
            String::from_utf8_lossy(&r.stderr)
        );
        parse_probe(&out)
    }
}
