//! Pushes test images to a registry over the distribution API (plain HTTP, optional Basic auth).
//!
//! Blobs: `HEAD /v2/<repo>/blobs/<digest>` (skip when present), then `POST /v2/<repo>/blobs/uploads/` and a
//! monolithic `PUT <location>&digest=<digest>` (from memory, or streamed from a file for big blobs).
//! Manifests: `PUT /v2/<repo>/manifests/<reference>` with the manifest's media type as Content-Type. Every function panics with the registry's answer on failure.

use reqwest::{Client, Method, RequestBuilder, Response, StatusCode};

use crate::common::images::image::{BuiltImage, BuiltIndex, sha256_digest};

/// `(user, password)` for HTTP Basic auth.
pub type Auth<'a> = Option<(&'a str, &'a str)>;

fn request(client: &Client, method: Method, url: &str, auth: Auth<'_>) -> RequestBuilder {
    let req = client.request(method, url);
    match auth {
        Some((user, password)) => req.basic_auth(user, Some(password)),
        None => req,
    }
}

async fn expect_status(resp: Response, ok: &[StatusCode], what: &str) -> Response {
    if ok.contains(&resp.status()) {
        return resp;
    }
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    panic!("{what}: registry answered {status}: {body}");
}

/// Uploads `data` to `repo` unless the registry already has it; returns its `sha256:<hex>` digest.
pub async fn push_blob(registry_addr: &str, repo: &str, data: &[u8], auth: Auth<'_>) -> String {
    let digest = sha256_digest(data);
    upload(
        registry_addr,
        repo,
        &digest,
        reqwest::Body::from(data.to_vec()),
        data.len() as u64,
        auth,
    )
    .await;
    digest
}

/// Uploads the file at `path`, whose digest is `digest`, to `repo` unless the registry already has it,
/// streaming it from disk (a blob of gigabytes is never in memory).
pub async fn push_blob_file(registry_addr: &str, repo: &str, path: &std::path::Path, digest: &str, auth: Auth<'_>) {
    let file = tokio::fs::File::open(path)
        .await
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let len = file.metadata().await.expect("blob file metadata").len();
    let stream = tokio_util::io::ReaderStream::with_capacity(file, 1 << 20);
    upload(
        registry_addr,
        repo,
        digest,
        reqwest::Body::wrap_stream(stream),
        len,
        auth,
    )
    .await;
}

/// HEAD (skip when present), POST, then one monolithic PUT of `body` (`len` bytes) as `digest`.
async fn upload(registry_addr: &str, repo: &str, digest: &str, body: reqwest::Body, len: u64, auth: Auth<'_>) {
    let client = Client::new();
    let base = format!("http://{registry_addr}");
    let head_url = format!("{base}/v2/{repo}/blobs/{digest}");
    let head = request(&client, Method::HEAD, &head_url, auth)
        .send()
        .await
        .unwrap_or_else(|e| panic!("HEAD {head_url}: {e}"));
    if head.status() == StatusCode::OK {
        return;
    }
    expect_status(head, &[StatusCode::NOT_FOUND], &format!("HEAD {head_url}")).await;

    let post_url = format!("{base}/v2/{repo}/blobs/uploads/");
    let post = request(&client, Method::POST, &post_url, auth)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {post_url}: {e}"));
    let post = expect_status(post, &[StatusCode::ACCEPTED], &format!("POST {post_url}")).await;
    let location = post
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("POST {post_url}: no Location header"))
        .to_owned();
    let mut put_url = if location.starts_with("http://") || location.starts_with("https://") {
        location
    } else {
        format!("{base}{location}")
    };
    put_url.push(if put_url.contains('?') { '&' } else { '?' });
    put_url.push_str(&format!("digest={}", digest.replace(':', "%3A")));
    let put = request(&client, Method::PUT, &put_url, auth)
        .header("content-type", "application/octet-stream")
        .header("content-length", len)
        .body(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("PUT {put_url}: {e}"));
    expect_status(put, &[StatusCode::CREATED], &format!("PUT blob {digest} to {repo}")).await;
}

/// Puts `manifest` as `repo:reference` (a tag or a digest) with `media_type` as Content-Type; returns the
/// registry's `Docker-Content-Digest`, checked against the manifest bytes.
pub async fn push_manifest(
    registry_addr: &str,
    repo: &str,
    reference: &str,
    media_type: &str,
    manifest: &[u8],
    auth: Auth<'_>,
) -> String {
    let client = Client::new();
    let url = format!("http://{registry_addr}/v2/{repo}/manifests/{reference}");
    let resp = request(&client, Method::PUT, &url, auth)
        .header("content-type", media_type)
        .body(manifest.to_vec())
        .send()
        .await
        .unwrap_or_else(|e| panic!("PUT {url}: {e}"));
    let resp = expect_status(resp, &[StatusCode::CREATED], &format!("PUT {url}")).await;
    let digest = resp
        .headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("PUT {url}: no Docker-Content-Digest header"))
        .to_owned();
    assert_eq!(
        digest,
        sha256_digest(manifest),
        "PUT {url}: registry digest differs from ours"
    );
    digest
}

/// Pushes the layers, the config and the manifest of `image` as `repo:tag` (`tag` may also be a digest).
pub async fn push_image(registry_addr: &str, repo: &str, tag: &str, image: &BuiltImage, auth: Auth<'_>) {
    for layer in &image.layers {
        push_blob(registry_addr, repo, &layer.blob, auth).await;
    }
    push_config_and_manifest(registry_addr, repo, tag, image, auth).await;
}

/// Pushes the config and the manifest of `image` as `repo:tag` (its layers are already there).
pub async fn push_config_and_manifest(registry_addr: &str, repo: &str, tag: &str, image: &BuiltImage, auth: Auth<'_>) {
    push_blob(registry_addr, repo, &image.config, auth).await;
    push_manifest(
        registry_addr,
        repo,
        tag,
        &image.manifest_media_type,
        &image.manifest,
        auth,
    )
    .await;
}

/// Pushes every image of `index` by digest, then the index as `repo:tag`.
pub async fn push_index(registry_addr: &str, repo: &str, tag: &str, index: &BuiltIndex, auth: Auth<'_>) {
    for image in &index.images {
        push_image(registry_addr, repo, &image.manifest_digest, image, auth).await;
    }
    push_manifest(registry_addr, repo, tag, &index.media_type, &index.manifest, auth).await;
}
