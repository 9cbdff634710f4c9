//! A real podman (Debian's 4.3, from `hack/install-test-deps`) with a store of its own in a temp dir,
//! reading imaged's containers-storage store as an additional image store, configured with the
//! `storage.conf` lines the README gives (overlay driver, `additionalimagestores`).
//!
//! Every call names this instance's config, root, run root and temp dir, so tests running at once never
//! share podman state. Containers get `--network none` and explicit `--ulimit`s no higher than this
//! process's hard limits: without CAP_SYS_RESOURCE (as on these machines) runc cannot raise them.
//! Dropping it removes its containers and unmounts whatever it left mounted under its temp dir.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use tempfile::TempDir;

use crate::common::registry::require_tool;

/// A podman with its own storage.
pub struct Podman {
    dir: TempDir,
}

impl Podman {
    /// A podman whose storage lists `additional_store` (imaged's containers-storage root).
    pub fn new(additional_store: &Path) -> Podman {
        require_tool("podman");
        let dir = tempfile::Builder::new()
            .prefix("imaged-podman-")
            .tempdir()
            .expect("podman temp dir");
        let conf = format!(
            "[storage]\ndriver = \"overlay\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n\n\
             [storage.options]\nadditionalimagestores = [\"{}\"]\n",
            dir.path().join("root").display(),
            dir.path().join("run").display(),
            additional_store.display()
        );
        std::fs::write(dir.path().join("storage.conf"), conf).expect("write storage.conf");
        // Events and the engine's temporary files stay in the temp dir too.
        let engine = format!(
            "[engine]\nevents_logger = \"file\"\nevents_logfile_path = \"{}\"\ntmp_dir = \"{}\"\n",
            dir.path().join("events.log").display(),
            dir.path().join("tmp").display()
        );
        std::fs::write(dir.path().join("containers.conf"), engine).expect("write containers.conf");
        Podman { dir }
    }

    /// Its own (primary) store: what imaged's `primary_roots` lists.
    pub fn graph_root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// `podman ARGS` for this instance.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("podman");
        cmd.env("CONTAINERS_STORAGE_CONF", self.dir.path().join("storage.conf"))
            .env("CONTAINERS_CONF", self.dir.path().join("containers.conf"))
            .arg("--tmpdir")
            .arg(self.dir.path().join("tmp"))
            .arg("--cgroup-manager")
            .arg("cgroupfs")
            .args(args);
        cmd
    }

    /// Runs `podman ARGS` on a blocking thread.
    pub async fn output(&self, args: &[&str]) -> Output {
        let mut cmd = self.command(args);
        tokio::task::spawn_blocking(move || cmd.output().expect("run podman"))
            .await
            .expect("join podman")
    }

    /// Runs `podman ARGS`; returns its stdout, panics with its stderr unless it succeeds.
    pub async fn ok(&self, args: &[&str]) -> String {
        let out = self.output(args).await;
        assert!(
            out.status.success(),
            "podman {} failed ({}): {}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `podman images --format json`.
    pub async fn images(&self) -> Vec<Value> {
        serde_json::from_str(&self.ok(&["images", "--format", "json"]).await).expect("podman images json")
    }

    /// `podman image inspect NAME`'s one object.
    pub async fn inspect(&self, name: &str) -> Value {
        let v: Value = serde_json::from_str(&self.ok(&["image", "inspect", name]).await).expect("inspect json");
        v[0].clone()
    }

    /// `podman run --rm` (with [`Podman::container_args`]) of `image` and `cmd`; returns stdout.
    pub async fn run(&self, image: &str, cmd: &[&str]) -> String {
        let mut args = vec!["run", "--rm"];
        let limits = container_args();
        args.extend(limits.iter().map(String::as_str));
        args.push(image);
        args.extend(cmd);
        self.ok(&args).await
    }

    /// `podman create --name NAME` (with the container arguments) of `image` and `cmd`.
    pub async fn create(&self, name: &str, image: &str, cmd: &[&str]) {
        let mut args = vec!["create", "--name", name];
        let limits = container_args();
        args.extend(limits.iter().map(String::as_str));
        args.push(image);
        args.extend(cmd);
        self.ok(&args).await;
    }
}

/// `--network none` and `--ulimit`s for open files and processes at 1024, or the hard limit if lower.
pub fn container_args() -> Vec<String> {
    let hard = |r| rustix::process::getrlimit(r).maximum.unwrap_or(u64::MAX).min(1024);
    let (files, procs) = (
        hard(rustix::process::Resource::Nofile),
        hard(rustix::process::Resource::Nproc),
    );
    vec![
        "--network".into(),
        "none".into(),
        "--ulimit".into(),
        format!("nofile={files}:{files}"),
        "--ulimit".into(),
        format!("nproc={procs}:{procs}"),
    ]
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.command(&["rm", "--all", "--force", "--time", "0"]).output();
        let mut mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(|p| p.replace("\\040", " ")))
            .filter(|p| Path::new(p).starts_with(self.dir.path()))
            .collect();
        mounts.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for m in mounts {
            let _ = Command::new("umount").arg("-l").arg(&m).output();
        }
    }
}
