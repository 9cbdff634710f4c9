//! The small set of error kinds every module's error maps into.
//!
//! Each module has its own `thiserror` enum that says precisely what failed; each of those implements
//! [`Classify`], so the gRPC layer can turn any of them into a status code in exactly one place
//! (`server::status`) and the service can attach kubelet's reason ([`Reason`]) to a failed pull.

use std::fmt;

/// What kind of failure an error is, independent of where it happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The caller's input is malformed (a bad reference, an unknown runtime handler).
    InvalidArgument,
    /// The thing asked for does not exist (a tag or manifest in the registry).
    NotFound,
    /// The thing to create exists already (a snapshot name).
    AlreadyExists,
    /// The registry wants credentials that were not given or were wrong.
    Unauthenticated,
    /// The registry knows who we are and refuses access.
    PermissionDenied,
    /// A registry or other dependency could not be reached; trying again later may work.
    Unavailable,
    /// The content is not what it claims to be (digest or size mismatch), or is not supported.
    FailedPrecondition,
    /// Something exceeded a limit (manifest size, too many requests).
    ResourceExhausted,
    /// The operation was cancelled, e.g. by shutdown.
    Cancelled,
    /// The operation took too long or stopped making progress.
    DeadlineExceeded,
    /// A bug or a local failure (disk, database) the caller cannot fix.
    Internal,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            ErrorKind::InvalidArgument => "invalid argument",
            ErrorKind::NotFound => "not found",
            ErrorKind::AlreadyExists => "already exists",
            ErrorKind::Unauthenticated => "unauthenticated",
            ErrorKind::PermissionDenied => "permission denied",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::FailedPrecondition => "failed precondition",
            ErrorKind::ResourceExhausted => "resource exhausted",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::DeadlineExceeded => "deadline exceeded",
            ErrorKind::Internal => "internal",
        };
        f.write_str(s)
    }
}

/// Implemented by every module error: which [`ErrorKind`] it is.
pub trait Classify {
    /// The kind of this error.
    fn kind(&self) -> ErrorKind;
}

/// kubelet's reasons for image failures (`pkg/kubelet/images/types.go`, `k8s.io/cri-api/pkg/errors`).
///
/// kubelet derives its reason for a failed PullImage itself and writes it before the message it shows
/// (`ErrImagePull: rpc error: code = … desc = …`), so messages do not carry the reasons kubelet adds on its
/// own: a second `ErrImagePull` would only repeat it. kubelet reads a reason from the message in one case
/// only (`evalCRIPullErr` in `pkg/kubelet/images/image_manager.go`): a message that starts with
/// `RegistryUnavailable` or `SignatureValidationFailed`, of a status with code UNKNOWN (the one code
/// cri-client strips, `remote_image.go`); [`Reason::read_by_kubelet`] says which, and those are the only
/// prefixes on the wire. The other reasons name the failure in logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// A pull failed for any other reason.
    ErrImagePull,
    /// The registry could not be reached.
    RegistryUnavailable,
    /// The image name does not parse.
    InvalidImageName,
    /// The pull policy forbids pulling and the image is absent.
    ErrImageNeverPull,
    /// Pulls of this image are backing off after a failure.
    ImagePullBackOff,
    /// The image's metadata could not be read.
    ImageInspectError,
}

impl Reason {
    /// The reason for a failed pull of the given kind.
    pub fn for_pull(kind: ErrorKind) -> Reason {
        match kind {
            ErrorKind::InvalidArgument => Reason::InvalidImageName,
            ErrorKind::Unavailable => Reason::RegistryUnavailable,
            _ => Reason::ErrImagePull,
        }
    }

    /// Whether kubelet reads this reason from a failed pull's message (then the message starts with it and
    /// the status has code UNKNOWN, as CRI-O's do); every other reason kubelet derives itself.
    pub fn read_by_kubelet(&self) -> bool {
        matches!(self, Reason::RegistryUnavailable)
    }

    /// `message` as the wire carries it for this reason: prefixed (`RegistryUnavailable: …`) when kubelet
    /// reads the reason from it, as is otherwise.
    pub fn on_message(&self, message: impl fmt::Display) -> String {
        if self.read_by_kubelet() {
            format!("{self}: {message}")
        } else {
            message.to_string()
        }
    }

    /// The reason kubelet reads from `message` (one [`Reason::on_message`] wrote) and the rest of it;
    /// `None` when it starts with no such reason.
    pub fn read_from(message: &str) -> Option<(Reason, &str)> {
        [Reason::RegistryUnavailable].into_iter().find_map(|r| {
            let rest = message.strip_prefix(r.as_str())?.strip_prefix(": ")?;
            Some((r, rest))
        })
    }

    /// kubelet's spelling.
    pub fn as_str(&self) -> &'static str {
        match self {
            Reason::ErrImagePull => "ErrImagePull",
            Reason::RegistryUnavailable => "RegistryUnavailable",
            Reason::InvalidImageName => "InvalidImageName",
            Reason::ErrImageNeverPull => "ErrImageNeverPull",
            Reason::ImagePullBackOff => "ImagePullBackOff",
            Reason::ImageInspectError => "ImageInspectError",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_reasons_follow_kubelet() {
        assert_eq!(
            Reason::for_pull(ErrorKind::InvalidArgument).as_str(),
            "InvalidImageName"
        );
        assert_eq!(Reason::for_pull(ErrorKind::Unavailable).as_str(), "RegistryUnavailable");
        assert_eq!(Reason::for_pull(ErrorKind::NotFound).as_str(), "ErrImagePull");
        assert_eq!(Reason::for_pull(ErrorKind::Unauthenticated).as_str(), "ErrImagePull");
    }

    #[test]
    fn only_the_reasons_kubelet_reads_prefix_the_message() {
        assert_eq!(
            Reason::RegistryUnavailable.on_message("pulling image \"x\": refused"),
            "RegistryUnavailable: pulling image \"x\": refused"
        );
        for r in [
            Reason::ErrImagePull,
            Reason::InvalidImageName,
            Reason::ErrImageNeverPull,
            Reason::ImagePullBackOff,
            Reason::ImageInspectError,
        ] {
            assert!(!r.read_by_kubelet(), "{r}");
            assert_eq!(
                r.on_message("pulling image \"x\": not found"),
                "pulling image \"x\": not found"
            );
        }
        // read_from undoes on_message.
        let wire = Reason::RegistryUnavailable.on_message("refused");
        assert_eq!(Reason::read_from(&wire), Some((Reason::RegistryUnavailable, "refused")));
        assert_eq!(Reason::read_from("ErrImagePull: not found"), None);
        assert_eq!(Reason::read_from("RegistryUnavailableX"), None);
    }
}
