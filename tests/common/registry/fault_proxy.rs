//! A fault-injecting TCP proxy in front of a real registry (usually [`crate::common::registry::TestRegistry`]): the
//! faults a node meets on its way to a registry, on demand and switchable while a test runs.
//!
//! - [`Fault::Pass`]: forward requests and responses unchanged.
//! - [`Fault::Refuse`]: nothing listens on the port: connections are refused.
//! - [`Fault::Status`]: answer every request with this HTTP status and an empty body (e.g. 500).
//! - [`Fault::Blackhole`]: accept the connection, read the request, never answer (until the proxy is dropped).
//! - [`Fault::Stall`]: forward the response head and the first N body bytes, then send nothing more.
//! - [`Fault::Drip`]: forward the response head at once, then the body in small chunks with pauses.
//!
//! A proxy can also stand for a P2P mirror that routes by a header (Dragonfly's `X-Dragonfly-Registry`):
//! with [`FaultProxy::require_header`], a request without that header is answered 400 and not forwarded.
//!
//! The fault for a request is the first rule ([`FaultProxy::set_for`]) whose pattern the request target
//! contains, else the default ([`FaultProxy::set`]). Every accepted request is logged with the fault applied
//! and when its response started and ended ([`FaultProxy::requests`]), so tests can see what a client asked
//! for and whether requests overlapped.
//!
//! It speaks just enough HTTP/1.1: each request is forwarded with `Connection: close` (so one connection
//! carries one request and the log sees every request), request bodies are copied through, and the
//! response's `Content-Length` says where its body ends.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::task::AbortHandle;

/// What the proxy does to a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Forward unchanged.
    Pass,
    /// Refuse connections (as the default: nothing listens; as a rule: close without answering).
    Refuse,
    /// Answer with this status and an empty body.
    Status(u16),
    /// Accept and read the request, never answer.
    Blackhole,
    /// Forward the response head and this many body bytes, then stall (keep the connection, send nothing).
    Stall(usize),
    /// Forward the response head, then the body `chunk` bytes at a time with `pause` between chunks.
    Drip {
        /// Bytes per chunk.
        chunk: usize,
        /// Pause after each chunk.
        pause: Duration,
    },
}

/// One request the proxy accepted.
#[derive(Clone, Debug)]
pub struct ProxiedRequest {
    /// `GET`, `HEAD`, ...
    pub method: String,
    /// The request target, with its query string.
    pub path: String,
    /// The fault applied.
    pub fault: Fault,
    /// When the request was read.
    pub started: Instant,
    /// The upstream's response status, when one was forwarded (or the status a [`Fault::Status`] sent).
    pub status: Option<u16>,
    /// When the last byte of the response was about to be sent; `None` while it is not (yet) complete.
    pub finished: Option<Instant>,
    /// The request's headers, names in lower case, in the order sent.
    pub headers: Vec<(String, String)>,
}

impl ProxiedRequest {
    /// Whether this request is a blob GET.
    pub fn is_blob_get(&self) -> bool {
        self.method == "GET" && self.path.contains("/blobs/")
    }

    /// The values of header `name` (any case) the request carried.
    pub fn header(&self, name: &str) -> Vec<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

#[derive(Default)]
struct Shared {
    rules: Vec<(String, Fault)>,
    /// A header every request must carry, `(lower-case name, value)`.
    required: Option<(String, String)>,
    log: Vec<ProxiedRequest>,
    tasks: Vec<AbortHandle>,
}

/// The running proxy: listens on `127.0.0.1:PORT` (fixed for its life, also across [`Fault::Refuse`]).
pub struct FaultProxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    default: watch::Sender<Fault>,
    shared: Arc<Mutex<Shared>>,
    acceptor: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Starts a proxy to `upstream` (`127.0.0.1:PORT`), passing everything.
    pub async fn start(upstream: &str) -> FaultProxy {
        let upstream: SocketAddr = upstream.parse().expect("upstream is host:port");
        let listener = bind(SocketAddr::from(([127, 0, 0, 1], 0))).expect("bind the fault proxy");
        let addr = listener.local_addr().expect("proxy address");
        let (default, rx) = watch::channel(Fault::Pass);
        let shared = Arc::new(Mutex::new(Shared::default()));
        let acceptor = tokio::spawn(accept_loop(listener, addr, upstream, rx, shared.clone()));
        FaultProxy {
            addr,
            upstream,
            default,
            shared,
            acceptor,
        }
    }

    /// `127.0.0.1:PORT`: the proxy's address, also the registry host name of images pulled through it.
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The upstream it forwards to.
    pub fn upstream(&self) -> String {
        self.upstream.to_string()
    }

    /// An image reference through the proxy: `127.0.0.1:PORT/<repo>:<tag>`.
    pub fn image(&self, repo: &str, tag: &str) -> String {
        format!("{}/{repo}:{tag}", self.addr)
    }

    /// Sets the fault for requests no rule matches. With [`Fault::Refuse`] the port stops listening; with any
    /// other fault it listens again (connections already accepted keep their own fault).
    pub fn set(&self, fault: Fault) {
        self.default.send_replace(fault);
    }

    /// Waits until the port accepts connections (`true`) or refuses them (`false`): [`FaultProxy::set`]
    /// closes and opens it in the background, so a test that needs [`Fault::Refuse`] in force waits here.
    pub async fn wait_listening(&self, listening: bool) {
        let what = if listening {
            "listen again"
        } else {
            "refuse connections"
        };
        let within = Duration::from_secs(10);
        crate::common::wait::until(
            &format!("the fault proxy on {} to {what}", self.addr),
            within,
            || async {
                // A probe sends no request: the proxy neither logs nor forwards it.
                TcpStream::connect(self.addr).await.is_ok() == listening
            },
        )
        .await;
    }

    /// Applies `fault` to requests whose target contains `pattern` (e.g. `"/blobs/"`), before the default
    /// and before rules added later.
    pub fn set_for(&self, pattern: &str, fault: Fault) {
        let mut s = self.shared.lock().unwrap();
        s.rules.retain(|(p, _)| p != pattern);
        s.rules.push((pattern.to_string(), fault));
    }

    /// Answers 400 (without forwarding) every request that does not carry the header `name: value`.
    pub fn require_header(&self, name: &str, value: &str) {
        self.shared.lock().unwrap().required = Some((name.to_ascii_lowercase(), value.to_string()));
    }

    /// Removes every rule (the default stays).
    pub fn clear_rules(&self) {
        self.shared.lock().unwrap().rules.clear();
    }

    /// Every request accepted so far, oldest first.
    pub fn requests(&self) -> Vec<ProxiedRequest> {
        self.shared.lock().unwrap().log.clone()
    }

    /// Forgets the requests logged so far.
    pub fn clear_log(&self) {
        self.shared.lock().unwrap().log.clear();
    }

    /// Writes `<dir>/<registry_host>/hosts.toml` with this proxy as a mirror (pull and resolve) and `server`
    /// as the upstream, both over plain HTTP; returns the file.
    pub fn write_mirror_hosts_toml(&self, dir: &Path, registry_host: &str, server: &str) -> PathBuf {
        let host_dir = dir.join(registry_host);
        std::fs::create_dir_all(&host_dir).expect("create hosts dir");
        let path = host_dir.join("hosts.toml");
        let body = format!(
            "server = \"{server}\"\n\n[host.\"{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
            self.url()
        );
        std::fs::write(&path, body).expect("write hosts.toml");
        path
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.acceptor.abort();
        for t in self.shared.lock().unwrap().tasks.drain(..) {
            t.abort();
        }
    }
}

/// A listener with `SO_REUSEADDR`, so the port can be bound again after [`Fault::Refuse`].
fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

async fn accept_loop(
    first: TcpListener,
    addr: SocketAddr,
    upstream: SocketAddr,
    mut default: watch::Receiver<Fault>,
    shared: Arc<Mutex<Shared>>,
) {
    let mut listener = Some(first);
    loop {
        let refuse = *default.borrow_and_update() == Fault::Refuse;
        if refuse {
            listener = None; // Closes the port: connections are refused.
        } else if listener.is_none() {
            match bind(addr) {
                Ok(l) => listener = Some(l),
                Err(e) => panic!("fault proxy cannot listen on {addr} again: {e}"),
            }
        }
        let Some(l) = listener.as_ref() else {
            if default.changed().await.is_err() {
                return;
            }
            continue;
        };
        tokio::select! {
            accepted = l.accept() => {
                let Ok((client, _)) = accepted else { continue };
                let fallback = default.borrow().clone();
                let task = tokio::spawn(serve(client, upstream, fallback, shared.clone()));
                let mut s = shared.lock().unwrap();
                s.tasks.retain(|t| !t.is_finished());
                s.tasks.push(task.abort_handle());
            }
            changed = default.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}

/// Reads until the end of an HTTP head; returns the head and any bytes after it.
async fn read_head<R: AsyncRead + Unpin>(r: &mut R) -> Option<(Vec<u8>, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            return Some((buf, rest));
        }
        match r.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Serves one connection (one request).
async fn serve(mut client: TcpStream, upstream: SocketAddr, fallback: Fault, shared: Arc<Mutex<Shared>>) {
    let Some((head, early_body)) = read_head(&mut client).await else {
        return;
    };
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut first = text.lines().next().unwrap_or_default().split(' ');
    let method = first.next().unwrap_or_default().to_string();
    let path = first.next().unwrap_or_default().to_string();
    let headers: Vec<(String, String)> = text
        .split("\r\n")
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let (fault, missing) = {
        let s = shared.lock().unwrap();
        let fault = s
            .rules
            .iter()
            .find(|(p, _)| path.contains(p.as_str()))
            .map_or(fallback, |(_, f)| f.clone());
        let missing = s.required.as_ref().is_some_and(|req| !headers.contains(req));
        (fault, missing)
    };
    // A request without the required header is refused as such, whatever the fault.
    let fault = if missing { Fault::Status(400) } else { fault };
    let index = {
        let mut s = shared.lock().unwrap();
        s.log.push(ProxiedRequest {
            method: method.clone(),
            path,
            fault: fault.clone(),
            started: Instant::now(),
            status: None,
            finished: None,
            headers,
        });
        s.log.len() - 1
    };
    let note = |status: Option<u16>, finished: bool| {
        let mut s = shared.lock().unwrap();
        if let Some(r) = s.log.get_mut(index) {
            if status.is_some() {
                r.status = status;
            }
            if finished {
                r.finished = Some(Instant::now());
            }
        }
    };
    match fault {
        Fault::Refuse => return,
        Fault::Blackhole => {
            // Hold the connection open, reading whatever comes, until the client or the proxy goes.
            let mut sink = [0u8; 1024];
            while matches!(client.read(&mut sink).await, Ok(n) if n > 0) {}
            return;
        }
        Fault::Status(code) => {
            note(Some(code), true);
            let resp = format!("HTTP/1.1 {code} Fault\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            let _ = client.write_all(resp.as_bytes()).await;
            let _ = client.shutdown().await;
            return;
        }
        Fault::Pass | Fault::Stall(_) | Fault::Drip { .. } => {}
    }
    let Ok(mut up) = TcpStream::connect(upstream).await else {
        note(Some(502), true);
        let _ = client
            .write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .await;
        return;
    };
    // The request, with `Connection: close`; a request body follows as it comes.
    let mut request = String::new();
    for line in text.split("\r\n").filter(|l| !l.is_empty()) {
        if !line.to_ascii_lowercase().starts_with("connection:") {
            request.push_str(line);
            request.push_str("\r\n");
        }
    }
    request.push_str("Connection: close\r\n\r\n");
    if up.write_all(request.as_bytes()).await.is_err() || up.write_all(&early_body).await.is_err() {
        return;
    }
    let (mut client_read, mut client_write) = client.into_split();
    let (mut up_read, mut up_write) = up.into_split();
    let body_copy = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut client_read, &mut up_write).await;
    });
    shared.lock().unwrap().tasks.push(body_copy.abort_handle());
    let Some((resp_head, mut pending)) = read_head(&mut up_read).await else {
        body_copy.abort();
        return;
    };
    let resp_text = String::from_utf8_lossy(&resp_head).to_lowercase();
    let status: Option<u16> = resp_text.split(' ').nth(1).and_then(|s| s.parse().ok());
    note(status, false);
    let length: Option<usize> = resp_text
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok());
    let body_len = if method == "HEAD" { Some(0) } else { length };
    if client_write.write_all(&resp_head).await.is_err() {
        body_copy.abort();
        return;
    }
    let mut sent = 0usize;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if pending.is_empty() {
            if body_len.is_some_and(|n| sent >= n) {
                break;
            }
            match up_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => pending.extend_from_slice(&buf[..n]),
            }
        }
        let mut piece: Vec<u8> = std::mem::take(&mut pending);
        let (limit, pause) = match &fault {
            Fault::Stall(after) => (after.saturating_sub(sent), None),
            Fault::Drip { chunk, pause } => ((*chunk).max(1), Some(*pause)),
            _ => (usize::MAX, None),
        };
        if piece.len() > limit {
            pending = piece.split_off(limit);
        }
        if piece.is_empty() {
            // Stalled: keep the connection, send nothing more.
            std::future::pending::<()>().await;
        }
        let last = body_len.is_some_and(|n| sent + piece.len() >= n);
        if last {
            note(None, true);
        }
        if client_write.write_all(&piece).await.is_err() {
            break;
        }
        sent += piece.len();
        if let Some(p) = pause {
            let _ = client_write.flush().await;
            tokio::time::sleep(p).await;
        }
    }
    if body_len.is_none() {
        note(None, true);
    }
    let _ = client_write.shutdown().await;
    body_copy.abort();
}
