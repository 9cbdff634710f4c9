//! Why a client subcommand failed.

use std::path::{Path, PathBuf};

/// Why a client subcommand failed. Messages never contain credentials.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The image service's socket could not be reached.
    #[error("cannot connect to the CRI image service at {socket}: {cause} (is imaged running? see --socket)")]
    Connect {
        /// The socket.
        socket: PathBuf,
        /// The root cause, e.g. "No such file or directory (os error 2)".
        cause: String,
    },
    /// A CRI call was answered with an error status.
    #[error("{call}: {message} ({code:?})")]
    Rpc {
        /// The command and its argument, e.g. `pull busybox`.
        call: String,
        /// The status message.
        message: String,
        /// The gRPC code.
        code: tonic::Code,
    },
    /// `--creds` is not `USER:PASS` with a non-empty user. The value is not echoed: it holds a password.
    #[error("invalid --creds: expected USER:PASS with a non-empty user")]
    InvalidCreds,
    /// `inspect` of an image the service does not have.
    #[error("image {image} not found")]
    ImageNotFound {
        /// The name as given.
        image: String,
    },
    /// `rmi` of an image the service does not have (crictl's wording).
    #[error("no such image {image}")]
    NoSuchImage {
        /// The name as given.
        image: String,
    },
    /// Some images of an `rmi` could not be removed; each failure was reported as it happened.
    #[error("cannot remove {failed} of {total} images")]
    RemoveFailed {
        /// How many failed.
        failed: usize,
        /// How many were asked for.
        total: usize,
    },
    /// `mount` could not materialise the image.
    #[error("cannot materialise the image in {dir}: {detail}")]
    Mount {
        /// The target directory.
        dir: PathBuf,
        /// Why.
        detail: String,
    },
    /// A call to imaged's own service (`gc`, `prune`) reached a CRI image service that is not imaged.
    #[error("the image service at {socket} is not imaged (no imaged.v1 service)")]
    NotImaged {
        /// The socket.
        socket: PathBuf,
    },
    /// The result could not be written to stdout.
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
}

impl CliError {
    /// A failed connection to `socket`, described by its root cause (tonic's own message is only
    /// "transport error").
    pub fn connect(socket: &Path, error: &(dyn std::error::Error + 'static)) -> Self {
        let mut root = error;
        while let Some(source) = root.source() {
            root = source;
        }
        Self::Connect {
            socket: socket.to_path_buf(),
            cause: root.to_string(),
        }
    }

    /// A failed CRI call; `call` names the command and its argument.
    pub fn rpc(call: impl Into<String>, status: &tonic::Status) -> Self {
        let message = match status.message() {
            "" => status.code().description().to_string(),
            m => m.to_string(),
        };
        Self::Rpc {
            call: call.into(),
            message,
            code: status.code(),
        }
    }

    /// A failed call to imaged's own service at `socket`: `Unimplemented` means the service there is not
    /// imaged (containerd's socket, say), anything else is [`CliError::rpc`].
    pub fn imaged_rpc(socket: &Path, call: impl Into<String>, status: &tonic::Status) -> Self {
        match status.code() {
            tonic::Code::Unimplemented => Self::NotImaged {
                socket: socket.to_path_buf(),
            },
            _ => Self::rpc(call, status),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpc_error_names_call_message_and_code() {
        let e = CliError::rpc("pull busybox", &tonic::Status::not_found("manifest unknown"));
        assert_eq!(e.to_string(), "pull busybox: manifest unknown (NotFound)");
    }

    #[test]
    fn rpc_error_without_message_uses_the_code_description() {
        let e = CliError::rpc("fsinfo", &tonic::Status::new(tonic::Code::Unavailable, ""));
        assert_eq!(
            e.to_string(),
            format!("fsinfo: {} (Unavailable)", tonic::Code::Unavailable.description())
        );
    }

    #[test]
    fn unimplemented_from_imaged_service_means_not_imaged() {
        let socket = Path::new("/run/containerd/containerd.sock");
        let e = CliError::imaged_rpc(
            socket,
            "gc",
            &tonic::Status::unimplemented("unknown service imaged.v1.Images"),
        );
        assert_eq!(
            e.to_string(),
            "the image service at /run/containerd/containerd.sock is not imaged (no imaged.v1 service)"
        );
        let e = CliError::imaged_rpc(socket, "gc", &tonic::Status::internal("disk on fire"));
        assert_eq!(e.to_string(), "gc: disk on fire (Internal)");
    }

    #[test]
    fn connect_error_shows_the_root_cause() {
        #[derive(Debug)]
        struct Transport(std::io::Error);
        impl std::fmt::Display for Transport {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("transport error")
            }
        }
        impl std::error::Error for Transport {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let e = CliError::connect(Path::new("/run/x.sock"), &Transport(io));
        assert_eq!(
            e.to_string(),
            "cannot connect to the CRI image service at /run/x.sock: no such file (is imaged running? see --socket)"
        );
    }
}
