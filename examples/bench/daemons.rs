//! The two CRI image services under test, as child processes on loopback: imaged (the release binary)
//! and containerd 1.6 (Debian) with its CRI plugin. Each has its root, state and socket in its own temp
//! dir and never touches `/var/lib/containerd` or `/run/containerd`. Both are driven by the same client,
//! `imaged::cli::connect`, which speaks CRI to any unix socket.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use imaged::proto::runtime::v1 as cri;
use imaged::proto::runtime::v1::image_service_client::ImageServiceClient;
use rustix::process::{Pid, Signal, kill_process};
use tonic::transport::Channel;

use super::common::runtimes::containerd::{self, ContainerdOptions};

/// How long a daemon may take to serve CRI after it is spawned.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// The CRI plugin's `sandbox_image` for the pull benchmark's containerds (never pulled: no pods run).
const UNUSED_SANDBOX_IMAGE: &str = "registry.k8s.io/pause:3.6";

/// Which daemon.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// imaged, the release binary at this path.
    Imaged(PathBuf),
    /// containerd with this snapshotter (`native`, `overlayfs`).
    Containerd(String),
}

/// A daemon process serving CRI on `socket`; stopped (SIGTERM, then SIGKILL) on drop.
pub struct Daemon {
    /// Name in the report, e.g. `imaged`, `containerd (native)`.
    pub name: String,
    /// Which daemon.
    pub kind: Kind,
    /// The CRI socket.
    pub socket: PathBuf,
    dir: PathBuf,
    hosts: PathBuf,
    log: PathBuf,
    /// Extra command-line arguments (imaged: e.g. `--containerd-address`).
    args: Vec<String>,
    /// The binary (containerd: `containerd` from `PATH` unless [`Daemon::containerd_at`] chose one).
    bin: PathBuf,
    child: Option<Child>,
}

impl Daemon {
    /// An imaged using `hosts` as its hosts.toml directory, its store under `dir` (not started yet).
    pub fn imaged(bin: &Path, dir: &Path, hosts: &Path) -> Result<Daemon> {
        fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        Ok(Daemon {
            bin: bin.to_path_buf(),
            name: "imaged".into(),
            kind: Kind::Imaged(bin.to_path_buf()),
            socket: dir.join("imaged.sock"),
            log: dir.join("imaged.log"),
            dir: dir.to_path_buf(),
            hosts: hosts.to_path_buf(),
            args: Vec::new(),
            child: None,
        })
    }

    /// A containerd using `hosts` as its registry `config_path`, root and state under `dir`, with
    /// `snapshotter` for CRI pulls (not started yet). Writes its `config.toml`.
    pub fn containerd(dir: &Path, hosts: &Path, snapshotter: &str) -> Result<Daemon> {
        let opts = ContainerdOptions::new(UNUSED_SANDBOX_IMAGE);
        Daemon::containerd_with(Path::new("containerd"), dir, hosts, snapshotter, opts)
    }

    /// [`Daemon::containerd`] with the binary `bin` (its release line's config: version 3 for 2.x) and
    /// `opts` (e.g. extra config), named `containerd <version> (<snapshotter>)`.
    pub fn containerd_at(bin: &Path, dir: &Path, hosts: &Path, snapshotter: &str, extra: &str) -> Result<Daemon> {
        let line = containerd::Line::at(bin);
        let version = line.version();
        let opts = ContainerdOptions::new(UNUSED_SANDBOX_IMAGE)
            .line(line)
            .extra_config(extra);
        let mut d = Daemon::containerd_with(bin, dir, hosts, snapshotter, opts)?;
        d.name = format!("containerd {version} ({snapshotter})");
        Ok(d)
    }

    fn containerd_with(
        bin: &Path,
        dir: &Path,
        hosts: &Path,
        snapshotter: &str,
        opts: ContainerdOptions,
    ) -> Result<Daemon> {
        fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        let socket = dir.join("containerd.sock");
        // The test fixture's config (tests/common/runtimes/containerd.rs).
        let opts = opts.snapshotter(snapshotter).hosts_dir(hosts);
        fs::write(dir.join("config.toml"), containerd::config_toml(dir, &socket, &opts))
            .context("write containerd config.toml")?;
        Ok(Daemon {
            bin: bin.to_path_buf(),
            name: format!("containerd ({snapshotter})"),
            kind: Kind::Containerd(snapshotter.into()),
            socket,
            log: dir.join("containerd.log"),
            dir: dir.to_path_buf(),
            hosts: hosts.to_path_buf(),
            args: Vec::new(),
            child: None,
        })
    }

    /// Adds `args` to the daemon's command line (before it starts).
    pub fn with_args(mut self, args: &[&str]) -> Daemon {
        self.args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// The command line that starts the daemon.
    fn command(&self) -> Command {
        match &self.kind {
            Kind::Imaged(bin) => {
                let mut cmd = Command::new(bin);
                cmd.arg("serve")
                    .arg("--root")
                    .arg(self.dir.join("root"))
                    .arg("--socket")
                    .arg(&self.socket)
                    .arg("--hosts-dir")
                    .arg(&self.hosts)
                    // Never the machine's credentials: a file that does not exist.
                    .arg("--auth-file")
                    .arg(self.dir.join("no-credentials.json"))
                    .env("DOCKER_CONFIG", &self.dir)
                    .env("RUST_LOG", "info")
                    .args(&self.args);
                cmd
            }
            Kind::Containerd(_) => {
                let mut cmd = Command::new(&self.bin);
                cmd.arg("--config").arg(self.dir.join("config.toml")).args(&self.args);
                cmd
            }
        }
    }

    /// Spawns the daemon and waits until ImageFsInfo answers, polling every 5 ms; returns the time from
    /// spawn to the first answer (the start-up time to a served socket).
    pub async fn start(&mut self) -> Result<Duration> {
        if self.child.is_some() {
            bail!("{} is already running", self.name);
        }
        let _ = fs::remove_file(&self.socket);
        let log = File::options().create(true).append(true).open(&self.log)?;
        let started = Instant::now();
        let child = self
            .command()
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawn {}", self.name))?;
        self.child = Some(child);
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                self.child = None;
                bail!("{} exited with {status}; log tail:\n{}", self.name, self.log_tail(30));
            }
            if let Ok(mut c) = imaged::cli::connect(&self.socket).await
                && c.image_fs_info(cri::ImageFsInfoRequest {}).await.is_ok()
            {
                return Ok(started.elapsed());
            }
            if started.elapsed() > READY_TIMEOUT {
                bail!(
                    "{} did not serve CRI within {READY_TIMEOUT:?}; log tail:\n{}",
                    self.name,
                    self.log_tail(30)
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Pauses (SIGSTOP) or resumes (SIGCONT) the daemon, so that it cannot disturb another one's timing.
    pub fn pause(&self, paused: bool) {
        let Some(child) = self.child.as_ref() else { return };
        if let Some(pid) = Pid::from_raw(child.id() as i32) {
            let _ = kill_process(pid, if paused { Signal::STOP } else { Signal::CONT });
        }
    }

    /// Stops the daemon: SIGTERM, then SIGKILL after 20 s. Idempotent.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        if let Some(pid) = Pid::from_raw(child.id() as i32) {
            let _ = kill_process(pid, Signal::TERM);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// A CRI client on the daemon's socket.
    pub async fn client(&self) -> Result<ImageServiceClient<Channel>> {
        imaged::cli::connect(&self.socket)
            .await
            .with_context(|| format!("connect to {} at {}", self.name, self.socket.display()))
    }

    /// Where the daemon keeps unpacked layers: imaged `root/snapshots`, containerd the snapshotter's
    /// `snapshots` directory.
    pub fn snapshot_dir(&self) -> PathBuf {
        match &self.kind {
            Kind::Imaged(_) => self.dir.join("root/snapshots"),
            Kind::Containerd(s) => self
                .dir
                .join(format!("root/io.containerd.snapshotter.v1.{s}/snapshots")),
        }
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Resets the process's peak RSS (`VmHWM`) to its current RSS: `echo 5 > /proc/PID/clear_refs`.
    pub fn reset_peak_rss(&self) -> Result<()> {
        let pid = self.pid().context("daemon not running")?;
        reset_peak_rss_of(pid).with_context(|| format!("reset VmHWM of {}", self.name))
    }

    /// `VmHWM` (peak RSS since start or the last reset), in bytes.
    pub fn peak_rss(&self) -> Result<u64> {
        status_field(self.pid().context("daemon not running")?, "VmHWM")
    }

    /// CPU time (user + system) the process has used so far, in seconds.
    pub fn cpu_secs(&self) -> Result<f64> {
        cpu_secs_of(self.pid().context("daemon not running")?)
    }

    /// `VmRSS`, in bytes.
    pub fn rss(&self) -> Result<u64> {
        status_field(self.pid().context("daemon not running")?, "VmRSS")
    }

    /// The last `n` lines of the daemon's log.
    pub fn log_tail(&self, n: usize) -> String {
        let log = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Lines of the log that report errors (containerd: `level=error`; imaged: ` ERROR `/` WARN `).
    pub fn log_errors(&self) -> Vec<String> {
        let log = fs::read_to_string(&self.log).unwrap_or_default();
        log.lines()
            .filter(|l| {
                l.contains("level=error") || l.contains("level=fatal") || l.contains("ERROR") || l.contains(" WARN ")
            })
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Resets the peak RSS (`VmHWM`) of process `pid` to its current RSS: `echo 5 > /proc/PID/clear_refs`.
pub fn reset_peak_rss_of(pid: u32) -> Result<()> {
    fs::write(format!("/proc/{pid}/clear_refs"), "5").with_context(|| format!("reset VmHWM of pid {pid}"))
}

/// CPU time (user + system) process `pid` has used so far, in seconds (from `/proc/PID/stat`, in
/// USER_HZ = 100 ticks per second on Linux).
pub fn cpu_secs_of(pid: u32) -> Result<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which is in parentheses and may hold spaces): state is field 3,
    // utime 14 and stime 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).context("parse /proc/PID/stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    Ok(ticks as f64 / 100.0)
}

/// A `kB` field of `/proc/PID/status` (`VmRSS`, `VmHWM`), in bytes.
pub fn status_field(pid: u32, field: &str) -> Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .with_context(|| format!("no {field} in /proc/{pid}/status"))?;
    let kib: u64 = line.trim().trim_end_matches("kB").trim().parse()?;
    Ok(kib * 1024)
}

/// Regular files under `dir`, recursively (0 when it does not exist).
pub fn count_files(dir: &Path) -> u64 {
    let Ok(entries) = fs::read_dir(dir) else { return 0 };
    entries
        .filter_map(|e| e.ok())
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => count_files(&e.path()),
            Ok(t) if t.is_file() => 1,
            _ => 0,
        })
        .sum()
}

/// Whether overlayfs mounts here: mounts a two-lower-layer overlay in a scratch dir under `dir` (as
/// containerd's overlayfs snapshotter would) and unmounts it. `Err` carries the reason.
pub fn overlay_mounts(dir: &Path) -> Result<()> {
    let base = dir.join("overlay-probe");
    let [l1, l2, upper, work, merged] = ["l1", "l2", "upper", "work", "merged"].map(|n| base.join(n));
    for d in [&l1, &l2, &upper, &work, &merged] {
        fs::create_dir_all(d)?;
    }
    fs::write(l1.join("a"), "a")?;
    fs::write(l2.join("b"), "b")?;
    let opts = format!(
        "lowerdir={}:{},upperdir={},workdir={}",
        l2.display(),
        l1.display(),
        upper.display(),
        work.display()
    );
    let out = Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o", &opts])
        .arg(&merged)
        .output()
        .context("run mount")?;
    if !out.status.success() {
        bail!(
            "mount -t overlay failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let both = merged.join("a").exists() && merged.join("b").exists();
    let _ = Command::new("umount").arg(&merged).status();
    let _ = fs::remove_dir_all(&base);
    if !both {
        bail!("overlay mounted but its merged view lacks the lower files");
    }
    Ok(())
}
