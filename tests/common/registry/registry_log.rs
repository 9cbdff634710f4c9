//! Who the test registry says asked what: its application log (not the access log, whose user field is
//! always `-`) names the user of every request with Basic credentials, accepted or not.
//!
//! distribution 2.8 with `auth.htpasswd` writes, per request:
//! - wrong credentials: `level=error msg="error authenticating user \"NAME\": authentication failure"` with
//!   `http.request.method=… http.request.uri=…`;
//! - no credentials: `msg="error authorizing context: basic authentication challenge …: invalid authorization
//!   credential"`;
//! - accepted: `auth.user.name=NAME` on the request's later lines (`response completed`, …).

use crate::common::registry::TestRegistry;

/// One request the registry's application log attributes to a user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserRequest {
    /// The user name presented.
    pub user: String,
    /// `GET`, `HEAD`, …
    pub method: String,
    /// The request target, e.g. `/v2/private/app/manifests/sha256:…`.
    pub uri: String,
    /// Whether the registry accepted the credentials.
    pub accepted: bool,
}

/// Every request with Basic credentials in the registry's log so far, oldest first (a request is listed
/// once, from its first line naming the user).
pub fn user_requests(registry: &TestRegistry) -> Vec<UserRequest> {
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for line in registry.log().lines() {
        let (user, accepted) = if let Some(rest) = line.split_once("msg=\"error authenticating user \\\"") {
            match rest.1.split_once("\\\"") {
                Some((user, _)) => (user.to_string(), false),
                None => continue,
            }
        } else if let Some(user) = field(line, "auth.user.name") {
            (user, true)
        } else {
            continue;
        };
        let (Some(id), Some(method), Some(uri)) = (
            field(line, "http.request.id"),
            field(line, "http.request.method"),
            field(line, "http.request.uri"),
        ) else {
            continue;
        };
        if seen.insert(id) {
            out.push(UserRequest {
                user,
                method,
                uri,
                accepted,
            });
        }
    }
    out
}

/// The value of `key=value` (or `key="value"`) in a logrus text line.
fn field(line: &str, key: &str) -> Option<String> {
    let start = line.find(&format!(" {key}="))? + key.len() + 2;
    let rest = &line[start..];
    let value = match rest.strip_prefix('"') {
        Some(quoted) => quoted.split('"').next()?,
        None => rest.split(' ').next()?,
    };
    Some(value.to_string())
}
