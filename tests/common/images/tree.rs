//! A file tree as data, for comparing two root filesystems: [`walk`] records every path under a root
//! (without following symlinks) with its type, permission bits, owner, file mtime, symlink target, content
//! hash, device numbers, xattrs and hard-link group; [`diff`] lists the differences readably.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// What a path is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A regular file: its length and the sha256 of its contents.
    File {
        /// Length in bytes.
        len: u64,
        /// Hex sha256 of the contents.
        sha256: String,
    },
    /// A directory.
    Dir,
    /// A symlink and its target.
    Symlink(PathBuf),
    /// A character device (major, minor).
    Char(u32, u32),
    /// A block device (major, minor).
    Block(u32, u32),
    /// A FIFO.
    Fifo,
    /// A unix socket.
    Socket,
}

/// One path of a tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// The type (and contents, target or device numbers).
    pub kind: Kind,
    /// Permission bits including setuid, setgid and sticky (`mode & 0o7777`; 0 for symlinks, whose mode
    /// means nothing on Linux).
    pub mode: u32,
    /// Owner uid.
    pub uid: u32,
    /// Owner gid.
    pub gid: u32,
    /// Modification time in seconds; `None` for directories (both tools touch them).
    pub mtime: Option<i64>,
    /// Extended attributes (name, value), except `trusted.overlay.*`.
    pub xattrs: BTreeMap<String, Vec<u8>>,
    /// The first path (in sorted order) of this path's hard-link group, when two or more paths of the tree
    /// share its inode.
    pub link_group: Option<PathBuf>,
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::File { len, sha256 } => write!(f, "file len={len} sha256={}", &sha256[..12])?,
            Kind::Dir => write!(f, "dir")?,
            Kind::Symlink(t) => write!(f, "symlink -> {}", t.display())?,
            Kind::Char(a, b) => write!(f, "char {a}:{b}")?,
            Kind::Block(a, b) => write!(f, "block {a}:{b}")?,
            Kind::Fifo => write!(f, "fifo")?,
            Kind::Socket => write!(f, "socket")?,
        }
        write!(f, " mode={:04o} owner={}:{}", self.mode, self.uid, self.gid)?;
        if let Some(m) = self.mtime {
            write!(f, " mtime={m}")?;
        }
        for (k, v) in &self.xattrs {
            write!(f, " xattr {k}={}", String::from_utf8_lossy(v))?;
        }
        if let Some(g) = &self.link_group {
            write!(f, " hardlinked-with={}", g.display())?;
        }
        Ok(())
    }
}

/// A tree: relative path → node. The root itself is not included.
pub type Tree = BTreeMap<PathBuf, Node>;

/// Records everything under `root`.
pub fn walk(root: &Path) -> Tree {
    let mut tree = Tree::new();
    let mut inodes: HashMap<(u64, u64), Vec<PathBuf>> = HashMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = root.join(&rel);
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("read dir {}: {e}", dir.display())) {
            let entry = entry.expect("dir entry");
            let path = rel.join(entry.file_name());
            let abs = root.join(&path);
            let m = std::fs::symlink_metadata(&abs).unwrap_or_else(|e| panic!("lstat {}: {e}", abs.display()));
            let ft = m.file_type();
            let dev = || (rustix::fs::major(m.rdev()), rustix::fs::minor(m.rdev()));
            let kind = if ft.is_file() {
                Kind::File {
                    len: m.len(),
                    sha256: hash(&abs),
                }
            } else if ft.is_dir() {
                stack.push(path.clone());
                Kind::Dir
            } else if ft.is_symlink() {
                Kind::Symlink(std::fs::read_link(&abs).expect("readlink"))
            } else if ft.is_char_device() {
                Kind::Char(dev().0, dev().1)
            } else if ft.is_block_device() {
                Kind::Block(dev().0, dev().1)
            } else if ft.is_fifo() {
                Kind::Fifo
            } else {
                Kind::Socket
            };
            if !ft.is_dir() && m.nlink() > 1 {
                inodes.entry((m.dev(), m.ino())).or_default().push(path.clone());
            }
            let node = Node {
                mode: if ft.is_symlink() { 0 } else { m.mode() & 0o7777 },
                uid: m.uid(),
                gid: m.gid(),
                mtime: (!ft.is_dir()).then(|| m.mtime()),
                xattrs: xattrs(&abs),
                link_group: None,
                kind,
            };
            tree.insert(path, node);
        }
    }
    for mut group in inodes.into_values().filter(|g| g.len() > 1) {
        group.sort();
        for p in &group {
            tree.get_mut(p).expect("grouped path").link_group = Some(group[0].clone());
        }
    }
    tree
}

fn hash(path: &Path) -> String {
    let mut f = std::fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut sha = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).expect("read file");
        if n == 0 {
            break;
        }
        sha.update(&buf[..n]);
    }
    hex::encode(sha.finalize())
}

/// The extended attributes of `path` (not following a symlink), except overlay's own.
pub fn xattrs(path: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut names = vec![0u8; 64 * 1024];
    let Ok(n) = rustix::fs::llistxattr(path, &mut names) else {
        return BTreeMap::new();
    };
    names[..n]
        .split(|b| *b == 0)
        .filter(|n| !n.is_empty())
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .filter(|n| !n.starts_with("trusted.overlay."))
        .map(|name| {
            let value = xattr(path, &name).unwrap_or_default();
            (name, value)
        })
        .collect()
}

/// One extended attribute of `path` (not following a symlink), if set.
pub fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let mut value = vec![0u8; 64 * 1024];
    let n = rustix::fs::lgetxattr(path, name, &mut value).ok()?;
    value.truncate(n);
    Some(value)
}

/// The differences between tree `a` (called `a_name`) and tree `b`, one line each; empty when equal.
pub fn diff(a_name: &str, a: &Tree, b_name: &str, b: &Tree) -> Vec<String> {
    let mut out = Vec::new();
    for (path, na) in a {
        match b.get(path) {
            None => out.push(format!("only in {a_name}: {} ({na})", path.display())),
            Some(nb) if nb != na => out.push(format!(
                "differs: {}\n    {a_name:>6}: {na}\n    {b_name:>6}: {nb}",
                path.display()
            )),
            Some(_) => {}
        }
    }
    for (path, nb) in b {
        if !a.contains_key(path) {
            out.push(format!("only in {b_name}: {} ({nb})", path.display()));
        }
    }
    out
}

/// Asserts `a` and `b` are equal, printing every difference and both trees when not.
pub fn assert_same(what: &str, a_name: &str, a: &Tree, b_name: &str, b: &Tree) {
    let d = diff(a_name, a, b_name, b);
    assert!(
        d.is_empty(),
        "{what}: {} differences between {a_name} and {b_name}:\n{}\n\n{a_name}:\n{}\n{b_name}:\n{}",
        d.len(),
        d.join("\n"),
        render(a),
        render(b)
    );
}

/// The tree, one `path  node` line per path.
pub fn render(t: &Tree) -> String {
    t.iter().map(|(p, n)| format!("  {}  {n}\n", p.display())).collect()
}
