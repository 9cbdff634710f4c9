//! The pipeline floor of a gzip image (issue 6, item 3; `--big`'s one huge layer from its file, issue 22): the unavoidable work of pulling it, each part
//! timed alone per layer on this machine, in the same run as the daemons:
//!
//! 1. reading the blob over loopback HTTP from the registry (reqwest GET into a discard sink),
//! 2. SHA-256 of the compressed bytes (`sha2`, as imaged),
//! 3. gzip decompression with imaged's backend (`flate2` on `zlib-rs`), output discarded,
//! 4. SHA-256 of the uncompressed tar,
//! 5. writing the files: untar with the `tar` crate into a fresh directory (no safety checks), after a
//!    `sync` so that nothing else is dirty,
//! 6. then one `syncfs` of it (as imaged does per snapshot).
//!
//! It runs before any pull of the run, after a `sync` and [`SETTLE`] of waiting, so that its file creation
//! does not pay for ext4's scan of recently deleted inodes (PERF-NOTES: on this journal-less ext4, creating
//! files within 60 s of deleting a large tree is 3–10× slower; a previous run's cleanup is enough). The
//! daemons' pulls do pay it after each RemoveImage, unless `--settle 65` lets the window pass. Each part is
//! the median of 3 runs. The serial sum adds every part of every layer; the ideal parallel
//! floor spreads that over min(cores, layers) cores, but is never below the longest single layer's chain.

use std::fs::{self, File};
use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use flate2::read::GzDecoder;
use sha2::{Digest, Sha256};

use super::images::BenchImage;
use super::report::{mb, median};

const RUNS: usize = 3;

/// How long the floor waits (after a `sync`) before measuring: ext4 skips inodes deleted in the last 60 s
/// when their inode table block is clean.
pub const SETTLE: Duration = Duration::from_secs(65);
const PARTS: [&str; 6] = ["HTTP GET", "SHA-256 blob", "gunzip", "SHA-256 tar", "untar", "syncfs"];

/// The floor of one layer: median seconds of each part.
pub struct LayerFloor {
    /// Compressed size.
    pub compressed: u64,
    /// Uncompressed size.
    pub uncompressed: u64,
    /// Seconds per part, in [`PARTS`] order.
    pub parts: [f64; 6],
}

impl LayerFloor {
    /// The layer's chain: every part one after the other.
    pub fn chain(&self) -> f64 {
        self.parts.iter().sum()
    }
}

/// Measures every layer of `img` (a gzip image pushed to `registry_url`), writing under `dir`.
pub async fn measure(img: &BenchImage, registry_url: &str, dir: &Path) -> Result<Vec<LayerFloor>> {
    let client = reqwest::Client::new();
    super::pulls::sync()?;
    eprintln!("bench-pull: floor: waiting {SETTLE:?} for recently deleted inodes to age");
    tokio::time::sleep(SETTLE).await;
    let mut out = Vec::new();
    for (i, layer) in img.target.image.layers.iter().enumerate() {
        let blob = &layer.blob;
        let url = format!("{registry_url}/v2/{}/blobs/{}", img.target.repo, layer.digest);
        let tar = gunzip(blob)?;
        let mut runs: Vec<[f64; 6]> = Vec::new();
        for run in 0..RUNS {
            let mut parts = [0f64; 6];
            let t = Instant::now();
            let got = http_get(&client, &url).await?;
            parts[0] = t.elapsed().as_secs_f64();
            anyhow::ensure!(
                got == blob.len() as u64,
                "GET {url}: {got} bytes, expected {}",
                blob.len()
            );

            let t = Instant::now();
            std::hint::black_box(Sha256::digest(blob));
            parts[1] = t.elapsed().as_secs_f64();

            let t = Instant::now();
            let n = inflate_to_sink(blob)?;
            parts[2] = t.elapsed().as_secs_f64();
            anyhow::ensure!(
                n == tar.len() as u64,
                "layer {i}: inflated {n} bytes, expected {}",
                tar.len()
            );

            let t = Instant::now();
            std::hint::black_box(Sha256::digest(&tar));
            parts[3] = t.elapsed().as_secs_f64();

            // A fresh directory each run: deleting and re-creating a tree is slow on this kind of ext4.
            let target = dir.join(format!("layer{i}-run{run}"));
            fs::create_dir_all(&target)?;
            super::pulls::sync()?;
            let t = Instant::now();
            untar(&tar, &target)?;
            parts[4] = t.elapsed().as_secs_f64();
            let t = Instant::now();
            rustix::fs::syncfs(&File::open(&target)?)?;
            parts[5] = t.elapsed().as_secs_f64();
            runs.push(parts);
        }
        eprintln!("bench-pull: floor: layer {i} measured");
        out.push(LayerFloor {
            compressed: blob.len() as u64,
            uncompressed: tar.len() as u64,
            parts: std::array::from_fn(|k| median(&runs.iter().map(|r| r[k]).collect::<Vec<_>>())),
        });
    }
    Ok(out)
}

/// The floor of one gzip layer whose blob is the file `blob` (the `--big` image, too big for memory),
/// served at `url`: each part once (a run writes ~2x the tar to disk), streaming from files under `dir`.
/// The tar is inflated to a file first (untimed), so that its SHA-256 and untar read it from the page
/// cache as the in-memory floor reads memory.
pub async fn measure_file(blob: &Path, url: &str, dir: &Path) -> Result<LayerFloor> {
    let client = reqwest::Client::new();
    fs::create_dir_all(dir)?;
    let tar_path = dir.join("layer.tar");
    let tar_len = std::io::copy(
        &mut GzDecoder::new(std::io::BufReader::new(File::open(blob)?)),
        &mut std::io::BufWriter::new(File::create(&tar_path)?),
    )
    .context("gunzip the big layer")?;
    super::pulls::sync()?;
    eprintln!("bench-pull: floor: waiting {SETTLE:?} for recently deleted inodes to age");
    tokio::time::sleep(SETTLE).await;
    let mut parts = [0f64; 6];
    let t = Instant::now();
    let got = http_get(&client, url).await?;
    parts[0] = t.elapsed().as_secs_f64();
    let compressed = fs::metadata(blob)?.len();
    anyhow::ensure!(got == compressed, "GET {url}: {got} bytes, expected {compressed}");
    let t = Instant::now();
    std::hint::black_box(sha256_file(blob)?);
    parts[1] = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let n = std::io::copy(&mut GzDecoder::new(File::open(blob)?), &mut std::io::sink())?;
    parts[2] = t.elapsed().as_secs_f64();
    anyhow::ensure!(n == tar_len, "inflated {n} bytes, expected {tar_len}");
    let t = Instant::now();
    std::hint::black_box(sha256_file(&tar_path)?);
    parts[3] = t.elapsed().as_secs_f64();
    let target = dir.join("rootfs");
    fs::create_dir_all(&target)?;
    super::pulls::sync()?;
    let t = Instant::now();
    let mut archive = tar::Archive::new(File::open(&tar_path)?);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = target.join(entry.path()?);
        entry
            .unpack(&path)
            .with_context(|| format!("unpack {}", path.display()))?;
    }
    parts[4] = t.elapsed().as_secs_f64();
    let t = Instant::now();
    rustix::fs::syncfs(&File::open(&target)?)?;
    parts[5] = t.elapsed().as_secs_f64();
    eprintln!("bench-pull: floor: big layer measured");
    Ok(LayerFloor {
        compressed,
        uncompressed: tar_len,
        parts,
    })
}

fn sha256_file(path: &Path) -> Result<Vec<u8>> {
    let mut f = File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match f.read(&mut buf)? {
            0 => return Ok(h.finalize().to_vec()),
            n => h.update(&buf[..n]),
        }
    }
}

async fn http_get(client: &reqwest::Client, url: &str) -> Result<u64> {
    let mut resp = client.get(url).send().await?.error_for_status()?;
    let mut n = 0u64;
    while let Some(chunk) = resp.chunk().await? {
        n += chunk.len() as u64;
    }
    Ok(n)
}

fn gunzip(blob: &[u8]) -> Result<Vec<u8>> {
    let mut tar = Vec::new();
    GzDecoder::new(blob).read_to_end(&mut tar).context("gunzip layer")?;
    Ok(tar)
}

fn inflate_to_sink(blob: &[u8]) -> Result<u64> {
    let mut dec = GzDecoder::new(blob);
    let mut buf = vec![0u8; 256 << 10];
    let mut n = 0u64;
    loop {
        match dec.read(&mut buf)? {
            0 => return Ok(n),
            k => n += k as u64,
        }
    }
}

/// Untars `tar` into `dir` entry by entry (no path checks), then one `syncfs`.
fn untar(tar: &[u8], dir: &Path) -> Result<()> {
    let mut archive = tar::Archive::new(tar);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = dir.join(entry.path()?);
        entry
            .unpack(&path)
            .with_context(|| format!("unpack {}", path.display()))?;
    }
    let fd = File::open(dir)?;
    rustix::fs::syncfs(&fd)?;
    Ok(())
}

/// The floor table, and imaged's median pull time of the image against it.
pub fn report(layers: &[LayerFloor], imaged_median: f64) -> String {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let mut s = String::from("| layer | MB compressed / uncompressed |");
    for p in PARTS {
        s += &format!(" {p} s |");
    }
    s += " chain s |\n|---|---|---|---|---|---|---|---|---|\n";
    let mut totals = [0f64; 6];
    for (i, l) in layers.iter().enumerate() {
        s += &format!("| {i} | {} / {} |", mb(l.compressed), mb(l.uncompressed));
        for (k, t) in l.parts.iter().enumerate() {
            s += &format!(" {t:.4} |");
            totals[k] += t;
        }
        s += &format!(" {:.3} |\n", l.chain());
    }
    let serial: f64 = layers.iter().map(LayerFloor::chain).sum();
    s += "| all | |";
    for t in totals {
        s += &format!(" {t:.4} |");
    }
    s += &format!(" **{serial:.3}** |\n");
    let longest = layers.iter().map(LayerFloor::chain).fold(0.0, f64::max);
    let spread = cores.min(layers.len()).max(1);
    let floor = (serial / spread as f64).max(longest);
    let comp: u64 = layers.iter().map(|l| l.compressed).sum();
    s += &format!(
        "\n- serial sum: **{serial:.3} s** ({:.1} MB/s of compressed input on one core)\n\
         - ideal parallel floor: max(serial / min({cores} cores, {} layers), longest layer chain {longest:.3} s) = \
         **{floor:.3} s** ({:.1} MB/s compressed)\n\
         - imaged median: {imaged_median:.3} s = **{:.2}× the floor** (target ≤ 1.3×); unless the pulls ran \
         with `--settle 65`, each followed a RemoveImage and paid ext4's recently-deleted inode scan, which the \
         floor does not\n",
        comp as f64 / 1e6 / serial,
        layers.len(),
        comp as f64 / 1e6 / floor,
        imaged_median / floor,
    );
    s
}
