//! What the soak measures: latency per RPC, and the daemon's resident memory and open file descriptors
//! over time, with the test that they do not trend upwards.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::classify::Rpc;

/// Latencies in microseconds, per RPC; `steady` only for calls that overlapped no disturbance.
#[derive(Debug, Default)]
pub struct Latencies {
    inner: Mutex<BTreeMap<Rpc, PerRpc>>,
}

/// One RPC's calls.
#[derive(Clone, Debug, Default)]
pub struct PerRpc {
    /// Calls answered (successes and failures).
    pub calls: u64,
    /// Calls that failed.
    pub failed: u64,
    /// Latency of every call, µs.
    pub all: Vec<u32>,
    /// Latency of calls under load that no disturbance (slow or absent registry, restart) touched, µs.
    pub steady: Vec<u32>,
}

impl Latencies {
    /// Records one answered call.
    pub fn record(&self, rpc: Rpc, secs: f64, ok: bool, steady: bool) {
        let us = (secs * 1e6).min(f64::from(u32::MAX)) as u32;
        let mut m = self.inner.lock().unwrap();
        let p = m.entry(rpc).or_default();
        p.calls += 1;
        if !ok {
            p.failed += 1;
        }
        p.all.push(us);
        if steady {
            p.steady.push(us);
        }
    }

    /// Every RPC's record.
    pub fn snapshot(&self) -> BTreeMap<Rpc, PerRpc> {
        self.inner.lock().unwrap().clone()
    }

    /// Calls answered so far.
    pub fn total(&self) -> u64 {
        self.inner.lock().unwrap().values().map(|p| p.calls).sum()
    }
}

/// The `q`-quantile (0..=1) of `v` by nearest rank; `None` for an empty slice. Sorts `v`.
pub fn quantile(v: &mut [u32], q: f64) -> Option<u32> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    Some(v[rank - 1])
}

/// The median of `v` (sorts a copy).
pub fn median(v: &[u64]) -> Option<u64> {
    let mut v = v.to_vec();
    v.sort_unstable();
    (!v.is_empty()).then(|| v[(v.len() - 1) / 2])
}

/// One sample of the daemon process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    /// Milliseconds since the run's start.
    pub at_ms: u64,
    /// Which daemon process (0 before the restart, 1 after).
    pub life: u32,
    /// Resident set size, KiB (`VmRSS`).
    pub rss_kib: u64,
    /// Open file descriptors.
    pub fds: u64,
}

/// Reads `VmRSS` and the fd count of process `pid`; `None` if it is gone.
pub fn sample_process(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    Some((rss, fds))
}

/// How much a resource may grow between the first and the last window of a segment and still count as flat:
/// `last ≤ first × (1 + relative) + absolute`.
#[derive(Clone, Copy, Debug)]
pub struct Tolerance {
    /// Relative growth allowed.
    pub relative: f64,
    /// Absolute growth allowed (KiB for RSS, descriptors for fds).
    pub absolute: u64,
}

/// The verdict on one resource over one segment.
#[derive(Clone, Debug, PartialEq)]
pub struct Trend {
    /// Median of the first window.
    pub first: u64,
    /// Median of the last window.
    pub last: u64,
    /// The largest `last` accepted.
    pub limit: u64,
    /// Samples in the segment.
    pub samples: usize,
}

impl Trend {
    /// Whether the resource stayed flat.
    pub fn flat(&self) -> bool {
        self.last <= self.limit
    }
}

/// The trend test: splits `values` (one segment after warm-up, in time order) into thirds and compares the
/// median of the last third with the median of the first. Medians ignore the spikes of a moment (a large
/// layer being decoded, a burst of connections); a leak moves the whole last third. `None` with fewer than
/// six samples (too short to say).
pub fn trend(values: &[u64], tol: Tolerance) -> Option<Trend> {
    if values.len() < 6 {
        return None;
    }
    let third = values.len() / 3;
    let first = median(&values[..third])?;
    let last = median(&values[values.len() - third..])?;
    let limit = (first as f64 * (1.0 + tol.relative)) as u64 + tol.absolute;
    Some(Trend {
        first,
        last,
        limit,
        samples: values.len(),
    })
}
