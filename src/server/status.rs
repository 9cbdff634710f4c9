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

/// The status for `err`, its message prefixed with kubelet's `reason` when given (`"ErrImagePull: …"`).
/// Module errors never carry credentials, so the message is passed on as is.
pub fn to_status<E: Classify + std::fmt::Display>(err: &E, reason: Option<Reason>) -> Status {
    let message = match reason {
        Some(r) => format!("{r}: {err}"),
        None => err.to_string(),
    };
    Status::new(code(err.kind()), message)
}
