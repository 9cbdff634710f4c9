//! The soak engine (issue 12): N concurrent CRI clients over the real socket of the real daemon, on a small
//! store with tight GC thresholds, against a real registry behind a fault proxy; the registry is made slow
//! once and unavailable once, and the daemon is SIGKILLed and restarted in the middle. Invariants are checked
//! on every answer ([`check`], the [`ledger`]), after the kill and at the end ([`finish`]); the daemon's RSS
//! and open descriptors are sampled and must stay flat ([`stats`]). The result is a markdown report
//! ([`report`]) and the list of problems that fail the run.
//!
//! One engine, two drivers: `tests/soak.rs` runs it for about a minute in the test suite, and `hack/soak`
//! runs the same test binary for as long as asked (`IMAGED_SOAK_*` variables, see [`SoakConfig::from_env`]).
//! Only `tests/soak.rs` compiles this module (`#[path]`), so the other test binaries do not pay for it.
//!
//! The run, in fractions of its duration `D`: warm-up until 0.15 D (no resource samples judged), registry
//! slow 0.20–0.30 D, registry down for a few seconds from 0.35 D, SIGKILL at 0.60 D (then `imaged fsck` on
//! the crashed store and a restart while the clients wait), stop at D.

pub mod catalog;
pub mod check;
pub mod classify;
pub mod client;
pub mod faults;
pub mod finish;
pub mod ledger;
pub mod life;
pub mod ops;
pub mod report;
pub mod stats;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use catalog::Catalog;
use classify::{Disturbances, Failures};
use ledger::{Clock, Ledger};
use stats::Latencies;

use crate::common::daemon::tmpfs::{self, MIB, PAGE};
use crate::common::daemon::{Daemon, DaemonOptions};
use crate::common::registry::{RegistryOptions, TestRegistry, write_hosts_toml};

/// What to run.
#[derive(Clone, Debug)]
pub struct SoakConfig {
    /// How long the clients run.
    pub duration: Duration,
    /// How many clients.
    pub clients: usize,
    /// The clients' random seed.
    pub seed: u64,
    /// Size of the large image's big layer.
    pub large_bytes: usize,
    /// How often the daemon's RSS and descriptors are sampled.
    pub sample_every: Duration,
    /// How long the registry stays down.
    pub outage: Duration,
    /// Where to copy the daemon's log at the end (for runs by hand).
    pub keep_log: Option<PathBuf>,
}

impl SoakConfig {
    /// The short run of the test suite, changed by `IMAGED_SOAK_SECS` (duration), `IMAGED_SOAK_CLIENTS`,
    /// `IMAGED_SOAK_SEED`, `IMAGED_SOAK_LARGE_MIB` and `IMAGED_SOAK_KEEP_LOG` (a path).
    pub fn from_env() -> SoakConfig {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let num = |k: &str, d: u64| var(k).map_or(d, |v| v.parse().unwrap_or_else(|_| panic!("{k}={v}: not a number")));
        let secs = num("IMAGED_SOAK_SECS", 60);
        let seed = var("IMAGED_SOAK_SEED").map_or_else(
            || {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
            },
            |v| v.parse().expect("IMAGED_SOAK_SEED: a number"),
        );
        SoakConfig {
            duration: Duration::from_secs(secs),
            clients: num("IMAGED_SOAK_CLIENTS", 8) as usize,
            seed,
            large_bytes: (num("IMAGED_SOAK_LARGE_MIB", 6) * MIB) as usize,
            // ~600 samples per run, at most two a second.
            sample_every: Duration::from_millis((secs * 1000 / 600).max(500)),
            outage: Duration::from_secs(3.min(secs / 20).max(1)),
            keep_log: var("IMAGED_SOAK_KEEP_LOG").map(PathBuf::from),
        }
    }
}

/// The after-pull and after-remove check counters.
#[derive(Debug, Default)]
pub struct Counters {
    /// Images checked right after a successful pull.
    pub checked_after_pull: AtomicU64,
    /// Of which found gone, with a removal that may explain it.
    pub excused_after_pull: AtomicU64,
    /// Images checked right after a successful removal.
    pub checked_after_remove: AtomicU64,
    /// Of which found present, with a pull that may explain it.
    pub excused_after_remove: AtomicU64,
    /// Recorded images whose files were looked for on disk.
    pub checked_on_disk: AtomicU64,
    /// Of which some were missing, with a removal that may explain it.
    pub excused_on_disk: AtomicU64,
}

/// What the clients and the controller share.
pub struct Shared {
    /// The images.
    pub catalog: Catalog,
    /// `host:port` the image references name (the registry's; hosts.toml sends it through the proxy).
    pub registry_host: String,
    /// The daemon's socket (the same after the restart).
    pub socket: PathBuf,
    /// The daemon's store.
    pub root: PathBuf,
    /// The clients' base seed.
    pub seed: u64,
    /// The run's clock.
    pub clock: Clock,
    /// Removals and pulls in flight and answered.
    pub ledger: Ledger,
    /// Failed calls and broken invariants.
    pub failures: Failures,
    /// Latency per RPC.
    pub latencies: Latencies,
    /// When the disturbances were.
    pub disturbances: Mutex<Disturbances>,
    /// `Some(epoch)` while the daemon serves (the epoch changes with each start), `None` while it is down.
    pub gate: tokio::sync::watch::Sender<Option<u64>>,
    /// Set when the clients must stop.
    pub stop: AtomicBool,
    /// Calls issued and not answered.
    pub in_flight: AtomicUsize,
    /// The check counters.
    pub counters: Counters,
    /// The daemon's pid (0 while it is down) and which life it is in.
    pub pid: AtomicU32,
    life: AtomicU32,
}

/// A finished run.
pub struct Outcome {
    /// The markdown report.
    pub report: String,
    /// Why the run fails; empty when it passes.
    pub problems: Vec<String>,
    /// The end of the daemon's log, for a failing run.
    pub log_tail: String,
}

/// The warm-up: resource samples before this fraction of the run (and after a restart) are not judged.
const WARM_UP: f64 = 0.15;

/// The store's filesystem: room for every image at once twice over (a pull in flight holds a second copy
/// of what it writes), GC thresholds such that holding every image is well above the high one.
fn sizing(c: &Catalog) -> (u64, u8, u8) {
    let files = 400 * PAGE; // small files take a page each; a few hundred across all layers
    let footprint = c.distinct_blob_bytes + c.distinct_tar_bytes + files + 2 * MIB;
    let bytes = (footprint * 5 / 2).max(48 * MIB).div_ceil(PAGE) * PAGE;
    let full = (footprint * 100 / bytes) as u8;
    let high = (full * 6 / 10).max(5);
    (bytes, high, high * 6 / 10)
}

/// Runs the soak and reports.
pub async fn run(cfg: SoakConfig) -> Outcome {
    let catalog = Catalog::build(cfg.large_bytes);
    let registry = TestRegistry::start(RegistryOptions::default()).await;
    catalog.push(&registry.addr()).await;
    let front = faults::Front::start(&registry.addr()).await;
    let hosts = tempfile::tempdir().expect("hosts dir");
    write_hosts_toml(hosts.path(), &registry.addr(), &front.url());

    let (fs_bytes, high, low) = sizing(&catalog);
    // Back-off on (briefly) so a local conflict that arms it shows; GC only when a client asks, so every
    // removal is one the ledger knows of.
    let config = format!(
        "[pull]\nbackoff_initial = \"1s\"\nbackoff_max = \"2s\"\n\n[gc]\nhigh_threshold_percent = {high}\n\
         low_threshold_percent = {low}\nmin_age = \"0s\"\nperiod = \"1h\"\n"
    );
    let mut daemon = Daemon::start(DaemonOptions {
        hosts_dir: Some(hosts.path().to_path_buf()),
        config: Some(config),
        env: vec![("RUST_LOG".into(), "imaged=info".into())],
        ..Default::default()
    })
    .await;
    let fs = tmpfs::store_on_tmpfs(&mut daemon, fs_bytes).await;

    let (gate, _) = tokio::sync::watch::channel(Some(0));
    let shared = Arc::new(Shared {
        catalog,
        registry_host: registry.addr(),
        socket: daemon.socket.clone(),
        root: daemon.root.clone(),
        seed: cfg.seed,
        clock: Clock::new(),
        ledger: Ledger::new(),
        failures: Failures::default(),
        latencies: Latencies::default(),
        disturbances: Mutex::new(Disturbances::default()),
        gate,
        stop: AtomicBool::new(false),
        in_flight: AtomicUsize::new(0),
        counters: Counters::default(),
        pid: AtomicU32::new(daemon.pid().expect("daemon runs")),
        life: AtomicU32::new(0),
    });
    let samples = Arc::new(Mutex::new(Vec::new()));
    let sampler = tokio::spawn(life::sample(shared.clone(), samples.clone(), cfg.sample_every));
    let clients: Vec<_> = (0..cfg.clients)
        .map(|n| tokio::spawn(client::Client::new(n, shared.clone()).run()))
        .collect();

    let d = cfg.duration.as_secs_f64();
    let mark = |f: fn(&mut Disturbances) -> &mut Option<f64>| {
        *f(&mut shared.disturbances.lock().unwrap()) = Some(shared.clock.now());
    };
    until(&shared, &front, 0.20 * d).await;
    front.slow();
    mark(|d| &mut d.slow_start);
    until(&shared, &front, 0.30 * d).await;
    front.heal();
    mark(|d| &mut d.slow_end);
    until(&shared, &front, 0.35 * d).await;
    front.down();
    mark(|d| &mut d.outage_start);
    tokio::time::sleep(cfg.outage).await;
    front.heal();
    mark(|d| &mut d.outage_end);
    until(&shared, &front, 0.60 * d).await;
    let after_kill = life::kill_and_restart(&shared, &mut daemon).await;
    until(&shared, &front, d).await;

    shared.stop.store(true, Ordering::SeqCst);
    let load_secs = shared.clock.now();
    for c in clients {
        let _ = tokio::time::timeout(client::CALL_TIMEOUT + Duration::from_secs(10), c).await;
    }
    let final_sample = life::sample_now(&shared);
    sampler.abort();
    let end = finish::check_store(&shared, &mut daemon).await;

    let samples = samples.lock().unwrap().clone();
    let dist = *shared.disturbances.lock().unwrap();
    let data = report::RunData {
        title: format!(
            "{:.0} s, {} clients, seed {}, {} tags of {} images, store on a {} MiB tmpfs (GC at {high} % → {low} %); \
             t = 0 at Unix time {:.3}",
            d,
            cfg.clients,
            cfg.seed,
            shared.catalog.tags.len(),
            shared.catalog.ids().len(),
            fs_bytes / MIB,
            shared.clock.start_unix()
        ),
        load_secs,
        latencies: shared.latencies.snapshot(),
        failures: shared.failures.snapshot(),
        checks: checks(&shared),
        disturbances: dist,
        after_kill,
        moments: life::moments(&samples, final_sample, d * WARM_UP),
        trends: life::trends(&samples, &dist, d * WARM_UP),
        end,
    };
    let log = daemon.log();
    if let Some(path) = &cfg.keep_log {
        let _ = std::fs::write(path, &log);
    }
    drop(daemon);
    drop(fs);
    drop(front);
    let tail: Vec<&str> = log.lines().rev().take(60).collect();
    Outcome {
        report: data.markdown(),
        problems: data.problems(),
        log_tail: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
    }
}

/// Sleeps until `t` seconds into the run, clearing the proxy's request log every minute meanwhile.
async fn until(shared: &Shared, front: &faults::Front, t: f64) {
    loop {
        let now = shared.clock.now();
        if now >= t {
            return;
        }
        tokio::time::sleep(Duration::from_secs_f64((t - now).min(60.0))).await;
        front.forget_requests();
    }
}

/// The check counters as report lines.
fn checks(s: &Shared) -> Vec<(String, u64, u64)> {
    let c = &s.counters;
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    vec![
        (
            "pulled image present (ImageStatus, ListImages) right after PullImage".into(),
            get(&c.checked_after_pull),
            get(&c.excused_after_pull),
        ),
        (
            "removed image gone (ImageStatus) right after RemoveImage".into(),
            get(&c.checked_after_remove),
            get(&c.excused_after_remove),
        ),
        (
            "image found by a verbose ImageStatus has every blob and snapshot on disk".into(),
            get(&c.checked_on_disk),
            get(&c.excused_on_disk),
        ),
    ]
}
