//! One registry host (a mirror or the upstream server) and the HTTP client that talks to it, set up from the
//! host's hosts.toml entry: its TLS trust and client certificates ([`super::tls`]), its `header`s (sent on
//! every request to it, token requests included, as containerd sends them) and its connect deadline.
//!
//! Authorizations ([`super::token`]) are kept per repository while they are fresh, so a pull that finds
//! everything present costs one manifest request, not a `/v2/` probe and a token round trip too. A kept
//! authorization the registry rejects with 401 (a token revoked or expired early, a password changed) is
//! dropped and the flow run again once for that request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use super::RegistryError;
use super::auth::Credentials;
use super::deadline::Deadlines;
use super::error::transport_detail;
use super::hosts::RegistryHost;
use super::manners::{self, Manners};
use super::token::{self, Presented};
use crate::reference::ImageRef;

/// The most of an error response's body that is read (for its message).
const MAX_ERROR_BODY: usize = 4096;

/// A host and the HTTP client set up for it.
pub(super) struct HostClient {
    host: RegistryHost,
    pub(super) deadlines: Deadlines,
    http: reqwest::Client,
    /// The host's `header`s, added to every request (a name may repeat: one line per value).
    headers: HeaderMap,
    /// Per repository: what to present, and until when.
    authorized: Arc<Mutex<HashMap<String, (Presented, Instant)>>>,
    /// Warnings and rate limits (shared by every client of the daemon).
    manners: Arc<Manners>,
}

impl HostClient {
    pub(super) fn new(
        host: RegistryHost,
        deadlines: Deadlines,
        manners: Arc<Manners>,
    ) -> Result<HostClient, RegistryError> {
        let url = host.url();
        let client_err = |detail: String| RegistryError::Client {
            host: url.clone(),
            detail,
        };
        let mut headers = HeaderMap::new();
        for (name, value) in &host.header.0 {
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| client_err(e.to_string()))?;
            let mut value = HeaderValue::from_str(value).map_err(|e| client_err(e.to_string()))?;
            // Header values may be credentials: never shown in debug output.
            value.set_sensitive(true);
            headers.append(name, value);
        }
        // Not the client's default headers: those keep one value per name.
        let http = reqwest::Client::builder()
            .connect_timeout(deadlines.connect)
            .user_agent(concat!("imaged/", env!("CARGO_PKG_VERSION")))
            .tls_backend_preconfigured(super::tls::client_config(&host)?)
            .build()
            .map_err(|e| client_err(transport_detail(&e)))?;
        Ok(HostClient {
            host,
            deadlines,
            http,
            headers,
            authorized: Arc::default(),
            manners,
        })
    }

    /// The same client, serving a host entry with possibly other capabilities.
    pub(super) fn with_host(&self, host: RegistryHost) -> HostClient {
        HostClient {
            host,
            deadlines: self.deadlines,
            http: self.http.clone(),
            headers: self.headers.clone(),
            authorized: self.authorized.clone(),
            manners: self.manners.clone(),
        }
    }

    pub(super) fn url(&self) -> String {
        self.host.url()
    }

    pub(super) fn can_pull(&self) -> bool {
        self.host.capabilities.pull
    }

    pub(super) fn can_resolve(&self) -> bool {
        self.host.capabilities.resolve
    }

    /// `/v2/<repo>/<kind>/<reference>`, with `?ns=<registry>` when this host is a mirror, as containerd asks.
    pub(super) fn endpoint(&self, image: &ImageRef, kind: &str, reference: &str) -> String {
        let mut url = format!("{}/v2/{}/{kind}/{reference}", self.url(), image.repository());
        if self.host.host != image.registry() {
            url.push_str("?ns=");
            url.push_str(image.registry());
        }
        url
    }

    /// The authorization to present for `repository`, and whether it was kept from an earlier request.
    async fn authorization(
        &self,
        repository: &str,
        creds: Option<&Credentials>,
    ) -> Result<(Presented, bool), RegistryError> {
        let kept = self
            .authorized
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(repository)
            .cloned();
        if let Some((p, until)) = kept
            && Instant::now() < until
        {
            return Ok((p, true));
        }
        let host = self.url();
        let what = format!("authorization to pull {repository}");
        let mut waited = Duration::ZERO;
        let grant = loop {
            let asked = self.deadlines.headers_within(
                &host,
                &what,
                token::authorize(
                    &self.http,
                    &self.headers,
                    |e| self.transport_error(e),
                    &host,
                    repository,
                    creds,
                ),
            );
            let result = asked.await;
            let limited = match &result {
                Err(RegistryError::TooManyRequests { retry_after, .. }) => Some(*retry_after),
                _ => None,
            };
            match limited.and_then(|asked| self.manners.rate_limited(&host, &what, asked, &mut waited)) {
                Some(wait) => tokio::time::sleep(wait).await,
                None => break result?,
            }
        };
        let mut kept = self.authorized.lock().unwrap_or_else(|p| p.into_inner());
        if grant.reuse.is_zero() {
            kept.remove(repository);
        } else {
            kept.insert(
                repository.to_string(),
                (grant.presented.clone(), Instant::now() + grant.reuse),
            );
        }
        Ok((grant.presented, false))
    }

    /// Forgets the kept authorization of `repository` if it is still `rejected`.
    fn forget(&self, repository: &str, rejected: &Presented) {
        let mut kept = self.authorized.lock().unwrap_or_else(|p| p.into_inner());
        if kept.get(repository).is_some_and(|(p, _)| p == rejected) {
            kept.remove(repository);
        }
    }

    /// Sends `method` `url` with the request's `own` headers (`Accept`, `Range`) and the authorization for
    /// `image`'s repository, and returns the response once its
    /// headers came (within the response deadline). A kept authorization answered with 401 is dropped and the
    /// request made once more with a new one; a 429 is waited out and the request made again as its
    /// `Retry-After` asks, within `registry.rate_limit_wait` ([`super::rate_limit`]). The response's `Warning`s
    /// are noted.
    pub(super) async fn send(
        &self,
        method: reqwest::Method,
        image: &ImageRef,
        creds: Option<&Credentials>,
        url: &str,
        own: &[(reqwest::header::HeaderName, &str)],
        what: &str,
    ) -> Result<reqwest::Response, RegistryError> {
        let host = self.url();
        let mut waited = Duration::ZERO;
        loop {
            let resp = self
                .send_authorized(method.clone(), image, creds, url, own, what)
                .await?;
            self.manners.warnings(&host, what, resp.headers());
            if resp.status() != reqwest::StatusCode::TOO_MANY_REQUESTS {
                return Ok(resp);
            }
            let asked = manners::retry_after(resp.headers());
            match self.manners.rate_limited(&host, what, asked, &mut waited) {
                Some(wait) => {
                    drop(resp);
                    tokio::time::sleep(wait).await;
                }
                None => return Ok(resp),
            }
        }
    }

    /// One request, with the 401 retry of [`HostClient::send`].
    async fn send_authorized(
        &self,
        method: reqwest::Method,
        image: &ImageRef,
        creds: Option<&Credentials>,
        url: &str,
        own: &[(reqwest::header::HeaderName, &str)],
        what: &str,
    ) -> Result<reqwest::Response, RegistryError> {
        let host = self.url();
        let repository = image.repository();
        let (mut presented, mut kept) = self.authorization(repository, creds).await?;
        let mut retried = false;
        loop {
            let mut req = self.http.request(method.clone(), url).headers(self.headers.clone());
            for (name, value) in own {
                req = req.header(name, *value);
            }
            let send = async { presented.apply(req).send().await.map_err(|e| self.transport_error(&e)) };
            let resp = self.deadlines.headers_within(&host, what, send).await?;
            if resp.status() != reqwest::StatusCode::UNAUTHORIZED {
                return Ok(resp);
            }
            // A rejected authorization is never kept.
            self.forget(repository, &presented);
            if !kept || retried {
                return Ok(resp);
            }
            tracing::debug!(host = %host, repository, "a kept authorization was rejected; authorizing again");
            (presented, kept) = self.authorization(repository, creds).await?;
            retried = true;
        }
    }

    /// A transport failure as an error: a connection not made within the connect deadline says so.
    pub(super) fn transport_error(&self, e: &reqwest::Error) -> RegistryError {
        if is_connect_timeout(e) {
            return RegistryError::ConnectTimedOut {
                host: self.url(),
                after: self.deadlines.connect,
                setting: if self.host.dial_timeout.is_some() {
                    "its dial_timeout in hosts.toml"
                } else {
                    "registry.connect_timeout_secs"
                },
            };
        }
        RegistryError::Unreachable {
            host: self.url(),
            detail: transport_detail(e),
        }
    }

    /// An error for a response that is not a success, with the start of its body as detail.
    pub(super) async fn status_error(&self, resp: reqwest::Response, what: &str) -> RegistryError {
        let status = resp.status().as_u16();
        let retry_after = manners::retry_after(resp.headers());
        let body = tokio::time::timeout(self.deadlines.response, token::read_capped(resp, MAX_ERROR_BODY))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        RegistryError::from_status(&self.url(), what, status, &body).with_retry_after(retry_after)
    }
}

/// Whether connecting timed out (reqwest's own predicates miss the connector's timeout error).
fn is_connect_timeout(e: &reqwest::Error) -> bool {
    if !e.is_connect() {
        return false;
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if s.is::<tokio::time::error::Elapsed>()
            || s.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        {
            return true;
        }
        source = s.source();
    }
    e.is_timeout()
}

/// The value of header `name` of `resp`, when it is text.
pub(super) fn header(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection attempt to a listener whose accept queue is full hangs (its SYNs are dropped).
    #[tokio::test]
    async fn a_connection_not_made_in_time_is_a_connect_timeout() {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = socket.listen(0).unwrap();
        let addr = listener.local_addr().unwrap();
        let _queued = std::net::TcpStream::connect(addr).unwrap();
        let host = super::super::hosts::load_hosts(None, &addr.to_string())
            .unwrap()
            .remove(0);
        let host = RegistryHost {
            scheme: super::super::hosts::Scheme::Http,
            dial_timeout: Some(std::time::Duration::from_millis(100)),
            ..host
        };
        let deadlines = Deadlines::for_host(
            host.dial_timeout,
            std::time::Duration::from_secs(30),
            std::time::Duration::from_secs(30),
        );
        let client = HostClient::new(host, deadlines, Arc::default()).unwrap();
        let e = client.http.get(format!("http://{addr}/v2/")).send().await.unwrap_err();
        let err = client.transport_error(&e);
        assert!(matches!(err, RegistryError::ConnectTimedOut { .. }), "{err}: {e:?}");
        assert!(
            err.to_string()
                .contains("within 100ms (its dial_timeout in hosts.toml)"),
            "{err}"
        );
    }
}
