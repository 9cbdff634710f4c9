//! Registry failures, sorted into the kinds the CRI layer reports.
//!
//! `oci-client`'s flat error enum (~30 variants) is classified here, in one place, into not found,
//! unauthenticated, denied, unavailable and bad content.

use oci_client::errors::{OciDistributionError, OciErrorCode};

use super::auth::AuthError;
use super::hosts::HostsError;
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
    /// No connection could be made, or it broke.
    #[error("registry {host} is unreachable: {detail}")]
    Unreachable {
        /// The host URL.
        host: String,
        /// The transport error.
        detail: String,
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
    /// A TLS certificate file named in hosts.toml could not be read.
    #[error("registry host {host}: cannot use CA certificate {path}: {detail}")]
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
            RegistryError::Unreachable { .. } | RegistryError::TimedOut { .. } => ErrorKind::Unavailable,
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

    /// Sorts an `oci-client` error.
    pub(crate) fn from_oci(host: &str, what: &str, e: OciDistributionError) -> RegistryError {
        let (h, w) = (host.to_string(), what.to_string());
        match e {
            OciDistributionError::RequestError(e) => RegistryError::Unreachable {
                host: h,
                detail: transport_detail(&e),
            },
            OciDistributionError::IoError(e) => RegistryError::Unreachable {
                host: h,
                detail: e.to_string(),
            },
            OciDistributionError::UnauthorizedError { .. } => RegistryError::Unauthorized {
                host: h,
                what: w,
                detail: "401 Unauthorized".into(),
            },
            OciDistributionError::AuthenticationFailure(detail) => RegistryError::Unauthorized {
                host: h,
                what: w,
                detail: first_line(&detail),
            },
            OciDistributionError::ServerError { code, message, .. } => {
                RegistryError::from_status(host, what, code, message.as_bytes())
            }
            OciDistributionError::RegistryError { envelope, .. } => {
                let detail = envelope
                    .errors
                    .iter()
                    .map(|e| e.message.clone())
                    .collect::<Vec<_>>()
                    .join("; ");
                match envelope.errors.first().map(|e| &e.code) {
                    Some(
                        OciErrorCode::BlobUnknown
                        | OciErrorCode::ManifestUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::NotFound,
                    ) => RegistryError::NotFound { host: h, what: w },
                    Some(OciErrorCode::Unauthorized) => RegistryError::Unauthorized {
                        host: h,
                        what: w,
                        detail,
                    },
                    Some(OciErrorCode::Denied) => RegistryError::Denied {
                        host: h,
                        what: w,
                        detail,
                    },
                    Some(OciErrorCode::Toomanyrequests) => RegistryError::TooManyRequests { host: h, what: w },
                    _ => RegistryError::Status {
                        host: h,
                        what: w,
                        status: 400,
                        detail,
                    },
                }
            }
            OciDistributionError::DigestError(e) => RegistryError::DigestMismatch {
                host: h,
                what: w,
                expected: String::new(),
                actual: e.to_string(),
            },
            other => RegistryError::Status {
                host: h,
                what: w,
                status: 0,
                detail: other.to_string(),
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

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().chars().take(200).collect()
}

fn summarize_body(body: &[u8]) -> String {
    first_line(&String::from_utf8_lossy(&body[..body.len().min(512)]))
}
