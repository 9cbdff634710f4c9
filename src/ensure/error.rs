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
    /// Whether this failure arms the back-off: failures of the registry (unreachable, refusing, stalling) and
    /// of the image (not found, bad content, hostile layers) do; local ones never do: the node's own errors,
    /// the local rate limit, back-off and policy refusals.
    pub fn arms_backoff(&self) -> bool {
        match self {
            EnsureError::NeverPull(_) | EnsureError::BackOff { .. } | EnsureError::Qps(_) => false,
            EnsureError::Stalled { .. } => true,
            EnsureError::Pull(e) => !e.is_local(),
        }
    }

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::RegistryError;

    fn pull(e: PullError) -> EnsureError {
        EnsureError::Pull(Arc::new(e))
    }

    #[test]
    fn only_the_registry_and_the_image_arm_back_off() {
        let unreachable = RegistryError::Unreachable {
            host: "https://r".into(),
            detail: "connection refused".into(),
        };
        assert!(pull(PullError::Registry(unreachable)).arms_backoff());
        let stalled = EnsureError::Stalled {
            image: "r/a:1".into(),
            idle: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
        };
        assert!(stalled.arms_backoff());
        let bad = PullError::DiffIdMismatch {
            layer: crate::digest::Digest::of(b"l"),
            expected: crate::digest::Digest::of(b"a"),
            actual: crate::digest::Digest::of(b"b"),
        };
        assert!(pull(bad).arms_backoff(), "the image's own content");

        assert!(!pull(PullError::Interrupted).arms_backoff());
        assert!(!pull(PullError::Task("panicked".into())).arms_backoff());
        let disk = PullError::Write {
            path: "/var/lib/imaged/content/ingest/x".into(),
            source: std::io::Error::other("no space left on device"),
        };
        assert!(!pull(disk).arms_backoff(), "a local disk error");
        let qps = LimitError::QpsExceeded {
            waited_would_be: Duration::from_secs(20),
            max_wait: Duration::from_secs(10),
            qps: 1.0,
            burst: 1,
        };
        assert!(!EnsureError::Qps(qps).arms_backoff(), "the local rate limit");
    }
}
