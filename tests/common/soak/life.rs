//! The daemon process over the run: the SIGKILL and restart in the middle, and the samples of its RSS and
//! open descriptors, judged for a trend.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::Shared;
use super::classify::Disturbances;
use super::finish::{self, Verdict};
use super::stats::{self, Sample, Tolerance, Trend};
use crate::common::daemon::Daemon;

/// How much RSS (KiB) may grow over a segment and still be flat.
pub const RSS_TOLERANCE: Tolerance = Tolerance {
    relative: 0.25,
    absolute: 16 * 1024,
};

/// How many descriptors may be added over a segment and still be flat.
pub const FD_TOLERANCE: Tolerance = Tolerance {
    relative: 0.25,
    absolute: 16,
};

/// Samples this long after the outage are left out of the trend (connections being re-established).
const AFTER_OUTAGE_SECS: f64 = 5.0;

/// How long the calls cut by the kill may take to come back.
const CUT_CALLS_DEADLINE: Duration = Duration::from_secs(60);

/// SIGKILLs the daemon while the clients' calls are in flight, checks the crashed store with `imaged fsck`,
/// and starts the daemon again; the clients wait meanwhile and reconnect after.
pub async fn kill_and_restart(shared: &Shared, daemon: &mut Daemon) -> Vec<Verdict> {
    let mut out = Vec::new();
    shared.gate.send_replace(None);
    shared.pid.store(0, Ordering::SeqCst);
    let in_flight = shared.in_flight.load(Ordering::SeqCst);
    shared.disturbances.lock().unwrap().kill_at = Some(shared.clock.now());
    daemon.kill();

    let deadline = Instant::now() + CUT_CALLS_DEADLINE;
    while shared.in_flight.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let left = shared.in_flight.load(Ordering::SeqCst);
    out.push(Verdict {
        check: "calls in flight at the SIGKILL fail promptly".into(),
        ok: left == 0,
        detail: format!("{in_flight} in flight, {left} still unanswered after {CUT_CALLS_DEADLINE:?}"),
    });

    let root = daemon.root.clone();
    let (ingest, tmp) = finish::leftovers(&root);
    let (clean, report) = tokio::task::spawn_blocking(move || finish::fsck(&root))
        .await
        .expect("fsck task");
    out.push(Verdict {
        check: "imaged fsck of the crashed store is clean".into(),
        ok: clean,
        detail: format!(
            "left by the crash: {ingest} ingest files, {tmp} tmp- snapshots; fsck: {}",
            report.trim().replace('\n', "; ")
        ),
    });

    daemon.start_again().await;
    let life = shared.life.fetch_add(1, Ordering::SeqCst) + 1;
    shared.pid.store(daemon.pid().expect("daemon runs"), Ordering::SeqCst);
    shared.disturbances.lock().unwrap().restarted_at = Some(shared.clock.now());
    shared.gate.send_replace(Some(u64::from(life)));
    out
}

/// One sample of the daemon now, if it runs.
pub fn sample_now(shared: &Shared) -> Option<Sample> {
    let pid = shared.pid.load(Ordering::SeqCst);
    if pid == 0 {
        return None;
    }
    let life = shared.life.load(Ordering::SeqCst);
    let at_ms = (shared.clock.now() * 1000.0) as u64;
    let (rss_kib, fds) = stats::sample_process(pid)?;
    // The pid may have changed while reading: keep only samples of one life.
    (shared.pid.load(Ordering::SeqCst) == pid).then_some(Sample {
        at_ms,
        life,
        rss_kib,
        fds,
    })
}

/// Samples the daemon every `every` until aborted.
pub async fn sample(shared: Arc<Shared>, out: Arc<Mutex<Vec<Sample>>>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Some(s) = sample_now(&shared) {
            out.lock().unwrap().push(s);
        }
    }
}

fn secs(s: &Sample) -> f64 {
    s.at_ms as f64 / 1000.0
}

/// The resource table's rows: start, after the warm-up, just before the kill, after the restart, end.
pub fn moments(samples: &[Sample], end: Option<Sample>, warm_up: f64) -> Vec<(String, Option<Sample>)> {
    let first = |f: &dyn Fn(&Sample) -> bool| samples.iter().find(|s| f(s)).copied();
    vec![
        ("start (load beginning)".into(), samples.first().copied()),
        (
            "after the warm-up".into(),
            first(&|s| s.life == 0 && secs(s) >= warm_up),
        ),
        (
            "middle (last sample before the SIGKILL)".into(),
            samples.iter().rev().find(|s| s.life == 0).copied(),
        ),
        ("after the restart".into(), first(&|s| s.life == 1)),
        ("end (load over)".into(), end),
    ]
}

/// The trend verdicts: RSS and descriptors, before the kill (after the warm-up, the slow registry and the
/// outage left out) and after the restart (after a warm-up of its own).
pub fn trends(samples: &[Sample], d: &Disturbances, warm_up: f64) -> Vec<(String, String, Option<Trend>)> {
    let disturbed = |t: f64| {
        let start = d.slow_start.or(d.outage_start);
        let end = d.outage_end.or(d.slow_end).map(|e| e + AFTER_OUTAGE_SECS);
        start.is_some_and(|s| t >= s) && end.is_none_or(|e| t <= e)
    };
    let restarted = d.restarted_at.unwrap_or(f64::INFINITY);
    let segments: [(&str, Vec<&Sample>); 2] = [
        (
            "before the SIGKILL",
            samples
                .iter()
                .filter(|s| s.life == 0 && secs(s) >= warm_up && !disturbed(secs(s)))
                .collect(),
        ),
        (
            "after the restart",
            samples
                .iter()
                .filter(|s| s.life == 1 && secs(s) >= restarted + warm_up)
                .collect(),
        ),
    ];
    let mut out = Vec::new();
    for (name, seg) in segments {
        let rss: Vec<u64> = seg.iter().map(|s| s.rss_kib).collect();
        let fds: Vec<u64> = seg.iter().map(|s| s.fds).collect();
        out.push((
            name.to_string(),
            "RSS (KiB)".to_string(),
            stats::trend(&rss, RSS_TOLERANCE),
        ));
        out.push((
            name.to_string(),
            "open fds".to_string(),
            stats::trend(&fds, FD_TOLERANCE),
        ));
    }
    out
}
