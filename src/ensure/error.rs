//! Why an ensure (a PullImage request) failed, with kubelet's reason for each case.

use std::sync::Arc;
use std::time::Duration;

use super::limits::LimitError;
use crate::error::{Classify, ErrorKind, Reason};
use crate::pull::PullError;

/// A failed pull request. Cloneable: every caller joined to one pull gets the same error.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EnsureError {
    /// The pull policy is `never` and the image is absent.
    #[error("{0}")]
    NeverPull(String),
    /// Pulls of this image (for this pod) are backing off after a failure.
    #[error("{message}")]
    BackOff {
        /// kubelet's `Back-off pulling image "…"` text with the previous error.
        message: String,
        /// How long until a pull is allowed again.
        remaining: Duration,
    },
    /// The rate limiter would have made the pull wait too long.
    #[error(transparent)]
    Qps(#[from] LimitError),
    /// No byte moved for the progress timeout.
    #[error("pull of {image} cancelled: no progress for {idle:?} (pull.progress_timeout = {timeout:?})")]
    Stalled {
        /// The image.
        image: String,
        /// How long nothing moved.
        idle: Duration,
        /// The configured timeout.
        timeout: Duration,
    },
    /// The pull itself failed.
    #[error(transparent)]
    Pull(Arc<PullError>),
}

impl Classify for EnsureError {
    fn kind(&self) -> ErrorKind {
        match self {
            EnsureError::NeverPull(_) => ErrorKind::FailedPrecondition,
            EnsureError::BackOff { .. } => ErrorKind::Unavailable,
            EnsureError::Qps(_) => ErrorKind::ResourceExhausted,
            EnsureError::Stalled { .. } => ErrorKind::DeadlineExceeded,
            EnsureError::Pull(e) => e.kind(),
        }
    }
}

impl EnsureError {
    /// kubelet's reason for this failure.
    pub fn reason(&self) -> Reason {
        match self {
            EnsureError::NeverPull(_) => Reason::ErrImageNeverPull,
            EnsureError::BackOff { .. } => Reason::ImagePullBackOff,
            EnsureError::Qps(_) | EnsureError::Stalled { .. } => Reason::ErrImagePull,
            EnsureError::Pull(e) => Reason::for_pull(e.kind()),
        }
    }
}
