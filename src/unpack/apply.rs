//! Applying one layer tar into an empty snapshot directory.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, CWD, Timespec, Timestamps};
use tar::EntryType;

use super::limits::is_too_large;
use super::{Capabilities, Limits, UnpackError};

/// The overlay xattr that makes a directory hide what lower layers have under it.
const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";
/// Copy buffer; chunks that are entirely zero become holes (sparse files stay sparse).
const CHUNK: usize = 128 * 1024;

/// What applying a layer did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ApplyStats {
    /// Tar entries read.
    pub entries: u64,
    /// Files, directories, links and nodes created.
    pub inodes: u64,
    /// Bytes of file content written (holes not counted).
    pub content_bytes: u64,
    /// Whiteouts and opaque markers kept in OCI form (the process could not create overlay ones).
    pub oci_whiteouts: u64,
    /// Device nodes skipped because the process may not create them.
    pub skipped_devices: u64,
    /// Directories the layer implies (a parent of an entry) but never describes: they take their mode,
    /// owner and time from the layers below once those are known (containerd's `mkparent`).
    pub implicit_dirs: Vec<PathBuf>,
}

/// Applies the (decompressed) tar read from `tar` into `dest`, an empty directory. `layer` names the
/// layer in errors. The reader is not drained: the caller reads it to its end to finish hashing.
pub fn apply_layer<R: Read>(
    tar: R,
    dest: &Path,
    layer: &str,
    limits: &Limits,
    caps: Capabilities,
) -> Result<ApplyStats, UnpackError> {
    let mut a = Applier {
        dest,
        layer,
        limits,
        caps,
        stats: ApplyStats::default(),
        safe: HashSet::new(),
        dirs: Vec::new(),
        implicit: HashSet::new(),
        buf: vec![0u8; CHUNK],
    };
    let mut archive = tar::Archive::new(tar);
    let entries = archive.entries().map_err(|e| a.tar_err(e))?;
    for entry in entries {
        let entry = entry.map_err(|e| a.tar_err(e))?;
        a.stats.entries += 1;
        if a.stats.entries > limits.max_entries {
            return Err(a.limit("the number of entries", limits.max_entries, "unpack.max_entries"));
        }
        a.entry(entry)?;
    }
    // Directory times last: creating their children changed them.
    for (path, mtime) in a.dirs.iter().rev() {
        if is_dir(path) {
            set_mtime(path, *mtime).map_err(|e| a.io("set the time of", path, e))?;
        }
    }
    let mut implicit: Vec<PathBuf> = a.implicit.into_iter().filter(|p| is_dir(&dest.join(p))).collect();
    implicit.sort();
    a.stats.implicit_dirs = implicit;
    Ok(a.stats)
}

struct Applier<'a> {
    dest: &'a Path,
    layer: &'a str,
    limits: &'a Limits,
    caps: Capabilities,
    stats: ApplyStats,
    /// Directories (relative) known to be real directories inside `dest`.
    safe: HashSet<PathBuf>,
    /// Directories created, with the mtime to give them at the end.
    dirs: Vec<(PathBuf, i64)>,
    /// Directories (relative) created only as parents, not (yet) described by an entry.
    implicit: HashSet<PathBuf>,
    /// The copy buffer, allocated once per layer.
    buf: Vec<u8>,
}

#[path = "apply_nodes.rs"]
mod nodes;

impl Applier<'_> {
    fn entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<(), UnpackError> {
        let raw = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let rel = self.sanitize(&raw, &shown)?;
        let Some(name) = rel.file_name().map(OsStr::to_owned) else {
            return Ok(()); // The layer root ("./"): nothing to create.
        };
        let parent = rel.parent().unwrap_or(Path::new("")).to_path_buf();
        self.ensure_dir_chain(&parent, &shown)?;
        let name_bytes = name.as_bytes();
        if name_bytes == OPAQUE_MARKER.as_bytes() {
            return self.opaque(&parent);
        }
        if let Some(hidden) = name_bytes.strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
            return self.whiteout(&parent, OsStr::from_bytes(hidden), &rel);
        }
        let header = entry.header().clone();
        let target = self.dest.join(&rel);
        let kind = header.entry_type();
        // Each kind is created directly; only when something is already there (a rare duplicate in a
        // layer) is it inspected and replaced, so the common case costs no extra lstat.
        let file = match kind {
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => Some(self.file(&mut entry, &target)?),
            EntryType::Directory => {
                match fs::create_dir(&target) {
                    Ok(()) => self.stats.inodes += 1,
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                        if !is_dir(&target) {
                            self.clear(&target, true)?;
                            fs::create_dir(&target).map_err(|e| self.io("create directory", &target, e))?;
                            self.stats.inodes += 1;
                        }
                    }
                    Err(e) => return Err(self.io("create directory", &target, e)),
                }
                self.safe.insert(rel.clone());
                self.implicit.remove(&rel);
                None
            }
            EntryType::Symlink => {
                let link = entry.link_name_bytes().map(|l| l.into_owned()).unwrap_or_default();
                let link = OsStr::from_bytes(&link);
                self.create_replacing(&target, "create symlink", || std::os::unix::fs::symlink(link, &target))?;
                self.stats.inodes += 1;
                None
            }
            EntryType::Link => return self.hardlink(&entry, &target, &shown),
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                if !self.node(&header, kind, &target)? {
                    return Ok(());
                }
                None
            }
            // Metadata entries the tar crate has already folded into the next entry, or kinds no image
            // needs: nothing to create.
            _ => return Ok(()),
        };
        match file {
            Some(f) => self.file_metadata(&mut entry, &header, &f, &target),
            None => self.metadata(&mut entry, &header, &target, kind),
        }
    }

    /// Runs `create`; if something is already at `target`, removes it (a directory with all it holds) and
    /// runs `create` again: the later entry of a tar wins.
    pub(super) fn create_replacing<T>(
        &mut self,
        target: &Path,
        op: &'static str,
        mut create: impl FnMut() -> io::Result<T>,
    ) -> Result<T, UnpackError> {
        match create() {
            Ok(t) => Ok(t),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                self.clear(target, false)?;
                create().map_err(|e| self.io(op, target, e))
            }
            Err(e) => Err(self.io(op, target, e)),
        }
    }

    /// Makes a tar path relative and checks it cannot leave the snapshot.
    fn sanitize(&self, raw: &[u8], shown: &str) -> Result<PathBuf, UnpackError> {
        if raw.len() as u64 > self.limits.max_path_bytes {
            return Err(self.limit("an entry path", self.limits.max_path_bytes, "unpack.max_path_bytes"));
        }
        let mut out = PathBuf::new();
        for c in Path::new(OsStr::from_bytes(raw)).components() {
            match c {
                Component::Normal(p) => out.push(p),
                // A leading "/" is dropped, as Docker and containerd do; "." means nothing.
                Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
                Component::ParentDir => {
                    return Err(self.unsafe_entry(shown, "the path climbs out of the layer with \"..\""));
                }
            }
        }
        Ok(out)
    }

    /// Makes sure every component of `rel` is a real directory (creating missing ones, refusing symlinks).
    fn ensure_dir_chain(&mut self, rel: &Path, shown: &str) -> Result<(), UnpackError> {
        let mut cur = PathBuf::new();
        for c in rel.components() {
            cur.push(c);
            if self.safe.contains(&cur) {
                continue;
            }
            let abs = self.dest.join(&cur);
            match fs::symlink_metadata(&abs) {
                Ok(m) if m.file_type().is_dir() => {}
                Ok(m) if m.file_type().is_symlink() => {
                    let why = format!(
                        "its parent {} is a symlink; entries are never created through symlinks",
                        cur.display()
                    );
                    return Err(self.unsafe_entry(shown, &why));
                }
                Ok(_) => {
                    // A file where a directory is needed: the later entry wins, as tar does.
                    fs::remove_file(&abs).map_err(|e| self.io("replace", &abs, e))?;
                    self.mkdir_implicit(&abs)?;
                    self.implicit.insert(cur.clone());
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    self.mkdir_implicit(&abs)?;
                    self.implicit.insert(cur.clone());
                }
                Err(e) => return Err(self.io("inspect", &abs, e)),
            }
            self.safe.insert(cur.clone());
        }
        Ok(())
    }

    fn mkdir_implicit(&mut self, abs: &Path) -> Result<(), UnpackError> {
        fs::create_dir(abs).map_err(|e| self.io("create directory", abs, e))?;
        fs::set_permissions(abs, fs::Permissions::from_mode(0o755)).map_err(|e| self.io("chmod", abs, e))?;
        self.stats.inodes += 1;
        Ok(())
    }

    /// Removes whatever is at `target` unless both it and the new entry are directories.
    fn clear(&mut self, target: &Path, new_is_dir: bool) -> Result<(), UnpackError> {
        match fs::symlink_metadata(target) {
            Ok(m) if m.file_type().is_dir() => {
                if !new_is_dir {
                    fs::remove_dir_all(target).map_err(|e| self.io("replace", target, e))?;
                    self.forget_under(target);
                }
            }
            Ok(_) => fs::remove_file(target).map_err(|e| self.io("replace", target, e))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(self.io("inspect", target, e)),
        }
        Ok(())
    }

    fn forget_under(&mut self, abs: &Path) {
        if let Ok(rel) = abs.strip_prefix(self.dest) {
            let rel = rel.to_path_buf();
            self.safe.retain(|p| !p.starts_with(&rel));
        }
    }

    /// Creates a regular file with the entry's content and returns it open, for its metadata.
    fn file<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>, target: &Path) -> Result<fs::File, UnpackError> {
        let mut f = self.create_replacing(target, "create", || {
            fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(target)
        })?;
        let mut len = 0u64;
        let mut hole_at_end = false;
        loop {
            let n = match entry.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.tar_err(e)),
            };
            len += n as u64;
            let chunk = &self.buf[..n];
            hole_at_end = is_zero(chunk);
            if hole_at_end {
                f.seek(SeekFrom::Current(n as i64))
                    .map_err(|e| self.io("seek in", target, e))?;
            } else {
                f.write_all(chunk).map_err(|e| self.io("write", target, e))?;
                self.stats.content_bytes += n as u64;
            }
        }
        if hole_at_end {
            // A trailing hole needs the length set explicitly.
            f.set_len(len).map_err(|e| self.io("set the length of", target, e))?;
        }
        self.stats.inodes += 1;
        Ok(f)
    }

    fn tar_err(&self, e: io::Error) -> UnpackError {
        if is_too_large(&e) {
            return self.limit(
                "the uncompressed size",
                self.limits.max_layer_bytes,
                "unpack.max_layer_bytes",
            );
        }
        UnpackError::Tar {
            layer: self.layer.to_string(),
            source: e,
        }
    }

    fn io(&self, op: &'static str, path: &Path, e: io::Error) -> UnpackError {
        UnpackError::Io {
            layer: self.layer.to_string(),
            op,
            path: path.to_path_buf(),
            source: e,
        }
    }

    fn unsafe_entry(&self, entry: &str, why: &str) -> UnpackError {
        UnpackError::Unsafe {
            layer: self.layer.to_string(),
            entry: entry.to_string(),
            why: why.to_string(),
        }
    }

    fn limit(&self, what: &'static str, limit: u64, setting: &'static str) -> UnpackError {
        UnpackError::Limit {
            layer: self.layer.to_string(),
            what,
            limit,
            setting,
        }
    }
}

/// True if every byte is zero (a hole to keep sparse). This runs over every byte of content: the OR-fold
/// vectorises, and 4 KiB blocks keep the early exit for the common, non-zero case.
fn is_zero(chunk: &[u8]) -> bool {
    chunk
        .chunks(4096)
        .all(|block| block.iter().fold(0u8, |acc, b| acc | b) == 0)
}

fn is_dir(p: &Path) -> bool {
    fs::symlink_metadata(p).map(|m| m.file_type().is_dir()).unwrap_or(false)
}

/// Access and modification time both `secs`.
pub(super) fn timestamps(secs: i64) -> Timestamps {
    let t = Timespec {
        tv_sec: secs,
        tv_nsec: 0,
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

/// Sets access and modification time without following a symlink.
pub(super) fn set_mtime(path: &Path, secs: i64) -> io::Result<()> {
    rustix::fs::utimensat(CWD, path, &timestamps(secs), AtFlags::SYMLINK_NOFOLLOW).map_err(io::Error::from)
}
