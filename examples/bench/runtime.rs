//! `--runtime` (issue 10): from PullImage to a container's first output line, **imaged+containerd**
//! (containerd's CRI plugin on imaged's proxy snapshotter, imaged publishing what it pulls into
//! containerd's `k8s.io` namespace before PullImage answers) against **containerd alone** on its overlayfs
//! snapshotter; then CreateContainer + StartContainer of a present image on both.
//!
//! Set-up: one registry serving the image (`large` with a busybox layer on top, cmd `echo ready`) and the
//! pause image that both containerds' `sandbox_image` names; containerd A with the proxy snapshotter
//! `imaged` as its CRI snapshotter and an imaged publishing into it (`--containerd-address`); containerd B
//! on overlayfs. Both containerds are the test fixture (`tests/common/runtimes/containerd.rs`): their own root,
//! state, runc root and cgroup parent, `restrict_oom_score_adj`, host-network pods (no CNI), and on drop
//! the teardown of containers, shims, mounts and cgroups. Each runs a pod sandbox before any clock starts.
//!
//! A timed run: [PullImage] → CreateContainer (image = the image_ref PullImage returned) → StartContainer
//! → the first stdout line in the container's CRI log file (polled every millisecond). Before every run
//! of either kind, the containers of both sides are removed; before a cold run the image is removed from
//! both sides too, containerd's garbage collection runs on both, the bench waits until every store is
//! back to its file count from before the first pull (so no deletion is still going on), and `sync` runs.
//!
//! To see where a run's time goes: `--keep` keeps imaged's log (each pull's seconds) and saves both
//! containerds' logs and the registry's access log (each blob's transfer time) in the work dir;
//! `--containerd-log-level debug` adds containerd's snapshotter calls, content writes and "diff applied"
//! per layer (it slows containerd's pulls).
//!
//! This file sets the sides up and cleans them; `runtime_runs.rs` times the runs.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use imaged::proto::runtime::v1 as cri;

use super::common::images::busybox::{busybox_entries, push_pause};
use super::common::images::image::{BuiltImage, Compression, ImageBuilder, Layer, MediaStyle, build_tar};
use super::common::registry::TestRegistry;
use super::common::registry::push::push_image;
pub use super::common::runtimes::containerd::Line;
use super::common::runtimes::containerd::pods::Pod;
use super::common::runtimes::containerd::{Containerd, ContainerdOptions};
use super::daemons::{self, Daemon, count_files};
use super::images::{self, BuiltLayer, Scale};
use super::pulls::sync;

#[path = "runtime_runs.rs"]
mod runs;
pub use runs::{Phases, measure};

/// The name containerd A gives imaged's proxy snapshotter (imaged's default `[containerd] snapshotter`).
const SNAPSHOTTER: &str = "imaged";
/// Where the image is pushed.
const REPO: &str = "bench/large-run";
/// The line the container prints.
const READY: &str = "ready";
/// Longest the stores may take to be back to their file counts after a removal.
const CLEAN_TIMEOUT: Duration = Duration::from_secs(300);

/// What `--runtime` does.
#[derive(Clone, Debug)]
pub struct RuntimeOpts {
    /// Cold pairs (PullImage → first line).
    pub pairs: usize,
    /// Pairs of CreateContainer + StartContainer of a present image.
    pub start_pairs: usize,
    /// Image sizes.
    pub scale: Scale,
    /// containerd's log level (`debug` shows every snapshotter call).
    pub log_level: String,
    /// Seconds to wait after the clean-up and `sync` before a cold run.
    pub settle: Duration,
    /// The containerd both sides run.
    pub line: Line,
}

/// The benchmark image and what its cold run has to fetch and unpack.
pub struct RunImage {
    /// `large`'s layers, then the busybox layer.
    pub layers: Vec<BuiltLayer>,
    /// The image (cmd `echo ready`).
    pub image: BuiltImage,
}

/// Builds `large`'s layers with a busybox layer on top, cmd `/bin/echo ready`.
pub fn build_image(scale: Scale) -> RunImage {
    let jobs = images::large_specs(scale)
        .into_iter()
        .map(|s| (s, vec![Compression::Gzip]))
        .collect();
    let mut layers: Vec<BuiltLayer> = images::build_layers(jobs)
        .into_iter()
        .map(|mut v| v.remove(0))
        .collect();
    // The same blob as the pause image's layer (`busybox_layer`), here on top of `large`.
    let tar = build_tar(&busybox_entries());
    layers.push(BuiltLayer {
        tar_bytes: tar.len() as u64,
        files: 1,
        layer: Layer::from_tar(tar, Compression::Gzip, MediaStyle::Oci),
    });
    let image = layers
        .iter()
        .fold(ImageBuilder::new(MediaStyle::Oci), |b, l| b.layer(l.layer.clone()))
        .label("imaged.bench", "runtime")
        .cmd(&["/bin/echo", READY])
        .build();
    RunImage { layers, image }
}

/// One of the two setups compared.
pub struct Side {
    /// Name in the report.
    pub name: &'static str,
    /// Its containerd.
    pub ctd: Containerd,
    /// The pod sandbox its containers run in.
    pub pod: Pod,
    /// Where PullImage goes: imaged's socket (A) or containerd's (B).
    pull_socket: PathBuf,
    /// Stores whose regular-file count must be back to the given baseline before a cold run.
    stores: Vec<(PathBuf, u64)>,
}

/// Everything `--runtime` runs on; dropping it tears the containerds down (containers, shims, mounts).
pub struct Bench {
    /// The registry (serving while this lives).
    registry: TestRegistry,
    /// imaged, publishing into `sides[0]`'s containerd.
    pub imaged: Daemon,
    /// imaged+containerd, then containerd alone.
    pub sides: [Side; 2],
    /// The image's reference.
    pub image: String,
}

/// Starts the registry (pause image and `run` pushed), containerd A, imaged, containerd B, and a pod
/// sandbox on each containerd; records each store's file count.
pub async fn start(
    work: &Path,
    imaged_bin: &Path,
    registry: TestRegistry,
    hosts: &Path,
    run: &RunImage,
    opts: &RuntimeOpts,
) -> Result<(Bench, String)> {
    let pause = push_pause(&registry).await;
    push_image(&registry.addr(), REPO, "v1", &run.image, None).await;
    let image = registry.image_ref(REPO, "v1");
    let imaged_dir = work.join("imaged");
    let imaged_socket = imaged_dir.join("imaged.sock");
    let imaged_root = imaged_dir.join("root");
    // Configured as `imaged containerd-config` prints for this containerd.
    let a = Containerd::start(
        ContainerdOptions::new(&pause)
            .line(opts.line.clone())
            .imaged(imaged_bin, &imaged_socket, &imaged_root)
            .hosts_dir(hosts)
            .log_level(&opts.log_level),
    )
    .await;
    let address = a.socket().display().to_string();
    let mut imaged = Daemon::imaged(imaged_bin, &imaged_dir, hosts)?.with_args(&["--containerd-address", &address]);
    let t = imaged.start().await?;
    let b = Containerd::start(
        ContainerdOptions::new(&pause)
            .line(opts.line.clone())
            .hosts_dir(hosts)
            .log_level(&opts.log_level),
    )
    .await;
    let mut out = format!(
        "- {line}, runc {runc}\n\
         - imaged: serving CRI after {:.0} ms, idle RSS {} MB; publishes into containerd A\n\
         - containerd A: CRI snapshotter `{SNAPSHOTTER}` = imaged's proxy snapshotter; containerd B: `overlayfs`\n\
         - both: sandbox_image `{pause}` (from the benchmark's registry), restrict_oom_score_adj, host-network pods, log level {}\n",
        t.as_secs_f64() * 1e3,
        super::report::mb(imaged.rss()?),
        opts.log_level,
        line = opts.line,
        runc = opts.line.runc().display(),
    );
    let pod_a = a.run_pod("bench-a").await;
    let pod_b = b.run_pod("bench-b").await;
    let stores_a = vec![imaged_root.clone(), a.root()];
    let stores_b = vec![b.root()];
    let baseline = |dirs: Vec<PathBuf>| dirs.into_iter().map(|d| (d.clone(), count_files(&d))).collect();
    let sides = [
        Side {
            name: "imaged+containerd",
            stores: baseline(stores_a),
            ctd: a,
            pod: pod_a,
            pull_socket: imaged_socket,
        },
        Side {
            name: "containerd (overlayfs)",
            stores: baseline(stores_b),
            pull_socket: b.socket(),
            ctd: b,
            pod: pod_b,
        },
    ];
    for s in &sides {
        out += &format!(
            "- {}: pod sandbox running; containerd RSS {} MB\n",
            s.name,
            super::report::mb(daemons::status_field(s.ctd.pid().context("containerd pid")?, "VmRSS")?)
        );
    }
    Ok((
        Bench {
            registry,
            imaged,
            sides,
            image,
        },
        out,
    ))
}

impl Bench {
    /// The image ref side `i` has for the image, pulling it (untimed) if needed.
    pub async fn ensure_pulled(&self, i: usize) -> Result<String> {
        pull_image(&self.sides[i].pull_socket, &self.image).await
    }

    /// Removes every container of both sides (the pod sandboxes stay). Each has printed its line and is
    /// exiting: it is waited for first, as containerd 1.6 may refuse RemoveContainer ("still running")
    /// after StopContainer of a container whose exit it has not handled yet.
    pub async fn remove_containers(&self) {
        for s in &self.sides {
            for c in s.ctd.list_containers().await {
                s.ctd.wait_exit(&c.id).await;
                s.ctd.remove_container(&c.id, 0).await;
            }
        }
    }

    /// Before a cold run: containers and image removed from both sides, containerd's garbage collection
    /// run, every store back to its file count, `sync`.
    pub async fn clean(&self) -> Result<()> {
        self.remove_containers().await;
        for s in &self.sides {
            remove_image(&s.pull_socket, &self.image).await?;
        }
        let started = Instant::now();
        for s in &self.sides {
            s.ctd
                .collect_garbage()
                .await
                .context("containerd: garbage collection")?;
        }
        loop {
            let busy: Vec<String> = self
                .sides
                .iter()
                .flat_map(|s| &s.stores)
                .filter_map(|(dir, base)| {
                    let n = count_files(dir);
                    (n > *base).then(|| format!("{} ({n} files, {base} before)", dir.display()))
                })
                .collect();
            if busy.is_empty() {
                break;
            }
            if started.elapsed() > CLEAN_TIMEOUT {
                bail!("not cleaned up after {CLEAN_TIMEOUT:?}: {}", busy.join(", "));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            // containerd removes a container's snapshot in a later collection: ask again.
            for s in &self.sides {
                s.ctd
                    .collect_garbage()
                    .await
                    .context("containerd: garbage collection")?;
            }
        }
        sync()
    }

    /// Copies both containerds' logs and the registry's access log into `dir` (their own dirs go with the
    /// teardown): with `--keep`, the timelines of the runs can be read afterwards.
    pub fn save_logs(&self, dir: &Path) {
        for (s, file) in self.sides.iter().zip(["containerd-a.log", "containerd-b.log"]) {
            let _ = std::fs::write(dir.join(file), s.ctd.log());
        }
        let _ = std::fs::write(dir.join("registry.log"), self.registry.log());
    }

    /// containerd's error lines of each side (but the complaint that no CNI network is configured), and
    /// imaged's errors and warnings (the first few of each).
    pub fn log_errors(&self) -> String {
        let mut s =
            String::from("\n## Errors and warnings in the daemons' logs (containerd's \"no CNI config\" left out)\n\n");
        let ctd: Vec<(String, Vec<String>)> = self
            .sides
            .iter()
            .map(|side| {
                let errors = side.ctd.log_errors();
                // Expected: the pods use the host's network, no CNI is configured.
                let errors = errors
                    .into_iter()
                    .filter(|l| !l.contains("failed to load cni"))
                    .collect();
                (format!("containerd of {}", side.name), errors)
            })
            .collect();
        for (name, lines) in [("imaged".to_string(), self.imaged.log_errors())]
            .into_iter()
            .chain(ctd)
        {
            s += &format!("- {name}: {} line(s)\n", lines.len());
            for line in lines.iter().take(5) {
                s += &format!("  - `{}`\n", line.chars().take(300).collect::<String>());
            }
        }
        s
    }
}

fn spec(image: &str) -> Option<cri::ImageSpec> {
    Some(cri::ImageSpec {
        image: image.to_owned(),
        user_specified_image: image.to_owned(),
        ..Default::default()
    })
}

/// CRI PullImage of `image` on the image service at `socket`; returns its image ref.
async fn pull_image(socket: &Path, image: &str) -> Result<String> {
    let mut c = imaged::cli::connect(socket).await?;
    let req = cri::PullImageRequest {
        image: spec(image),
        ..Default::default()
    };
    let r = c
        .pull_image(req)
        .await
        .with_context(|| format!("PullImage {image} on {}", socket.display()))?;
    Ok(r.into_inner().image_ref)
}

/// CRI RemoveImage of `image` on the image service at `socket`.
async fn remove_image(socket: &Path, image: &str) -> Result<()> {
    let mut c = imaged::cli::connect(socket).await?;
    c.remove_image(cri::RemoveImageRequest { image: spec(image) })
        .await
        .with_context(|| format!("RemoveImage {image} on {}", socket.display()))?;
    Ok(())
}
