//! Why an ensure (a PullImage request) failed, with kubelet's reason for each case.

use std::sync::Arc;
use std::time::Duration;

use super::limits::LimitError;
use super::verify::VerifyPolicy;
use crate::error::{Classify, ErrorKind, Reason};
use crate::pull::PullError;
use crate::registry::RegistryError;

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
        /// kubelet's reason: the failure's when kubelet reads it from the message (`RegistryUnavailable`),
        /// else `ImagePullBackOff`.
        reason: Reason,
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
    /// The store holds the image, but the registry did not confirm that the request may pull it
    /// (credential re-verification, KEP-2535).
    #[error(
        "the registry did not confirm that {who} may pull {image} ({digest}), which is on this node from \
         another pull (pull.credentials_verification_policy = {policy}): {source}"
    )]
    Unverified {
        /// The image as requested.
        image: String,
        /// The manifest asked for.
        digest: String,
        /// Whose credentials were presented, in words.
        who: &'static str,
        /// The policy that asked for the verification.
        policy: VerifyPolicy,
        /// What the registry said (or why it could not be asked).
        source: Arc<RegistryError>,
    },
    /// The pull policy `never` forbids asking the registry, and the request's credentials have not been
    /// verified for the image the store holds.
    #[error(
        "Container image {image:?} is present, but the request's credentials have not been verified for it and \
         its pull policy is never: the registry cannot be asked (pull.credentials_verification_policy = {policy})"
    )]
    NeverVerifiable {
        /// The image as requested.
        image: String,
        /// The policy that asked for the verification.
        policy: VerifyPolicy,
    },
}

impl Classify for EnsureError {
    fn kind(&self) -> ErrorKind {
        match self {
            EnsureError::NeverPull(_) => ErrorKind::FailedPrecondition,
            EnsureError::BackOff { .. } => ErrorKind::Unavailable,
            EnsureError::Qps(_) => ErrorKind::ResourceExhausted,
            EnsureError::Stalled { .. } => ErrorKind::DeadlineExceeded,
            EnsureError::Pull(e) => e.kind(),
            EnsureError::Unverified { source, .. } => source.kind(),
            EnsureError::NeverVerifiable { .. } => ErrorKind::FailedPrecondition,
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
            EnsureError::NeverVerifiable { .. } => false,
            EnsureError::Stalled { .. } | EnsureError::Unverified { .. } => true,
            EnsureError::Pull(e) => !e.is_local(),
        }
    }

    /// kubelet's reason for this failure.
    pub fn reason(&self) -> Reason {
        match self {
            EnsureError::NeverPull(_) | EnsureError::NeverVerifiable { .. } => Reason::ErrImageNeverPull,
            EnsureError::BackOff { reason, .. } => *reason,
            EnsureError::Qps(_) | EnsureError::Stalled { .. } => Reason::ErrImagePull,
            EnsureError::Pull(e) => Reason::for_pull(e.kind()),
            EnsureError::Unverified { source, .. } => Reason::for_pull(source.kind()),
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
