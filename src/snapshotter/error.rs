//! What can go wrong in the snapshotter, in containerd's error classes (the proxy turns gRPC codes back
//! into `errdefs` errors, and containerd acts on them: AlreadyExists adopts a remote snapshot,
//! FailedPrecondition on Remove is a warning in its garbage collection, NotFound on a parent makes the
//! CRI plugin unpack the image itself).

use std::path::PathBuf;

use crate::error::{Classify, ErrorKind};

/// A snapshotter error.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotterError {
    /// The named snapshot does not exist.
    #[error("snapshot {0} does not exist")]
    NotFound(String),
    /// The name is taken.
    #[error("snapshot {0} already exists")]
    AlreadyExists(String),
    /// A snapshot matching the `containerd.io/snapshot.ref` label of a Prepare is already committed: the
    /// caller should use it (containerd's remote snapshot protocol).
    #[error("target snapshot {target} already exists (an imaged layer)")]
    TargetExists {
        /// The chain id asked for.
        target: String,
    },
    /// The snapshot is not in a state that allows the operation.
    #[error("snapshot {name}: {why}")]
    FailedPrecondition {
        /// The snapshot.
        name: String,
        /// Why not.
        why: String,
    },
    /// The request is malformed.
    #[error("{0}")]
    InvalidArgument(String),
    /// A directory could not be created, measured or removed.
    #[error("snapshotter: cannot {op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The snapshotter's database failed.
    #[error("snapshotter database {path}: {detail}")]
    Db {
        /// The database file.
        path: PathBuf,
        /// What failed.
        detail: String,
    },
}

impl Classify for SnapshotterError {
    fn kind(&self) -> ErrorKind {
        match self {
            SnapshotterError::NotFound(_) => ErrorKind::NotFound,
            SnapshotterError::AlreadyExists(_) | SnapshotterError::TargetExists { .. } => ErrorKind::AlreadyExists,
            SnapshotterError::FailedPrecondition { .. } => ErrorKind::FailedPrecondition,
            SnapshotterError::InvalidArgument(_) => ErrorKind::InvalidArgument,
            SnapshotterError::Io { .. } | SnapshotterError::Db { .. } => ErrorKind::Internal,
        }
    }
}

/// An I/O error constructor for `map_err`.
pub fn io(op: &'static str, path: &std::path::Path) -> impl FnOnce(std::io::Error) -> SnapshotterError {
    let path = path.to_path_buf();
    move |source| SnapshotterError::Io { op, path, source }
}
