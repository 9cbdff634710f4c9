//! Materialising a root filesystem from snapshot directories (`imaged mount`): the layers copied base
//! first, each applying its deletions to what the layers below put there.
//!
//! Deletions are read in either form a snapshot may hold them: overlay's (a 0/0 character device, the
//! `trusted.overlay.opaque=y` xattr) or OCI's (`.wh.NAME` and `.wh..wh..opq` files, kept where the
//! process could not create overlay's).

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, CWD, FileType, Mode};

use super::apply::set_mtime;
use super::{Capabilities, UnpackError};

const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";

/// Copies the snapshot directories `layers` (base first) into `dest` as one root filesystem.
pub fn flatten(layers: &[PathBuf], dest: &Path, caps: Capabilities) -> Result<(), UnpackError> {
    fs::create_dir_all(dest).map_err(|e| io_err("create", dest, e))?;
    // The topmost layer that has a directory gives its time; set last, on what is still a directory.
    let mut dir_times: HashMap<PathBuf, i64> = HashMap::new();
    for layer in layers {
        let mut links = HashMap::new();
        copy_dir(layer, dest, caps, &mut links, &mut dir_times)?;
    }
    for (path, mtime) in &dir_times {
        if fs::symlink_metadata(path).is_ok_and(|m| m.is_dir()) {
            set_mtime(path, *mtime).map_err(|e| io_err("set the time of", path, e))?;
        }
    }
    Ok(())
}

fn io_err(op: &'static str, path: &Path, source: io::Error) -> UnpackError {
    UnpackError::Io {
        layer: "(flatten)".into(),
        op,
        path: path.to_path_buf(),
        source,
    }
}

fn is_whiteout_node(m: &fs::Metadata) -> bool {
    m.file_type().is_char_device() && m.rdev() == 0
}

fn is_opaque(dir: &Path) -> bool {
    let mut buf = [0u8; 8];
    matches!(rustix::fs::lgetxattr(dir, "trusted.overlay.opaque", &mut buf), Ok(1) if buf[0] == b'y')
        || dir.join(std::ffi::OsStr::from_bytes(OPAQUE_MARKER)).exists()
}

fn remove_any(p: &Path) -> Result<(), UnpackError> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.file_type().is_dir() => fs::remove_dir_all(p).map_err(|e| io_err("remove", p, e)),
        Ok(_) => fs::remove_file(p).map_err(|e| io_err("remove", p, e)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("inspect", p, e)),
    }
}

/// Copies the children of `src` into `dst` (an existing directory).
fn copy_dir(
    src: &Path,
    dst: &Path,
    caps: Capabilities,
    links: &mut HashMap<(u64, u64), PathBuf>,
    dir_times: &mut HashMap<PathBuf, i64>,
) -> Result<(), UnpackError> {
    let mut names: Vec<(OsString, fs::Metadata)> = Vec::new();
    for entry in fs::read_dir(src).map_err(|e| io_err("read", src, e))? {
        let entry = entry.map_err(|e| io_err("read", src, e))?;
        let meta = fs::symlink_metadata(entry.path()).map_err(|e| io_err("inspect", &entry.path(), e))?;
        names.push((entry.file_name(), meta));
    }
    // Deletions first: they apply to the layers below, never to this layer's own entries.
    let deletes = |(n, m): &(OsString, fs::Metadata)| is_whiteout_node(m) || n.as_bytes().starts_with(WHITEOUT_PREFIX);
    names.sort_by(|a, b| deletes(b).cmp(&deletes(a)).then_with(|| a.0.cmp(&b.0)));
    for (name, meta) in names {
        let from = src.join(&name);
        let to = dst.join(&name);
        let bytes = name.as_bytes();
        if bytes == OPAQUE_MARKER {
            continue; // Handled when the directory itself was copied.
        }
        if let Some(hidden) = bytes.strip_prefix(WHITEOUT_PREFIX) {
            remove_any(&dst.join(std::ffi::OsStr::from_bytes(hidden)))?;
            continue;
        }
        if is_whiteout_node(&meta) {
            remove_any(&to)?;
            continue;
        }
        let ft = meta.file_type();
        if ft.is_dir() {
            let existing_dir = fs::symlink_metadata(&to)
                .map(|m| m.file_type().is_dir())
                .unwrap_or(false);
            if !existing_dir || is_opaque(&from) {
                remove_any(&to)?;
                fs::create_dir(&to).map_err(|e| io_err("create directory", &to, e))?;
            }
            copy_meta(&from, &to, &meta, caps)?;
            dir_times.insert(to.clone(), meta.mtime());
            copy_dir(&from, &to, caps, links, dir_times)?;
            continue;
        }
        remove_any(&to)?;
        if ft.is_file() && meta.nlink() > 1 {
            if let Some(first) = links.get(&(meta.dev(), meta.ino())) {
                fs::hard_link(first, &to).map_err(|e| io_err("hard link", &to, e))?;
                continue;
            }
            links.insert((meta.dev(), meta.ino()), to.clone());
        }
        if ft.is_file() {
            copy_file(&from, &to, meta.len())?;
        } else if ft.is_symlink() {
            let target = fs::read_link(&from).map_err(|e| io_err("read link", &from, e))?;
            std::os::unix::fs::symlink(&target, &to).map_err(|e| io_err("create symlink", &to, e))?;
        } else {
            let kind = if ft.is_fifo() {
                FileType::Fifo
            } else if ft.is_char_device() {
                FileType::CharacterDevice
            } else if ft.is_block_device() {
                FileType::BlockDevice
            } else {
                continue; // Sockets are not image content.
            };
            if kind != FileType::Fifo && !caps.privileged {
                continue;
            }
            rustix::fs::mknodat(CWD, &to, kind, Mode::from_raw_mode(0o600), meta.rdev())
                .map_err(|e| io_err("create node", &to, e.into()))?;
        }
        copy_meta(&from, &to, &meta, caps)?;
        set_mtime(&to, meta.mtime()).map_err(|e| io_err("set the time of", &to, e))?;
    }
    Ok(())
}

fn copy_file(from: &Path, to: &Path, len: u64) -> Result<(), UnpackError> {
    let mut src = fs::File::open(from).map_err(|e| io_err("open", from, e))?;
    let mut dst = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(to)
        .map_err(|e| io_err("create", to, e))?;
    let mut buf = vec![0u8; 128 * 1024];
    loop {
        let n = src.read(&mut buf).map_err(|e| io_err("read", from, e))?;
        if n == 0 {
            break;
        }
        if buf[..n].iter().all(|b| *b == 0) {
            dst.seek(SeekFrom::Current(n as i64))
                .map_err(|e| io_err("seek in", to, e))?;
        } else {
            dst.write_all(&buf[..n]).map_err(|e| io_err("write", to, e))?;
        }
    }
    dst.set_len(len).map_err(|e| io_err("set the length of", to, e))
}

/// Owner (when privileged), mode and xattrs (except overlay's own) of `from` onto `to`.
fn copy_meta(from: &Path, to: &Path, meta: &fs::Metadata, caps: Capabilities) -> Result<(), UnpackError> {
    if caps.privileged {
        rustix::fs::chownat(
            CWD,
            to,
            Some(rustix::fs::Uid::from_raw(meta.uid())),
            Some(rustix::fs::Gid::from_raw(meta.gid())),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|e| io_err("chown", to, e.into()))?;
    }
    if !meta.file_type().is_symlink() {
        fs::set_permissions(to, fs::Permissions::from_mode(meta.mode() & 0o7777))
            .map_err(|e| io_err("chmod", to, e))?;
    }
    let mut names = vec![0u8; 4096];
    if let Ok(n) = rustix::fs::llistxattr(from, &mut names) {
        for name in names[..n].split(|b| *b == 0).filter(|n| !n.is_empty()) {
            let Ok(name) = std::str::from_utf8(name) else { continue };
            if name.starts_with("trusted.overlay.") {
                continue;
            }
            let mut value = vec![0u8; 64 * 1024];
            if let Ok(len) = rustix::fs::lgetxattr(from, name, &mut value) {
                let _ = rustix::fs::lsetxattr(to, name, &value[..len], rustix::fs::XattrFlags::empty());
            }
        }
    }
    Ok(())
}
