//! The requests of one host: a manifest (GET, or HEAD for its digest alone) and a blob (whole, or a range).

use bytes::BytesMut;
use futures_util::StreamExt;
use reqwest::Method;
use reqwest::header::{ACCEPT, RANGE};

use super::auth::Credentials;
use super::error::transport_detail;
use super::host_client::{HostClient, header};
use super::{BlobBody, BlobStream, FetchedManifest, ManifestHead, RegistryError};
use crate::digest::{Digest, Hasher};
use crate::manifest::Descriptor;
use crate::manifest::{ACCEPTED, MAX_MANIFEST_BYTES};
use crate::reference::ImageRef;

/// What a manifest HEAD of one host told.
#[derive(Debug)]
pub(super) enum Head {
    /// The manifest's digest (`Docker-Content-Digest`).
    Digest(ManifestHead),
    /// No digest: the header is missing or unreadable, or the host does not answer HEAD (405, 501, any
    /// status other than those [`HostClient::head_manifest`] fails with). A GET must tell.
    NoDigest(String),
}

impl HostClient {
    /// Asks for the manifest `reference` names with a HEAD (what Docker Hub does not count as a pull). Fails
    /// where a GET would fail the same way: no answer, 401, 403, 404, a 429 not waited out.
    pub(super) async fn head_manifest(
        &self,
        image: &ImageRef,
        reference: &str,
        creds: Option<&Credentials>,
    ) -> Result<Head, RegistryError> {
        let what = format!("manifest {}:{reference} (HEAD)", image.name());
        let url = self.endpoint(image, "manifests", reference);
        let accept = ACCEPTED.join(", ");
        let resp = self
            .send(Method::HEAD, image, creds, &url, &[(ACCEPT, &accept)], &what)
            .await?;
        let status = resp.status().as_u16();
        if matches!(status, 401 | 403 | 404 | 429) {
            return Err(self.status_error(resp, &what).await);
        }
        if !resp.status().is_success() {
            return Ok(Head::NoDigest(format!("HTTP {status}")));
        }
        let digest = header(&resp, "docker-content-digest");
        let Some(digest) = digest.as_deref().and_then(|d| d.parse::<Digest>().ok()) else {
            return Ok(Head::NoDigest(format!("Docker-Content-Digest {digest:?}")));
        };
        if reference.starts_with("sha256:") && reference != digest.to_string() {
            return Ok(Head::NoDigest(format!("a digest other than asked for: {digest}")));
        }
        Ok(Head::Digest(ManifestHead {
            digest,
            content_type: header(&resp, reqwest::header::CONTENT_TYPE.as_str()),
            size: resp
                .headers()
                .get(reqwest::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse().ok()),
        }))
    }

    /// Fetches the manifest `reference` names, bounded and hashed as it arrives, checked against the digest
    /// asked for (or the one the registry says).
    pub(super) async fn fetch_manifest(
        &self,
        image: &ImageRef,
        reference: &str,
        creds: Option<&Credentials>,
    ) -> Result<FetchedManifest, RegistryError> {
        let host = self.url();
        let what = format!("manifest {}:{reference}", image.name());
        let url = self.endpoint(image, "manifests", reference);
        let accept = ACCEPTED.join(", ");
        let resp = self
            .send(Method::GET, image, creds, &url, &[(ACCEPT, &accept)], &what)
            .await?;
        if !resp.status().is_success() {
            return Err(self.status_error(resp, &what).await);
        }
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
            let chunk = chunk.map_err(|e| self.transport_error(&e))?;
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

    /// Starts streaming a blob, or the part of it from byte `from` to `to` (exclusive; `None`: the end).
    /// The bytes are not verified here: every caller hashes them as it stores them (the content store's
    /// commit checks digest and size), and a second SHA-256 pass would cost ~0.5 ms per MB on the pull's
    /// critical path. A host that ignores the `Range` header answers with the whole blob: the body says
    /// where its bytes start.
    pub(super) async fn fetch_blob(
        &self,
        image: &ImageRef,
        desc: &Descriptor,
        from: u64,
        to: Option<u64>,
        creds: Option<&Credentials>,
    ) -> Result<BlobBody, RegistryError> {
        let host = self.url();
        let what = format!("blob {} of {}", desc.digest, image.name());
        let url = self.endpoint(image, "blobs", &desc.digest.to_string());
        let range = match (from, to) {
            (0, None) => None,
            (from, None) => Some(format!("bytes={from}-")),
            (from, Some(to)) => Some(format!("bytes={from}-{}", to.saturating_sub(1))),
        };
        let own: Vec<_> = range.iter().map(|r| (RANGE, r.as_str())).collect();
        let resp = self.send(Method::GET, image, creds, &url, &own, &what).await?;
        if !resp.status().is_success() {
            return Err(self.status_error(resp, &what).await);
        }
        let partial = resp.status() == reqwest::StatusCode::PARTIAL_CONTENT;
        let start = if partial {
            let content_range = header(&resp, reqwest::header::CONTENT_RANGE.as_str()).unwrap_or_default();
            match range_start(&content_range) {
                Some(start) if start == from => start,
                _ => {
                    return Err(RegistryError::Status {
                        host,
                        what,
                        status: 206,
                        detail: format!("the answer to a request for bytes {from}- covers {content_range:?}"),
                    });
                }
            }
        } else {
            0
        };
        let body: BlobStream =
            Box::pin(resp.bytes_stream().map(|r| {
                r.map_err(|e| std::io::Error::new(std::io::ErrorKind::ConnectionAborted, transport_detail(&e)))
            }));
        Ok(BlobBody {
            stream: self.deadlines.idle_cut(&host, &what, body),
            start,
            partial,
        })
    }
}

/// The first byte of a `Content-Range: bytes <first>-<last>/<size>` header.
fn range_start(value: &str) -> Option<u64> {
    value.strip_prefix("bytes ")?.split('-').next()?.trim().parse().ok()
}
