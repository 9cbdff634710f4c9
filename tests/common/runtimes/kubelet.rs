//! What kubelet makes of a failed PullImage, as its own code does it, so tests can assert what a user of
//! kubelet sees (`kubectl describe`, kubelet's log) rather than our wire format alone:
//! - cri-client (`k8s.io/cri-client` `remote_image.go`) strips the gRPC code of an UNKNOWN status only; any
//!   other reaches the image manager as Go prints it, `rpc error: code = NotFound desc = …`;
//! - the image manager (`pkg/kubelet/images/image_manager.go`, `evalCRIPullErr`) takes its reason from a
//!   message that starts with `RegistryUnavailable` or `SignatureValidationFailed`, else it is `ErrImagePull`;
//! - kubelet shows the reason before the message (`ErrImagePull: rpc error: …`).

use tonic::{Code, Status};

/// kubelet's reason for a failed pull of `image` and the message it shows with it.
pub fn pull_failure(err: &Status, image: &str) -> (&'static str, String) {
    let text = if err.code() == Code::Unknown {
        err.message().to_string()
    } else {
        format!("rpc error: code = {} desc = {}", go_code(err.code()), err.message())
    };
    for (reason, because) in [
        ("RegistryUnavailable", "the registry is unavailable"),
        ("SignatureValidationFailed", "the signature validation failed"),
    ] {
        if let Some(rest) = text.strip_prefix(reason) {
            return (reason, format!("image pull failed for {image} because {because}{rest}"));
        }
    }
    ("ErrImagePull", text)
}

/// kubelet's line for a failed pull, `<reason>: <message>`, after asserting that it names its reason once,
/// and no other kubelet image reason at all.
pub fn assert_reason_once(err: &Status, image: &str, want: &str) -> String {
    let (reason, message) = pull_failure(err, image);
    assert_eq!(reason, want, "kubelet's reason for {err:?}");
    let line = format!("{reason}: {message}");
    for r in REASONS {
        let n = line.matches(r).count();
        let expected = usize::from(r == reason);
        assert_eq!(n, expected, "{r} appears {n} times in kubelet's message: {line}");
    }
    line
}

/// kubelet's image reasons (`pkg/kubelet/images/types.go`, `k8s.io/cri-api/pkg/errors`).
pub const REASONS: [&str; 7] = [
    "ErrImagePull",
    "RegistryUnavailable",
    "SignatureValidationFailed",
    "InvalidImageName",
    "ErrImageNeverPull",
    "ImagePullBackOff",
    "ImageInspectError",
];

/// Go's name of a gRPC code, as `status.Error` prints it.
fn go_code(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}
