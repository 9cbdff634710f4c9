//! Applying layer tars into overlay-ready snapshot directories, safely, and flattening snapshots into a
//! root filesystem.
//!
//! # Design note
//!
//! A layer is applied into an empty directory of its own, as containerd's overlay snapshotter keeps layers:
//! the directory holds only that layer's changes, so layers of one image can be applied concurrently and
//! in any order, and overlayfs can stack them (`lowerdir=top:…:base`). Deletions become overlay's
//! representation when the process may create it (root): a whiteout `.wh.NAME` becomes a 0/0 character
//! device `NAME`, and an opaque marker `.wh..wh..opq` becomes the `trusted.overlay.opaque=y` xattr of its
//! directory. Otherwise they are kept in OCI form (the marker files themselves) and counted, and
//! [`flatten`] understands both.
//!
//! The tar is hostile until proven otherwise. Every entry path is made relative (a leading `/` is
//! dropped, as Docker does) and refused if it climbs out with `..`; no entry is ever created through a
//! symlink (each parent is checked with `lstat`, so a symlink planted earlier in the layer cannot redirect
//! later entries); hard links must point at a regular file this layer created; and the decompressed size,
//! the entry count and the path length are capped, so a decompression bomb is refused instead of filling
//! the disk.

mod apply;
mod flatten;
mod limits;

pub use apply::{ApplyStats, apply_layer};
pub use flatten::flatten;
pub use limits::{CountingReader, Limits, is_too_large};

use std::path::PathBuf;

use crate::error::{Classify, ErrorKind};

/// What the process may create when applying layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// May chown to any owner and create device nodes (root).
    pub privileged: bool,
    /// May create overlay whiteouts (0/0 character devices) and set `trusted.overlay.*` xattrs.
    pub overlay_whiteouts: bool,
}

impl Capabilities {
    /// Finds out, by trying in `probe_dir` (a directory of the store), what this process may do.
    pub fn probe(probe_dir: &std::path::Path) -> Capabilities {
        let privileged = rustix::process::geteuid().is_root();
        let dev = probe_dir.join(".probe-whiteout");
        let _ = std::fs::remove_file(&dev);
        let mknod_ok = rustix::fs::mknodat(
            rustix::fs::CWD,
            &dev,
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::from_raw_mode(0o600),
            rustix::fs::makedev(0, 0),
        )
        .is_ok();
        let _ = std::fs::remove_file(&dev);
        let xattr_ok = rustix::fs::lsetxattr(
            probe_dir,
            "trusted.overlay.probe",
            b"y",
            rustix::fs::XattrFlags::empty(),
        )
        .is_ok();
        let _ = rustix::fs::lremovexattr(probe_dir, "trusted.overlay.probe");
        Capabilities {
            privileged,
            overlay_whiteouts: privileged && mknod_ok && xattr_ok,
        }
    }
}

/// Why a layer could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// The tar stream itself is broken.
    #[error("layer {layer}: malformed tar: {source}")]
    Tar {
        /// The layer.
        layer: String,
        /// The cause.
        source: std::io::Error,
    },
    /// An entry would land outside the snapshot or through a symlink.
    #[error("layer {layer}: entry {entry:?} refused: {why}")]
    Unsafe {
        /// The layer.
        layer: String,
        /// The entry path as written in the tar.
        entry: String,
        /// What is wrong with it.
        why: String,
    },
    /// A limit was exceeded.
    #[error("layer {layer}: {what} exceeds the limit of {limit} ({setting}); refusing a possible decompression bomb")]
    Limit {
        /// The layer.
        layer: String,
        /// What was counted.
        what: &'static str,
        /// The limit.
        limit: u64,
        /// The config key that sets it.
        setting: &'static str,
    },
    /// Writing the snapshot failed.
    #[error("layer {layer}: cannot {op} {path}: {source}")]
    Io {
        /// The layer.
        layer: String,
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

impl Classify for UnpackError {
    fn kind(&self) -> ErrorKind {
        match self {
            UnpackError::Tar { .. } | UnpackError::Unsafe { .. } => ErrorKind::FailedPrecondition,
            UnpackError::Limit { .. } => ErrorKind::ResourceExhausted,
            UnpackError::Io { .. } => ErrorKind::Internal,
        }
    }
}
