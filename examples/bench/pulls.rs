//! The side-by-side pull measurement: a discarded warm-up pull of every image on every daemon, then per
//! image `pairs` rounds alternating the daemons (A B A B …). Before each timed pull every benchmark image
//! is removed from that daemon (except the one the case needs present) and `sync` runs; the PullImage RPC
//! is timed wall-clock, and the daemon's peak RSS during it is read from `VmHWM` after resetting it, its
//! CPU time from `/proc/PID/stat`.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use imaged::proto::runtime::v1 as cri;

use super::daemons::{Daemon, count_files};
use super::images::{BenchImage, Pushed};

/// The measurements of one benchmark image.
pub struct ImageResult {
    /// The image.
    pub image: BenchImage,
    /// Per daemon, the timed pulls in seconds, in order (empty for a daemon that was skipped).
    pub secs: Vec<Vec<f64>>,
    /// Per daemon, the largest peak RSS over its timed pulls, in bytes.
    pub peak_rss: Vec<u64>,
    /// Per daemon, the CPU seconds (user + system) the daemon used in each timed pull.
    pub cpu: Vec<Vec<f64>>,
}

/// `host/repo:tag`.
pub fn reference(host: &str, p: &Pushed) -> String {
    format!("{host}/{}:{}", p.repo, p.tag)
}

fn spec(image: &str) -> Option<cri::ImageSpec> {
    Some(cri::ImageSpec {
        image: image.to_owned(),
        user_specified_image: image.to_owned(),
        ..Default::default()
    })
}

/// PullImage of `image` on `d`; returns the image ref the daemon answered.
pub async fn pull(d: &Daemon, image: &str) -> Result<String> {
    let mut c = d.client().await?;
    let resp = c
        .pull_image(cri::PullImageRequest {
            image: spec(image),
            auth: None,
            sandbox_config: None,
        })
        .await
        .with_context(|| format!("{}: PullImage {image}", d.name))?;
    Ok(resp.into_inner().image_ref)
}

/// RemoveImage of `image` on `d` (absent is success).
pub async fn remove(d: &Daemon, image: &str) -> Result<()> {
    let mut c = d.client().await?;
    c.remove_image(cri::RemoveImageRequest { image: spec(image) })
        .await
        .with_context(|| format!("{}: RemoveImage {image}", d.name))?;
    Ok(())
}

/// Whether `d` has `image` (ImageStatus).
pub async fn present(d: &Daemon, image: &str) -> Result<bool> {
    let mut c = d.client().await?;
    let resp = c
        .image_status(cri::ImageStatusRequest {
            image: spec(image),
            verbose: false,
        })
        .await
        .with_context(|| format!("{}: ImageStatus {image}", d.name))?;
    Ok(resp.into_inner().image.is_some())
}

/// Runs `sync` (every filesystem).
pub fn sync() -> Result<()> {
    let status = Command::new("sync").status().context("run sync")?;
    if !status.success() {
        bail!("sync failed: {status}");
    }
    Ok(())
}

/// Every reference the benchmark pushes (targets and prerequisites).
fn all_refs(host: &str, images: &[BenchImage]) -> Vec<String> {
    let mut refs = Vec::new();
    for img in images {
        refs.extend(img.prereq.iter().map(|p| reference(host, p)));
        refs.push(reference(host, &img.target));
    }
    refs
}

/// Brings `d` to the state before a timed pull of `img`: nothing of the benchmark but `img`'s prerequisite.
async fn prepare(d: &Daemon, host: &str, images: &[BenchImage], img: &BenchImage) -> Result<()> {
    let keep = img.prereq.as_ref().map(|p| reference(host, p));
    for r in all_refs(host, images) {
        if Some(&r) != keep.as_ref() {
            remove(d, &r).await?;
        }
    }
    if let Some(k) = &keep
        && !present(d, k).await?
    {
        pull(d, k).await?;
    }
    Ok(())
}

/// One timed pull.
struct Timed {
    secs: f64,
    peak_rss: u64,
    cpu: f64,
}

/// One timed pull: prepare, `sync`, wait `settle`, reset the peak RSS, PullImage.
async fn timed_pull(
    d: &Daemon,
    host: &str,
    images: &[BenchImage],
    img: &BenchImage,
    settle: Duration,
) -> Result<Timed> {
    prepare(d, host, images, img).await?;
    sync()?;
    tokio::time::sleep(settle).await;
    d.reset_peak_rss()?;
    let image = reference(host, &img.target);
    let cpu = d.cpu_secs()?;
    let start = Instant::now();
    pull(d, &image).await?;
    let secs = start.elapsed().as_secs_f64();
    Ok(Timed {
        secs,
        peak_rss: d.peak_rss()?,
        cpu: d.cpu_secs()? - cpu,
    })
}

/// Warm-up pulls (discarded) of every image on every daemon. A daemon after the first two whose warm-up
/// fails is reported and marked skipped (`false`); imaged and the first containerd must work.
pub async fn warm_up(daemons: &[Daemon], host: &str, images: &[BenchImage]) -> Result<Vec<bool>> {
    let mut usable = vec![true; daemons.len()];
    for img in images {
        for (i, d) in daemons.iter().enumerate() {
            if !usable[i] {
                continue;
            }
            eprintln!("bench-pull: warm-up: {} on {}", img.name, d.name);
            let res = async {
                let secs = timed_pull(d, host, images, img, Duration::ZERO).await?.secs;
                // A pull that does not unpack would not be doing the same job: check the files are there.
                let files = count_files(&d.snapshot_dir());
                eprintln!("bench-pull:   {secs:.3} s (discarded), {files} files in its snapshots");
                if files < img.files() {
                    bail!(
                        "{} did not unpack {}: {files} files under {}, expected at least {}",
                        d.name,
                        img.name,
                        d.snapshot_dir().display(),
                        img.files()
                    );
                }
                // Whether RemoveImage deletes the files before it returns (or leaves them to a background
                // cleanup that would run during the next daemon's timed pull).
                remove(d, &reference(host, &img.target)).await?;
                let left = count_files(&d.snapshot_dir());
                eprintln!("bench-pull:   after RemoveImage: {left} files left in its snapshots");
                Ok::<_, anyhow::Error>(())
            }
            .await;
            if let Err(e) = res {
                if i < 2 {
                    return Err(e.context(format!("warm-up pull on {}; log tail:\n{}", d.name, d.log_tail(20))));
                }
                eprintln!("bench-pull: {} cannot pull, skipped: {e:#}", d.name);
                usable[i] = false;
            }
        }
    }
    Ok(usable)
}

/// The timed rounds for `img`: `pairs` rounds of one pull per usable daemon, in daemon order.
pub async fn measure(
    daemons: &[Daemon],
    usable: &[bool],
    host: &str,
    images: &[BenchImage],
    img: &BenchImage,
    pairs: usize,
    settle: Duration,
) -> Result<ImageResult> {
    let mut secs = vec![Vec::new(); daemons.len()];
    let mut peak_rss = vec![0u64; daemons.len()];
    let mut cpu = vec![Vec::new(); daemons.len()];
    for round in 0..pairs {
        for (i, d) in daemons.iter().enumerate() {
            if !usable[i] {
                continue;
            }
            let t = timed_pull(d, host, images, img, settle)
                .await
                .with_context(|| format!("timed pull of {}; {} log tail:\n{}", img.name, d.name, d.log_tail(20)))?;
            eprintln!(
                "bench-pull: {} round {}/{pairs}: {} {:.3} s, CPU {:.2} s, peak RSS {:.1} MB",
                img.name,
                round + 1,
                d.name,
                t.secs,
                t.cpu,
                t.peak_rss as f64 / 1e6
            );
            secs[i].push(t.secs);
            cpu[i].push(t.cpu);
            peak_rss[i] = peak_rss[i].max(t.peak_rss);
        }
    }
    Ok(ImageResult {
        image: img.clone(),
        secs,
        peak_rss,
        cpu,
    })
}
