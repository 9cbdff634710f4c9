//! Binding the CRI socket safely: a private directory, a group-accessible socket, a stale socket from a
//! crashed run replaced, a live one never stolen.

use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::net::UnixListener;

/// Why the socket could not be bound.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    /// Another process is serving on the socket.
    #[error("{0} is in use by a running process (another imaged?); stop it or choose another --socket")]
    InUse(PathBuf),
    /// The path exists and is not a socket.
    #[error("{0} exists and is not a socket; remove it or choose another --socket")]
    NotASocket(PathBuf),
    /// A file system operation failed.
    #[error("cannot {op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
}

fn io_err(op: &'static str, p: &Path) -> impl FnOnce(io::Error) -> ListenError {
    let path = p.to_path_buf();
    move |source| ListenError::Io { op, path, source }
}

/// Binds a unix socket at `path`: creates its directory (mode 0750) if missing, removes a stale socket
/// left by a crashed run, refuses to take over a live one, and sets the socket's mode to 0660.
pub fn bind(path: &Path) -> Result<UnixListener, ListenError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.exists()
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o750)
            .create(dir)
            .map_err(io_err("create directory", dir))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => return Err(ListenError::InUse(path.to_path_buf())),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                tracing::info!(socket = %path.display(), "replacing stale socket from a previous run");
                std::fs::remove_file(path).map_err(io_err("remove stale socket", path))?;
            }
            Err(e) => return Err(io_err("probe existing socket", path)(e)),
        },
        Ok(_) => return Err(ListenError::NotASocket(path.to_path_buf())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("stat", path)(e)),
    }
    let listener = UnixListener::bind(path).map_err(io_err("bind", path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(io_err("chmod", path))?;
    Ok(listener)
}
