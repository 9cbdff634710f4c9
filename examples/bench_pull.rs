//! `bench_pull`: imaged against containerd 1.6 through CRI PullImage, side by side on this machine
//! (issue 6; run by `hack/bench-pull`, never by CI or `cargo test`).
//!
//! Layout:
//! - `bench/images.rs`: the deterministic benchmark images (`large`, `large-zstd`, `many-small`, `shared`);
//!   `bench/text.rs`: the PRNG and the text they are made of.
//! - `bench/daemons.rs`: imaged and containerd as child processes, their config, RSS from `/proc`.
//! - `bench/pulls.rs`: warm-up, then A B A B timed pulls.
//! - `bench/floor.rs`: `--floor`, the pipeline floor of `large`.
//! - `bench/big.rs`: `--big`, one 768 MiB layer through a per-connection-capped front, imaged vs containerd 2.x.
//! - `bench/api.rs`: `--api`, the read RPCs and start-up with thousands of images.
//! - `bench/runtime.rs`: `--runtime`, PullImage to a container's first output line, imaged+containerd vs
//!   containerd on overlayfs (issue 10), and CreateContainer + StartContainer of a present image.
//! - `bench/report.rs`: statistics and the markdown tables.
//! - `bench/common.rs`: the fixtures of `tests/common/` used here (image builder, pusher, registry, busybox
//!   and pause images, the containerd fixture that runs pods).
//!
//! Temp dirs (stores, registry storage) go under `$TMPDIR` (default `/tmp`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;

#[path = "bench/api.rs"]
mod api;
#[path = "bench/big.rs"]
mod big;
#[path = "bench/common.rs"]
mod common;
#[path = "bench/daemons.rs"]
mod daemons;
#[path = "bench/floor.rs"]
mod floor;
#[path = "bench/images.rs"]
mod images;
#[path = "bench/pulls.rs"]
mod pulls;
#[path = "bench/report.rs"]
mod report;
#[path = "bench/runtime.rs"]
mod runtime;
#[path = "bench/text.rs"]
mod text;

use common::registry::{RegistryOptions, TestRegistry, write_hosts_toml};
use daemons::Daemon;
use images::Scale;

/// imaged vs containerd: CRI PullImage side by side (issue 6).
#[derive(Parser, Debug)]
struct Args {
    /// Timed pulls per daemon and image, alternating the daemons [default: 5; 2 with --quick].
    #[arg(long)]
    pairs: Option<usize>,
    /// Smoke run: 2 pairs, images 1/8 the size (1/4 the files); `--api`: 200 images, 50 calls.
    #[arg(long)]
    quick: bool,
    /// Also measure the pipeline floor of `large` (HTTP, SHA-256, gunzip, untar) in the same run.
    #[arg(long)]
    floor: bool,
    /// Seconds to wait after each RemoveImage + `sync` before the timed pull. 65 lets ext4's
    /// recently-deleted inode window (60 s for clean inode tables) pass, so that file creation is not slowed
    /// by the removal of the previous tree (PERF-NOTES); slow: use with --only and few --pairs.
    #[arg(long, default_value_t = 0)]
    settle: u64,
    /// Scale mode instead of the pull comparison: latency of ListImages, ImageStatus, ImageFsInfo and
    /// start-up time with many images in each store.
    #[arg(long)]
    api: bool,
    /// `--api`: images in imaged's store.
    #[arg(long, default_value_t = 5000)]
    api_images: usize,
    /// `--api`: timed calls per RPC and daemon.
    #[arg(long, default_value_t = 200)]
    api_calls: usize,
    /// `--api`: seconds spent at most pulling the images into containerd.
    #[arg(long, default_value_t = 300)]
    api_containerd_budget: u64,
    /// `--api`: timed restarts per daemon.
    #[arg(long, default_value_t = 3)]
    api_restarts: usize,
    /// Runtime mode instead of the pull comparison: from PullImage to a container's first output line of
    /// `large` (+ busybox), imaged+containerd vs containerd on overlayfs, then CreateContainer +
    /// StartContainer of a present image (issue 10).
    #[arg(long)]
    runtime: bool,
    /// `--runtime`: pairs of CreateContainer + StartContainer of a present image [default: 20; 5 with --quick].
    #[arg(long)]
    start_pairs: Option<usize>,
    /// `--runtime`: containerd's log level (`debug` logs every snapshotter call; it slows both sides).
    #[arg(long, default_value = "info")]
    containerd_log_level: String,
    /// The containerd binary: `--runtime` runs it on both sides (its shim beside it; e.g.
    /// /opt/imaged-test-deps/containerd-sid/usr/bin/containerd for 2.x, which then runs runc 1.3)
    #[arg(long, value_name = "PATH", default_value = "/usr/bin/containerd")]
    containerd: PathBuf,
    /// The imaged binary [default: target/release/imaged, next to this example's directory].
    #[arg(long)]
    imaged: Option<PathBuf>,
    /// Do not run containerd with the overlayfs snapshotter.
    #[arg(long)]
    no_overlayfs: bool,
    /// Only these images (comma-separated: large, large-zstd, many-small, shared).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Only build the images and print their table (to check sizes and compression ratios).
    #[arg(long)]
    images_only: bool,
    /// Big mode instead of the pull comparison: a 768 MiB one-layer gzip image through a front capping each
    /// connection, then unthrottled, imaged vs the `--containerd` (2.1+), 8 connections each (issue 22).
    #[arg(long)]
    big: bool,
    /// `--big`: the front's cap per connection, MiB/s.
    #[arg(long, default_value_t = 48)]
    big_cap: u64,
    /// Keep the temp dir (stores, logs) instead of removing it at the end.
    #[arg(long)]
    keep: bool,
}

// One worker thread runs the client's connection tasks, so that they close dropped connections even while
// the main thread blocks (waiting for a daemon to exit): imaged's graceful shutdown waits for open ones.
#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() -> Result<()> {
    let args = Args::parse();
    let imaged_bin = match &args.imaged {
        Some(p) => p.clone(),
        None => std::env::current_exe()?
            .parent()
            .and_then(Path::parent)
            .context("locate target/release")?
            .join("imaged"),
    };
    if !imaged_bin.is_file() {
        bail!("{} not found: run `cargo build --release` first", imaged_bin.display());
    }
    let imaged_bin = imaged_bin.canonicalize()?;
    let work = tempfile::Builder::new().prefix("bench-pull-").tempdir()?;
    let dirs_before = system_dirs();
    let mut out = format!("{}\n", report::machine(work.path(), &imaged_bin, &args.containerd));
    let res = match (args.api, args.runtime) {
        _ if args.big => big_mode(&args, work.path(), &imaged_bin, &mut out).await,
        (true, true) => Err(anyhow::anyhow!("--api and --runtime are separate runs")),
        (true, false) => api_mode(&args, work.path(), &imaged_bin, &mut out).await,
        (false, true) => runtime_mode(&args, work.path(), &imaged_bin, &mut out).await,
        (false, false) => pull_mode(&args, work.path(), &imaged_bin, &mut out).await,
    };
    if args.runtime {
        forget_shim_dirs(dirs_before);
    }
    out += &format!("\n- load average at the end: {}\n", report::loadavg());
    let dirs_after = system_dirs();
    if dirs_after != dirs_before {
        out += &format!("\n**Warning**: system containerd dirs changed: {dirs_before:?} -> {dirs_after:?}\n");
    }
    println!("{out}");
    if args.keep {
        let kept = work.keep();
        eprintln!("bench-pull: kept {}", kept.display());
    }
    res
}

/// Whether `/var/lib/containerd` and `/run/containerd` exist (the benchmark must not create them).
fn system_dirs() -> [bool; 2] {
    ["/var/lib/containerd", "/run/containerd"].map(|d| Path::new(d).exists())
}

/// containerd 1.6's shims always put their sockets in `/run/containerd/s/` (whatever the state dir), so
/// `--runtime` creates it if it is missing: removes it (and `/run/containerd`) again if it was missing and
/// nothing else is in it.
fn forget_shim_dirs(before: [bool; 2]) {
    if !before[1] {
        let _ = std::fs::remove_dir("/run/containerd/s");
        let _ = std::fs::remove_dir("/run/containerd");
    }
}

/// Starts the registry and writes `hosts/<registry>/hosts.toml` (plain http).
async fn registry(work: &Path) -> Result<(TestRegistry, PathBuf)> {
    let registry = TestRegistry::start(RegistryOptions::default()).await;
    let hosts = work.join("hosts");
    write_hosts_toml(&hosts, &registry.host(), &registry.url());
    Ok((registry, hosts))
}

/// Starts `d`, returning a markdown line with its start-up time and idle RSS.
async fn start(d: &mut Daemon) -> Result<String> {
    let t = d.start().await?;
    eprintln!("bench-pull: {} started, pid {}", d.name, d.pid().unwrap_or(0));
    tokio::time::sleep(Duration::from_secs(1)).await;
    Ok(format!(
        "- {}: serving CRI after {:.0} ms, idle RSS {} MB\n",
        d.name,
        t.as_secs_f64() * 1e3,
        report::mb(d.rss()?)
    ))
}

async fn pull_mode(args: &Args, work: &Path, imaged_bin: &Path, out: &mut String) -> Result<()> {
    let pairs = args.pairs.unwrap_or(if args.quick { 2 } else { 5 });
    let scale = match args.quick {
        true => Scale { bytes: 8, files: 4 },
        false => Scale { bytes: 1, files: 1 },
    };
    let overlay = match args.no_overlayfs {
        true => Err(anyhow::anyhow!("not tried (--no-overlayfs)")),
        false => daemons::overlay_mounts(work),
    };
    *out += &match &overlay {
        Ok(()) => "- overlayfs: mounts here (2 lowerdirs + upper); containerd runs with it as a third daemon\n".into(),
        Err(e) => format!("- overlayfs: **skipped**: {e:#}\n"),
    };

    eprintln!("bench-pull: building images");
    let t = Instant::now();
    let mut images = images::build_all(scale);
    if !args.only.is_empty() {
        images.retain(|i| args.only.iter().any(|o| o == i.name));
    }
    eprintln!("bench-pull: built in {:.1} s", t.elapsed().as_secs_f64());
    *out += &format!("\n## Images\n\n{}", report::images(&images));
    if args.images_only {
        return Ok(());
    }

    let (registry, hosts) = registry(work).await?;
    let t = Instant::now();
    for img in &images {
        for p in img.prereq.iter().chain([&img.target]) {
            common::registry::push::push_image(&registry.addr(), &p.repo, &p.tag, &p.image, None).await;
        }
    }
    eprintln!("bench-pull: pushed in {:.1} s", t.elapsed().as_secs_f64());

    let mut daemons = vec![
        Daemon::imaged(imaged_bin, &work.join("imaged"), &hosts)?,
        Daemon::containerd(&work.join("containerd-native"), &hosts, "native")?,
    ];
    if overlay.is_ok() {
        daemons.push(Daemon::containerd(
            &work.join("containerd-overlayfs"),
            &hosts,
            "overlayfs",
        )?);
    }
    *out += "\n## Daemons\n\n";
    for d in &mut daemons {
        *out += &start(d).await?;
    }

    // The floor first, before any pull or removal of this run: its file creation must not pay for ext4's
    // scan of recently deleted inodes, which the daemons' pulls do pay (each follows a RemoveImage).
    let mut floor_layers = None;
    if let Some(large) = images.iter().find(|i| i.name == "large").filter(|_| args.floor) {
        eprintln!("bench-pull: floor of large");
        floor_layers = Some(floor::measure(large, &registry.url(), &work.join("floor")).await?);
    }
    let host = registry.host();
    let usable = pulls::warm_up(&daemons, &host, &images).await?;
    for (d, ok) in daemons.iter().zip(&usable) {
        if !ok {
            *out += &format!("- {}: **warm-up pull failed, skipped** (see its log)\n", d.name);
        }
    }
    let settle = Duration::from_secs(args.settle);
    let mut results = Vec::new();
    for img in &images {
        results.push(pulls::measure(&daemons, &usable, &host, &images, img, pairs, settle).await?);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    for d in &daemons {
        *out += &format!("- {}: RSS after the run {} MB\n", d.name, report::mb(d.rss()?));
    }

    let names: Vec<String> = daemons.iter().map(|d| d.name.clone()).collect();
    *out += &format!(
        "\n## CRI PullImage, medians of {pairs} timed pulls per daemon (A B A B …, image removed and `sync`{} \
         before each, after a discarded warm-up)\n\n{}",
        match args.settle {
            0 => String::new(),
            n => format!(" and {n} s of settling"),
        },
        report::summary(&results, &names)
    );
    *out += &report::pulls(&results, &names);
    let large = results.iter().find(|r| r.image.name == "large");
    if let (Some(layers), Some(large)) = (&floor_layers, large) {
        *out += &format!(
            "\n## Pipeline floor of `large` (each part alone, median of 3, per layer; measured before the pulls)\n\n{}",
            floor::report(layers, report::median(&large.secs[0]))
        );
    } else if args.floor {
        *out += "\n## Pipeline floor\n\n`large` was not measured (excluded with --only)\n";
    }
    *out += &report::log_errors(&daemons);
    Ok(())
}

async fn big_mode(args: &Args, work: &Path, imaged_bin: &Path, out: &mut String) -> Result<()> {
    let o = big::BigOpts {
        pairs: args.pairs.unwrap_or(3),
        cap: args.big_cap << 20,
        containerd: args.containerd.clone(),
        floor: args.floor,
    };
    big::run(&o, work, imaged_bin, out).await
}

async fn runtime_mode(args: &Args, work: &Path, imaged_bin: &Path, out: &mut String) -> Result<()> {
    let opts = runtime::RuntimeOpts {
        pairs: args.pairs.unwrap_or(if args.quick { 2 } else { 5 }),
        start_pairs: args.start_pairs.unwrap_or(if args.quick { 5 } else { 20 }),
        scale: match args.quick {
            true => Scale { bytes: 8, files: 4 },
            false => Scale { bytes: 1, files: 1 },
        },
        log_level: args.containerd_log_level.clone(),
        settle: Duration::from_secs(args.settle),
        line: runtime::Line::at(&args.containerd),
    };
    eprintln!("bench-pull: building the image");
    let run = runtime::build_image(opts.scale);
    let layers = &run.layers;
    *out += &format!(
        "\n## Image\n\n`large`'s {} gzip layers and a busybox layer on top, cmd `echo ready`: {} MB compressed, \
         {} MB uncompressed, {} files\n",
        layers.len() - 1,
        report::mb(layers.iter().map(|l| l.layer.size()).sum()),
        report::mb(layers.iter().map(|l| l.tar_bytes).sum()),
        layers.iter().map(|l| l.files).sum::<u64>(),
    );
    let (registry, hosts) = registry(work).await?;
    *out += "\n## Daemons\n\n";
    let (bench, started) = runtime::start(work, imaged_bin, registry, &hosts, &run, &opts).await?;
    *out += &started;
    let measured = runtime::measure(&bench, &opts).await;
    bench.save_logs(work);
    let res = measured?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    *out += &format!("- imaged: RSS after the run {} MB\n", report::mb(bench.imaged.rss()?));
    let peak = |r: &[runtime::Phases]| report::mb(r.iter().map(|p| p.peak_rss).max().unwrap_or(0));
    let names = bench.sides.each_ref().map(|s| s.name);
    *out += &format!(
        "\n## PullImage → first output line, {} pairs (A B A B …; before each: containers and the image removed \
         on both sides, containerd's GC run, every store back to its file count, `sync`{}; after a discarded \
         warm-up of each)\n\n{}\n- imaged peak RSS over these runs: {} MB\n",
        opts.pairs,
        match args.settle {
            0 => String::new(),
            n => format!(", {n} s of settling"),
        },
        report::runtime(&names, &res.cold, 0.3),
        peak(&res.cold[0]),
    );
    *out += &format!(
        "\n## CreateContainer + StartContainer → first output line, image present, {} pairs (A B A B …; \
         containers removed and `sync` before each; after a discarded pair)\n\n{}\n- imaged peak RSS over these runs: {} MB\n",
        opts.start_pairs,
        report::runtime(&names, &res.present, 1.1),
        peak(&res.present[0]),
    );
    for s in &bench.sides {
        s.ctd.remove_all_pods().await;
    }
    *out += &bench.log_errors();
    // Dropping `bench` stops imaged, then kills both containerds and removes their containers, shims,
    // mounts and cgroups (the fixture's teardown).
    Ok(())
}

async fn api_mode(args: &Args, work: &Path, imaged_bin: &Path, out: &mut String) -> Result<()> {
    let opts = api::ApiOpts {
        images: if args.quick { 200 } else { args.api_images },
        calls: if args.quick { 50 } else { args.api_calls },
        containerd_budget: Duration::from_secs(args.api_containerd_budget),
        restarts: args.api_restarts,
    };
    let (registry, hosts) = registry(work).await?;
    let refs = api::push_tiny(&registry.addr(), opts.images).await;
    let mut daemons = vec![
        Daemon::imaged(imaged_bin, &work.join("imaged"), &hosts)?,
        Daemon::containerd(&work.join("containerd-native"), &hosts, "native")?,
    ];
    *out += "\n## Daemons\n\n";
    for d in &mut daemons {
        *out += &start(d).await?;
    }
    let table = api::run(&opts, &mut daemons, &refs).await?;
    *out += &format!(
        "\n## Scale: {} tiny images pushed (one 1-layer image each)\n\n{table}",
        opts.images
    );
    *out += &report::log_errors(&daemons);
    Ok(())
}
