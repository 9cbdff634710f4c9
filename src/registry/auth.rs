//! Registry credentials: from a CRI `AuthConfig` (sent by kubelet with each pull) or from a Docker
//! `config.json`: its `auths` entries, or the credential helper its `credHelpers` or `credsStore` names for
//! the registry (run by [`super::helper`]).
//!
//! Secrets never reach a log or an error message: [`Credentials`] and [`AuthFile`] have redacted
//! `Debug`, and [`AuthError`] names the source and the entry, never the value.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use base64::Engine as _;

/// Why credentials cannot be read. Messages never contain a secret.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// An `auth` value is not base64 of `username:password`.
    #[error("invalid auth in {origin}: {reason}")]
    InvalidAuth {
        /// Where the value came from: the CRI request, or a file and its entry.
        origin: String,
        /// What is wrong (never the value).
        reason: &'static str,
    },
    /// A credentials file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// A credentials file is not a valid docker `config.json`.
    #[error("invalid docker config {} at line {line} column {column}: {reason}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The 1-based line of the error.
        line: usize,
        /// The 1-based column of the error.
        column: usize,
        /// The kind of error, without the offending value (which may be a secret).
        reason: &'static str,
    },
}

/// Credentials for one registry.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// A user name and password (HTTP basic, or the password grant of a token server).
    Basic {
        /// The user name.
        username: String,
        /// The password.
        password: String,
    },
    /// An OAuth2 refresh token for the registry's token server.
    IdentityToken(String),
    /// A bearer token to send to the registry as is.
    RegistryToken(String),
}

impl Credentials {
    /// A digest of the credentials, to key caches by "who is asking" without keeping the secret as a key.
    pub fn fingerprint(&self) -> String {
        let material = match self {
            Credentials::Basic { username, password } => format!("basic\0{username}\0{password}"),
            Credentials::IdentityToken(t) => format!("identity\0{t}"),
            Credentials::RegistryToken(t) => format!("registry\0{t}"),
        };
        crate::digest::Digest::of(material.as_bytes()).hex()
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Basic { username, .. } => f
                .debug_struct("Basic")
                .field("username", username)
                .field("password", &"<redacted>")
                .finish(),
            Credentials::IdentityToken(_) => f.write_str("IdentityToken(<redacted>)"),
            Credentials::RegistryToken(_) => f.write_str("RegistryToken(<redacted>)"),
        }
    }
}

/// Credentials from the fields of a CRI `AuthConfig`. A registry token wins, then an identity token,
/// then a user name with its password, then `auth` (base64 `username:password`). All empty means
/// anonymous (`None`), as does a password without a user name, as in containerd.
pub fn from_cri(
    username: &str,
    password: &str,
    auth: &str,
    identity_token: &str,
    registry_token: &str,
) -> Result<Option<Credentials>, AuthError> {
    select(username, password, auth, identity_token, registry_token, || {
        "the cri auth config".to_string()
    })
}

/// The precedence shared by CRI requests and config.json entries.
fn select(
    username: &str,
    password: &str,
    auth: &str,
    identity_token: &str,
    registry_token: &str,
    origin: impl Fn() -> String,
) -> Result<Option<Credentials>, AuthError> {
    if !registry_token.is_empty() {
        return Ok(Some(Credentials::RegistryToken(registry_token.to_string())));
    }
    if !identity_token.is_empty() {
        return Ok(Some(Credentials::IdentityToken(identity_token.to_string())));
    }
    if !username.is_empty() {
        return Ok(Some(Credentials::Basic {
            username: username.to_string(),
            password: password.to_string(),
        }));
    }
    if !auth.is_empty() {
        let (username, password) = decode_auth(auth).map_err(|reason| AuthError::InvalidAuth {
            origin: origin(),
            reason,
        })?;
        return Ok(Some(Credentials::Basic { username, password }));
    }
    Ok(None)
}

/// Decodes base64 `username:password`; trailing NULs are trimmed from the password like containerd does.
fn decode_auth(auth: &str) -> Result<(String, String), &'static str> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .map_err(|_| "not valid base64")?;
    let text = String::from_utf8(bytes).map_err(|_| "decoded value is not utf-8")?;
    let (user, pass) = text
        .split_once(':')
        .ok_or("decoded value has no ':' between user name and password")?;
    Ok((user.to_string(), pass.trim_matches('\0').to_string()))
}

/// One `auths` entry of a docker `config.json`. Other fields (`email`, `serveraddress`) are ignored.
#[derive(serde::Deserialize)]
struct RawEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
    #[serde(default)]
    registrytoken: Option<String>,
}

/// The parts of a docker `config.json` imaged reads; other keys (`proxies`, `psFormat`, ...) are ignored.
#[derive(serde::Deserialize)]
struct RawConfig {
    #[serde(default)]
    auths: Option<BTreeMap<String, RawEntry>>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: Option<BTreeMap<String, String>>,
}

/// The credentials of a docker `config.json`, by registry.
#[derive(Clone, Default)]
pub struct AuthFile {
    /// `(normalised registry, key as written, credentials)`, sorted by key.
    entries: Vec<(String, String, Credentials)>,
    /// `credsStore`: the helper for registries without an entry of their own.
    creds_store: Option<String>,
    /// `credHelpers`: `(normalised registry, key as written, helper)`, sorted by key.
    cred_helpers: Vec<(String, String, String)>,
}

impl fmt::Debug for AuthFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys: Vec<&str> = self.entries.iter().map(|(_, key, _)| key.as_str()).collect();
        let helpers: Vec<(&str, &str)> = self
            .cred_helpers
            .iter()
            .map(|(_, k, h)| (k.as_str(), h.as_str()))
            .collect();
        f.debug_struct("AuthFile")
            .field("registries", &keys)
            .field("creds_store", &self.creds_store)
            .field("cred_helpers", &helpers)
            .finish()
    }
}

/// Where a config.json says a registry's credentials are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialSource {
    /// In the file (`auths`).
    Stored(Credentials),
    /// With this credential helper (`docker-credential-<name>`).
    Helper(String),
}

impl AuthFile {
    /// Reads a docker `config.json`. A missing file is an [`AuthError::Read`] with kind `NotFound`.
    pub fn load(path: &Path) -> Result<AuthFile, AuthError> {
        let data = std::fs::read(path).map_err(|source| AuthError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        AuthFile::parse(path, &data)
    }

    /// Reads the first of `paths` that exists (see [`default_auth_paths`]); `None` if none does.
    pub fn load_first(paths: &[PathBuf]) -> Result<Option<(PathBuf, AuthFile)>, AuthError> {
        for path in paths {
            match AuthFile::load(path) {
                Ok(file) => return Ok(Some((path.clone(), file))),
                Err(AuthError::Read { source, .. }) if source.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// Parses the contents of a `config.json`; `path` is only used in errors.
    fn parse(path: &Path, data: &[u8]) -> Result<AuthFile, AuthError> {
        let raw: RawConfig = serde_json::from_slice(data).map_err(|e| AuthError::Parse {
            path: path.to_path_buf(),
            line: e.line(),
            column: e.column(),
            reason: match e.classify() {
                serde_json::error::Category::Data => "unexpected value type",
                serde_json::error::Category::Eof => "unexpected end of file",
                serde_json::error::Category::Syntax | serde_json::error::Category::Io => "syntax error",
            },
        })?;
        let mut file = AuthFile::default();
        for (key, e) in raw.auths.unwrap_or_default() {
            let field = |v: &Option<String>| v.clone().unwrap_or_default();
            // Like docker, a non-empty `auth` is decoded (and must be valid) and replaces username and
            // password; tokens still take precedence over both.
            let (username, password) = match e.auth.as_deref() {
                Some(a) if !a.is_empty() => decode_auth(a).map_err(|reason| AuthError::InvalidAuth {
                    origin: format!("{} entry {key:?}", path.display()),
                    reason,
                })?,
                _ => (field(&e.username), field(&e.password)),
            };
            let creds = select(
                &username,
                &password,
                "",
                &field(&e.identitytoken),
                &field(&e.registrytoken),
                String::new,
            )?;
            if let Some(creds) = creds {
                file.entries.push((normalise_registry(&key), key, creds));
            }
        }
        file.creds_store = raw.creds_store.filter(|s| !s.is_empty());
        for (key, helper) in raw.cred_helpers.unwrap_or_default() {
            if !helper.is_empty() {
                file.cred_helpers.push((normalise_registry(&key), key, helper));
            }
        }
        Ok(file)
    }

    /// The credentials for `registry` (`docker.io`, `quay.io`, `localhost:5000`). Keys are compared as
    /// docker does, without scheme and path; a key written exactly as `registry` wins over others that
    /// normalise to the same host.
    pub fn lookup(&self, registry: &str) -> Option<Credentials> {
        let wanted = normalise_registry(registry);
        let matching = self.entries.iter().filter(|(host, _, _)| *host == wanted);
        let exact = matching.clone().find(|(_, key, _)| key == registry);
        exact
            .or_else(|| matching.clone().next())
            .map(|(_, _, creds)| creds.clone())
    }

    /// Where the credentials for `registry` are, as docker looks: the registry's own `credHelpers` entry,
    /// else its `auths` entry, else the `credsStore` helper (docker writes no credentials into `auths` when
    /// it has a store, so the order of the last two only matters for hand-written files).
    pub fn source(&self, registry: &str) -> Option<CredentialSource> {
        let wanted = normalise_registry(registry);
        let helpers = self.cred_helpers.iter().filter(|(host, _, _)| *host == wanted);
        let helper = helpers
            .clone()
            .find(|(_, key, _)| key == registry)
            .or_else(|| helpers.clone().next());
        if let Some((_, _, h)) = helper {
            return Some(CredentialSource::Helper(h.clone()));
        }
        if let Some(c) = self.lookup(registry) {
            return Some(CredentialSource::Stored(c));
        }
        self.creds_store.clone().map(CredentialSource::Helper)
    }
}

/// A registry as docker compares them: no scheme, no path, Docker Hub's aliases as `docker.io`.
fn normalise_registry(key: &str) -> String {
    let key = key.trim();
    let key = key.split_once("://").map_or(key, |(_, rest)| rest);
    let host = key.split('/').next().unwrap_or_default().to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => "docker.io".to_string(),
        _ => host,
    }
}

/// Where credentials files are looked for, in order: `$DOCKER_CONFIG/config.json`,
/// `$HOME/.docker/config.json`, and kubelet's `/var/lib/kubelet/config.json`.
pub fn default_auth_paths() -> Vec<PathBuf> {
    auth_paths(std::env::var_os("DOCKER_CONFIG"), std::env::var_os("HOME"))
}

fn auth_paths(docker_config: Option<OsString>, home: Option<OsString>) -> Vec<PathBuf> {
    let mut paths = Vec::new();
    if let Some(dir) = docker_config.filter(|d| !d.is_empty()) {
        paths.push(PathBuf::from(dir).join("config.json"));
    }
    if let Some(home) = home.filter(|h| !h.is_empty()) {
        paths.push(PathBuf::from(home).join(".docker").join("config.json"));
    }
    paths.push(PathBuf::from("/var/lib/kubelet/config.json"));
    paths
}

#[cfg(test)]
#[path = "auth_tests.rs"]
mod tests;
