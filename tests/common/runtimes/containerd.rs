//! A real containerd (one of the [`Line`]s, with runc) for tests that run pods: each [`Containerd`] is a child
//! process with its own root, state, gRPC socket, runc root, cgroup parent, CNI dirs and `config.toml` in
//! a temp dir. It never touches `/var/lib/containerd`; the one shared place is `/run/containerd/s/`, where
//! containerd 1.6's runc shim always puts its socket, named by a hash of this instance's socket path and
//! the sandbox id, so instances in parallel test processes never collide there.
//!
//! - This file: options, start / stop / kill / restart on the same root, the log, clients.
//! - [`config`]: `config.toml` in the line's format, with imaged's part as `imaged containerd-config`
//!   prints it.
//! - [`line`]: the containerd release lines (1.6, 1.7, 2.x) and their binaries.
//! - [`options`]: how an instance is configured ([`ContainerdOptions`]).
//! - [`pods`]: CRI helpers: host-network pod sandboxes, containers from an image ref, exit, exec, listing.
//! - [`logs`]: a container's output, from its CRI log file.
//! - [`inside`]: a container's root filesystem read from inside it, compared with `umoci unpack`'s.
//! - [`teardown`]: what `Drop` does (containers, shims, mounts, cgroups, sockets, dirs) and [`Traces`],
//!   which checks afterwards that nothing was left behind.
//!
//! The CRI plugin is set up for this machine: `restrict_oom_score_adj` (no CAP_SYS_RESOURCE), no CNI (pods
//! use the host network), no AppArmor or SELinux, the streaming server on a free port.

pub mod config;
pub mod inside;
pub mod line;
pub mod logs;
pub mod network;
pub mod options;
pub mod pods;
pub mod teardown;

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use imaged::proto::runtime::v1 as cri;
use imaged::proto::runtime::v1::image_service_client::ImageServiceClient;
use imaged::proto::runtime::v1::runtime_service_client::RuntimeServiceClient;
use rustix::process::{Pid, Signal, kill_process};
use tempfile::TempDir;
use tonic::transport::{Channel, Endpoint, Uri};

pub use config::config_toml;
pub use line::Line;
pub use options::{ContainerdOptions, ImagedSide};
pub use teardown::Traces;

/// The containerd namespace of the CRI plugin.
pub const NAMESPACE: &str = "k8s.io";

/// `msg` as a request in the CRI plugin's namespace ([`NAMESPACE`]), for containerd's own services.
pub fn in_namespace<T>(msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut().insert(
        "containerd-namespace",
        tonic::metadata::MetadataValue::from_static(NAMESPACE),
    );
    r
}

/// How long containerd may take to serve CRI after it is spawned.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// How long [`Containerd::stop`] waits after SIGTERM before it sends SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// A containerd serving CRI and its native API on [`Containerd::socket`]; everything it made is removed
/// on drop (see [`teardown`]).
pub struct Containerd {
    opts: ContainerdOptions,
    child: Option<Child>,
    /// Sandbox ids created through [`Containerd::run_pod`], for the shim sockets they imply.
    sandboxes: Arc<Mutex<Vec<String>>>,
    // Dropped last, after `Drop::drop` has unmounted everything under it.
    dir: TempDir,
}

impl Containerd {
    /// Writes the config and starts containerd; returns once its CRI plugin answers `Version`. Panics,
    /// with the log, if it exits or does not answer within 60 s.
    pub async fn start(opts: ContainerdOptions) -> Containerd {
        let line = &opts.line;
        for bin in [
            line.containerd(),
            line.bin_dir().join("containerd-shim-runc-v2"),
            line.runc(),
        ] {
            assert!(
                bin.exists(),
                "{} is missing: run hack/install-test-deps (it installs every containerd line the tests run)",
                bin.display()
            );
        }
        assert!(rustix::process::geteuid().is_root(), "containerd tests run as root");
        let dir = tempfile::Builder::new()
            .prefix("imaged-ctd-")
            .tempdir()
            .expect("containerd temp dir");
        let mut ctd = Containerd {
            opts,
            child: None,
            sandboxes: Arc::default(),
            dir,
        };
        for d in ["root", "state", "runc", "pods", "cni/bin", "cni/conf", "opt"] {
            fs::create_dir_all(ctd.dir.path().join(d)).expect("create containerd dirs");
        }
        fs::write(ctd.config_path(), ctd.config_toml()).expect("write containerd config.toml");
        if ctd.opts.pod_network {
            let conf = ctd.dir.path().join("cni/conf").join(network::CONFLIST);
            fs::write(conf, network::conflist(ctd.dir.path())).expect("write the CNI network");
        }
        ctd.start_again().await;
        ctd
    }

    /// Starts containerd again on the same root, state and config (after [`Containerd::stop`] or
    /// [`Containerd::kill`]); returns once CRI answers.
    pub async fn start_again(&mut self) {
        assert!(self.child.is_none(), "containerd is already running");
        let _ = fs::remove_file(self.socket());
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open containerd log");
        // The line's shim (containerd looks it up on PATH) and runc (BinaryName in the config).
        let path = format!(
            "{}:{}",
            self.opts.line.bin_dir().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let child = Command::new(self.opts.line.containerd())
            .env("PATH", path)
            .arg("--config")
            .arg(self.config_path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}; run hack/install-test-deps", self.opts.line));
        self.child = Some(child);
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                self.child = None;
                panic!("containerd exited with {status} at start; log:\n{}", self.log());
            }
            if let Ok(mut c) = self.runtime().await
                && c.version(cri::VersionRequest::default()).await.is_ok()
            {
                return;
            }
            assert!(
                started.elapsed() < READY_TIMEOUT,
                "containerd did not serve CRI within {READY_TIMEOUT:?}; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops containerd (SIGTERM, then SIGKILL after 20 s) and waits for it. Its shims and containers keep
    /// running, as they do when a node's containerd restarts. Idempotent.
    pub fn stop(&mut self) {
        self.signal_and_wait(Signal::TERM);
    }

    /// Kills containerd with SIGKILL (a crash) and waits for it; shims and containers keep running.
    pub fn kill(&mut self) {
        self.signal_and_wait(Signal::KILL);
    }

    /// [`Containerd::stop`], then [`Containerd::start_again`].
    pub async fn restart(&mut self) {
        self.stop();
        self.start_again().await;
    }

    fn signal_and_wait(&mut self, signal: Signal) {
        let Some(mut child) = self.child.take() else { return };
        if let Some(pid) = Pid::from_raw(child.id() as i32) {
            let _ = kill_process(pid, signal);
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// The process id while containerd runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The gRPC socket: CRI (`runtime.v1`) and containerd's own services (content, images, leases,
    /// snapshots, …; namespace [`NAMESPACE`]) are both served there.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("containerd.sock")
    }

    /// The temp dir holding everything of this instance.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// containerd's `root` (metadata, content, its own snapshotters' data).
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// containerd's `state` (shim bundles, CRI sandbox state).
    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// The options it was started with.
    pub fn options(&self) -> &ContainerdOptions {
        &self.opts
    }

    /// Everything containerd wrote to stdout and stderr so far (all starts).
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The log lines at level error or fatal.
    pub fn log_errors(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.contains("level=error") || l.contains("level=fatal"))
            .map(str::to_owned)
            .collect()
    }

    /// A gRPC channel to [`Containerd::socket`], for any service served there.
    pub async fn channel(&self) -> Result<Channel, tonic::transport::Error> {
        unix_channel(&self.socket()).await
    }

    /// A CRI runtime service client.
    pub async fn runtime(&self) -> Result<RuntimeServiceClient<Channel>, tonic::transport::Error> {
        Ok(RuntimeServiceClient::new(self.channel().await?))
    }

    /// A CRI image service client (containerd's own image service, not imaged's).
    pub async fn images(&self) -> Result<ImageServiceClient<Channel>, tonic::transport::Error> {
        Ok(ImageServiceClient::new(self.channel().await?))
    }

    /// Runs containerd's garbage collection now and waits for it: creating a lease and deleting it with
    /// `sync` makes containerd collect before it answers.
    pub async fn collect_garbage(&self) -> Result<(), tonic::Status> {
        use containerd_client::services::v1 as api;
        let channel = self.channel().await.map_err(|e| {
            tonic::Status::unavailable(format!("connect to containerd at {}: {e}", self.socket().display()))
        })?;
        let mut leases = api::leases_client::LeasesClient::new(channel);
        let id = "imaged-test-gc".to_string();
        let labels = Default::default();
        leases
            .create(in_namespace(api::CreateRequest { id: id.clone(), labels }))
            .await?;
        leases
            .delete(in_namespace(api::DeleteRequest { id, sync: true }))
            .await?;
        Ok(())
    }

    /// What to check after this instance is dropped; see [`Traces::remaining`].
    pub fn traces(&self) -> Traces {
        Traces::new(self.dir.path(), &self.socket(), self.sandboxes.clone())
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.toml")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("containerd.log")
    }

    /// The cgroup parent of this instance's pods (created by runc under every cgroup hierarchy).
    pub fn cgroup_parent(&self) -> String {
        cgroup_parent_of(self.dir.path())
    }

    /// `config.toml` in the line's format: everything under the temp dir, see the module doc.
    fn config_toml(&self) -> String {
        config_toml(self.dir.path(), &self.socket(), &self.opts)
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let child = self.child.take();
        let sandboxes = self.sandboxes.lock().map(|s| s.clone()).unwrap_or_default();
        teardown::teardown(
            self.dir.path(),
            &self.socket(),
            child,
            &sandboxes,
            &self.opts.line.runc(),
        );
    }
}

/// `/imaged-test-<temp dir name>`: unique per instance, so pods of parallel instances never share one.
fn cgroup_parent_of(dir: &Path) -> String {
    let name = dir.file_name().expect("temp dir name").to_string_lossy();
    format!("/imaged-test-{name}")
}

/// A gRPC channel to the unix socket at `socket`.
pub async fn unix_channel(socket: &Path) -> Result<Channel, tonic::transport::Error> {
    imaged::uds::channel(socket).await
}
