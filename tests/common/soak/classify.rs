//! Sorting failed calls into classes: the few a soak expects (each only where its cause was present) and
//! everything else, which is a finding.

use std::sync::Mutex;

use tonic::Code;

use super::ledger::{Kind, Ledger};

/// The RPCs the clients issue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Rpc {
    /// `PullImage`.
    Pull,
    /// `RemoveImage`.
    Remove,
    /// `ImageStatus` (plain or verbose).
    Status,
    /// `ListImages`.
    List,
    /// `ImageFsInfo`.
    FsInfo,
    /// `imaged.v1.Images/GarbageCollect`.
    Gc,
    /// `imaged.v1.Images/Prune`.
    Prune,
}

impl Rpc {
    /// Every RPC, in report order.
    pub const ALL: [Rpc; 7] = [
        Rpc::Pull,
        Rpc::Remove,
        Rpc::Status,
        Rpc::List,
        Rpc::FsInfo,
        Rpc::Gc,
        Rpc::Prune,
    ];

    /// The RPC's name.
    pub fn name(self) -> &'static str {
        match self {
            Rpc::Pull => "PullImage",
            Rpc::Remove => "RemoveImage",
            Rpc::Status => "ImageStatus",
            Rpc::List => "ListImages",
            Rpc::FsInfo => "ImageFsInfo",
            Rpc::Gc => "GarbageCollect",
            Rpc::Prune => "Prune",
        }
    }
}

/// When the run's disturbances happened (seconds since the start); `None` = not (yet) begun or ended.
#[derive(Clone, Copy, Debug, Default)]
pub struct Disturbances {
    /// The registry became slow.
    pub slow_start: Option<f64>,
    /// It is fast again.
    pub slow_end: Option<f64>,
    /// The registry stopped answering.
    pub outage_start: Option<f64>,
    /// It answers again.
    pub outage_end: Option<f64>,
    /// The daemon got SIGKILL.
    pub kill_at: Option<f64>,
    /// The restarted daemon answers.
    pub restarted_at: Option<f64>,
}

impl Disturbances {
    /// Whether a call in `[issued, answered]` ran undisturbed: it overlapped neither the slow registry, nor
    /// the outage (and its tail), nor the restart.
    pub fn steady(&self, issued: f64, answered: f64) -> bool {
        let overlaps = |start: Option<f64>, end: Option<f64>, tail: f64| {
            start.is_some_and(|s| answered >= s && end.is_none_or(|e| issued <= e + tail))
        };
        !overlaps(self.slow_start, self.slow_end, 0.0)
            && !overlaps(self.outage_start, self.outage_end, OUTAGE_TAIL_SECS)
            && !overlaps(self.kill_at, self.restarted_at, 0.0)
    }
}

/// How long after the outage ended an outage error may still arrive: a pull issued just after the end can
/// join (coalesce with) one that failed during it, and a pull's failing request may have been sent just
/// before the end and answered late on a loaded machine.
pub const OUTAGE_TAIL_SECS: f64 = 15.0;

/// A failed call, as the classifier sees it.
#[derive(Clone, Debug)]
pub struct Failure<'a> {
    /// Which RPC.
    pub rpc: Rpc,
    /// The image id it was about, if any.
    pub id: Option<&'a str>,
    /// When it was issued.
    pub issued: f64,
    /// When it answered.
    pub answered: f64,
    /// The status code.
    pub code: Code,
    /// The status message.
    pub message: &'a str,
}

/// A class of failures and whether the soak expects it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Class {
    /// A short, stable name (digests and ports stripped).
    pub name: String,
    /// Whether the run expects this class (a cause it created explains it).
    pub expected: bool,
}

impl Class {
    fn expected(name: &str) -> Class {
        Class {
            name: name.to_string(),
            expected: true,
        }
    }
}

/// Classifies `f` given the run's disturbances and what removals were in flight.
pub fn classify(f: &Failure<'_>, d: &Disturbances, ledger: &Ledger) -> Class {
    if d.kill_at
        .is_some_and(|k| f.answered >= k && d.restarted_at.is_none_or(|r| f.issued <= r))
    {
        return Class::expected("cut by the SIGKILL (in flight, or issued as it came)");
    }
    let outage = d.outage_start.is_some_and(|s| {
        let end = d.outage_end.map_or(f64::INFINITY, |e| e + OUTAGE_TAIL_SECS);
        f.issued <= end && f.answered >= s
    });
    // A registry outage is RegistryUnavailable at the front, code UNKNOWN (as kubelet reads it), and so is
    // the back-off it arms.
    if f.rpc == Rpc::Pull
        && f.code == Code::Unknown
        && f.message.starts_with("RegistryUnavailable: Back-off pulling image")
        && d.outage_start.is_some()
    {
        return Class::expected("back-off armed by the registry outage");
    }
    if f.rpc == Rpc::Pull && f.code == Code::Unknown && f.message.starts_with("RegistryUnavailable:") && outage {
        return Class::expected("registry outage: RegistryUnavailable");
    }
    if f.rpc == Rpc::Status
        && f.code == Code::NotFound
        && f.id
            .is_some_and(|id| ledger.may_have_acted(Kind::Removal, id, f.issued, f.answered))
    {
        return Class::expected("removed image is not found (ImageStatus racing a removal)");
    }
    Class {
        name: format!("{} {:?}: {}", f.rpc.name(), f.code, normalize(f.message)),
        expected: false,
    }
}

/// A message with digests, ports and numbers replaced, so failures of one kind share one class name.
pub fn normalize(message: &str) -> String {
    let mut out = String::new();
    let mut rest = message;
    while let Some(c) = rest.chars().next() {
        if let Some(tail) = rest.strip_prefix("sha256:") {
            let hex = tail.chars().take_while(char::is_ascii_hexdigit).count();
            out.push_str("sha256:…");
            rest = &tail[hex..];
        } else if c.is_ascii_digit() && !out.chars().last().is_some_and(|p| p.is_ascii_alphanumeric()) {
            let n = rest.chars().take_while(|c| c.is_ascii_digit() || *c == '.').count();
            out.push('N');
            rest = &rest[n..];
        } else {
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    out.chars().take(160).collect()
}

/// The failures of a run: counts by class, with the first few occurrences of each unexpected class.
#[derive(Debug, Default)]
pub struct Failures {
    inner: Mutex<std::collections::BTreeMap<String, ClassCount>>,
}

/// The failures of one class.
#[derive(Clone, Debug, Default)]
pub struct ClassCount {
    /// Whether the class is expected.
    pub expected: bool,
    /// How many.
    pub count: u64,
    /// The first few, in full (`t=… client … rpc …: message`).
    pub examples: Vec<String>,
}

/// How many occurrences of a class are kept in full.
const EXAMPLES: usize = 3;

impl Failures {
    /// Counts one failure of `class`; `detail` describes it in full.
    pub fn add(&self, class: &Class, detail: String) {
        let mut m = self.inner.lock().unwrap();
        let c = m.entry(class.name.clone()).or_default();
        c.expected = class.expected;
        c.count += 1;
        if c.examples.len() < EXAMPLES {
            c.examples.push(detail);
        }
    }

    /// Every class with its count.
    pub fn snapshot(&self) -> std::collections::BTreeMap<String, ClassCount> {
        self.inner.lock().unwrap().clone()
    }

    /// How many failures of unexpected classes.
    pub fn unexpected(&self) -> u64 {
        self.inner
            .lock()
            .unwrap()
            .values()
            .filter(|c| !c.expected)
            .map(|c| c.count)
            .sum()
    }
}
