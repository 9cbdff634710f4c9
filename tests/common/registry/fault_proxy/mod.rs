//! A fault-injecting TCP proxy in front of a real registry (usually [`crate::common::registry::TestRegistry`]): the
//! faults a node meets on its way to a registry, on demand and switchable while a test runs.
//!
//! - [`Fault::Pass`]: forward requests and responses unchanged.
//! - [`Fault::Refuse`]: nothing listens on the port: connections are refused.
//! - [`Fault::Status`]: answer every request with this HTTP status and an empty body (e.g. 500).
//! - [`Fault::Blackhole`]: accept the connection, read the request, never answer (until the proxy is dropped).
//! - [`Fault::Stall`]: forward the response head and the first N body bytes, then send nothing more.
//! - [`Fault::Drip`]: forward the response head at once, then the body in small chunks with pauses.
//! - [`Fault::Cut`]: forward the response head and the first N body bytes, then close the connection.
//! - [`Fault::Respond`]: answer with this status, these headers and this body, without forwarding (a 429 with
//!   `Retry-After`, an OCI error body, a `Warning` header).
//!
//! Over any fault, as a front that stands for a CDN or an object store would (issue 22):
//! [`FaultProxy::cap_per_connection`] paces each response body to a rate of its own (N connections get N
//! times the rate), [`FaultProxy::ignore_range`] drops `Range` from requests (the upstream answers 200 with
//! the whole body), and [`FaultProxy::cut_all_at`] closes every blob response in flight once the blob bodies
//! forwarded reach a total. Each request's body bytes are logged ([`ProxiedRequest::body_bytes`]), and
//! [`FaultProxy::blob_body_bytes`] and [`FaultProxy::max_concurrent_blob_gets`] sum up blob GETs.
//!
//! A proxy can also stand for a P2P mirror that routes by a header (Dragonfly's `X-Dragonfly-Registry`):
//! with [`FaultProxy::require_header`], a request without that header is answered 400 and not forwarded.
//!
//! The fault for a request is the first rule ([`FaultProxy::set_for`]) whose pattern the request target
//! contains, else the default ([`FaultProxy::set`]); a rule set with [`FaultProxy::set_for_times`] applies to
//! the first N matching requests only, before any other rule. Every accepted request is logged with the fault applied
//! and when its response started and ended ([`FaultProxy::requests`]), so tests can see what a client asked
//! for and whether requests overlapped.
//!
//! It speaks just enough HTTP/1.1: each request is forwarded with `Connection: close` (so one connection
//! carries one request and the log sees every request), request bodies are copied through, and the
//! response's `Content-Length` says where its body ends.
//!
//! By fault kind: `listen.rs` (the port: [`Fault::Refuse`]), `serve.rs` (a request answered by the proxy:
//! [`Fault::Status`], [`Fault::Respond`], [`Fault::Blackhole`], the required header) and `forward.rs` (a response from the
//! upstream, whole or faulted: [`Fault::Pass`], [`Fault::Stall`], [`Fault::Drip`], [`Fault::Cut`], the rate
//! cap, dropped ranges and cuts), with `pace.rs` (the rate cap's token bucket).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::AbortHandle;

mod forward;
mod listen;
pub mod pace;
mod serve;

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
    /// Forward the response head and this many body bytes, then close the connection (the client sees a
    /// body shorter than its `Content-Length`).
    Cut(usize),
    /// Answer with `status`, `headers` and `body` (with its `Content-Length`), without forwarding.
    Respond {
        /// The HTTP status.
        status: u16,
        /// The response headers, `(name, value)`.
        headers: Vec<(String, String)>,
        /// The body (not sent to a HEAD).
        body: String,
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
    /// Response body bytes forwarded to the client so far.
    pub body_bytes: u64,
    /// Whether the proxy closed the connection mid-body ([`Fault::Cut`], [`FaultProxy::cut_all_at`]).
    pub cut: bool,
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
    /// Rules for the first N matching requests: `(pattern, fault, requests left)`, tried before `rules`.
    counted: Vec<(String, Fault, usize)>,
    /// A header every request must carry, `(lower-case name, value)`.
    required: Option<(String, String)>,
    log: Vec<ProxiedRequest>,
    tasks: Vec<AbortHandle>,
    /// The front's own settings, read by each forwarded request when its response starts.
    front: Front,
}

/// How the proxy shapes every forwarded response, whatever its fault (issue 22's front).
#[derive(Default)]
struct Front {
    /// Bytes per second each connection's response body is paced to.
    cap: Option<u64>,
    /// Drop `Range` and `If-Range` from forwarded requests.
    ignore_range: bool,
    /// Blob GET body bytes forwarded since the proxy started.
    blob_total: u64,
    /// The armed cut: the value of `blob_total` at which every blob response in flight is closed.
    cut_at: Option<u64>,
    /// Bumped when a cut fires; each blob response watches it from its start.
    cuts: Option<watch::Sender<u64>>,
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
        let listener = listen::bind(SocketAddr::from(([127, 0, 0, 1], 0))).expect("bind the fault proxy");
        let addr = listener.local_addr().expect("proxy address");
        let (default, rx) = watch::channel(Fault::Pass);
        let shared = Arc::new(Mutex::new(Shared::default()));
        let acceptor = tokio::spawn(listen::accept_loop(listener, addr, upstream, rx, shared.clone()));
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

    /// Applies `fault` to the next `times` requests whose target contains `pattern`, before any other rule;
    /// later ones get what they would have got without it.
    pub fn set_for_times(&self, pattern: &str, fault: Fault, times: usize) {
        let mut s = self.shared.lock().unwrap();
        s.counted.retain(|(p, _, _)| p != pattern);
        s.counted.push((pattern.to_string(), fault, times));
    }

    /// Answers 400 (without forwarding) every request that does not carry the header `name: value`.
    pub fn require_header(&self, name: &str, value: &str) {
        self.shared.lock().unwrap().required = Some((name.to_ascii_lowercase(), value.to_string()));
    }

    /// Removes every rule (the default stays).
    pub fn clear_rules(&self) {
        let mut s = self.shared.lock().unwrap();
        s.rules.clear();
        s.counted.clear();
    }

    /// Every request accepted so far, oldest first.
    pub fn requests(&self) -> Vec<ProxiedRequest> {
        self.shared.lock().unwrap().log.clone()
    }

    /// Paces each connection's response body to `bytes_per_sec` (a token bucket on elapsed time, at most
    /// [`pace::BURST`] of credit), or lifts the cap with `None`. N connections get N times the rate. Applies to
    /// responses that start after the call.
    pub fn cap_per_connection(&self, bytes_per_sec: Option<u64>) {
        self.shared.lock().unwrap().front.cap = bytes_per_sec.filter(|&r| r > 0);
    }

    /// With `true`, forwards requests without their `Range` and `If-Range` headers, so the upstream answers
    /// 200 with the whole body (the log still shows the headers the client sent).
    pub fn ignore_range(&self, ignore: bool) {
        self.shared.lock().unwrap().front.ignore_range = ignore;
    }

    /// Arms a cut: once `total_body_bytes` more blob GET body bytes have been forwarded (counted from this
    /// call), every blob response in flight at that moment is closed mid-body, once; the response that
    /// reaches the total forwards exactly up to it. Later requests pass. A second call re-arms it.
    pub fn cut_all_at(&self, total_body_bytes: u64) {
        let mut s = self.shared.lock().unwrap();
        s.front.cut_at = Some(s.front.blob_total + total_body_bytes);
    }

    /// Whether an armed [`FaultProxy::cut_all_at`] has not fired yet.
    pub fn cut_armed(&self) -> bool {
        self.shared.lock().unwrap().front.cut_at.is_some()
    }

    /// Body bytes of the blob GETs in the log ([`ProxiedRequest::body_bytes`] summed).
    pub fn blob_body_bytes(&self) -> u64 {
        let s = self.shared.lock().unwrap();
        s.log.iter().filter(|r| r.is_blob_get()).map(|r| r.body_bytes).sum()
    }

    /// The most blob GETs of the log that were open at once (from `started` to `finished`, or to now for
    /// one still open).
    pub fn max_concurrent_blob_gets(&self) -> usize {
        let now = Instant::now();
        let mut edges: Vec<(Instant, i32)> = Vec::new();
        for r in self.shared.lock().unwrap().log.iter().filter(|r| r.is_blob_get()) {
            edges.push((r.started, 1));
            edges.push((r.finished.unwrap_or(now).max(r.started), -1));
        }
        // At equal instants ends sort before starts: back-to-back requests did not overlap.
        edges.sort();
        let (mut open, mut max) = (0i32, 0i32);
        for (_, d) in edges {
            open += d;
            max = max.max(open);
        }
        max as usize
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
