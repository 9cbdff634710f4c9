//! Pulls in flight and the requests waiting for them.
//!
//! A pull's outcome belongs to the requests that joined it, not to whoever is still there to collect it: when
//! the pull ends, its task takes the list of waiting requests and forgets the pull in the same step (so no
//! request joins a finished pull), then settles every request (stale-if-unavailable, back-off, metrics, the
//! `Pulled`/`Failed` event) whether or not its caller is still connected, and hands each its result. A caller
//! that went away costs nothing and misses nothing: its request is counted and logged once, like any other,
//! in its own span (the task runs outside every caller's, so each request brings its span along).
//!
//! A request joins a pull in flight only while that pull moves: one that has not advanced for
//! [`JOIN_IDLE_LIMIT`] (waiting on a registry that does not answer, say) is left to its own requests, and
//! the new request starts a pull of its own.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::EnsureError;
use super::backoff::{self, Backoff};
use crate::error::{Classify, ErrorKind};
use crate::metadata::ImageRecord;
use crate::metrics::Metrics;
use crate::pull::Progress;

/// How long a pull in flight may have stood still and still be joined. Queueing (for a pull slot, a rate
/// token, a download slot or a layer another pull is building) does not count as standing still. A pull that
/// moves advances many times a second; one idle this long waits on something that may never answer.
pub const JOIN_IDLE_LIMIT: Duration = Duration::from_secs(5);

/// A pull's result, as every request joined to it receives it.
pub(super) type PullResult = Result<Arc<ImageRecord>, EnsureError>;

/// The caller of a pull, for back-off keys and events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caller {
    /// Pod name.
    pub pod: String,
    /// Pod namespace.
    pub namespace: String,
    /// Pod UID (empty if unknown).
    pub uid: String,
}

/// One request waiting for a pull.
pub(super) struct Waiter {
    pub caller: Caller,
    /// The request's span (its RPC's, naming the pod), for what the pull's task logs about it.
    pub span: tracing::Span,
    /// The image as the request named it.
    pub name: String,
    /// The image the tag named when the request came, for `stale_if_unavailable`.
    pub present: Option<Arc<ImageRecord>>,
    pub started: Instant,
    pub tx: oneshot::Sender<PullResult>,
}

impl Waiter {
    /// The request of `caller` for `name` (with the image `present` for it), made now in the current span.
    pub fn new(
        caller: Caller,
        name: String,
        present: Option<Arc<ImageRecord>>,
        tx: oneshot::Sender<PullResult>,
    ) -> Waiter {
        Waiter {
            caller,
            span: tracing::Span::current(),
            name,
            present,
            started: Instant::now(),
            tx,
        }
    }
}

/// What [`Flights::join_or_start`] did.
pub(super) enum Joined {
    /// The request joined the pull with this progress.
    Joined(Arc<Progress>),
    /// The request started this pull: the caller runs it and calls [`Flights::finish`].
    Started(Arc<InFlight>),
}

/// One pull in flight.
pub(super) struct InFlight {
    pub progress: Arc<Progress>,
    /// The requests waiting for it; `None` once it has ended.
    waiters: Mutex<Option<Vec<Waiter>>>,
}

/// What the pulls in flight share with the ensure logic: the table of pulls, the back-off, the metrics.
pub(super) struct Flights {
    inflight: Mutex<HashMap<String, Arc<InFlight>>>,
    pub backoff: Mutex<Backoff>,
    pub metrics: Arc<Metrics>,
    pub stale_if_unavailable: bool,
}

impl Flights {
    pub fn new(backoff: Backoff, metrics: Arc<Metrics>, stale_if_unavailable: bool) -> Flights {
        Flights {
            inflight: Mutex::new(HashMap::new()),
            backoff: Mutex::new(backoff),
            metrics,
            stale_if_unavailable,
        }
    }

    /// Adds `waiter` to the pull of `key` if one is in flight and moving, else registers a new pull with it
    /// (replacing one that stands still), in one step so that concurrent requests start one pull, not two.
    pub fn join_or_start(&self, key: &str, waiter: Waiter) -> Joined {
        let mut map = self.lock();
        if let Some(flight) = map.get(key) {
            let idle = flight.progress.idle();
            let mut waiters = flight.waiters.lock().unwrap_or_else(|p| p.into_inner());
            match waiters.as_mut() {
                Some(w) if idle < JOIN_IDLE_LIMIT => {
                    w.push(waiter);
                    self.metrics.coalesced_pulls.inc();
                    return Joined::Joined(flight.progress.clone());
                }
                Some(_) => {
                    tracing::info!(image = %waiter.name, idle = ?idle, "not joining a pull that stands still: starting another");
                }
                None => {} // Ending right now: its result was settled without this request.
            }
        }
        let flight = Arc::new(InFlight {
            progress: Arc::new(Progress::default()),
            waiters: Mutex::new(Some(vec![waiter])),
        });
        map.insert(key.to_string(), flight.clone());
        Joined::Started(flight)
    }

    /// Ends the pull `flight` of `key` with `result`: forgets it, then settles and answers every request
    /// that waited for it.
    pub fn finish(&self, key: &str, flight: &Arc<InFlight>, result: PullResult) {
        let waiters = {
            let mut map = self.lock();
            if map.get(key).is_some_and(|f| Arc::ptr_eq(f, flight)) {
                map.remove(key);
            }
            // Under the table's lock, which joiners hold: nobody joins after this.
            flight.waiters.lock().unwrap_or_else(|p| p.into_inner()).take()
        };
        for w in waiters.unwrap_or_default() {
            let r = self.settle(&w, result.clone());
            let _ = w.tx.send(r); // A caller that went away has been counted all the same.
        }
    }

    /// One request's outcome: the stale image when allowed, the back-off, the metrics and the event.
    fn settle(&self, w: &Waiter, result: PullResult) -> PullResult {
        let (name, c) = (&w.name, &w.caller);
        let result = match (result, &w.present) {
            (Err(e), Some(rec)) if self.stale_if_unavailable && e.kind() == ErrorKind::Unavailable => {
                tracing::warn!(parent: &w.span, image = %name, error = %e, "registry unavailable: serving the image present in the store (pull.stale_if_unavailable)");
                Ok(rec.clone())
            }
            (r, _) => r,
        };
        self.record_outcome(c, name, &result);
        match &result {
            Ok(rec) => {
                self.metrics.pull_result("success");
                tracing::info!(parent: &w.span, reason = "Pulled", image = %name, id = %rec.id, size = rec.size(), seconds = w.started.elapsed().as_secs_f64(), "Successfully pulled image");
            }
            Err(e) => {
                self.metrics.pull_result("failure");
                tracing::warn!(parent: &w.span, reason = "Failed", kubelet_reason = %e.reason(), image = %name, error = %e, "Failed to pull image");
            }
        }
        result
    }

    /// Back-off follows the registry and the image, never a local conflict ([`EnsureError::arms_backoff`]).
    fn record_outcome(&self, caller: &Caller, name: &str, result: &PullResult) {
        let key = backoff::key(&caller.uid, name);
        let mut b = self.backoff.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(_) => b.succeeded(&key),
            // Stored as kubelet stores it, so the back-off message reads like kubelet's.
            Err(e) if e.arms_backoff() => b.failed(&key, Instant::now(), e.reason().on_message(e)),
            Err(_) => {}
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<InFlight>>> {
        self.inflight.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
#[path = "flight_tests.rs"]
mod tests;
