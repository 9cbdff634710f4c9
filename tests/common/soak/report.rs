//! The soak's markdown report, and the list of problems that fail the run.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::classify::{ClassCount, Disturbances, Rpc};
use super::finish::Verdict;
use super::stats::{PerRpc, Sample, Trend, quantile};

/// Everything a run found, as the report shows it.
pub struct RunData {
    /// The headline: duration, clients, seed, images.
    pub title: String,
    /// Seconds the clients ran.
    pub load_secs: f64,
    /// Per RPC.
    pub latencies: BTreeMap<Rpc, PerRpc>,
    /// Failures by class.
    pub failures: BTreeMap<String, ClassCount>,
    /// `(check, count, excused)` of the after-pull and after-remove checks.
    pub checks: Vec<(String, u64, u64)>,
    /// When the disturbances were.
    pub disturbances: Disturbances,
    /// Checks made while the daemon was down after the SIGKILL.
    pub after_kill: Vec<Verdict>,
    /// `(moment, sample)` for the resource table.
    pub moments: Vec<(String, Option<Sample>)>,
    /// `(segment, resource, verdict)`; `None` when a segment was too short to judge.
    pub trends: Vec<(String, String, Option<Trend>)>,
    /// The end-of-run checks.
    pub end: Vec<Verdict>,
}

fn ms(us: Option<u32>) -> String {
    us.map_or("–".into(), |u| format!("{:.1}", f64::from(u) / 1000.0))
}

fn at(t: Option<f64>) -> String {
    t.map_or("–".into(), |t| format!("{t:.1} s"))
}

impl RunData {
    /// Every reason the run fails, one line each; empty when it passes.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (class, c) in &self.failures {
            if !c.expected {
                out.push(format!("{} × {class}; e.g. {}", c.count, c.examples.join(" | ")));
            }
        }
        for v in self.after_kill.iter().chain(&self.end) {
            if !v.ok {
                out.push(format!("{}: {}", v.check, v.detail));
            }
        }
        for (segment, what, t) in &self.trends {
            if let Some(t) = t
                && !t.flat()
            {
                out.push(format!(
                    "{what} grew during {segment}: median {} → {} (limit {})",
                    t.first, t.last, t.limit
                ));
            }
        }
        out
    }

    /// The markdown report.
    pub fn markdown(&self) -> String {
        let mut m = String::new();
        let problems = self.problems();
        let calls: u64 = self.latencies.values().map(|p| p.calls).sum();
        let _ = writeln!(m, "## imaged soak: {}\n", self.title);
        let verdict = if problems.is_empty() {
            "PASS".to_string()
        } else {
            format!("FAIL ({} problems, listed at the end)", problems.len())
        };
        let _ = writeln!(m, "- **Verdict: {verdict}**");
        let _ = writeln!(
            m,
            "- {calls} calls in {:.0} s: **{:.1} calls/s**",
            self.load_secs,
            calls as f64 / self.load_secs.max(1e-9)
        );
        let d = &self.disturbances;
        let _ = writeln!(
            m,
            "- Disturbances: registry slow {} → {}; registry down {} → {}; SIGKILL at {}, serving again at {}",
            at(d.slow_start),
            at(d.slow_end),
            at(d.outage_start),
            at(d.outage_end),
            at(d.kill_at),
            at(d.restarted_at)
        );
        for v in &self.after_kill {
            let _ = writeln!(m, "- After the SIGKILL: {}: {} ({})", v.check, ok(v.ok), v.detail);
        }

        let _ = writeln!(
            m,
            "\n### Latency per RPC (ms)\n\n\"Under load\" = calls that overlapped no disturbance \
             (slow or absent registry, restart).\n"
        );
        let _ = writeln!(
            m,
            "| RPC | calls | failed | p50 under load | p99 under load | p50 all | p99 all |\n|---|---:|---:|---:|---:|---:|---:|"
        );
        for (rpc, p) in &self.latencies {
            let (mut s, mut a) = (p.steady.clone(), p.all.clone());
            let _ = writeln!(
                m,
                "| {} | {} | {} | {} | {} | {} | {} |",
                rpc.name(),
                p.calls,
                p.failed,
                ms(quantile(&mut s, 0.5)),
                ms(quantile(&mut s, 0.99)),
                ms(quantile(&mut a, 0.5)),
                ms(quantile(&mut a, 0.99))
            );
        }

        let _ = writeln!(m, "\n### Failures by class\n");
        if self.failures.is_empty() {
            let _ = writeln!(m, "None.");
        } else {
            let _ = writeln!(m, "| class | expected | count |\n|---|---|---:|");
            for (class, c) in &self.failures {
                let e = if c.expected { "yes" } else { "**NO**" };
                let _ = writeln!(m, "| {} | {e} | {} |", class.replace('|', "\\|"), c.count);
            }
        }

        let _ = writeln!(m, "\n### Consistency checks during the load\n");
        for (check, n, excused) in &self.checks {
            let _ = writeln!(
                m,
                "- {check}: {n} checks, {excused} found the image changed by a concurrent call (allowed)"
            );
        }

        let _ = writeln!(
            m,
            "\n### Daemon resources\n\n| moment | t | RSS (MiB) | open fds |\n|---|---:|---:|---:|"
        );
        for (moment, s) in &self.moments {
            match s {
                Some(s) => {
                    let _ = writeln!(
                        m,
                        "| {moment} | {:.1} s | {:.1} | {} |",
                        s.at_ms as f64 / 1000.0,
                        s.rss_kib as f64 / 1024.0,
                        s.fds
                    );
                }
                None => {
                    let _ = writeln!(m, "| {moment} | – | – | – |");
                }
            }
        }
        let _ = writeln!(
            m,
            "\nTrend (median of the first third vs the last third of each segment after warm-up, \
             samples during disturbances left out):\n"
        );
        for (segment, what, t) in &self.trends {
            let line = match t {
                Some(t) => format!(
                    "{}: {} → {} (limit {}, {} samples)",
                    ok(t.flat()),
                    t.first,
                    t.last,
                    t.limit,
                    t.samples
                ),
                None => "too few samples to judge".into(),
            };
            let _ = writeln!(m, "- {segment}, {what}: {line}");
        }

        let _ = writeln!(m, "\n### End of run\n");
        for v in &self.end {
            let _ = writeln!(m, "- {}: {} ({})", v.check, ok(v.ok), v.detail);
        }
        if !problems.is_empty() {
            let _ = writeln!(m, "\n### Problems\n");
            for p in &problems {
                let _ = writeln!(m, "- {p}");
            }
        }
        m
    }
}

fn ok(b: bool) -> &'static str {
    if b { "ok" } else { "**FAILED**" }
}
