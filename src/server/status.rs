//! Domain errors to gRPC statuses: the one place where error kinds become codes.

use tonic::{Code, Status};

use crate::error::{Classify, ErrorKind, Reason};

/// The gRPC code for an error kind.
pub fn code(kind: ErrorKind) -> Code {
    match kind {
        ErrorKind::InvalidArgument => Code::InvalidArgument,
        ErrorKind::NotFound => Code::NotFound,
        ErrorKind::AlreadyExists => Code::AlreadyExists,
        ErrorKind::Unauthenticated => Code::Unauthenticated,
        ErrorKind::PermissionDenied => Code::PermissionDenied,
        ErrorKind::Unavailable => Code::Unavailable,
        ErrorKind::FailedPrecondition => Code::FailedPrecondition,
        ErrorKind::ResourceExhausted => Code::ResourceExhausted,
        ErrorKind::Cancelled => Code::Cancelled,
        ErrorKind::DeadlineExceeded => Code::DeadlineExceeded,
        ErrorKind::Internal => Code::Internal,
    }
}

/// The status for `err`, of the code of its kind and with its message, except for a failure whose kubelet
/// `reason` kubelet reads from the message ([`Reason::read_by_kubelet`]): that one starts with the reason
/// (`RegistryUnavailable: …`) and has code UNKNOWN, the only code kubelet's cri-client strips before it
/// matches the prefix (so kubelet reports `RegistryUnavailable`, not `ErrImagePull`). No other reason is
/// written: kubelet prefixes the one it derives itself. Module errors never carry credentials, so the message
/// is passed on as is.
pub fn to_status<E: Classify + std::fmt::Display>(err: &E, reason: Option<Reason>) -> Status {
    match reason {
        Some(r) if r.read_by_kubelet() => Status::new(Code::Unknown, r.on_message(err)),
        _ => Status::new(code(err.kind()), err.to_string()),
    }
}
