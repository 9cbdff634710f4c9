//! A failed call to containerd, classified: unreachable (the work is retried when containerd answers) or
//! refused.

use std::path::{Path, PathBuf};

use tonic::Code;

use crate::error::{Classify, ErrorKind};

/// A call to containerd that failed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("containerd at {address}: cannot {op}: {detail}")]
pub struct BridgeError {
    address: PathBuf,
    op: String,
    detail: String,
    pub(super) unavailable: bool,
}

impl BridgeError {
    pub(super) fn unavailable(address: &Path, op: &str, detail: &str) -> BridgeError {
        BridgeError {
            address: address.to_path_buf(),
            op: op.to_string(),
            detail: detail.to_string(),
            unavailable: true,
        }
    }

    pub(super) fn other(address: &Path, op: &str, detail: &str) -> BridgeError {
        BridgeError {
            unavailable: false,
            ..BridgeError::unavailable(address, op, detail)
        }
    }

    pub(super) fn rpc(address: &Path, op: &str, s: &tonic::Status) -> BridgeError {
        BridgeError {
            unavailable: matches!(s.code(), Code::Unavailable | Code::Cancelled | Code::DeadlineExceeded),
            ..BridgeError::other(address, op, &format!("{} ({:?})", s.message(), s.code()))
        }
    }
}

impl Classify for BridgeError {
    fn kind(&self) -> ErrorKind {
        if self.unavailable {
            ErrorKind::Unavailable
        } else {
            ErrorKind::Internal
        }
    }
}
