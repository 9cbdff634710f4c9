//! `--big` (issue 22): one 768 MiB one-layer image pulled through CRI PullImage by imaged and by
//! containerd 2.x (the `--containerd` binary, overlayfs), both with 8 concurrent downloads and 8 MiB range
//! chunks, through the test front (`tests/common/registry/fault_proxy`) capping each connection at
//! `--big-cap` MiB/s (a CDN or object store), then unthrottled; A B A B, `--pairs` pairs each, after a
//! discarded warm-up. The front's log says what each pull asked for: the blob bytes the registry served,
//! the most blob GETs open at once, and how many carried a `Range`.
//!
//! The layer is gzip of [`Fill::Weights`] (like bf16 model weights: ~80 % after gzip, with real Huffman
//! blocks to inflate), not of random bytes, which gzip stores and inflating then costs nothing.
//!
//! imaged's config gets `[registry] max_concurrent_downloads = 8` and `concurrent_layer_fetch_buffer`;
//! an imaged that does not know the second key refuses the config, and then runs without it (the report
//! says so). containerd's transfer service (which its CRI pulls through since 2.1, unless
//! `use_local_image_pull`) gets the same two settings.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::common::images::big::{BigImage, Fill, build_big_image, push_big_image};
use super::common::images::image::Compression;
use super::common::registry::fault_proxy::FaultProxy;
use super::common::registry::write_hosts_toml;
use super::daemons::{Daemon, count_files};
use super::floor;
use super::pulls::{pull, remove, sync};
use super::report::{mb, median, min_max, ratio_cell};

/// The big file's size.
pub const SIZE: u64 = 768 << 20;
/// Range chunk size for both daemons.
const CHUNK: u64 = 8 << 20;
/// Concurrent downloads for both daemons.
const CONNECTIONS: usize = 8;

/// What `--big` runs.
pub struct BigOpts {
    /// Timed pulls per daemon and phase.
    pub pairs: usize,
    /// Per-connection cap of the throttled phase, bytes per second.
    pub cap: u64,
    /// The containerd 2.x binary.
    pub containerd: std::path::PathBuf,
    /// Also the pipeline floor.
    pub floor: bool,
}

/// One timed pull and what the front saw.
struct Pull {
    secs: f64,
    cpu: f64,
    peak_rss: u64,
    served: u64,
    concurrent: usize,
    ranges: usize,
}

/// Runs `--big`, appending the report to `out`.
pub async fn run(o: &BigOpts, work: &Path, imaged_bin: &Path, out: &mut String) -> Result<()> {
    eprintln!("bench-pull: building the big image");
    let dir = work.join("big-image");
    std::fs::create_dir_all(&dir)?;
    let t = Instant::now();
    let big = build_big_image(&dir, SIZE, Compression::Gzip, Fill::Weights, 22);
    let built = t.elapsed().as_secs_f64();
    let (registry, hosts) = crate::registry(work).await?;
    let t = Instant::now();
    push_big_image(&registry.addr(), "bench/big", "v1", &big, None).await;
    let pushed = t.elapsed().as_secs_f64();
    eprintln!("bench-pull: big image built in {built:.1} s, pushed in {pushed:.1} s");
    *out += &format!(
        "\n## Image\n\n`big`: one gzip layer (level 2) of one {} MB file of weight-like bytes: {} MB compressed, {} MB \
         uncompressed; built in {built:.1} s, pushed (streamed from disk) in {pushed:.1} s\n",
        mb(big.file_size),
        mb(big.blob_size),
        mb(big.tar_size),
    );
    let front = FaultProxy::start(&registry.addr()).await;
    write_hosts_toml(&hosts, &front.addr(), &front.url());

    *out += "\n## Daemons\n\n";
    let (imaged, note) = start_imaged(work, imaged_bin, &hosts).await?;
    *out += &note;
    let extra = format!(
        "[plugins.'io.containerd.transfer.v1.local']\n  max_concurrent_downloads = {CONNECTIONS}\n  \
         concurrent_layer_fetch_buffer = {CHUNK}\n"
    );
    let mut ctd = Daemon::containerd_at(&o.containerd, &work.join("containerd-big"), &hosts, "overlayfs", &extra)?;
    *out += &crate::start(&mut ctd).await?;
    *out += &format!(
        "- {}: transfer service `max_concurrent_downloads = {CONNECTIONS}`, `concurrent_layer_fetch_buffer = {CHUNK}`\n",
        ctd.name
    );
    let daemons = [imaged, ctd];

    let mut floor_layer = None;
    if o.floor {
        let url = format!("{}/v2/bench/big/blobs/{}", registry.url(), big.layer_digest());
        floor_layer = Some(floor::measure_file(&big.blob_path, &url, &work.join("floor-big")).await?);
    }
    let image = front.image("bench/big", "v1");
    let mut phases = Vec::new();
    for (name, cap) in [
        (format!("each connection capped at {} MiB/s", o.cap >> 20), Some(o.cap)),
        ("unthrottled (the front passes everything)".to_string(), None),
    ] {
        front.cap_per_connection(cap);
        let mut runs: [Vec<Pull>; 2] = [Vec::new(), Vec::new()];
        for round in 0..=o.pairs {
            for (i, d) in daemons.iter().enumerate() {
                let p = timed(d, &front, &image, &big).await?;
                eprintln!(
                    "bench-pull: big ({name}) {}: {} {:.3} s, served {} MB, {} at once, {} ranges, peak RSS {} MB",
                    if round == 0 {
                        "warm-up".to_string()
                    } else {
                        format!("round {round}")
                    },
                    d.name,
                    p.secs,
                    mb(p.served),
                    p.concurrent,
                    p.ranges,
                    mb(p.peak_rss)
                );
                if round > 0 {
                    runs[i].push(p);
                }
            }
        }
        phases.push((name, runs));
    }
    let names = daemons.each_ref().map(|d| d.name.clone());
    for (name, runs) in &phases {
        *out += &format!(
            "\n## CRI PullImage of `big`, {name}: medians of {} pulls per daemon (A B A B …, image removed, \
             snapshots gone and `sync` before each, after a discarded warm-up)\n\n{}",
            o.pairs,
            table(&names, runs, &big)
        );
    }
    if let Some(layer) = floor_layer {
        let unthrottled = median(&phases[1].1[0].iter().map(|p| p.secs).collect::<Vec<_>>());
        *out += &format!(
            "\n## Pipeline floor of `big` (each part once, measured before the pulls)\n\n{}",
            floor::report(&[layer], unthrottled)
        );
    }
    *out += &format!("\n- imaged: RSS after the run {} MB\n", mb(daemons[0].rss()?));
    *out += &super::report::log_errors(&daemons);
    Ok(())
}

/// Starts imaged with both download settings; without `concurrent_layer_fetch_buffer` if it refuses the
/// key. Returns it and the report's lines.
async fn start_imaged(work: &Path, bin: &Path, hosts: &Path) -> Result<(Daemon, String)> {
    let dir = work.join("imaged-big");
    let config = work.join("imaged-big.toml");
    let both =
        format!("[registry]\nmax_concurrent_downloads = {CONNECTIONS}\nconcurrent_layer_fetch_buffer = {CHUNK}\n");
    std::fs::write(&config, &both)?;
    let args = ["--config", config.to_str().context("config path is UTF-8")?];
    let mut d = Daemon::imaged(bin, &dir, hosts)?.with_args(&args);
    match crate::start(&mut d).await {
        Ok(line) => Ok((d, format!("{line}- imaged: `{}`\n", both.trim_end().replace('\n', " ")))),
        Err(_)
            if d.log_tail(usize::MAX)
                .contains("unknown field `concurrent_layer_fetch_buffer`") =>
        {
            let one = format!("[registry]\nmax_concurrent_downloads = {CONNECTIONS}\n");
            std::fs::write(&config, &one)?;
            let line = crate::start(&mut d).await?;
            Ok((
                d,
                format!(
                    "{line}- imaged: `{}` (**this imaged refuses `concurrent_layer_fetch_buffer`**: it fetches a \
                     blob over one connection)\n",
                    one.trim_end().replace('\n', " ")
                ),
            ))
        }
        Err(e) => Err(e),
    }
}

/// Removes the image from `d`, waits for its snapshots to be gone, `sync`s, then times one pull.
async fn timed(d: &Daemon, front: &FaultProxy, image: &str, big: &BigImage) -> Result<Pull> {
    remove(d, image).await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while count_files(&d.snapshot_dir()) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    sync()?;
    front.clear_log();
    d.reset_peak_rss()?;
    let cpu = d.cpu_secs()?;
    let t = Instant::now();
    pull(d, image)
        .await
        .with_context(|| format!("{} log tail:\n{}", d.name, d.log_tail(20)))?;
    let secs = t.elapsed().as_secs_f64();
    let files = count_files(&d.snapshot_dir());
    anyhow::ensure!(
        files >= 1,
        "{} did not unpack {image}: no file in its snapshots",
        d.name
    );
    let layer = big.layer_digest();
    let ranges = front
        .requests()
        .iter()
        .filter(|r| r.is_blob_get() && r.path.contains(layer) && !r.header("range").is_empty())
        .count();
    Ok(Pull {
        secs,
        cpu: d.cpu_secs()? - cpu,
        peak_rss: d.peak_rss()?,
        served: front.blob_body_bytes(),
        concurrent: front.max_concurrent_blob_gets(),
        ranges,
    })
}

/// The phase's table: a row per daemon, then the raw times.
fn table(names: &[String], runs: &[Vec<Pull>; 2], big: &BigImage) -> String {
    let mut s = String::from(
        "| daemon | median s | min–max s | imaged/this, pair by pair: median (min–max) | MB/s compressed | \
         daemon CPU s (median) | peak RSS MB | served / blob (max) | blob GETs at once (max) | Range GETs (median) |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
    );
    let secs = |r: &[Pull]| r.iter().map(|p| p.secs).collect::<Vec<_>>();
    for (d, name) in names.iter().enumerate() {
        let r = &runs[d];
        let t = secs(r);
        if t.is_empty() {
            continue;
        }
        let med = median(&t);
        let (lo, hi) = min_max(&t);
        let ratio = if d == 0 {
            "—".to_owned()
        } else {
            ratio_cell(&secs(&runs[0]), &t)
        };
        let served = r.iter().map(|p| p.served).max().unwrap_or(0) as f64 / big.blob_size as f64;
        s += &format!(
            "| {name} | {med:.3} | {lo:.3}–{hi:.3} | {ratio} | {:.1} | {:.2} | {} | {served:.3} | {} | {} |\n",
            big.blob_size as f64 / 1e6 / med,
            median(&r.iter().map(|p| p.cpu).collect::<Vec<_>>()),
            mb(r.iter().map(|p| p.peak_rss).max().unwrap_or(0)),
            r.iter().map(|p| p.concurrent).max().unwrap_or(0),
            median(&r.iter().map(|p| p.ranges as f64).collect::<Vec<_>>()),
        );
    }
    s += "\nTimes in pull order (s):\n";
    for (d, name) in names.iter().enumerate() {
        let list: Vec<String> = runs[d].iter().map(|p| format!("{:.3}", p.secs)).collect();
        s += &format!("- {name}: {}\n", list.join(" "));
    }
    s
}
