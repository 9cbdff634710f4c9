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
    #[error("{what} not found in registry {host}{}", colon(detail))]
    NotFound {
        /// The host URL.
        host: String,
        /// What was asked for.
        what: String,
        /// The registry's explanation (its OCI error body), empty when it gave none.
        detail: String,
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
    /// The registry is rate limiting us (429), and asked for a wait imaged does not make: longer than the
    /// rest of `registry.rate_limit_wait`, or none at all. `RegistryRateLimited` names it for whoever reads
    /// kubelet's events (kubelet itself reads no such reason; it reports `ErrImagePull`).
    #[error(
        "RegistryRateLimited: registry {host} is rate limiting requests for {what} ({}){}",
        super::rate_limit::describe(*retry_after),
        colon(detail)
    )]
    TooManyRequests {
        /// The host URL.
        host: String,
        /// What was asked for.
        what: String,
        /// The registry's explanation (its OCI error body), empty when it gave none.
        detail: String,
        /// How long its `Retry-After` asked to wait, when it said.
        retry_after: Option<std::time::Duration>,
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
            404 => RegistryError::NotFound { host, what, detail },
            429 => RegistryError::TooManyRequests {
                host,
                what,
                detail,
                retry_after: None,
            },
            _ => RegistryError::Status {
                host,
                what,
                status,
                detail,
            },
        }
    }

    /// This error with the wait a 429's `Retry-After` asked for (other errors are returned as they are).
    pub(crate) fn with_retry_after(mut self, asked: Option<std::time::Duration>) -> RegistryError {
        if let RegistryError::TooManyRequests { retry_after, .. } = &mut self {
            *retry_after = asked;
        }
        self
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

/// What an error body says: the distribution spec's `{"errors":[{"code","message","detail"}]}` as
/// `CODE: message (detail)` per error, else the first line of the body.
fn summarize_body(body: &[u8]) -> String {
    if let Ok(ErrorBody { errors }) = serde_json::from_slice::<ErrorBody>(body)
        && !errors.is_empty()
    {
        let each = errors.iter().map(|e| {
            let mut s = [e.code.as_str(), e.message.as_str()]
                .into_iter()
                .filter(|t| !t.is_empty())
                .collect::<Vec<_>>()
                .join(": ");
            match &e.detail {
                None | Some(serde_json::Value::Null) => {}
                Some(serde_json::Value::String(d)) if d.is_empty() => {}
                Some(serde_json::Value::String(d)) => s.push_str(&format!(" ({d})")),
                Some(d) => s.push_str(&format!(" ({d})")),
            }
            s
        });
        return first_line(&each.collect::<Vec<_>>().join("; "));
    }
    first_line(&String::from_utf8_lossy(&body[..body.len().min(512)]))
}

/// `": detail"`, or nothing for an empty detail.
fn colon(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!(": {detail}")
    }
}

/// An OCI distribution error body.
#[derive(serde::Deserialize)]
struct ErrorBody {
    errors: Vec<OciError>,
}

#[derive(serde::Deserialize)]
struct OciError {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    detail: Option<serde_json::Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oci_error_bodies_are_shown_with_code_message_and_detail() {
        let body = br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{"Tag":"v9"}}]}"#;
        let e = RegistryError::from_status("http://r", "manifest a:v9", 404, body);
        assert_eq!(
            e.to_string(),
            r#"manifest a:v9 not found in registry http://r: MANIFEST_UNKNOWN: manifest unknown ({"Tag":"v9"})"#
        );
        let body = br#"{"errors":[{"code":"TOOMANYREQUESTS","message":"You have reached your pull rate limit."}]}"#;
        let e = RegistryError::from_status("http://r", "manifest a:1", 429, body);
        let shown = e.to_string();
        assert!(shown.starts_with("RegistryRateLimited: registry http://r"), "{shown}");
        assert!(
            shown.ends_with(": TOOMANYREQUESTS: You have reached your pull rate limit."),
            "{shown}"
        );
        let two = br#"{"errors":[{"code":"DENIED","message":"no","detail":"quota"},{"code":"X","message":""}]}"#;
        assert_eq!(summarize_body(two), "DENIED: no (quota); X");
    }

    #[test]
    fn other_bodies_give_their_first_line_and_none_gives_nothing() {
        assert_eq!(summarize_body(b"<html>\n<body>"), "<html>");
        assert_eq!(summarize_body(br#"{"errors":[]}"#), r#"{"errors":[]}"#);
        let e = RegistryError::from_status("http://r", "blob x", 404, b"");
        assert_eq!(e.to_string(), "blob x not found in registry http://r");
    }
}
