//! Registry hosts and mirrors, configured like containerd's `hosts.toml` directories
//! (`config_path`, e.g. `/etc/containerd/certs.d`; see containerd's `docs/hosts.md`).
//!
//! For a registry `myregistry.io:5000` the first existing directory of `myregistry.io_5000_`,
//! `myregistry.io:5000` and `_default` under the configured root is used. Its `hosts.toml` lists
//! `[host."URL"]` mirrors, tried in file order, and an optional `server`, tried last; without a
//! `server`, the registry itself is the upstream (`registry-1.docker.io` for `docker.io`). A directory
//! without `hosts.toml` is read in Docker's `certs.d` layout: its `*.crt` files are CA certificates for
//! the upstream. With no directory at all, the upstream alone is used, over https.
//!
//! imaged supports `server`, `capabilities`, `skip_verify`, `ca`, `override_path` (only for the
//! standard `/v2` API root) and `dial_timeout`. The other containerd keys (`client`, `header`, `proxy`)
//! are accepted and listed in [`RegistryHost::unsupported`] so the caller can warn about them.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use toml::{Table, Value};

#[path = "hosts_url.rs"]
mod url;
use url::parse_url;

/// Keys a host table may hold (the top level also holds `server` and `host`).
const HOST_KEYS: &[&str] = &["capabilities", "ca", "skip_verify", "override_path", "dial_timeout"];
/// containerd keys that are valid but not acted on by imaged.
const UNSUPPORTED_KEYS: &[&str] = &["client", "header", "proxy"];

/// Why a hosts configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum HostsError {
    /// A file or directory could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The file is not valid TOML.
    #[error("invalid toml in {} at line {line}: {message}", path.display())]
    Toml {
        /// The hosts.toml file.
        path: PathBuf,
        /// The 1-based line of the error.
        line: usize,
        /// The parser's message.
        message: String,
    },
    /// A key is neither a containerd `hosts.toml` key nor allowed where it is.
    #[error("unknown key {key:?} in {}", path.display())]
    UnknownKey {
        /// The hosts.toml file.
        path: PathBuf,
        /// The dotted key.
        key: String,
    },
    /// A key has a value of the wrong type or an unknown value.
    #[error("invalid value for {key:?} in {}: expected {expected}", path.display())]
    InvalidValue {
        /// The hosts.toml file.
        path: PathBuf,
        /// The dotted key.
        key: String,
        /// What was expected.
        expected: &'static str,
    },
    /// A host or server URL cannot be used.
    #[error("invalid registry url {url:?} in {}: {reason}", path.display())]
    InvalidUrl {
        /// The hosts.toml file.
        path: PathBuf,
        /// The URL (any user information replaced by `<redacted>`).
        url: String,
        /// What is wrong.
        reason: &'static str,
    },
}

/// How to talk to a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// Plain HTTP.
    Http,
    /// HTTP over TLS.
    Https,
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        })
    }
}

/// What a host may be used for. A mirror that may not `resolve` is only trusted for content by digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HostCapabilities {
    /// Fetch manifests and blobs by digest.
    pub pull: bool,
    /// Resolve a tag to a digest.
    pub resolve: bool,
    /// Push (imaged never pushes; kept for fidelity with containerd).
    pub push: bool,
}

impl HostCapabilities {
    /// Pull, resolve and push: containerd's default when `capabilities` is absent or empty.
    pub const ALL: HostCapabilities = HostCapabilities {
        pull: true,
        resolve: true,
        push: true,
    };
}

/// One registry endpoint to try, in the order [`load_hosts`] returns them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryHost {
    /// http or https.
    pub scheme: Scheme,
    /// `host` or `host:port` (IPv6 addresses in brackets).
    pub host: String,
    /// What this host may be used for.
    pub capabilities: HostCapabilities,
    /// Do not verify the server's certificate chain and host name.
    pub skip_verify: bool,
    /// Extra CA certificate files (relative `ca` paths resolved against the hosts.toml directory),
    /// trusted in addition to the system roots.
    pub ca: Vec<PathBuf>,
    /// This is the upstream `server`, tried after every mirror.
    pub is_server: bool,
    /// How long to wait for a connection to this host (`dial_timeout`); the configured default when `None`.
    pub dial_timeout: Option<std::time::Duration>,
    /// containerd keys set for this host that imaged ignores (e.g. `client`, `header`), to warn about.
    pub unsupported: Vec<String>,
}

impl RegistryHost {
    /// The base URL: `https://registry-1.docker.io`, `http://127.0.0.1:5000`.
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.host)
    }

    /// The registry's own endpoint: https, all capabilities (`registry-1.docker.io` for `docker.io`).
    fn upstream(registry: &str) -> RegistryHost {
        let host = if registry == "docker.io" {
            "registry-1.docker.io"
        } else {
            registry
        };
        RegistryHost {
            scheme: Scheme::Https,
            host: host.to_string(),
            capabilities: HostCapabilities::ALL,
            skip_verify: false,
            ca: Vec::new(),
            is_server: true,
            dial_timeout: None,
            unsupported: Vec::new(),
        }
    }
}

/// The hosts to try for `registry` (`docker.io`, `localhost:5000`), mirrors first and the server last.
/// `dir` is the hosts directory (containerd's `config_path`); `None` means no configuration.
pub fn load_hosts(dir: Option<&Path>, registry: &str) -> Result<Vec<RegistryHost>, HostsError> {
    // A registry that is not `host[:port]` could name a path outside `dir`: never look it up.
    let Some(root) = dir.filter(|_| crate::reference::valid_domain(registry)) else {
        return Ok(vec![RegistryHost::upstream(registry)]);
    };
    for candidate in host_dirs(root, registry) {
        match std::fs::metadata(&candidate) {
            Ok(meta) if meta.is_dir() => return load_dir(&candidate, registry),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(HostsError::Read {
                    path: candidate,
                    source,
                });
            }
        }
    }
    Ok(vec![RegistryHost::upstream(registry)])
}

/// The directories containerd looks at, in order: `host_port_`, `host:port` (or `host`), `_default`.
fn host_dirs(root: &Path, registry: &str) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(idx) = registry.rfind(':').filter(|&i| i > 0) {
        dirs.push(root.join(format!("{}_{}_", &registry[..idx], &registry[idx + 1..])));
    }
    dirs.push(root.join(registry));
    dirs.push(root.join("_default"));
    dirs
}

/// Loads one host directory: its `hosts.toml`, or else Docker's certificate files.
fn load_dir(dir: &Path, registry: &str) -> Result<Vec<RegistryHost>, HostsError> {
    let file = dir.join("hosts.toml");
    let text = match std::fs::read_to_string(&file) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
        Err(source) => return Err(HostsError::Read { path: file, source }),
    };
    if text.trim().is_empty() {
        return load_cert_files(dir, registry);
    }
    let table: Table = text.parse().map_err(|e: toml::de::Error| HostsError::Toml {
        line: e
            .span()
            .map_or(1, |s| text[..s.start.min(text.len())].matches('\n').count() + 1),
        message: e.message().trim_end().to_string(),
        path: file.clone(),
    })?;
    parse_hosts_file(&file, dir, &table, registry)
}

/// Docker's `certs.d` layout: `*.crt` are CA certificates for the upstream; `*.cert`/`*.key` are client
/// certificates, which imaged does not support.
fn load_cert_files(dir: &Path, registry: &str) -> Result<Vec<RegistryHost>, HostsError> {
    let read_err = |source| HostsError::Read {
        path: dir.to_path_buf(),
        source,
    };
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read_err)? {
        let entry = entry.map_err(read_err)?;
        if !entry.file_type().map_err(read_err)?.is_dir() {
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    names.sort();
    let mut host = RegistryHost::upstream(registry);
    for name in names {
        if name.ends_with(".crt") {
            host.ca.push(dir.join(&name));
        } else if name.ends_with(".cert") {
            host.unsupported
                .push(format!("client certificate {}", dir.join(&name).display()));
        }
    }
    Ok(vec![host])
}

/// Turns a parsed `hosts.toml` into hosts: the `[host."URL"]` tables in order, then the server.
fn parse_hosts_file(file: &Path, dir: &Path, table: &Table, registry: &str) -> Result<Vec<RegistryHost>, HostsError> {
    let mut hosts = Vec::new();
    if let Some(value) = table.get("host") {
        let Value::Table(host_tables) = value else {
            return Err(invalid(file, "host", "a table of [host.\"URL\"] tables"));
        };
        for (url, value) in host_tables {
            let key = format!("host.{url:?}");
            let Value::Table(t) = value else {
                return Err(invalid(file, &key, "a table"));
            };
            hosts.push(parse_host(file, dir, &key, Some(url), t, registry)?);
        }
    }
    let server = match table.get("server") {
        None => None,
        Some(Value::String(s)) if !s.is_empty() => Some(s.as_str()),
        Some(_) => return Err(invalid(file, "server", "a non-empty url string")),
    };
    let mut root = table.clone();
    root.remove("host");
    root.remove("server");
    let mut server = parse_host(file, dir, "", server, &root, registry)?;
    server.is_server = true;
    hosts.push(server);
    Ok(hosts)
}

/// Parses one host table. `url` is `None` for a top level without `server`: the registry itself, with
/// containerd's defaults for it, plus the file's `skip_verify` and `ca`.
fn parse_host(
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
    host.dial_timeout = match t.get("dial_timeout") {
        None => None,
        Some(Value::String(d)) => Some(
            crate::duration::parse(d).map_err(|_| invalid(file, &key("dial_timeout"), "a duration such as \"30s\""))?,
        ),
        Some(_) => return Err(invalid(file, &key("dial_timeout"), "a duration such as \"30s\"")),
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

fn invalid(file: &Path, key: &str, expected: &'static str) -> HostsError {
    HostsError::InvalidValue {
        path: file.to_path_buf(),
        key: key.to_string(),
        expected,
    }
}

#[cfg(test)]
#[path = "hosts_tests.rs"]
mod tests;
