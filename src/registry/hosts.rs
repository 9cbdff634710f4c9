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
//! imaged supports every key containerd reads: `server`, `capabilities`, `skip_verify`, `ca`, `client`,
//! `header`, `override_path` (only for the standard `/v2` API root) and `dial_timeout`. `proxy`, which
//! some guides write but containerd ignores, is accepted and listed in [`RegistryHost::unsupported`] so
//! the caller can warn about it. The per-host keys are parsed in `hosts_keys.rs`.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use toml::{Table, Value};

#[path = "hosts_keys.rs"]
mod keys;
#[path = "hosts_url.rs"]
mod url;
use keys::{invalid, parse_host};

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
    /// Client certificates to present (`client`, or Docker's `*.cert`/`*.key` files), in configured order.
    pub client: Vec<ClientPair>,
    /// Headers sent with every request to this host (`header`), in file order.
    pub header: HostHeaders,
    /// How long to wait for a connection to this host (`dial_timeout`); the configured default when `None`.
    pub dial_timeout: Option<std::time::Duration>,
    /// Keys set for this host that imaged ignores (`proxy`), to warn about.
    pub unsupported: Vec<String>,
}

/// A client certificate and its private key, as containerd's `client` lists them: PEM files, the key in
/// the certificate's file when `key` is `None`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientPair {
    /// The PEM certificate (chain), leaf first.
    pub cert: PathBuf,
    /// The PEM private key; `None` means it is in `cert`'s file.
    pub key: Option<PathBuf>,
}

/// The `header` table of a host: `(name, value)` pairs, a name repeated for each of its values. Values may
/// be secrets (an `authorization` header), so `Debug` shows only the names.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct HostHeaders(pub Vec<(String, String)>);

impl fmt::Debug for HostHeaders {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.iter().map(|(name, _)| name)).finish()
    }
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
            client: Vec::new(),
            header: HostHeaders::default(),
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

/// Docker's `certs.d` layout: `*.crt` are CA certificates for the upstream; each `*.cert` is a client
/// certificate, with its key in the `*.key` of the same name (or in the `*.cert` file itself).
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
        } else if let Some(stem) = name.strip_suffix(".cert") {
            let key = dir.join(format!("{stem}.key"));
            host.client.push(ClientPair {
                cert: dir.join(&name),
                key: key.is_file().then_some(key),
            });
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

#[cfg(test)]
#[path = "hosts_tests.rs"]
mod tests;
