//! One registry host (a mirror or the upstream server) and the HTTP clients that talk to it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures_util::StreamExt;
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use oci_client::{Reference, RegistryOperation};

use super::auth::Credentials;
use super::deadline::Deadlines;
use super::error::transport_detail;
use super::hosts::{RegistryHost, Scheme};
use super::{BlobStream, FetchedManifest, RegistryError, token};
use crate::digest::Hasher;
use crate::manifest::{ACCEPTED, MAX_MANIFEST_BYTES};
use crate::metadata::Descriptor;
use crate::reference::ImageRef;

/// A host plus an `oci-client` client (blobs, token flow) and a plain HTTP client (manifests) sharing its
/// TLS settings.
pub(super) struct HostClient {
    host: RegistryHost,
    deadlines: Deadlines,
    oci: oci_client::Client,
    http: reqwest::Client,
    /// What to present per repository, while fresh: a pull that finds everything present then costs one
    /// manifest request, not a `/v2/` probe and a token round trip too.
    authorized: Arc<Mutex<HashMap<String, (Presented, Instant)>>>,
}

/// How long an authorization is reused; below the 60 s registries commonly give tokens.
const AUTH_REUSE: Duration = Duration::from_secs(45);

impl HostClient {
    pub(super) fn new(host: RegistryHost, deadlines: Deadlines) -> Result<HostClient, RegistryError> {
        let url = host.url();
        let mut certs = Vec::new();
        for path in &host.ca {
            let data = std::fs::read(path).map_err(|e| RegistryError::Certificate {
                host: url.clone(),
                path: path.display().to_string(),
                detail: e.to_string(),
            })?;
            certs.push(Certificate {
                encoding: CertificateEncoding::Pem,
                data,
            });
        }
        let connect_timeout = deadlines.connect;
        let protocol = match host.scheme {
            Scheme::Http => ClientProtocol::Http,
            Scheme::Https => ClientProtocol::Https,
        };
        let oci = oci_client::Client::try_from(ClientConfig {
            protocol,
            accept_invalid_certificates: host.skip_verify,
            extra_root_certificates: certs.clone(),
            // Index selection is ours (variant-aware), never oci-client's.
            platform_resolver: None,
            connect_timeout: Some(connect_timeout),
            user_agent: concat!("imaged/", env!("CARGO_PKG_VERSION")),
            ..ClientConfig::default()
        })
        .map_err(|e| RegistryError::Client {
            host: url.clone(),
            detail: e.to_string(),
        })?;
        let mut http = reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            .user_agent(concat!("imaged/", env!("CARGO_PKG_VERSION")))
            .tls_danger_accept_invalid_certs(host.skip_verify);
        for c in &certs {
            let cert = reqwest::Certificate::from_pem(&c.data).map_err(|e| RegistryError::Certificate {
                host: url.clone(),
                path: "(hosts.toml ca)".into(),
                detail: e.to_string(),
            })?;
            http = http.tls_certs_merge([cert]);
        }
        let http = http.build().map_err(|e| RegistryError::Client {
            host: url,
            detail: transport_detail(&e),
        })?;
        Ok(HostClient {
            host,
            deadlines,
            oci,
            http,
            authorized: Arc::default(),
        })
    }

    /// The same clients, serving a host entry with possibly other capabilities.
    pub(super) fn with_host(&self, host: RegistryHost) -> HostClient {
        HostClient {
            host,
            deadlines: self.deadlines,
            oci: self.oci.clone(),
            http: self.http.clone(),
            authorized: self.authorized.clone(),
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

    /// The reference as `oci-client` must see it for this host: the upstream registry name, with this host
    /// as its "mirror" when they differ (which makes requests go here with `?ns=<registry>`, as containerd
    /// sends them).
    fn oci_ref(&self, image: &ImageRef, reference: &str) -> Reference {
        let mut r = if reference.starts_with("sha256:") {
            Reference::with_digest(image.registry().into(), image.repository().into(), reference.into())
        } else {
            Reference::with_tag(image.registry().into(), image.repository().into(), reference.into())
        };
        if self.host.host != image.registry() {
            r.set_mirror_registry(self.host.host.clone());
        }
        r
    }

    /// Authenticates for pulling `r` (token flow if the host asks for one) and returns the bearer token or
    /// credentials to present on our own requests.
    async fn authorize(&self, r: &Reference, creds: Option<&Credentials>) -> Result<Presented, RegistryError> {
        let repo = r.repository().to_string();
        if let Some((p, at)) = self.authorized.lock().unwrap_or_else(|p| p.into_inner()).get(&repo)
            && at.elapsed() < AUTH_REUSE
        {
            return Ok(p.clone());
        }
        let what = format!("authorization to pull {}", r.repository());
        let presented = self
            .deadlines
            .headers_within(&self.url(), &what, self.authorize_now(r, creds))
            .await?;
        self.authorized
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(repo, (presented.clone(), Instant::now()));
        Ok(presented)
    }

    async fn authorize_now(&self, r: &Reference, creds: Option<&Credentials>) -> Result<Presented, RegistryError> {
        let url = self.url();
        let auth = match creds {
            None => RegistryAuth::Anonymous,
            Some(Credentials::Basic { username, password }) => RegistryAuth::Basic(username.clone(), password.clone()),
            Some(Credentials::RegistryToken(t)) => RegistryAuth::Bearer(t.clone()),
            Some(Credentials::IdentityToken(t)) => {
                let access = token::exchange_identity_token(&self.http, &url, r.repository(), t).await?;
                RegistryAuth::Bearer(access)
            }
        };
        let what = format!("{}/{}", r.registry(), r.repository());
        let token = self
            .oci
            .auth(r, &auth, RegistryOperation::Pull)
            .await
            .map_err(|e| RegistryError::from_oci(&url, &what, e))?;
        Ok(match (token, auth) {
            (Some(t), _) => Presented::Bearer(t),
            (None, RegistryAuth::Basic(u, p)) => Presented::Basic(u, p),
            (None, _) => Presented::Nothing,
        })
    }

    pub(super) async fn fetch_manifest(
        &self,
        image: &ImageRef,
        reference: &str,
        creds: Option<&Credentials>,
    ) -> Result<FetchedManifest, RegistryError> {
        let host = self.url();
        let what = format!("manifest {}:{reference}", image.name());
        let r = self.oci_ref(image, reference);
        let presented = self.authorize(&r, creds).await?;
        let mut url = format!("{host}/v2/{}/manifests/{reference}", image.repository());
        if self.host.host != image.registry() {
            url.push_str("?ns=");
            url.push_str(image.registry());
        }
        let req = self.http.get(&url).header(reqwest::header::ACCEPT, ACCEPTED.join(", "));
        let send = async {
            presented
                .apply(req)
                .send()
                .await
                .map_err(|e| RegistryError::Unreachable {
                    host: host.clone(),
                    detail: transport_detail(&e),
                })
        };
        let resp = self.deadlines.headers_within(&host, &what, send).await?;
        let status = resp.status().as_u16();
        let content_type = header(&resp, reqwest::header::CONTENT_TYPE.as_str());
        let header_digest = header(&resp, "docker-content-digest");
        if let Some(len) = resp.content_length()
            && len > MAX_MANIFEST_BYTES
        {
            return Err(RegistryError::TooLarge {
                host,
                what,
                limit: MAX_MANIFEST_BYTES,
            });
        }
        let mut body = BytesMut::new();
        let mut hasher = Hasher::new();
        let mut stream = resp.bytes_stream();
        let silent = self.deadlines.response;
        loop {
            let next = tokio::time::timeout(silent, stream.next())
                .await
                .map_err(|_| RegistryError::TimedOut {
                    host: host.clone(),
                    what: what.clone(),
                    after: silent,
                })?;
            let Some(chunk) = next else { break };
            let chunk = chunk.map_err(|e| RegistryError::Unreachable {
                host: host.clone(),
                detail: transport_detail(&e),
            })?;
            if body.len() as u64 + chunk.len() as u64 > MAX_MANIFEST_BYTES {
                return Err(RegistryError::TooLarge {
                    host,
                    what,
                    limit: MAX_MANIFEST_BYTES,
                });
            }
            hasher.update(&chunk);
            body.extend_from_slice(&chunk);
        }
        if !(200..300).contains(&status) {
            return Err(RegistryError::from_status(&host, &what, status, &body));
        }
        let digest = hasher.finish();
        let expected = if reference.starts_with("sha256:") {
            Some(reference.to_string())
        } else {
            header_digest
        };
        if let Some(expected) = expected
            && expected.starts_with("sha256:")
            && expected != digest.to_string()
        {
            return Err(RegistryError::mismatch(&host, &what, &expected, &digest));
        }
        Ok(FetchedManifest {
            body: body.freeze(),
            content_type,
            digest,
        })
    }

    pub(super) async fn fetch_blob(
        &self,
        image: &ImageRef,
        desc: &Descriptor,
        creds: Option<&Credentials>,
    ) -> Result<BlobStream, RegistryError> {
        let host = self.url();
        let what = format!("blob {} of {}", desc.digest, image.name());
        let r = self.oci_ref(image, &desc.digest.to_string());
        // Populates oci-client's token cache for this repository (bearer or basic).
        self.authorize(&r, creds).await?;
        let od = OciDescriptor {
            media_type: desc.media_type.clone(),
            digest: desc.digest.to_string(),
            size: desc.size as i64,
            ..OciDescriptor::default()
        };
        // Asked as the range "bytes=0-": the registry sends the whole blob, and oci-client hands it over
        // without hashing it. Our callers hash every byte anyway (the content store's commit verifies digest
        // and size), and a second SHA-256 pass costs ~0.5 ms per MB on the pull's critical path. A registry
        // that ignores ranges answers 200, and oci-client then verifies as well.
        let request = async {
            self.oci
                .pull_blob_stream_partial(&r, &od, 0, None)
                .await
                .map_err(|e| RegistryError::from_oci(&host, &what, e))
        };
        let sized = match self.deadlines.headers_within(&host, &what, request).await? {
            oci_client::client::BlobResponse::Full(s) | oci_client::client::BlobResponse::Partial(s) => s,
        };
        // A digest mismatch at the end of the stream becomes `InvalidData`, so callers can tell bad content
        // from a broken connection without knowing oci-client's error types.
        let body: BlobStream = Box::pin(sized.stream.map(|r| {
            r.map_err(|e| {
                let bad = e.get_ref().is_some_and(|i| i.is::<oci_client::errors::DigestError>());
                if bad {
                    std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())
                } else {
                    e
                }
            })
        }));
        Ok(self.deadlines.idle_cut(&host, &what, body))
    }
}

/// What to present on a request we make ourselves.
#[derive(Clone)]
enum Presented {
    Bearer(String),
    Basic(String, String),
    Nothing,
}

impl Presented {
    fn apply(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self {
            Presented::Bearer(t) => req.bearer_auth(t),
            Presented::Basic(u, p) => req.basic_auth(u, Some(p)),
            Presented::Nothing => req,
        }
    }
}

fn header(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}
