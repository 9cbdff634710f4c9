//! The entries that are not plain files or directories (hard links, device nodes, FIFOs, whiteouts, opaque
//! markers), and the metadata every entry gets: owner, xattrs, mode, time.

use std::ffi::OsStr;
use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, CWD, FileType, Mode, XattrFlags};
use tar::EntryType;

use super::{Applier, OPAQUE_MARKER, OPAQUE_XATTR, set_mtime, timestamps};
use crate::unpack::UnpackError;

impl Applier<'_> {
    /// Creates a device node or FIFO; returns false if it was skipped (not permitted).
    pub(super) fn node(&mut self, header: &tar::Header, kind: EntryType, target: &Path) -> Result<bool, UnpackError> {
        let (ft, dev) = match kind {
            EntryType::Fifo => (FileType::Fifo, 0),
            EntryType::Char | EntryType::Block => {
                if !self.caps.privileged {
                    self.stats.skipped_devices += 1;
                    return Ok(false);
                }
                let major = header.device_major().ok().flatten().unwrap_or(0);
                let minor = header.device_minor().ok().flatten().unwrap_or(0);
                let ft = if kind == EntryType::Char {
                    FileType::CharacterDevice
                } else {
                    FileType::BlockDevice
                };
                (ft, rustix::fs::makedev(major, minor))
            }
            _ => return Ok(false),
        };
        self.create_replacing(target, "create node", || {
            rustix::fs::mknodat(CWD, target, ft, Mode::from_raw_mode(0o600), dev).map_err(Into::into)
        })?;
        self.stats.inodes += 1;
        Ok(true)
    }

    pub(super) fn whiteout(&mut self, parent: &Path, hidden: &OsStr, rel: &Path) -> Result<(), UnpackError> {
        if hidden.is_empty() || hidden == "." || hidden == ".." {
            return Err(self.unsafe_entry(&rel.display().to_string(), "a whiteout must name an entry"));
        }
        if !self.caps.overlay_whiteouts {
            return self.oci_marker(&self.dest.join(rel));
        }
        let target = self.dest.join(parent).join(hidden);
        self.create_replacing(&target, "create whiteout", || {
            let (ft, mode) = (FileType::CharacterDevice, Mode::from_raw_mode(0o000));
            rustix::fs::mknodat(CWD, &target, ft, mode, rustix::fs::makedev(0, 0)).map_err(Into::into)
        })?;
        self.stats.inodes += 1;
        Ok(())
    }

    pub(super) fn opaque(&mut self, parent: &Path) -> Result<(), UnpackError> {
        let dir = self.dest.join(parent);
        if !self.caps.overlay_whiteouts {
            return self.oci_marker(&dir.join(OPAQUE_MARKER));
        }
        rustix::fs::lsetxattr(&dir, OPAQUE_XATTR, b"y", XattrFlags::empty())
            .map_err(|e| self.io("mark opaque", &dir, e.into()))
    }

    fn oci_marker(&mut self, path: &Path) -> Result<(), UnpackError> {
        self.create_replacing(path, "create", || fs::File::create_new(path))?;
        self.stats.oci_whiteouts += 1;
        self.stats.inodes += 1;
        Ok(())
    }

    /// A hard link: only to a regular file this layer created, through real directories.
    pub(super) fn hardlink<R: Read>(
        &mut self,
        entry: &tar::Entry<'_, R>,
        target: &Path,
        shown: &str,
    ) -> Result<(), UnpackError> {
        let raw = entry.link_name_bytes().map(|l| l.into_owned()).unwrap_or_default();
        let link_shown = String::from_utf8_lossy(&raw).into_owned();
        let rel = match self.sanitize(&raw, &link_shown) {
            Ok(r) => r,
            Err(_) => {
                return Err(self.unsafe_entry(
                    shown,
                    &format!("its hard link target {link_shown:?} is outside the layer"),
                ));
            }
        };
        let parent = rel.parent().unwrap_or(Path::new("")).to_path_buf();
        let chain_ok = self.parents_are_real_dirs(&parent);
        let source = self.dest.join(&rel);
        let is_file = fs::symlink_metadata(&source)
            .map(|m| m.file_type().is_file())
            .unwrap_or(false);
        if !chain_ok || !is_file {
            let why = format!("its hard link target {link_shown:?} is not a regular file of this layer");
            return Err(self.unsafe_entry(shown, &why));
        }
        if source == target {
            return Ok(());
        }
        self.create_replacing(target, "hard link", || fs::hard_link(&source, target))
    }

    fn parents_are_real_dirs(&self, rel: &Path) -> bool {
        let mut cur = PathBuf::new();
        for c in rel.components() {
            cur.push(c);
            let ok = fs::symlink_metadata(self.dest.join(&cur))
                .map(|m| m.file_type().is_dir())
                .unwrap_or(false);
            if !ok {
                return false;
            }
        }
        true
    }

    /// The metadata of a regular file, set through its open descriptor (no path lookups): owner, xattrs,
    /// mode (after chown, which clears set-id bits), then the time (after every write).
    pub(super) fn file_metadata<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        header: &tar::Header,
        file: &fs::File,
        target: &Path,
    ) -> Result<(), UnpackError> {
        if self.caps.privileged {
            // Always: the file may have taken a set-gid parent directory's group.
            let (uid, gid) = owner(header);
            rustix::fs::fchown(file, Some(uid), Some(gid)).map_err(|e| self.io("chown", target, e.into()))?;
        }
        for (name, value) in xattrs(entry) {
            if let Err(e) = rustix::fs::fsetxattr(file, &name, &value, XattrFlags::empty()) {
                tracing::debug!(path = %target.display(), xattr = name, error = %e, "xattr not set");
            }
        }
        let mode = header.mode().map_err(|e| self.tar_err(e))? & 0o7777;
        rustix::fs::fchmod(file, Mode::from_raw_mode(mode)).map_err(|e| self.io("chmod", target, e.into()))?;
        let mtime = header.mtime().unwrap_or(0) as i64;
        rustix::fs::futimens(file, &timestamps(mtime)).map_err(|e| self.io("set the time of", target, e.into()))
    }

    pub(super) fn metadata<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        header: &tar::Header,
        target: &Path,
        kind: EntryType,
    ) -> Result<(), UnpackError> {
        let symlink = kind == EntryType::Symlink;
        if self.caps.privileged {
            let (uid, gid) = owner(header);
            rustix::fs::chownat(CWD, target, Some(uid), Some(gid), AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| self.io("chown", target, e.into()))?;
        }
        for (name, value) in xattrs(entry) {
            if let Err(e) = rustix::fs::lsetxattr(target, &name, &value, XattrFlags::empty()) {
                tracing::debug!(path = %target.display(), xattr = name, error = %e, "xattr not set");
            }
        }
        if !symlink {
            // After chown, which clears set-id bits.
            let mode = header.mode().map_err(|e| self.tar_err(e))? & 0o7777;
            fs::set_permissions(target, fs::Permissions::from_mode(mode)).map_err(|e| self.io("chmod", target, e))?;
        }
        let mtime = header.mtime().unwrap_or(0) as i64;
        if kind == EntryType::Directory {
            self.dirs.push((target.to_path_buf(), mtime));
        } else {
            set_mtime(target, mtime).map_err(|e| self.io("set the time of", target, e))?;
        }
        Ok(())
    }
}

/// The entry's owner (0 where the header cannot say).
fn owner(header: &tar::Header) -> (rustix::fs::Uid, rustix::fs::Gid) {
    let uid = header.uid().ok().and_then(|u| u32::try_from(u).ok()).unwrap_or(0);
    let gid = header.gid().ok().and_then(|g| u32::try_from(g).ok()).unwrap_or(0);
    (rustix::fs::Uid::from_raw(uid), rustix::fs::Gid::from_raw(gid))
}

/// The entry's extended attributes (PAX `SCHILY.xattr.*`). Where setting one is not permitted (security.*
/// without privilege, filesystems without user xattrs), it is skipped, as containerd does rootless.
fn xattrs<R: Read>(entry: &mut tar::Entry<'_, R>) -> Vec<(String, Vec<u8>)> {
    let Ok(Some(exts)) = entry.pax_extensions() else {
        return Vec::new();
    };
    exts.flatten()
        .filter_map(|ext| {
            let name = ext.key().ok()?.strip_prefix("SCHILY.xattr.")?.to_string();
            Some((name, ext.value_bytes().to_vec()))
        })
        .collect()
}
