//! The URLs of `hosts.toml`: `[scheme://]host[:port][/v2]`, with credentials never echoed in errors.

use std::path::Path;

use super::{HostsError, Scheme};

/// Splits `[scheme://]host[:port][/path]` (no scheme means https) into scheme and host. The API root
/// must be the standard `/v2`: a path prefix (or `override_path` to anything else) is refused.
pub(super) fn parse_url(file: &Path, raw: &str, override_path: bool) -> Result<(Scheme, String), HostsError> {
    let err = |reason| HostsError::InvalidUrl {
        path: file.to_path_buf(),
        url: redact_userinfo(raw),
        reason,
    };
    let (scheme, rest) = match raw.split_once("://") {
        None => (Scheme::Https, raw),
        Some((s, rest)) if s.eq_ignore_ascii_case("https") => (Scheme::Https, rest),
        Some((s, rest)) if s.eq_ignore_ascii_case("http") => (Scheme::Http, rest),
        Some(_) => return Err(err("the scheme must be http or https")),
    };
    if rest.contains(['?', '#']) {
        return Err(err("query strings and fragments are not supported"));
    }
    let (authority, path) = rest.find('/').map_or((rest, ""), |i| rest.split_at(i));
    if authority.contains('@') {
        return Err(err("credentials in urls are not supported"));
    }
    if !crate::reference::valid_domain(authority) {
        return Err(err("expected host or host:port"));
    }
    let mut clean: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                clean.pop();
            }
            p => clean.push(p),
        }
    }
    let standard = match clean.as_slice() {
        [] => !override_path,
        ["v2"] => true,
        _ => false,
    };
    if !standard {
        return Err(err("path prefixes are not supported: the api root must be /v2"));
    }
    Ok((scheme, authority.to_string()))
}

/// The URL with any `user:password@` replaced, so errors never carry credentials.
pub(super) fn redact_userinfo(raw: &str) -> String {
    let (scheme, rest) = raw.split_once("://").map_or(("", raw), |(s, r)| (s, r));
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) if scheme.is_empty() => format!("<redacted>{}", &rest[at..]),
        Some(at) => format!("{scheme}://<redacted>{}", &rest[at..]),
        None => raw.to_string(),
    }
}
