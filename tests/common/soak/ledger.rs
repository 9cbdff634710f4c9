//! Which removals and pulls could have touched an image during a given interval: what decides whether a
//! client's observation ("the image I just pulled is gone") is a bug or a legitimate interleaving.
//!
//! Every call is an interval `[issued, answered]` as its client saw it, and may take effect anywhere inside
//! it. A `PullImage` promises more (issue 12): the image is present when it answers, recorded again if a
//! removal took it meanwhile. So after a pull answered at `A`, a check answered at `C` may find the image
//! gone only if some removal that can remove it (a `RemoveImage` of any of its tags, a GC, a prune) acted
//! after the pull's answer left the daemon, i.e. was issued before `C` and answered after that moment.
//! "A removal issued after the pull answered" is too strict a rule: a removal issued before `A` that
//! answers after it (it looked the image up, then removed it) may also act after it.
//!
//! The moment the answer left the daemon is not `A`: answers reach the clients late on a loaded machine.
//! Seen on 2 cores: the daemon logged a pull's success, a GC removed the image 10 ms later and answered
//! its client, and only then, 14 ms after the daemon's log line, did the pull's answer reach its client.
//! [`DELIVERY_SLACK`] bounds that delay; a removal that answered more than that before `A` never excuses a
//! missing image.
//!
//! The other way round, a `RemoveImage` answered Ok may be followed by the image being present only if a
//! pull of it may have acted after the removal did. The removal acts somewhere in `[issued, answered]` (it
//! finds the image, or finds it absent, then answers), so a pull that answered after the removal was
//! issued may have recorded the image after it: the removal is checked as linearizable, not as "gone at the
//! moment it answered". No slack is needed: a pull its client saw answer before the removal was issued
//! had answered in the daemon before that too.
//!
//! Times are seconds since the run's start ([`Clock`]).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// How late an answer may reach its client after it left the daemon (seconds): 70 times the delay seen on
/// a loaded 2-core machine, so that the check stays sound there, yet still catches a pull that answers
/// success long after a removal took its image without recording it again.
pub const DELIVERY_SLACK: f64 = 1.0;

/// Seconds since the start of the run.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    start: Instant,
    wall: std::time::SystemTime,
}

impl Clock {
    /// A clock starting now.
    pub fn new() -> Clock {
        Clock {
            start: Instant::now(),
            wall: std::time::SystemTime::now(),
        }
    }

    /// The start as Unix time in seconds (to match `t` with the daemon's log timestamps).
    pub fn start_unix(&self) -> f64 {
        self.wall
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64())
    }

    /// Seconds since the start.
    pub fn now(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

/// What an operation can act on: one image id, or every image (GC and prune); pulls are also counted per
/// form of an image (its manifest digest: the gzip, zstd, Docker and plain tags of one id differ by it).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    /// One image id.
    Id(String),
    /// One form of an image: pulls of tags whose manifest has this digest.
    Form(String),
    /// Any image.
    All,
}

/// The removals or the pulls of one scope: the ones in flight, and the latest answer.
#[derive(Debug, Default)]
struct Track {
    /// Issue times of the calls in flight, by token.
    in_flight: HashMap<u64, f64>,
    /// The latest answer time (`-inf` before the first).
    last_answered: Option<f64>,
}

impl Track {
    /// Whether a call of this track may have taken effect in `(after, before)`: issued before `before` and
    /// not answered by `after`.
    fn active_in(&self, after: f64, before: f64) -> bool {
        self.last_answered.is_some_and(|a| a > after) || self.in_flight.values().any(|&issued| issued < before)
    }
}

/// The kind of operation a [`Ticket`] stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Something that removes images.
    Removal,
    /// A pull (it may record the image, or record it again).
    Pull,
}

/// One operation in flight; give it back to [`Ledger::end`].
#[derive(Debug)]
pub struct Ticket {
    kind: Kind,
    scope: Scope,
    token: u64,
}

/// Removals and pulls in flight and answered, per image id.
#[derive(Debug, Default)]
pub struct Ledger {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    next: u64,
    tracks: HashMap<(Kind, Scope), Track>,
}

impl Ledger {
    /// An empty ledger.
    pub fn new() -> Ledger {
        Ledger::default()
    }

    /// Records that an operation of `kind` on `scope` is issued at `now`.
    pub fn begin(&self, kind: Kind, scope: Scope, now: f64) -> Ticket {
        let mut s = self.state.lock().unwrap();
        s.next += 1;
        let token = s.next;
        s.tracks
            .entry((kind, scope.clone()))
            .or_default()
            .in_flight
            .insert(token, now);
        Ticket { kind, scope, token }
    }

    /// Records that the operation answered (successfully or not) at `now`.
    pub fn end(&self, ticket: Ticket, now: f64) {
        let mut s = self.state.lock().unwrap();
        let t = s.tracks.entry((ticket.kind, ticket.scope)).or_default();
        t.in_flight.remove(&ticket.token);
        t.last_answered = Some(t.last_answered.map_or(now, |a| a.max(now)));
    }

    /// Whether an operation of `kind` that acts on image `id` (for removals: also a GC or prune) may have
    /// taken effect between `after` and `before`.
    pub fn may_have_acted(&self, kind: Kind, id: &str, after: f64, before: f64) -> bool {
        let s = self.state.lock().unwrap();
        let active = |scope: Scope| s.tracks.get(&(kind, scope)).is_some_and(|t| t.active_in(after, before));
        active(Scope::Id(id.to_string())) || (kind == Kind::Removal && active(Scope::All))
    }

    /// Whether a pull of the form with manifest digest `manifest` may have taken effect between `after`
    /// and `before`.
    pub fn form_pull_may_have_acted(&self, manifest: &str, after: f64, before: f64) -> bool {
        let s = self.state.lock().unwrap();
        s.tracks
            .get(&(Kind::Pull, Scope::Form(manifest.to_string())))
            .is_some_and(|t| t.active_in(after, before))
    }
}
