//! Registry failures, sorted into the kinds the CRI layer reports: not found, unauthenticated, denied,
//! unavailable and bad content, from HTTP statuses and transport errors in one place.

use super::auth::AuthError;
use super::helper::HelperError;
use super::hosts::HostsError;
use super::text::first_line;
use crate::digest::Digest;
use crate::error::{Classify, ErrorKind};

/// What went wrong talking to a registry. Messages name the host and what was asked for, never credentials.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The `hosts.toml` configuration is invalid.
    #[error(transparent)]
    Hosts(#[from] HostsError),
    /// Credentials could not be read or decoded.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// A docker credential helper failed.
    #[error(transparent)]
    Helper(#[from] HelperError),
    /// No connection could be made, or it broke.
    #[error("registry {host} is unreachable: {detail}")]
    Unreachable {
        /// The host URL.
        host: String,
        /// The transport error.
        detail: String,
    },
    /// No connection was made within the connect deadline (a host that drops connection attempts).
    #[error("registry {host} did not accept a connection within {after:?} ({setting})")]
    ConnectTimedOut {
        /// The host URL.
        host: String,
        /// The connect deadline.
        after: std::time::Duration,
        /// Where the deadline comes from.
        setting: &'static str,
    },
    /// The registry did not answer in time (response headers, or the next bytes of a body).
    #[error("registry {host} did not answer within {after:?} while asked for {what} (registry.response_timeout)")]
    TimedOut {
        /// The host URL.
        host: String,
        /// What was asked for.
        what: String,
        /// The deadline that passed.
        after: std::time::Duration,
    },
    /// The registry does not have it.
    #[error("{what} not found in registry {host}")]
    NotFound {
        /// The host URL.
        host: String,
        /// What was asked for.
        what: String,
    },
    /// Credentials are missing or wrong.
    #[error("registry {host} refused the credentials for {what} ({detail}): check the image pull secret or auth file")]
    Unauthorized {
        /// The host URL.
        host: String,
        /// What was asked for.
        what: String,
        /// The registry's explanation.
        detail: String,
    },
    /// Authenticated, but not allowed.
    #[error("registry {host} denied access to {what}: {detail}")]
    Denied {
        /// The host URL.
        host: String,
        /// What was asked for.
        what: String,
        /// The registry's explanation.
        detail: String,
    },
    /// The registry is rate limiting us.
    #[error("registry {host} is rate limiting requests for {what}; try again later")]
    TooManyRequests {
        /// The host URL.
        host: String,
        /// What was asked for.
        what: String,
    },
    /// Any other unexpected answer.
    #[error("registry {host} answered HTTP {status} for {what}: {detail}")]
    Status {
        /// The host URL.
        host: String,
        /// What was asked for.
        what: String,
        /// The HTTP status.
        status: u16,
        /// The body or error text.
        detail: String,
    },
    /// A manifest larger than imaged accepts.
    #[error("{what} from registry {host} is larger than the limit of {limit} bytes")]
    TooLarge {
        /// The host URL.
        host: String,
        /// What was asked for.
        what: String,
        /// The limit.
        limit: u64,
    },
    /// The bytes do not match the digest they were asked for by.
    #[error("{what} from registry {host} does not match its digest: expected {expected}, got {actual}")]
    DigestMismatch {
        /// The host URL.
        host: String,
        /// What was asked for.
        what: String,
        /// The digest asked for.
        expected: String,
        /// The digest of what came.
        actual: String,
    },
    /// No configured host has the capability the request needs.
    #[error("no configured host of registry {registry} has the {capability:?} capability; check hosts.toml")]
    NoHost {
        /// The registry.
        registry: String,
        /// The capability needed.
        capability: &'static str,
    },
    /// A TLS certificate or key file named in hosts.toml (`ca`, `client`) could not be used.
    #[error("registry host {host}: cannot use {path}: {detail}")]
    Certificate {
        /// The host URL.
        host: String,
        /// The file.
        path: String,
        /// Why.
        detail: String,
    },
    /// An HTTP client could not be built.
    #[error("registry host {host}: cannot set up an HTTP client: {detail}")]
    Client {
        /// The host URL.
        host: String,
        /// Why.
        detail: String,
    },
}

impl Classify for RegistryError {
    fn kind(&self) -> ErrorKind {
        match self {
            RegistryError::Hosts(_) | RegistryError::Certificate { .. } | RegistryError::Client { .. } => {
                ErrorKind::FailedPrecondition
            }
            RegistryError::Auth(_) => ErrorKind::InvalidArgument,
            RegistryError::Helper(e) => e.kind(),
            RegistryError::Unreachable { .. }
            | RegistryError::ConnectTimedOut { .. }
            | RegistryError::TimedOut { .. } => ErrorKind::Unavailable,
            RegistryError::NotFound { .. } => ErrorKind::NotFound,
            RegistryError::Unauthorized { .. } => ErrorKind::Unauthenticated,
            RegistryError::Denied { .. } => ErrorKind::PermissionDenied,
            RegistryError::TooManyRequests { .. } => ErrorKind::ResourceExhausted,
            RegistryError::Status { status, .. } if *status >= 500 => ErrorKind::Unavailable,
            RegistryError::Status { .. } => ErrorKind::FailedPrecondition,
            RegistryError::TooLarge { .. } => ErrorKind::ResourceExhausted,
            RegistryError::DigestMismatch { .. } => ErrorKind::FailedPrecondition,
            RegistryError::NoHost { .. } => ErrorKind::FailedPrecondition,
        }
    }
}

impl RegistryError {
    /// The error for an HTTP status that is not success.
    pub(crate) fn from_status(host: &str, what: &str, status: u16, body: &[u8]) -> RegistryError {
        let detail = summarize_body(body);
        let (host, what) = (host.to_string(), what.to_string());
        match status {
            401 => RegistryError::Unauthorized { host, what, detail },
            403 => RegistryError::Denied { host, what, detail },
            404 => RegistryError::NotFound { host, what },
            429 => RegistryError::TooManyRequests { host, what },
            _ => RegistryError::Status {
                host,
                what,
                status,
                detail,
            },
        }
    }

    /// A digest mismatch.
    pub(crate) fn mismatch(host: &str, what: &str, expected: &str, actual: &Digest) -> RegistryError {
        RegistryError::DigestMismatch {
            host: host.to_string(),
            what: what.to_string(),
            expected: expected.to_string(),
            actual: actual.to_string(),
        }
    }
}

/// A transport error's cause chain, which says "connection refused" where the top level only says
/// "error sending request".
pub(crate) fn transport_detail(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        out.push_str(": ");
        out.push_str(&s.to_string());
        src = s.source();
    }
    // reqwest puts the URL in its message; URLs never carry credentials here (we never put them there).
    out
}

fn summarize_body(body: &[u8]) -> String {
    first_line(&String::from_utf8_lossy(&body[..body.len().min(512)]))
}
