//! A real registry for integration tests: `docker-registry` (distribution v2.8) run as a child process.
//!
//! Each [`TestRegistry`] owns a temp dir holding its config, its storage and its log, listens on a free
//! loopback port and is killed when dropped. Tests never use the system's registry service (the Debian
//! package may run one on :5000); they start their own with [`TestRegistry::start`].
//!
//! The registry writes an access log line (combined log format) to stdout for every request; stdout and
//! stderr both go to `registry.log` in the temp dir, so [`TestRegistry::requests`] can count what a client
//! asked for. The readiness probe of [`TestRegistry::start`] shows up there as `GET /v2/` requests.

use std::fs::{self, File};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// Where the Debian `docker-registry` package installs the registry binary.
pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

/// How long [`TestRegistry::start`] waits for `GET /v2/` to answer.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// How many ports [`TestRegistry::start`] tries when the one it picked was taken in the meantime.
const BIND_ATTEMPTS: usize = 3;

/// How the test registry is set up.
#[derive(Clone, Debug, Default)]
pub struct RegistryOptions {
    /// When set, the registry requires HTTP Basic auth with this `(user, password)` (`auth.htpasswd`).
    pub htpasswd: Option<(String, String)>,
    /// When set, the registry serves HTTPS (`http.tls`), and requires client certificates when
    /// [`RegistryTls::client_ca`] is set.
    pub tls: Option<RegistryTls>,
    /// When set, the registry is a pull-through cache of this upstream URL (`proxy.remoteurl`): it serves
    /// what it has and fetches (and keeps) what it lacks.
    pub proxy_remote: Option<String>,
    /// The storage directory, instead of one in the registry's temp dir: a second registry process (e.g.
    /// HTTPS-only) can serve what was pushed to a first one.
    pub storage: Option<PathBuf>,
}

/// The TLS files of an HTTPS test registry (see [`crate::common::registry::pki::TestPki`]).
#[derive(Clone, Debug)]
pub struct RegistryTls {
    /// The server certificate (for `127.0.0.1`).
    pub cert: PathBuf,
    /// Its key.
    pub key: PathBuf,
    /// Client certificates signed by this CA are required (`http.tls.clientcas`).
    pub client_ca: Option<PathBuf>,
    /// The CA that signed `cert`, trusted by the readiness probe.
    pub ca: PathBuf,
    /// The client certificate and key (one PEM file) the readiness probe presents.
    pub probe_identity: Option<PathBuf>,
}

impl RegistryOptions {
    /// Options for a registry that requires Basic auth with `user` and `password`.
    pub fn with_htpasswd(user: &str, password: &str) -> Self {
        Self {
            htpasswd: Some((user.to_owned(), password.to_owned())),
            ..Self::default()
        }
    }
}

/// One request from the registry's access log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggedRequest {
    /// The HTTP method, e.g. `GET`.
    pub method: String,
    /// The request target, e.g. `/v2/app/manifests/latest` (with its query string, if any).
    pub path: String,
    /// The response status code.
    pub status: u16,
    /// The client's User-Agent, e.g. `containerd/1.6.20~ds1` or `imaged/0.1.0` (empty if it sent none).
    pub user_agent: String,
}

/// A running `docker-registry` process on `127.0.0.1:<port>`, killed on drop.
pub struct TestRegistry {
    child: Option<Child>,
    port: u16,
    https: bool,
    credentials: Option<(String, String)>,
    log_path: PathBuf,
    // Dropped last: the child must be gone before its storage is removed.
    dir: TempDir,
}

impl TestRegistry {
    /// Starts a registry and waits until `GET /v2/` answers 200 or 401.
    ///
    /// Panics, with the registry's log in the message, if it does not come up within 10 s; panics with a
    /// hint to run `hack/install-test-deps` if `docker-registry` or `htpasswd` is not installed.
    pub async fn start(opts: RegistryOptions) -> TestRegistry {
        require_tool(REGISTRY_BIN);
        let dir = tempfile::Builder::new()
            .prefix("imaged-registry-")
            .tempdir()
            .expect("create registry temp dir");
        let htpasswd_path = dir.path().join("htpasswd");
        if let Some((user, password)) = &opts.htpasswd {
            write_htpasswd(&htpasswd_path, user, password);
        }
        let log_path = dir.path().join("registry.log");
        let mut last_log = String::new();
        for attempt in 1..=BIND_ATTEMPTS {
            let port = free_port();
            let htpasswd = opts.htpasswd.is_some().then_some(htpasswd_path.as_path());
            let config_path = dir.path().join("config.yml");
            fs::write(&config_path, config_yaml(dir.path(), port, htpasswd, &opts)).expect("write registry config");
            // `spawn` truncates the log, so each attempt's log stands alone.
            let mut child = spawn(&config_path, &log_path);
            match wait_ready(&mut child, port, opts.tls.as_ref()).await {
                Ok(()) => {
                    return TestRegistry {
                        child: Some(child),
                        port,
                        https: opts.tls.is_some(),
                        credentials: opts.htpasswd.clone(),
                        log_path,
                        dir,
                    };
                }
                Err(why) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    last_log = fs::read_to_string(&log_path).unwrap_or_default();
                    let taken = last_log.contains("address already in use");
                    if !taken || attempt == BIND_ATTEMPTS {
                        panic!("test registry on port {port} did not start: {why}\n--- registry log ---\n{last_log}");
                    }
                }
            }
        }
        unreachable!("the last attempt returns or panics: {last_log}");
    }

    /// The socket address, `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The registry host as it appears in image references and as containerd's hosts directory name:
    /// `127.0.0.1:PORT` (the same string as [`TestRegistry::addr`]).
    pub fn host(&self) -> String {
        self.addr()
    }

    /// The port the registry listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The base URL, `http://127.0.0.1:PORT` (`https://…` for a TLS registry).
    pub fn url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}", self.addr())
    }

    /// An image reference into this registry: `127.0.0.1:PORT/<repo>:<tag>`, or `…/<repo>@<digest>` when
    /// `reference` is a digest (`sha256:…`).
    pub fn image_ref(&self, repo: &str, reference: &str) -> String {
        let sep = if reference.contains(':') { '@' } else { ':' };
        format!("{}/{repo}{sep}{reference}", self.addr())
    }

    /// The `(user, password)` the registry requires, if it was started with `htpasswd`.
    pub fn credentials(&self) -> Option<(&str, &str)> {
        self.credentials.as_ref().map(|(u, p)| (u.as_str(), p.as_str()))
    }

    /// The registry's temp dir (config, `storage/`, `registry.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Everything the registry wrote to stdout and stderr so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Waits (up to 10 s) until the registry's log contains `needle`: it writes its log asynchronously,
    /// so a line about a request (a refused TLS handshake) may come after the client saw the answer.
    /// Panics with the log if it never does.
    pub async fn wait_for_log(&self, needle: &str) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !self.log().contains(needle) {
            assert!(
                std::time::Instant::now() < deadline,
                "the registry never logged {needle:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// The requests in the access log so far, oldest first (readiness probes included).
    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.log().lines().filter_map(parse_access_line).collect()
    }

    /// How many GET requests the access log holds whose target contains `needle` (e.g. `"/manifests/v1"`).
    pub fn gets(&self, needle: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.method == "GET" && r.path.contains(needle))
            .count()
    }

    /// Writes `<dir>/<host>/hosts.toml` pointing containerd-style clients at this registry over plain HTTP.
    pub fn write_hosts_toml(&self, dir: &Path) -> PathBuf {
        write_hosts_toml(dir, &self.host(), &self.url())
    }

    /// Kills the registry and waits for it to exit. Idempotent; also done on drop.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Writes a containerd `certs.d`-style `<dir>/<registry_host>/hosts.toml` sending pulls and resolves for
/// `registry_host` (e.g. `127.0.0.1:5000`; containerd uses `host:port` as the directory name) to `server`
/// (e.g. `http://127.0.0.1:5000`). Returns the path of the file.
pub fn write_hosts_toml(dir: &Path, registry_host: &str, server: &str) -> PathBuf {
    let host_dir = dir.join(registry_host);
    fs::create_dir_all(&host_dir).expect("create hosts dir");
    let path = host_dir.join("hosts.toml");
    fs::write(&path, plain_hosts_toml(server)).expect("write hosts.toml");
    path
}

/// The `hosts.toml` [`write_hosts_toml`] writes: `server` (a URL) as the only host, for pull and resolve.
pub fn plain_hosts_toml(server: &str) -> String {
    format!("server = \"{server}\"\n\n[host.\"{server}\"]\n  capabilities = [\"pull\", \"resolve\"]\n")
}

/// Panics with a hint to run `hack/install-test-deps` unless `tool` (a name on PATH or a path) exists.
pub fn require_tool(tool: &str) {
    let found = if tool.contains('/') {
        Path::new(tool).exists()
    } else {
        std::env::var_os("PATH")
            .map(|path| std::env::split_paths(&path).any(|d| d.join(tool).is_file()))
            .unwrap_or(false)
    };
    assert!(
        found,
        "{tool} is not installed: run hack/install-test-deps (as root) first"
    );
}

/// Polls `GET /v2/` until it answers 200 or 401; fails early if the registry exits.
async fn wait_ready(child: &mut Child, port: u16, tls: Option<&RegistryTls>) -> Result<(), String> {
    let mut client = reqwest::Client::builder().timeout(Duration::from_secs(2));
    let mut scheme = "http";
    if let Some(tls) = tls {
        scheme = "https";
        let ca = reqwest::Certificate::from_pem(&fs::read(&tls.ca).expect("read CA")).expect("CA pem");
        client = client.tls_certs_only([ca]);
        if let Some(id) = &tls.probe_identity {
            let id = reqwest::Identity::from_pem(&fs::read(id).expect("read identity")).expect("identity pem");
            client = client.identity(id);
        }
    }
    let client = client.build().expect("build http client");
    let url = format!("{scheme}://127.0.0.1:{port}/v2/");
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("registry exited with {status}"));
        }
        // The API version header tells our registry from whatever else may have grabbed the port; an exit
        // right after the answer (bind failure) is caught by the last check.
        if let Ok(resp) = client.get(&url).send().await
            && matches!(resp.status().as_u16(), 200 | 401)
            && resp.headers().contains_key("docker-distribution-api-version")
            && matches!(child.try_wait(), Ok(None))
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("GET {url} did not answer 200 or 401 within {READY_TIMEOUT:?}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

fn spawn(config: &Path, log_path: &Path) -> Child {
    let log = File::create(log_path).expect("create registry log");
    let log_err = log.try_clone().expect("clone registry log handle");
    Command::new(REGISTRY_BIN)
        .arg("serve")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {REGISTRY_BIN}: {e}; run hack/install-test-deps"))
}

fn write_htpasswd(path: &Path, user: &str, password: &str) {
    require_tool("htpasswd");
    let out = Command::new("htpasswd")
        .args(["-Bbn", user, password])
        .output()
        .expect("run htpasswd");
    assert!(
        out.status.success(),
        "htpasswd -Bbn failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    fs::write(path, out.stdout).expect("write htpasswd file");
}

fn config_yaml(dir: &Path, port: u16, htpasswd: Option<&Path>, opts: &RegistryOptions) -> String {
    let storage = opts.storage.clone().unwrap_or_else(|| dir.join("storage"));
    let mut yaml = format!(
        "version: 0.1
log:
  level: info
  formatter: text
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: {storage}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:{port}
  secret: imaged-test-secret
",
        storage = storage.display()
    );
    if let Some(tls) = &opts.tls {
        yaml.push_str(&format!(
            "  tls:\n    certificate: {}\n    key: {}\n",
            tls.cert.display(),
            tls.key.display()
        ));
        if let Some(ca) = &tls.client_ca {
            yaml.push_str(&format!("    clientcas:\n      - {}\n", ca.display()));
        }
    }
    if let Some(path) = htpasswd {
        yaml.push_str(&format!(
            "auth:\n  htpasswd:\n    realm: imaged-test\n    path: {}\n",
            path.display()
        ));
    }
    if let Some(remote) = &opts.proxy_remote {
        yaml.push_str(&format!("proxy:\n  remoteurl: {remote}\n"));
    }
    yaml
}

/// Parses a combined-log-format line: `127.0.0.1 - - [date] "GET /v2/ HTTP/1.1" 200 2 "" "agent"`.
fn parse_access_line(line: &str) -> Option<LoggedRequest> {
    let (_, rest) = line.split_once("] \"")?;
    let (request, rest) = rest.split_once('"')?;
    let mut parts = request.split(' ');
    let method = parts.next()?.to_owned();
    let path = parts.next()?.to_owned();
    parts.next().filter(|proto| proto.starts_with("HTTP/"))?;
    let status = rest.trim_start().split(' ').next()?.parse().ok()?;
    // The last quoted field (the referer before it is quoted too).
    let agent = rest.trim_end().strip_suffix('"')?;
    let user_agent = agent[agent.rfind('"')? + 1..].to_owned();
    Some(LoggedRequest {
        method,
        path,
        status,
        user_agent,
    })
}
