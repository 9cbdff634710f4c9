//! Registry access: the only module that talks to registries.
//!
//! A [`Session`] serves one pull of one repository. It holds the registry's hosts in the order they are
//! tried ([`hosts`]: mirrors from `hosts.toml` first, the upstream `server` last) and the credentials to
//! present ([`auth`]). Every request falls through to the next host when one fails, so a node keeps pulling
//! when its pull-through cache is down; a host that just failed to answer is tried after the others for a
//! while. Every request has a connect and a response deadline ([`Deadlines`]), so a registry that accepts
//! connections and never answers fails the request as unavailable within seconds.
//!
//! Requests are made with one HTTP client per host ([`host_client`]), set up from the host's hosts.toml entry
//! (TLS trust and client certificates in [`tls`], headers, connect deadline), and authorized by the
//! distribution token flow ([`token`]). (imaged used `oci-client` here before; it builds its own HTTP client,
//! so it could neither send a host's `header`s nor present a client certificate.) Manifest bodies are bounded
//! and hashed as they arrive; blobs are streamed to callers that hash every byte and commit only verified
//! content.

pub mod auth;
mod deadline;
mod error;
mod fetch;
pub mod helper;
mod host_client;
pub mod hosts;
mod manners;
pub mod rate_limit;
mod text;
mod tls;
mod token;
pub mod warning;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;

use deadline::HostHealth;
pub use deadline::{Deadlines, FAILED_HOST_COOLDOWN};
pub use error::RegistryError;
use fetch::Head;
use host_client::HostClient;
use manners::Manners;

use crate::digest::Digest;
use crate::manifest::Descriptor;
use crate::metrics::Metrics;
use crate::reference::ImageRef;
use auth::{AuthFile, CredentialSource, Credentials};

/// How long a connection to a registry host may take, unless its `dial_timeout` says otherwise.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a registry may take to send response headers, and stay silent in a body.
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(20);

/// Where the registry adapter finds its configuration.
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// containerd-style `hosts.toml` directory.
    pub hosts_dir: Option<PathBuf>,
    /// Docker `config.json` files to read credentials from, first match wins.
    pub auth_files: Vec<PathBuf>,
    /// Seconds to wait for a TCP/TLS connection to a registry host (a host's `dial_timeout` wins).
    pub connect_timeout_secs: u64,
    /// The response deadline of every request (see [`Deadlines`]).
    pub response_timeout: Duration,
    /// How long a docker credential helper may take before it is killed.
    pub credential_helper_timeout: Duration,
    /// The most one request waits, over all its 429s, as their `Retry-After` asks ([`rate_limit`]).
    pub rate_limit_wait: Duration,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            hosts_dir: None,
            auth_files: Vec::new(),
            connect_timeout_secs: DEFAULT_CONNECT_TIMEOUT.as_secs(),
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
            credential_helper_timeout: helper::DEFAULT_HELPER_TIMEOUT,
            rate_limit_wait: rate_limit::DEFAULT_RATE_LIMIT_WAIT,
        }
    }
}

/// A manifest as fetched from a registry.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    /// The body, at most [`crate::manifest::MAX_MANIFEST_BYTES`].
    pub body: Bytes,
    /// The response's `Content-Type`, if any.
    pub content_type: Option<String>,
    /// The digest of the body (verified against the reference when fetched by digest).
    pub digest: Digest,
}

/// What a manifest HEAD told: the digest of the manifest a reference names, without its bytes.
#[derive(Debug, Clone)]
pub struct ManifestHead {
    /// The manifest's digest, from `Docker-Content-Digest`.
    pub digest: Digest,
    /// The response's `Content-Type`, if any.
    pub content_type: Option<String>,
    /// The manifest's size (`Content-Length`), if given.
    pub size: Option<u64>,
}

/// A blob's bytes as they arrive.
pub type BlobStream = std::pin::Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>;

/// A blob, or a range of it, as the registry sends it.
pub struct BlobBody {
    /// The bytes.
    pub stream: BlobStream,
    /// The offset in the blob of the first byte: the range's start, or 0 when the host ignored the range
    /// and sent the whole blob.
    pub start: u64,
    /// The host answered with a range (206), not with the whole blob (200).
    pub partial: bool,
}

/// The registry adapter; one per daemon, cheap to share.
pub struct Registry {
    options: RegistryOptions,
    /// Clients per host URL (and TLS settings), so connections and tokens are reused across pulls.
    clients: Mutex<HashMap<String, Arc<HostClient>>>,
    /// Hosts that recently failed to answer, tried last for a while.
    health: Arc<HostHealth>,
    /// What is done about registries' warnings and rate limits, counted in `metrics`.
    manners: Arc<Manners>,
}

impl Registry {
    /// A registry adapter with these options, counting registries' warnings and rate limits in `metrics`.
    pub fn new(options: RegistryOptions, metrics: Arc<Metrics>) -> Registry {
        let manners = Arc::new(Manners::new(metrics, options.rate_limit_wait));
        Registry {
            options,
            clients: Mutex::new(HashMap::new()),
            health: Arc::default(),
            manners,
        }
    }

    /// Prepares to pull from `image`'s repository with `request_creds` (from the CRI request), falling back
    /// to credentials from the auth files (and the credential helpers they name).
    pub async fn session(
        &self,
        image: &ImageRef,
        request_creds: Option<Credentials>,
    ) -> Result<Session, RegistryError> {
        self.session_with(image, request_creds, false).await
    }

    /// Like [`Registry::session`], with the registry's upstream `server` alone, without its mirrors: for
    /// asking the registry itself whether credentials may pull an image, which a mirror (a pull-through
    /// cache, a peer-to-peer node) cannot answer for it.
    pub async fn upstream_session(
        &self,
        image: &ImageRef,
        request_creds: Option<Credentials>,
    ) -> Result<Session, RegistryError> {
        self.session_with(image, request_creds, true).await
    }

    async fn session_with(
        &self,
        image: &ImageRef,
        request_creds: Option<Credentials>,
        upstream_only: bool,
    ) -> Result<Session, RegistryError> {
        let mut hosts = hosts::load_hosts(self.options.hosts_dir.as_deref(), image.registry())?;
        hosts.retain(|h| h.is_server || !upstream_only);
        let creds = match request_creds {
            Some(c) => Some(c),
            None => self.file_credentials(image.registry()).await?,
        };
        let who = creds
            .as_ref()
            .map_or_else(|| "anonymous".to_string(), Credentials::fingerprint);
        let mut out = Vec::with_capacity(hosts.len());
        for host in hosts {
            for key in &host.unsupported {
                tracing::warn!(host = %host.url(), key = %key, "hosts.toml key not supported by imaged; ignored");
            }
            out.push(self.client(&host, &who)?);
        }
        Ok(Session {
            image: image.clone(),
            hosts: out,
            creds,
            health: self.health.clone(),
        })
    }

    /// The credentials the first auth file that knows `registry` gives: stored in it, or from the credential
    /// helper it names. A helper without credentials for the registry lets the next file answer.
    async fn file_credentials(&self, registry: &str) -> Result<Option<Credentials>, RegistryError> {
        for path in &self.options.auth_files {
            if !path.exists() {
                continue;
            }
            match AuthFile::load(path)?.source(registry) {
                None => {}
                Some(CredentialSource::Stored(c)) => return Ok(Some(c)),
                Some(CredentialSource::Helper(name)) => {
                    let timeout = self.options.credential_helper_timeout;
                    if let Some(c) = helper::get(&name, registry, timeout).await? {
                        tracing::debug!(registry, helper = %name, "credentials from a docker credential helper");
                        return Ok(Some(c));
                    }
                    tracing::debug!(registry, helper = %name, "the credential helper has no credentials for the registry");
                }
            }
        }
        Ok(None)
    }

    /// The clients for `host` and the credentials with fingerprint `who`: one per credential set, because
    /// authorizations are kept per client, and one pod's credentials must never serve another pod's pull.
    fn client(&self, host: &hosts::RegistryHost, who: &str) -> Result<Arc<HostClient>, RegistryError> {
        let deadlines = Deadlines::for_host(
            host.dial_timeout,
            Duration::from_secs(self.options.connect_timeout_secs.max(1)),
            self.options.response_timeout,
        );
        // Header values may be secrets: the key holds their digest, not the values. Certificate files are
        // keyed with their modification time and size, so a rotated certificate is picked up.
        let headers: String = host.header.0.iter().map(|(n, v)| format!("{n}\0{v}\0")).collect();
        let files = host.ca.iter().chain(
            host.client
                .iter()
                .flat_map(|p| std::iter::once(&p.cert).chain(p.key.as_ref())),
        );
        let stamps: Vec<String> = files.map(|f| file_stamp(f)).collect();
        let key = format!(
            "{}|{}|{stamps:?}|{}|{deadlines:?}|{who}",
            host.url(),
            host.skip_verify,
            crate::digest::Digest::of(headers.as_bytes()).hex()
        );
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = clients.get(&key) {
            // Capabilities may differ between files naming the same URL: keep the client, take the host.
            return Ok(Arc::new(c.with_host(host.clone())));
        }
        let c = Arc::new(HostClient::new(host.clone(), deadlines, self.manners.clone())?);
        clients.insert(key, c.clone());
        Ok(c)
    }
}

/// A file's path, modification time and size, to tell a replaced file from the one a client was built with.
fn file_stamp(path: &std::path::Path) -> String {
    let meta = std::fs::metadata(path).ok();
    let mtime = meta.as_ref().and_then(|m| m.modified().ok());
    format!("{}@{mtime:?}/{:?}", path.display(), meta.map(|m| m.len()))
}

/// One pull's view of a repository: its hosts in order and the credentials to present.
pub struct Session {
    image: ImageRef,
    hosts: Vec<Arc<HostClient>>,
    creds: Option<Credentials>,
    health: Arc<HostHealth>,
}

impl Session {
    /// Fetches the manifest or index that `reference` (a tag or a digest) names. Tags are resolved only by
    /// hosts with the `resolve` capability; digests by hosts with `pull`.
    pub async fn fetch_manifest(&self, reference: &str) -> Result<FetchedManifest, RegistryError> {
        let by_digest = reference.starts_with("sha256:");
        let mut last = None;
        for host in self.in_order(|h| if by_digest { h.can_pull() } else { h.can_resolve() }) {
            let result = host.fetch_manifest(&self.image, reference, self.creds.as_ref()).await;
            match self.noted(host, result) {
                Ok(m) => return Ok(m),
                Err(e) => {
                    tracing::warn!(host = %host.url(), image = %self.image, error = %e, "manifest fetch failed");
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| self.no_host(if by_digest { "pull" } else { "resolve" })))
    }

    /// Asks, with a HEAD, for the digest of the manifest `reference` names, through the hosts in the order
    /// of [`Session::fetch_manifest`]: the first digest a host tells is the answer. `None` when no host told
    /// one but some host answered without it (no `Docker-Content-Digest`, HEAD not allowed): only a GET can
    /// tell then. Fails when every host failed as a GET would (no answer, 401, 403, 404, 429): a GET is not
    /// made after a HEAD that found no answer, so a host that is down costs its deadline once.
    pub async fn head_manifest(&self, reference: &str) -> Result<Option<ManifestHead>, RegistryError> {
        let by_digest = reference.starts_with("sha256:");
        let (mut last, mut no_digest) = (None, false);
        for host in self.in_order(|h| if by_digest { h.can_pull() } else { h.can_resolve() }) {
            let result = host.head_manifest(&self.image, reference, self.creds.as_ref()).await;
            match self.noted(host, result) {
                Ok(Head::Digest(head)) => return Ok(Some(head)),
                Ok(Head::NoDigest(why)) => {
                    tracing::debug!(host = %host.url(), image = %self.image, reference, why, "a manifest HEAD told no digest");
                    no_digest = true;
                }
                Err(e) => {
                    tracing::warn!(host = %host.url(), image = %self.image, error = %e, "manifest HEAD failed");
                    last = Some(e);
                }
            }
        }
        if no_digest {
            return Ok(None);
        }
        Err(last.unwrap_or_else(|| self.no_host(if by_digest { "pull" } else { "resolve" })))
    }

    /// Starts streaming the blob `desc` describes. The caller verifies the bytes.
    pub async fn fetch_blob(&self, desc: &Descriptor) -> Result<BlobStream, RegistryError> {
        Ok(self.fetch_blob_range(desc, 0, None).await?.stream)
    }

    /// Starts streaming bytes `from`..`to` (exclusive; `None`: to the end) of the blob `desc` describes,
    /// asking for a range unless that is the whole blob. A host may answer with the whole blob instead
    /// ([`BlobBody::start`] is then 0). The caller verifies the bytes.
    pub async fn fetch_blob_range(
        &self,
        desc: &Descriptor,
        from: u64,
        to: Option<u64>,
    ) -> Result<BlobBody, RegistryError> {
        let to = to.filter(|&t| t < desc.size);
        let mut last = None;
        for host in self.in_order(|h| h.can_pull()) {
            let result = host.fetch_blob(&self.image, desc, from, to, self.creds.as_ref()).await;
            match self.noted(host, result) {
                Ok(s) => return Ok(s),
                Err(e) => {
                    tracing::warn!(host = %host.url(), blob = %desc.digest, error = %e, "blob fetch failed");
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| self.no_host("pull")))
    }

    /// The hosts able to serve a request, in configured order except that hosts which just failed to
    /// answer come last.
    fn in_order(&self, able: impl Fn(&HostClient) -> bool) -> Vec<&Arc<HostClient>> {
        let order = self.health.order(self.hosts.iter().filter(|h| able(h)), |h| h.url());
        if let Some(h) = order.last()
            && let Some(ago) = self.health.failed_recently(&h.url())
            && order.len() > 1
        {
            tracing::debug!(host = %h.url(), failed_ago = ?ago, "trying a host that just failed after the others");
        }
        order
    }

    /// Remembers whether `host` answered (any answer counts, even an error status) or not.
    fn noted<T>(&self, host: &HostClient, result: Result<T, RegistryError>) -> Result<T, RegistryError> {
        let unanswered = result
            .as_ref()
            .is_err_and(|e| crate::error::Classify::kind(e) == crate::error::ErrorKind::Unavailable);
        self.health.note(&host.url(), unanswered);
        result
    }

    fn no_host(&self, capability: &'static str) -> RegistryError {
        RegistryError::NoHost {
            registry: self.image.registry().to_string(),
            capability,
        }
    }
}
