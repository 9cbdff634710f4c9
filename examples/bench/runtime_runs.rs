//! The timed runs of `--runtime` (see `runtime.rs`): one run's phases, and the rounds alternating the sides.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::super::common::runtimes::containerd::logs::parse_cri_log;
use super::super::common::runtimes::containerd::pods::ContainerSpec;
use super::super::daemons;
use super::super::pulls::sync;
use super::{Bench, READY, RuntimeOpts, pull_image};

/// Longest a container may take to print its line.
const OUTPUT_TIMEOUT: Duration = Duration::from_secs(60);

/// The phases of one timed run, in seconds, and what the daemons used meanwhile.
#[derive(Clone, Copy, Debug, Default)]
pub struct Phases {
    /// PullImage (0 for a present image).
    pub pull: f64,
    /// CreateContainer.
    pub create: f64,
    /// StartContainer.
    pub start: f64,
    /// From StartContainer's answer to the first line in the log file.
    pub output: f64,
    /// CPU seconds of the side's daemons (imaged + containerd A, or containerd B); shims and runc excluded.
    pub cpu: f64,
    /// imaged's peak RSS during the run (A only).
    pub peak_rss: u64,
}

impl Phases {
    /// From the first call to the first line.
    pub fn total(&self) -> f64 {
        self.pull + self.create + self.start + self.output
    }
}

impl Bench {
    /// One timed run on side `i`: PullImage (if `pull`), CreateContainer `name`, StartContainer, first
    /// line. `id` is the image ref to use when not pulling.
    pub async fn run(&self, i: usize, name: &str, pull: bool, id: &str) -> Result<Phases> {
        let side = &self.sides[i];
        let ctd_pid = side.ctd.pid().context("containerd not running")?;
        let imaged_pid = self.imaged.pid().context("imaged not running")?;
        let pids: Vec<u32> = match i {
            0 => vec![imaged_pid, ctd_pid],
            _ => vec![ctd_pid],
        };
        daemons::reset_peak_rss_of(imaged_pid)?;
        let cpu0 = cpu(&pids)?;
        let mut p = Phases::default();
        let t = Instant::now();
        let id = match pull {
            true => {
                let id = pull_image(&side.pull_socket, &self.image).await?;
                p.pull = t.elapsed().as_secs_f64();
                id
            }
            false => id.to_owned(),
        };
        let spec = ContainerSpec::new(name, &id).user_specified_image(&self.image);
        let t = Instant::now();
        let container = side.ctd.create_container(&side.pod, &spec).await.with_context(|| {
            format!(
                "{}: CreateContainer {name} ({id}); log: {}",
                side.name,
                side.ctd.dir().display()
            )
        })?;
        p.create = t.elapsed().as_secs_f64();
        let t = Instant::now();
        side.ctd
            .start_container(&container)
            .await
            .with_context(|| format!("{}: StartContainer {name}", side.name))?;
        p.start = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let line = first_line(&side.pod.log_dir().join(format!("{name}.log"))).await?;
        p.output = t.elapsed().as_secs_f64();
        p.cpu = cpu(&pids)? - cpu0;
        if i == 0 {
            p.peak_rss = daemons::status_field(imaged_pid, "VmHWM")?;
        }
        if line != READY {
            bail!("{}: container {name} printed {line:?}, not {READY:?}", side.name);
        }
        Ok(p)
    }
}

/// The summed CPU seconds of `pids`.
fn cpu(pids: &[u32]) -> Result<f64> {
    pids.iter().map(|&p| daemons::cpu_secs_of(p)).sum()
}

/// Waits for the first complete stdout line in the CRI log file at `path`, polling every millisecond.
async fn first_line(path: &Path) -> Result<String> {
    let deadline = Instant::now() + OUTPUT_TIMEOUT;
    loop {
        if let Ok(text) = std::fs::read_to_string(path)
            && let Some(end) = text.rfind('\n')
            && let Some(line) = parse_cri_log(&text[..=end]).into_iter().find(|l| l.stream == "stdout")
        {
            return Ok(line.text);
        }
        if Instant::now() > deadline {
            bail!("no output in {} after {OUTPUT_TIMEOUT:?}", path.display());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// The timed runs, per side (imaged+containerd, containerd), in run order.
#[derive(Default)]
pub struct Results {
    /// PullImage → first line, image absent.
    pub cold: [Vec<Phases>; 2],
    /// CreateContainer + StartContainer → first line, image present.
    pub present: [Vec<Phases>; 2],
}

/// A discarded cold run per side, `opts.pairs` cold pairs, then `opts.start_pairs` pairs with the image
/// present (after a discarded pair), alternating the sides.
pub async fn measure(bench: &Bench, opts: &RuntimeOpts) -> Result<Results> {
    let mut res = Results::default();
    for i in 0..2 {
        bench.clean().await?;
        let p = bench.run(i, &format!("warm-up-{i}"), true, "").await?;
        eprintln!(
            "bench-pull: runtime warm-up: {}: {} (discarded)",
            bench.sides[i].name,
            show(&p)
        );
    }
    for round in 0..opts.pairs {
        for i in 0..2 {
            bench.clean().await?;
            tokio::time::sleep(opts.settle).await;
            let p = bench.run(i, &format!("cold-{round}-{i}"), true, "").await?;
            eprintln!(
                "bench-pull: runtime cold {}/{}: {}: {}",
                round + 1,
                opts.pairs,
                bench.sides[i].name,
                show(&p)
            );
            res.cold[i].push(p);
        }
    }
    bench.remove_containers().await;
    let ids = [bench.ensure_pulled(0).await?, bench.ensure_pulled(1).await?];
    if ids[0] != ids[1] {
        bail!("the sides disagree on the image id: {} vs {}", ids[0], ids[1]);
    }
    for round in 0..=opts.start_pairs {
        for (i, id) in ids.iter().enumerate() {
            bench.remove_containers().await;
            sync()?;
            let p = bench.run(i, &format!("present-{round}-{i}"), false, id).await?;
            match round {
                0 => eprintln!(
                    "bench-pull: runtime present warm-up: {}: {} (discarded)",
                    bench.sides[i].name,
                    show(&p)
                ),
                _ => res.present[i].push(p),
            }
        }
        if round > 0 && round % 5 == 0 {
            eprintln!("bench-pull: runtime present: {round}/{} pairs", opts.start_pairs);
        }
    }
    bench.remove_containers().await;
    Ok(res)
}

/// A run's phases on one line, for the progress output.
fn show(p: &Phases) -> String {
    format!(
        "{:.3} s (pull {:.3}, create {:.3}, start {:.3}, output {:.3}; CPU {:.2} s)",
        p.total(),
        p.pull,
        p.create,
        p.start,
        p.output,
        p.cpu
    )
}
