//! The real `imaged` binary as a child process, serving on a unix socket in a temp dir.
//!
//! Tests drive it through a real tonic client over that socket, exactly as kubelet or crictl would.
//! Credential files of the machine are never read: unless a test names auth files, the daemon is given a
//! non-existent one.
//!
//! Around it: [`setup`] (a registry and a daemon pulling from it, the usual arrangement), [`hostile`] (a
//! daemon to feed hostile layers to, and the checks after each refusal), [`gc_env`] (a daemon whose store is
//! on a [`tmpfs`] of fixed size, and the kernel's figures GC tests check).

pub mod gc_env;
pub mod hostile;
pub mod setup;
pub mod tmpfs;

use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use imaged::proto::runtime::v1 as cri;
use imaged::proto::runtime::v1::image_service_client::ImageServiceClient;
use tempfile::TempDir;
use tonic::transport::Channel;

/// How long [`Daemon::start`] waits for the socket to answer.
const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// How a test daemon is started.
#[derive(Clone, Debug, Default)]
pub struct DaemonOptions {
    /// `--hosts-dir`.
    pub hosts_dir: Option<PathBuf>,
    /// `--auth-file` (each).
    pub auth_files: Vec<PathBuf>,
    /// `--platform`.
    pub platform: Option<String>,
    /// Contents of the `--config` file; by default one that turns pull back-off off.
    pub config: Option<String>,
    /// Extra arguments after `serve`.
    pub extra_args: Vec<String>,
    /// The socket path, instead of one in the daemon's temp dir (a runtime configured before imaged starts
    /// needs to know it).
    pub socket: Option<PathBuf>,
    /// The store root, instead of one in the daemon's temp dir (a runtime configured before imaged starts
    /// may need to know it).
    pub root: Option<PathBuf>,
    /// Extra environment variables, set after the defaults (so `RUST_LOG` here wins over `imaged=debug`; a
    /// `PATH` with credential helpers in front).
    pub env: Vec<(String, String)>,
}

/// A running `imaged serve`, stopped (SIGTERM) on drop.
pub struct Daemon {
    child: Option<Child>,
    opts: DaemonOptions,
    /// The store root.
    pub root: PathBuf,
    /// The CRI socket.
    pub socket: PathBuf,
    log_path: PathBuf,
    // Dropped last.
    dir: TempDir,
}

impl Daemon {
    /// Starts a daemon with a fresh store.
    pub async fn start(opts: DaemonOptions) -> Daemon {
        let dir = tempfile::Builder::new()
            .prefix("imaged-test-")
            .tempdir()
            .expect("temp dir");
        let root = opts.root.clone().unwrap_or_else(|| dir.path().join("root"));
        let socket = opts
            .socket
            .clone()
            .unwrap_or_else(|| dir.path().join("run").join("imaged.sock"));
        let log_path = dir.path().join("imaged.log");
        let mut d = Daemon {
            child: None,
            opts,
            root,
            socket,
            log_path,
            dir,
        };
        d.spawn();
        d.wait_ready().await;
        d
    }

    /// The options the next (re)start uses, e.g. to point `--containerd-address` elsewhere.
    pub fn options_mut(&mut self) -> &mut DaemonOptions {
        &mut self.opts
    }

    /// The temp dir holding root, socket and log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The command line this daemon runs with.
    pub fn command(&self) -> Command {
        self.command_for(&self.root, &self.socket)
    }

    /// This daemon's command line with another root and socket (for tests that start a second daemon).
    pub fn command_for(&self, root: &Path, socket: &Path) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_imaged"));
        cmd.arg("serve").arg("--root").arg(root).arg("--socket").arg(socket);
        if let Some(h) = &self.opts.hosts_dir {
            cmd.arg("--hosts-dir").arg(h);
        }
        if self.opts.auth_files.is_empty() {
            cmd.arg("--auth-file").arg(self.dir.path().join("no-credentials.json"));
        }
        for a in &self.opts.auth_files {
            cmd.arg("--auth-file").arg(a);
        }
        if let Some(p) = &self.opts.platform {
            cmd.arg("--platform").arg(p);
        }
        // Without a config of the test's own, back-off is off: most tests retry failing pulls on purpose
        // and are not about back-off (tests/e2e_ensure_backoff.rs is, and sets its own).
        let config = self
            .opts
            .config
            .clone()
            .unwrap_or_else(|| "[pull]\nbackoff_initial = \"0s\"\n".into());
        let path = self.dir.path().join("config.toml");
        std::fs::write(&path, config).expect("write config");
        cmd.arg("--config").arg(path);
        cmd.args(&self.opts.extra_args);
        cmd.env("RUST_LOG", "imaged=debug,info")
            .env("DOCKER_CONFIG", self.dir.path());
        cmd.envs(self.opts.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    fn spawn(&mut self) {
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("open daemon log");
        let child = self
            .command()
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("spawn imaged");
        self.child = Some(child);
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().expect("wait")) {
                panic!("imaged exited early with {status}; log:\n{}", self.log());
            }
            if let Ok(mut c) = imaged::cli::connect(&self.socket).await
                && c.image_fs_info(cri::ImageFsInfoRequest {}).await.is_ok()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "imaged did not answer on {} within {READY_TIMEOUT:?}; log:\n{}",
                self.socket.display(),
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A new CRI client on the socket.
    pub async fn client(&self) -> ImageServiceClient<Channel> {
        imaged::cli::connect(&self.socket).await.expect("connect to imaged")
    }

    /// The process id of the running daemon, if it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Sends `signal` and waits for the process to exit; returns its exit status.
    fn signal_and_wait(&mut self, signal: rustix::process::Signal) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let pid = rustix::process::Pid::from_raw(child.id() as i32).expect("pid");
        let _ = rustix::process::kill_process(pid, signal);
        Some(child.wait().expect("wait for imaged"))
    }

    /// Stops the daemon with SIGTERM (graceful) and returns its exit status.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        self.signal_and_wait(rustix::process::Signal::TERM)
    }

    /// Kills the daemon with SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        self.signal_and_wait(rustix::process::Signal::KILL);
    }

    /// Starts the daemon again on the same root and socket.
    pub async fn restart(&mut self) {
        self.stop();
        self.spawn();
        self.wait_ready().await;
    }

    /// Starts the daemon again after a [`Daemon::kill`].
    pub async fn start_again(&mut self) {
        assert!(self.child.is_none(), "daemon still running");
        self.spawn();
        self.wait_ready().await;
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `ImageSpec { image }`.
pub fn spec(image: &str) -> Option<cri::ImageSpec> {
    Some(cri::ImageSpec {
        image: image.to_string(),
        user_specified_image: image.to_string(),
        ..Default::default()
    })
}

/// Pulls `image` with optional credentials; returns the image ref or the status.
pub async fn pull(
    c: &mut ImageServiceClient<Channel>,
    image: &str,
    auth: Option<cri::AuthConfig>,
) -> Result<String, tonic::Status> {
    c.pull_image(cri::PullImageRequest {
        image: spec(image),
        auth,
        sandbox_config: None,
    })
    .await
    .map(|r| r.into_inner().image_ref)
}

/// Pulls `image` for the runtime handler `handler` (CRI's `ImageSpec.runtime_handler`); returns the image ref
/// or the status.
pub async fn pull_with_handler(
    c: &mut ImageServiceClient<Channel>,
    image: &str,
    handler: &str,
) -> Result<String, tonic::Status> {
    let mut image = spec(image);
    if let Some(s) = image.as_mut() {
        s.runtime_handler = handler.into();
    }
    c.pull_image(cri::PullImageRequest {
        image,
        auth: None,
        sandbox_config: None,
    })
    .await
    .map(|r| r.into_inner().image_ref)
}

/// ImageStatus of `image` (not verbose): the image, or `None` when absent.
pub async fn status(c: &mut ImageServiceClient<Channel>, image: &str) -> Option<cri::Image> {
    c.image_status(cri::ImageStatusRequest {
        image: spec(image),
        verbose: false,
    })
    .await
    .expect("ImageStatus")
    .into_inner()
    .image
}

/// All images.
pub async fn list(c: &mut ImageServiceClient<Channel>) -> Vec<cri::Image> {
    c.list_images(cri::ListImagesRequest { filter: None })
        .await
        .expect("ListImages")
        .into_inner()
        .images
}

/// RemoveImage.
pub async fn remove(c: &mut ImageServiceClient<Channel>, image: &str) -> Result<(), tonic::Status> {
    c.remove_image(cri::RemoveImageRequest { image: spec(image) })
        .await
        .map(|_| ())
}

/// The blobs in the daemon's content store.
pub fn blobs(root: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(root.join("content/blobs/sha256"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| format!("sha256:{}", e.file_name().to_string_lossy()))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// The layer snapshot directories in the daemon's store, as `sha256:<chain id hex>`.
pub fn snapshot_dirs(root: &Path) -> BTreeSet<String> {
    std::fs::read_dir(root.join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.len() == 64)
        .map(|n| format!("sha256:{n}"))
        .collect()
}

/// Runs `imaged fsck --root <root>` on a stopped store: whether it passed, and its stdout and stderr.
pub fn fsck(root: &Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_imaged"))
        .args(["fsck", "--root"])
        .arg(root)
        .output()
        .expect("run imaged fsck");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Files left in the ingest area.
pub fn ingest_files(root: &Path) -> usize {
    std::fs::read_dir(root.join("content/ingest"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// imaged's own GarbageCollect on `socket`, or only its plan with `dry_run`: the ids it removed (would remove).
pub async fn garbage_collect(socket: &Path, dry_run: bool) -> Vec<String> {
    let channel = imaged::uds::channel(socket).await.expect("connect to imaged");
    let mut gc = imaged::proto::imaged::v1::images_client::ImagesClient::new(channel);
    let out = gc
        .garbage_collect(imaged::proto::imaged::v1::GarbageCollectRequest { dry_run })
        .await
        .expect("GarbageCollect")
        .into_inner();
    out.removed.into_iter().map(|r| r.id).collect()
}

/// Waits until a GarbageCollect planned now (a dry run, which removes nothing) would remove some image:
/// for a daemon with a short `max_age`, until an unused image has aged past it.
pub async fn wait_for_gc_victims(socket: &Path, within: Duration) {
    crate::common::wait::until("GC to find an image past its max_age", within, || async {
        !garbage_collect(socket, true).await.is_empty()
    })
    .await;
}
