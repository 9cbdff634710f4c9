//! A deliberately misbehaving registry, for faults a real registry will not produce on demand: bytes that
//! do not match their digest, oversized manifests, 5xx answers, connections that stall mid-blob, a token
//! revoked before it expires (a 401 for a token the registry accepted a moment ago).
//!
//! It speaks just enough HTTP/1.1 (one request per connection, `Connection: close`) for imaged's clients,
//! serves canned responses by path, and records every request it saw.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A canned answer.
#[derive(Clone, Debug)]
pub struct Canned {
    /// HTTP status.
    pub status: u16,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
    /// Send this many body bytes, then stall (keep the connection open, send nothing) for this long.
    pub stall_after: Option<(usize, Duration)>,
    /// Send the body in chunks of this many bytes, pausing this long between them (slow but moving).
    pub drip: Option<(usize, Duration)>,
}

impl Canned {
    /// A 200 with `body` and `Content-Type: content_type`.
    pub fn ok(content_type: &str, body: Vec<u8>) -> Canned {
        Canned {
            status: 200,
            headers: vec![("Content-Type".into(), content_type.into())],
            body,
            stall_after: None,
            drip: None,
        }
    }

    /// A bare status with an empty body.
    pub fn status(status: u16) -> Canned {
        Canned {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            stall_after: None,
            drip: None,
        }
    }
}

/// The running fake registry.
pub struct FakeRegistry {
    addr: String,
    routes: Arc<Mutex<HashMap<String, Canned>>>,
    required_auth: Arc<Mutex<Option<String>>>,
    seen: Arc<Mutex<Vec<String>>>,
    requests: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeRegistry {
    /// Starts on a free loopback port. `GET /v2/` answers 200 unless overridden.
    pub async fn start() -> FakeRegistry {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind fake registry");
        let addr = listener.local_addr().expect("addr").to_string();
        let routes: Arc<Mutex<HashMap<String, Canned>>> = Arc::default();
        routes
            .lock()
            .unwrap()
            .insert("/v2/".into(), Canned::ok("application/json", b"{}".to_vec()));
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let requests: Arc<Mutex<Vec<String>>> = Arc::default();
        let required_auth: Arc<Mutex<Option<String>>> = Arc::default();
        let (r, s, f, ra) = (routes.clone(), seen.clone(), requests.clone(), required_auth.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let (r, s, full, ra) = (r.clone(), s.clone(), f.clone(), ra.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    // Read the body too (token requests are form POSTs), as far as Content-Length says.
                    let head_end = buf
                        .windows(4)
                        .position(|w| w == b"\r\n\r\n")
                        .map_or(buf.len(), |p| p + 4);
                    let text = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
                    let want: usize = text
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    while buf.len() < head_end + want {
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&buf).to_string();
                    full.lock().unwrap().push(head.clone());
                    let mut parts = head.lines().next().unwrap_or_default().split(' ');
                    let method = parts.next().unwrap_or_default().to_string();
                    let target = parts.next().unwrap_or_default().to_string();
                    let path = target.split('?').next().unwrap_or_default().to_string();
                    s.lock().unwrap().push(format!("{method} {target}"));
                    let authorization = text
                        .lines()
                        .find_map(|l| l.strip_prefix("authorization:"))
                        .map(|v| v.trim().to_string());
                    let required = ra.lock().unwrap().clone();
                    let refused = required.is_some_and(|want| {
                        path != "/v2/" && path != "/token" && authorization != Some(want.to_lowercase())
                    });
                    let canned = if refused {
                        Canned::status(401)
                    } else {
                        r.lock()
                            .unwrap()
                            .get(&path)
                            .cloned()
                            .unwrap_or_else(|| Canned::status(404))
                    };
                    let mut resp = format!(
                        "HTTP/1.1 {} X\r\nContent-Length: {}\r\nConnection: close\r\n",
                        canned.status,
                        canned.body.len()
                    );
                    for (k, v) in &canned.headers {
                        resp.push_str(&format!("{k}: {v}\r\n"));
                    }
                    resp.push_str("\r\n");
                    if sock.write_all(resp.as_bytes()).await.is_err() || method == "HEAD" {
                        return;
                    }
                    if let Some((chunk, pause)) = canned.drip {
                        for part in canned.body.chunks(chunk.max(1)) {
                            if sock.write_all(part).await.is_err() {
                                return;
                            }
                            let _ = sock.flush().await;
                            tokio::time::sleep(pause).await;
                        }
                        let _ = sock.shutdown().await;
                        return;
                    }
                    match canned.stall_after {
                        Some((n, stall)) => {
                            let _ = sock.write_all(&canned.body[..n.min(canned.body.len())]).await;
                            let _ = sock.flush().await;
                            tokio::time::sleep(stall).await;
                        }
                        None => {
                            let _ = sock.write_all(&canned.body).await;
                        }
                    }
                    let _ = sock.shutdown().await;
                });
            }
        });
        FakeRegistry {
            addr,
            routes,
            required_auth,
            seen,
            requests,
            task,
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Answers 401 to every request other than `/v2/` and `/token` whose `Authorization` is not `value`
    /// (e.g. `Bearer t1`, compared case-insensitively): a registry that takes only that token.
    pub fn require_authorization(&self, value: &str) {
        *self.required_auth.lock().unwrap() = Some(value.to_string());
    }

    /// Serves `canned` for `path` (without query string).
    pub fn route(&self, path: &str, canned: Canned) {
        self.routes.lock().unwrap().insert(path.to_string(), canned);
    }

    /// Serves a manifest for `repo:reference` with its media type as Content-Type and its digest header.
    pub fn manifest(&self, repo: &str, reference: &str, media_type: &str, body: &[u8]) {
        let mut c = Canned::ok(media_type, body.to_vec());
        c.headers.push((
            "Docker-Content-Digest".into(),
            crate::common::images::layer::sha256_digest(body),
        ));
        self.route(&format!("/v2/{repo}/manifests/{reference}"), c);
    }

    /// Serves `body` as the blob `digest` of `repo` (whatever its real digest).
    pub fn blob(&self, repo: &str, digest: &str, body: Vec<u8>) {
        self.route(
            &format!("/v2/{repo}/blobs/{digest}"),
            Canned::ok("application/octet-stream", body),
        );
    }

    /// Every request so far, whole: request line, headers and body.
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }

    /// `METHOD target` of every request so far.
    pub fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for FakeRegistry {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A fake registry serving `images` as `app{i}:v1`, each blob slowed down (dripped in two halves, 150 ms
/// apart) so that overlapping pulls would show.
pub async fn slow_registry(images: &[crate::common::images::image::BuiltImage]) -> FakeRegistry {
    let fake = FakeRegistry::start().await;
    for (i, img) in images.iter().enumerate() {
        let repo = format!("app{i}");
        fake.manifest(&repo, "v1", crate::common::images::image::OCI_MANIFEST, &img.manifest);
        fake.blob(&repo, &img.config_digest, img.config.clone());
        for l in &img.layers {
            let mut c = Canned::ok("application/octet-stream", l.blob.clone());
            c.drip = Some((l.blob.len() / 2 + 1, Duration::from_millis(150)));
            fake.route(&format!("/v2/{repo}/blobs/{}", l.digest), c);
        }
    }
    fake
}

/// A daemon that reaches `fake` over plain HTTP (its hosts.toml directory is returned with it), with the
/// given config file or the fixture's default.
pub async fn daemon_for(
    fake: &FakeRegistry,
    config: Option<&str>,
) -> (tempfile::TempDir, crate::common::daemon::Daemon) {
    let hosts = tempfile::tempdir().expect("hosts dir");
    crate::common::registry::write_hosts_toml(hosts.path(), fake.addr(), &format!("http://{}", fake.addr()));
    let opts = crate::common::daemon::DaemonOptions {
        hosts_dir: Some(hosts.path().into()),
        config: config.map(str::to_string),
        ..Default::default()
    };
    let d = crate::common::daemon::Daemon::start(opts).await;
    (hosts, d)
}
