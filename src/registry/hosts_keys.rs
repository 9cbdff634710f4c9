//! The keys of one `[host."URL"]` table (or of the top level, for the server), read as containerd's
//! `remotes/docker/config/hosts.go` reads them: relative paths are relative to the hosts.toml directory,
//! `ca` and `client` take a path or a list, `header` values a string or a list of strings.

use std::path::Path;

use toml::{Table, Value};

use super::url::parse_url;
use super::{ClientPair, HostCapabilities, HostHeaders, HostsError, RegistryHost};

/// Keys a host table may hold (the top level also holds `server` and `host`).
const HOST_KEYS: &[&str] = &[
    "capabilities",
    "ca",
    "client",
    "header",
    "skip_verify",
    "override_path",
    "dial_timeout",
];
/// Keys that are accepted but not acted on (containerd does not read `proxy` either).
const UNSUPPORTED_KEYS: &[&str] = &["proxy"];

/// Parses one host table. `url` is `None` for a top level without `server`: the registry itself, with
/// containerd's defaults for it, plus the file's other settings.
pub(super) fn parse_host(
    file: &Path,
    dir: &Path,
    prefix: &str,
    url: Option<&str>,
    t: &Table,
    registry: &str,
) -> Result<RegistryHost, HostsError> {
    let key = |k: &str| {
        if prefix.is_empty() {
            k.to_string()
        } else {
            format!("{prefix}.{k}")
        }
    };
    let mut host = RegistryHost::upstream(registry);
    host.is_server = false;
    for k in t.keys() {
        if UNSUPPORTED_KEYS.contains(&k.as_str()) {
            host.unsupported.push(k.clone());
        } else if !HOST_KEYS.contains(&k.as_str()) {
            return Err(HostsError::UnknownKey {
                path: file.to_path_buf(),
                key: key(k),
            });
        }
    }
    let flag = |k: &str| match t.get(k) {
        None => Ok(false),
        Some(Value::Boolean(b)) => Ok(*b),
        Some(_) => Err(invalid(file, &key(k), "true or false")),
    };
    let override_path = flag("override_path")?;
    host.skip_verify = flag("skip_verify")?;
    let bad_ca = || invalid(file, &key("ca"), "a path or an array of paths");
    host.ca = match t.get("ca") {
        None => Vec::new(),
        Some(Value::String(p)) => vec![dir.join(p)],
        Some(Value::Array(ps)) => ps
            .iter()
            .map(|p| p.as_str().map(|p| dir.join(p)))
            .collect::<Option<_>>()
            .ok_or_else(bad_ca)?,
        Some(_) => return Err(bad_ca()),
    };
    if let Some(v) = t.get("client") {
        host.client = parse_client(dir, v).ok_or_else(|| {
            invalid(
                file,
                &key("client"),
                "a path, an array of paths, or an array of [certificate, key] pairs",
            )
        })?;
    }
    if let Some(v) = t.get("header") {
        host.header = parse_header(v).ok_or_else(|| {
            invalid(
                file,
                &key("header"),
                "a table of header names with a string or an array of strings each, valid in HTTP",
            )
        })?;
    }
    let bad_dial = || invalid(file, &key("dial_timeout"), "a duration such as \"30s\"");
    host.dial_timeout = match t.get("dial_timeout") {
        None => None,
        Some(Value::String(d)) => Some(crate::duration::parse(d).map_err(|_| bad_dial())?),
        Some(_) => return Err(bad_dial()),
    };
    if let Some(v) = t.get("capabilities") {
        host.capabilities = parse_capabilities(v).ok_or_else(|| {
            invalid(
                file,
                &key("capabilities"),
                "an array of \"pull\", \"resolve\", \"push\"",
            )
        })?;
    }
    match url {
        Some(url) => (host.scheme, host.host) = parse_url(file, url, override_path)?,
        // Like containerd, the defaulted upstream always gets every capability.
        None => host.capabilities = HostCapabilities::ALL,
    }
    Ok(host)
}

/// containerd's capability names, case-insensitively; an empty list means all. `referrers` (newer
/// containerd) is accepted and ignored: imaged does not fetch referrers.
fn parse_capabilities(v: &Value) -> Option<HostCapabilities> {
    let list = v.as_array()?;
    if list.is_empty() {
        return Some(HostCapabilities::ALL);
    }
    let mut caps = HostCapabilities {
        pull: false,
        resolve: false,
        push: false,
    };
    for c in list {
        match c.as_str()?.to_ascii_lowercase().as_str() {
            "pull" => caps.pull = true,
            "resolve" => caps.resolve = true,
            "push" => caps.push = true,
            "referrers" => {}
            _ => return None,
        }
    }
    Some(caps)
}

/// `client = "c.pem"`, `client = ["c1.pem", "c2.pem"]` (key in the same file) or
/// `client = [["c.cert", "c.key"], ["c.pem", ""]]` (an empty key: in the certificate's file).
fn parse_client(dir: &Path, v: &Value) -> Option<Vec<ClientPair>> {
    let path = |p: &str| (!p.is_empty()).then(|| dir.join(p));
    let single = |p: &str| {
        Some(ClientPair {
            cert: path(p)?,
            key: None,
        })
    };
    match v {
        Value::String(p) => Some(vec![single(p)?]),
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::String(p) => single(p),
                Value::Array(pair) => match pair.as_slice() {
                    [Value::String(cert), Value::String(key)] => Some(ClientPair {
                        cert: path(cert)?,
                        key: path(key),
                    }),
                    _ => None,
                },
                _ => None,
            })
            .collect(),
        _ => None,
    }
}

/// `[header]` with `name = "value"` or `name = ["value a", "value b"]` (one header line per value).
/// Names and values must be valid in HTTP, so a typo fails when the file is read, not on every request.
fn parse_header(v: &Value) -> Option<HostHeaders> {
    let mut out = Vec::new();
    for (name, value) in v.as_table()? {
        reqwest::header::HeaderName::from_bytes(name.as_bytes()).ok()?;
        let values: Vec<&str> = match value {
            Value::String(s) => vec![s.as_str()],
            Value::Array(list) => list.iter().map(Value::as_str).collect::<Option<_>>()?,
            _ => return None,
        };
        for value in values {
            reqwest::header::HeaderValue::from_str(value).ok()?;
            out.push((name.clone(), value.to_string()));
        }
    }
    Some(HostHeaders(out))
}

pub(super) fn invalid(file: &Path, key: &str, expected: &'static str) -> HostsError {
    HostsError::InvalidValue {
        path: file.to_path_buf(),
        key: key.to_string(),
        expected,
    }
}
