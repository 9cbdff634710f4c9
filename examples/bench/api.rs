//! Scale mode (`--api`, issue 6 item 5): thousands of tiny distinct images in each store, then the
//! latency of the read RPCs kubelet calls all the time and each daemon's start-up time on the populated
//! store.
//!
//! Every image has one small gzip layer of its own. imaged gets all of them; containerd gets as many as
//! it pulls within a time budget (`--api-containerd-budget`), and the report says how many.
//!
//! Then imaged's memory while it answers the whole list: its peak RSS (`VmHWM`, reset before each call)
//! over a ListImages and over a StreamImages (Kubernetes 1.36; containerd 1.6 does not serve it) that the
//! client reads message by message, each after a fresh start and a warm-up call of the other RPC.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures_util::StreamExt;
use imaged::proto::runtime::v1 as cri;

use super::common::images::image::{Compression, Entry, ImageBuilder, Layer, MediaStyle, random_bytes};
use super::common::registry::push;
use super::daemons::Daemon;
use super::report::{median, min_max, percentile};
use super::text::Rng;

/// What scale mode does.
#[derive(Clone, Debug)]
pub struct ApiOpts {
    /// Images pushed and pulled into imaged.
    pub images: usize,
    /// Calls per RPC and daemon.
    pub calls: usize,
    /// Longest time spent filling containerd.
    pub containerd_budget: Duration,
    /// Restarts timed per daemon.
    pub restarts: usize,
}

/// The repository every tiny image is pushed to, as tag `i<N>`.
const REPO: &str = "bench/api";

/// Pushes `n` tiny images to the registry at `addr` (32 at a time); returns their references.
pub async fn push_tiny(addr: &str, n: usize) -> Vec<String> {
    let start = Instant::now();
    let refs: Vec<String> = futures_util::stream::iter(0..n)
        .map(|i| async move {
            let layer = Layer::build(
                &[
                    Entry::dir("data"),
                    Entry::file("data/id", format!("tiny image {i}\n")),
                    Entry::file("data/blob", random_bytes(9_000_000 + i as u64, 512)),
                ],
                Compression::Gzip,
                MediaStyle::Oci,
            );
            let image = ImageBuilder::new(MediaStyle::Oci)
                .layer(layer)
                .label("imaged.bench", "api")
                .build();
            let tag = format!("i{i:05}");
            push::push_image(addr, REPO, &tag, &image, None).await;
            format!("{addr}/{REPO}:{tag}")
        })
        .buffered(32)
        .collect()
        .await;
    eprintln!(
        "bench-pull: api: pushed {n} images in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    refs
}

/// Pulls `refs` into `d`, `concurrency` at a time, stopping after `budget`; returns what it pulled and the
/// time it took.
async fn fill(d: &Daemon, refs: &[String], concurrency: usize, budget: Option<Duration>) -> Result<(Vec<String>, f64)> {
    let start = Instant::now();
    let client = d.client().await?;
    let mut pulls = futures_util::stream::iter(refs.iter().cloned())
        .map(|r| {
            let mut c = client.clone();
            async move {
                let req = cri::PullImageRequest {
                    image: spec(&r),
                    auth: None,
                    sandbox_config: None,
                };
                match c.pull_image(req).await {
                    Ok(_) => Ok(r),
                    Err(status) => Err(anyhow::anyhow!(
                        "PullImage {r}: {:?}: {}",
                        status.code(),
                        status.message()
                    )),
                }
            }
        })
        .buffer_unordered(concurrency);
    let mut done = Vec::new();
    while let Some(res) = pulls.next().await {
        done.push(res.with_context(|| format!("{}; log tail:\n{}", d.name, d.log_tail(10)))?);
        if done.len() % 500 == 0 {
            eprintln!(
                "bench-pull: api: {} has {} images ({:.0} s)",
                d.name,
                done.len(),
                start.elapsed().as_secs_f64()
            );
        }
        if budget.is_some_and(|b| start.elapsed() > b) {
            eprintln!(
                "bench-pull: api: {} stopped at {} images: time budget spent",
                d.name,
                done.len()
            );
            break;
        }
    }
    Ok((done, start.elapsed().as_secs_f64()))
}

fn spec(image: &str) -> Option<cri::ImageSpec> {
    Some(cri::ImageSpec {
        image: image.to_owned(),
        user_specified_image: image.to_owned(),
        ..Default::default()
    })
}

/// Per daemon: what scale mode measured.
#[derive(Default)]
struct Row {
    pulled: Vec<String>,
    fill_secs: f64,
    listed: usize,
    list_ms: Vec<f64>,
    status_ms: Vec<f64>,
    fsinfo_ms: Vec<f64>,
    startup_ms: Vec<f64>,
    rss: u64,
}

/// imaged's memory over one whole-list call: RSS before, peak RSS during (bytes), and the messages.
struct Memory {
    rpc: &'static str,
    before: u64,
    peak: u64,
    messages: usize,
    images: usize,
}

/// Runs scale mode on `daemons` (imaged first, then containerd) with `refs` pushed; returns the report.
pub async fn run(opts: &ApiOpts, daemons: &mut [Daemon], refs: &[String]) -> Result<String> {
    let mut rows: Vec<Row> = daemons.iter().map(|_| Row::default()).collect();
    for (d, row) in daemons.iter().zip(&mut rows) {
        let budget = (d.name != "imaged").then_some(opts.containerd_budget);
        let (pulled, secs) = fill(d, refs, 8, budget).await?;
        eprintln!(
            "bench-pull: api: {} pulled {} images in {secs:.1} s",
            d.name,
            pulled.len()
        );
        row.pulled = pulled;
        row.fill_secs = secs;
    }
    let mut clients = Vec::new();
    for d in daemons.iter() {
        clients.push(d.client().await?);
    }
    let mut rng = Rng::new(42);
    // Warm-up, then the calls, in blocks of BLOCK calls per daemon, alternating the daemons block by block.
    // During a block the other daemons are paused (SIGSTOP): a Go runtime collecting after its own
    // 5,000-image answer would otherwise steal a core from the one being timed, and the tails would
    // measure the neighbour.
    const BLOCK: usize = 20;
    let total = opts.calls + 10;
    for block in 0..total.div_ceil(BLOCK) {
        for (i, c) in clients.iter_mut().enumerate() {
            for (j, other) in daemons.iter().enumerate() {
                other.pause(j != i);
            }
            for call in block * BLOCK..((block + 1) * BLOCK).min(total) {
                let row = &mut rows[i];
                let t = Instant::now();
                let listed = c
                    .list_images(cri::ListImagesRequest { filter: None })
                    .await?
                    .into_inner()
                    .images
                    .len();
                let list = t.elapsed();
                let pick = &row.pulled[rng.below(row.pulled.len() as u64) as usize];
                let t = Instant::now();
                let found = c
                    .image_status(cri::ImageStatusRequest {
                        image: spec(pick),
                        verbose: false,
                    })
                    .await?
                    .into_inner()
                    .image
                    .is_some();
                let status = t.elapsed();
                anyhow::ensure!(found, "{}: ImageStatus {pick}: not found", daemons[i].name);
                let t = Instant::now();
                c.image_fs_info(cri::ImageFsInfoRequest {}).await?;
                let fsinfo = t.elapsed();
                if call >= 10 {
                    row.listed = listed;
                    row.list_ms.push(list.as_secs_f64() * 1e3);
                    row.status_ms.push(status.as_secs_f64() * 1e3);
                    row.fsinfo_ms.push(fsinfo.as_secs_f64() * 1e3);
                }
            }
        }
    }
    for d in daemons.iter() {
        d.pause(false);
    }
    for (d, row) in daemons.iter().zip(&mut rows) {
        row.rss = d.rss()?;
    }
    // Idle connections would hold up a graceful shutdown.
    drop(clients);
    for round in 0..opts.restarts {
        for i in 0..daemons.len() {
            // The others paused here too, for the same reason.
            for (j, other) in daemons.iter().enumerate() {
                other.pause(j != i);
            }
            let (d, row) = (&mut daemons[i], &mut rows[i]);
            d.stop();
            let t = d.start().await?;
            eprintln!(
                "bench-pull: api: restart {}: {} served in {:.1} ms",
                round + 1,
                d.name,
                t.as_secs_f64() * 1e3
            );
            row.startup_ms.push(t.as_secs_f64() * 1e3);
        }
    }
    for d in daemons.iter() {
        d.pause(false);
    }
    let mut memory = Vec::new();
    if let Some(d) = daemons.iter().find(|d| d.name == "imaged") {
        for other in daemons.iter() {
            other.pause(other.name != "imaged");
        }
        memory.push(list_memory(d, false).await?);
        // An imaged from before Kubernetes 1.36 (`--imaged <older binary>`) does not serve StreamImages.
        match list_memory(d, true).await {
            Err(e)
                if e.downcast_ref::<tonic::Status>().map(tonic::Status::code) == Some(tonic::Code::Unimplemented) =>
            {
                eprintln!("bench-pull: api: this imaged does not serve StreamImages; its memory row is left out");
            }
            other => memory.push(other?),
        }
        for d in daemons.iter() {
            d.pause(false);
        }
    }
    Ok(table(opts, daemons, &rows) + &memory_table(&memory))
}

/// One whole-list call of imaged (`stream`: StreamImages, else ListImages), after a warm-up call that
/// builds the cached list: its peak RSS over the call.
async fn list_memory(d: &Daemon, stream: bool) -> Result<Memory> {
    let mut c = d.client().await?;
    c.list_images(cri::ListImagesRequest { filter: None }).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    d.reset_peak_rss()?;
    let before = d.rss()?;
    let (messages, images) = if stream {
        let mut s = c
            .stream_images(cri::StreamImagesRequest { filter: None })
            .await?
            .into_inner();
        let (mut messages, mut images) = (0, 0);
        while let Some(m) = s.message().await? {
            messages += 1;
            images += m.images.len();
        }
        (messages, images)
    } else {
        let n = c
            .list_images(cri::ListImagesRequest { filter: None })
            .await?
            .into_inner()
            .images
            .len();
        (1, n)
    };
    let peak = d.peak_rss()?;
    Ok(Memory {
        rpc: if stream { "StreamImages" } else { "ListImages" },
        before,
        peak,
        messages,
        images,
    })
}

fn memory_table(m: &[Memory]) -> String {
    if m.is_empty() {
        return String::new();
    }
    let mut s = "\nimaged's memory over one whole-list call (the cached list already built; VmHWM reset before \
                 the call; the other daemons paused):\n\n"
        .to_string();
    s += "| RPC | images | messages | RSS before MB | peak RSS during MB | peak − before MB |\n|---|---|---|---|---|---|\n";
    for r in m {
        s += &format!(
            "| {} | {} | {} | {:.1} | {:.1} | {:.1} |\n",
            r.rpc,
            r.images,
            r.messages,
            r.before as f64 / 1e6,
            r.peak as f64 / 1e6,
            r.peak.saturating_sub(r.before) as f64 / 1e6
        );
    }
    s
}

fn table(opts: &ApiOpts, daemons: &[Daemon], rows: &[Row]) -> String {
    let mut s = format!(
        "{} calls of each RPC per daemon (after 10 warm-up calls), alternating daemons every 20 calls, the \
         daemons not being timed paused (SIGSTOP) meanwhile; ImageStatus by tag of a random image the daemon \
         holds; start-up = spawn to the first ImageFsInfo answer, polled every 5 ms, {} restarts (the others \
         paused too).\n\n",
        opts.calls, opts.restarts
    );
    s += "| daemon | images in store (ListImages) | fill: s (images/s) | ListImages p50 / p99 ms | ImageStatus p50 / p99 ms | ImageFsInfo p50 / p99 ms | start-up median (min–max) ms | RSS after fill MB |\n";
    s += "|---|---|---|---|---|---|---|---|\n";
    let pp = |v: &[f64]| format!("{:.2} / {:.2}", percentile(v, 50.0), percentile(v, 99.0));
    for (d, r) in daemons.iter().zip(rows) {
        let (lo, hi) = min_max(&r.startup_ms);
        s += &format!(
            "| {} | {} | {:.1} ({:.0}) | {} | {} | {} | {:.0} ({lo:.0}–{hi:.0}) | {:.1} |\n",
            d.name,
            r.listed,
            r.fill_secs,
            r.pulled.len() as f64 / r.fill_secs,
            pp(&r.list_ms),
            pp(&r.status_ms),
            pp(&r.fsinfo_ms),
            median(&r.startup_ms),
            r.rss as f64 / 1e6
        );
    }
    s
}
