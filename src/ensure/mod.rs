//! kubelet's image manager (`EnsureImageExists`) inside the server, so every client gets it.
//!
//! # Design note
//!
//! A PullImage request goes through, in order:
//! 1. the **pull policy** of its image (`never`, `if-not-present`, `always`): a present image may be
//!    answered without any registry request, an absent one under `never` fails with `ErrImageNeverPull`;
//! 2. the **back-off** of its key (pod UID + image): after a failure, requests fail at once with
//!    `ImagePullBackOff` until the delay (10 s doubling to 5 min) has passed;
//! 3. **coalescing**: requests for the same image with the same credentials join the pull in flight, which
//!    runs in its own task, so a caller that goes away does not cancel it for the others;
//! 4. the **limits**, inside that task: a pull slot (`max_parallel_pulls`, first come first served) and a
//!    rate-limit token that is waited for, up to a bound, rather than failing at once;
//! 5. the pull itself under a **progress watchdog**: when no byte moves for `progress_timeout`, it is
//!    cancelled (its partial work is discarded by the puller's cleanup).
//!
//! Every request logs kubelet's events (`Pulling`, `Pulled`, `Failed`, `BackOff`) with the pod, and the
//! outcome is counted in the metrics.

pub mod backoff;
mod error;
pub mod limits;
pub mod policy;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

pub use error::EnsureError;

use crate::error::Classify;
use crate::metadata::ImageRecord;
use crate::metrics::Metrics;
use crate::pull::{LayerState, Progress, Puller};
use crate::reference::ImageRef;
use crate::registry::auth::Credentials;
use backoff::{Backoff, BackoffPolicy};
use limits::{PullSlots, RateLimiter};
use policy::{Decision, PolicySet};

/// How the ensure logic is set up.
#[derive(Debug, Clone)]
pub struct EnsureOptions {
    /// Pulls at once (0 = unlimited).
    pub max_parallel_pulls: usize,
    /// The rate limiter of pull starts.
    pub qps: f64,
    /// Its bucket size.
    pub burst: u32,
    /// Longest wait for a token.
    pub max_qps_wait: Duration,
    /// Back-off delays.
    pub backoff: BackoffPolicy,
    /// Cancel a pull idle this long.
    pub progress_timeout: Option<Duration>,
    /// Serve a present tag when its registry is unreachable.
    pub stale_if_unavailable: bool,
    /// Pull policy per image.
    pub policy: PolicySet,
}

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

type Outcome = Option<Result<Arc<ImageRecord>, EnsureError>>;

/// One pull in flight, shared by the requests that joined it.
struct InFlight {
    progress: Arc<Progress>,
    done: watch::Receiver<Outcome>,
}

/// The ensure logic over a [`Puller`].
pub struct Ensurer {
    puller: Arc<Puller>,
    options: EnsureOptions,
    inflight: Mutex<HashMap<String, Arc<InFlight>>>,
    backoff: Mutex<Backoff>,
    slots: PullSlots,
    rate: Arc<RateLimiter>,
    metrics: Arc<Metrics>,
    events: Arc<dyn crate::events::ImageEvents>,
}

/// A request on its way: [`Ticket::progress`] while waiting, [`Ticket::finish`] for the result.
pub struct Ticket<'a> {
    ensurer: &'a Ensurer,
    image: ImageRef,
    caller: Caller,
    state: TicketState,
}

enum TicketState {
    Done(Result<Arc<ImageRecord>, EnsureError>),
    Waiting {
        flight: Arc<InFlight>,
        present: Option<Arc<ImageRecord>>,
        started: Instant,
    },
}

impl Ensurer {
    /// The ensure logic with `options`, pulling through `puller`.
    /// Successful answers are announced to `events` (bridges) before they are returned.
    pub fn new(
        puller: Arc<Puller>,
        options: EnsureOptions,
        metrics: Arc<Metrics>,
        events: Arc<dyn crate::events::ImageEvents>,
    ) -> Result<Ensurer, EnsureError> {
        let bucket = limits::TokenBucket::new(options.qps, options.burst, options.max_qps_wait)?;
        Ok(Ensurer {
            puller,
            slots: PullSlots::new(options.max_parallel_pulls),
            rate: Arc::new(RateLimiter::new(bucket)),
            backoff: Mutex::new(Backoff::new(options.backoff)),
            options,
            inflight: Mutex::new(HashMap::new()),
            metrics,
            events,
        })
    }

    /// Ensures `image` is present, pulling it as policy, back-off and limits allow.
    pub async fn ensure(
        &self,
        image: ImageRef,
        creds: Option<Credentials>,
        caller: Caller,
    ) -> Result<Arc<ImageRecord>, EnsureError> {
        self.begin(image, creds, caller).finish().await
    }

    /// Starts a request: decides at once when it can, else joins or starts the pull.
    pub fn begin(&self, image: ImageRef, creds: Option<Credentials>, caller: Caller) -> Ticket<'_> {
        let name = image.to_string();
        let present = self.present(&image);
        let decision = policy::decide(
            self.options.policy.for_image(&name),
            present.is_some(),
            image.digest().is_some(),
        );
        let state = match (decision, &present) {
            (Decision::UseLocal, Some(rec)) => {
                self.metrics.pull_result("present");
                self.puller.stores().metadata.touch(&rec.id, crate::service::now_ns());
                TicketState::Done(Ok(rec.clone()))
            }
            (Decision::NeverPullError, _) => {
                self.metrics.pull_result("never");
                TicketState::Done(Err(EnsureError::NeverPull(policy::never_pull_message(&name))))
            }
            _ => match self.check_backoff(&caller, &name) {
                Some(err) => TicketState::Done(Err(err)),
                None => {
                    tracing::info!(reason = "Pulling", image = %name, pod = %caller.pod, namespace = %caller.namespace, pod_uid = %caller.uid, "Pulling image");
                    TicketState::Waiting {
                        flight: self.join(&image, creds),
                        present,
                        started: Instant::now(),
                    }
                }
            },
        };
        Ticket {
            ensurer: self,
            image,
            caller,
            state,
        }
    }

    fn present(&self, image: &ImageRef) -> Option<Arc<ImageRecord>> {
        let m = &self.puller.stores().metadata;
        match image.digest() {
            Some(d) => m.by_repo_digest(&image.with_digest(d)),
            None => image.tagged().and_then(|t| m.by_tag(&t)),
        }
    }

    fn check_backoff(&self, caller: &Caller, name: &str) -> Option<EnsureError> {
        let key = backoff::key(&caller.uid, name);
        let mut b = self.backoff.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        b.gc(now);
        let off = b.check(&key, now)?;
        self.metrics.backoffs.inc();
        self.metrics.pull_result("backoff");
        let message = backoff::backoff_message(name, &off.last_error);
        tracing::warn!(reason = "BackOff", image = %name, pod = %caller.pod, namespace = %caller.namespace, pod_uid = %caller.uid, remaining = ?off.remaining, "{message}");
        Some(EnsureError::BackOff {
            message,
            remaining: off.remaining,
        })
    }

    /// Joins the pull of `image` with these credentials, starting it if none is in flight.
    fn join(&self, image: &ImageRef, creds: Option<Credentials>) -> Arc<InFlight> {
        let key = format!(
            "{image}|{}",
            creds
                .as_ref()
                .map_or_else(|| "anonymous".into(), Credentials::fingerprint)
        );
        let mut inflight = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = inflight.get(&key) {
            self.metrics.coalesced_pulls.inc();
            return f.clone();
        }
        let (tx, rx) = watch::channel(None);
        let flight = Arc::new(InFlight {
            progress: Arc::new(Progress::default()),
            done: rx,
        });
        inflight.insert(key.clone(), flight.clone());
        let task = PullTask {
            puller: self.puller.clone(),
            slots: self.slots.clone(),
            rate: self.rate.clone(),
            metrics: self.metrics.clone(),
            timeout: self.options.progress_timeout,
            progress: flight.progress.clone(),
        };
        let image = image.clone();
        tokio::spawn(async move {
            let result = task.run(&image, creds).await;
            let _ = tx.send(Some(result));
        });
        flight
    }

    fn forget(&self, flight: &Arc<InFlight>) {
        let mut inflight = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        inflight.retain(|_, f| !Arc::ptr_eq(f, flight));
    }

    fn record_outcome(&self, caller: &Caller, name: &str, result: &Result<Arc<ImageRecord>, EnsureError>) {
        let key = backoff::key(&caller.uid, name);
        let mut b = self.backoff.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(_) => b.succeeded(&key),
            Err(EnsureError::BackOff { .. }) => {}
            // Stored as kubelet stores it, so the back-off message reads like kubelet's.
            Err(e) => b.failed(&key, Instant::now(), format!("{}: {e}", e.reason())),
        }
    }
}

impl Ticket<'_> {
    /// The pull's live progress, when a pull is in flight for this request.
    pub fn progress(&self) -> Option<Arc<Progress>> {
        match &self.state {
            TicketState::Waiting { flight, .. } => Some(flight.progress.clone()),
            TicketState::Done(_) => None,
        }
    }

    /// Waits for the result.
    pub async fn finish(self) -> Result<Arc<ImageRecord>, EnsureError> {
        let (flight, present, started) = match self.state {
            TicketState::Done(r) => {
                if let Ok(rec) = &r {
                    self.ensurer.events.recorded(rec).await;
                }
                return r;
            }
            TicketState::Waiting {
                flight,
                present,
                started,
            } => (flight, present, started),
        };
        let mut rx = flight.done.clone();
        let result = loop {
            if let Some(r) = rx.borrow_and_update().clone() {
                break r;
            }
            if rx.changed().await.is_err() {
                break Err(EnsureError::Pull(Arc::new(crate::pull::PullError::Interrupted)));
            }
        };
        self.ensurer.forget(&flight);
        let name = self.image.to_string();
        let c = &self.caller;
        let result = match (result, present) {
            (Err(e), Some(rec))
                if self.ensurer.options.stale_if_unavailable && e.kind() == crate::error::ErrorKind::Unavailable =>
            {
                tracing::warn!(image = %name, error = %e, "registry unavailable: serving the image present in the store (pull.stale_if_unavailable)");
                Ok(rec)
            }
            (r, _) => r,
        };
        self.ensurer.record_outcome(c, &name, &result);
        if let Ok(rec) = &result {
            // The runtimes see the image before the caller hears of it (kubelet's next call creates a
            // container from it).
            self.ensurer.events.recorded(rec).await;
        }
        match &result {
            Ok(rec) => {
                self.ensurer.metrics.pull_result("success");
                tracing::info!(reason = "Pulled", image = %name, id = %rec.id, size = rec.size(), seconds = started.elapsed().as_secs_f64(), pod = %c.pod, namespace = %c.namespace, pod_uid = %c.uid, "Successfully pulled image");
            }
            Err(e) => {
                self.ensurer.metrics.pull_result("failure");
                tracing::warn!(reason = "Failed", kubelet_reason = %e.reason(), image = %name, pod = %c.pod, namespace = %c.namespace, pod_uid = %c.uid, error = %e, "Failed to pull image");
            }
        }
        result
    }
}

/// The pull task: limits, then the pull under its watchdog.
struct PullTask {
    puller: Arc<Puller>,
    slots: PullSlots,
    rate: Arc<RateLimiter>,
    metrics: Arc<Metrics>,
    timeout: Option<Duration>,
    progress: Arc<Progress>,
}

impl PullTask {
    async fn run(self, image: &ImageRef, creds: Option<Credentials>) -> Result<Arc<ImageRecord>, EnsureError> {
        let queued = Instant::now();
        let _slot = self.slots.acquire().await;
        self.rate.wait().await?;
        self.metrics.queue_wait.observe(queued.elapsed().as_secs_f64());
        self.metrics.pulls_in_progress.inc();
        let started = Instant::now();
        self.progress.advance();
        let pull = self.puller.pull(image, creds, &self.progress);
        let result = match self.timeout {
            None => pull.await.map_err(|e| EnsureError::Pull(Arc::new(e))),
            Some(timeout) => watchdog(pull, &self.progress, timeout, image).await,
        };
        self.metrics.pulls_in_progress.dec();
        self.metrics.pull_duration.observe(started.elapsed().as_secs_f64());
        self.metrics.pulled_bytes.inc_by(self.progress.downloaded());
        let skipped: u64 = self
            .progress
            .view()
            .layers
            .iter()
            .filter(|l| l.state == LayerState::Present)
            .map(|l| l.total)
            .sum();
        self.metrics.skipped_bytes.inc_by(skipped);
        result
    }
}

/// Runs `pull`, cancelling it (by dropping it) when `progress` has not advanced for `timeout`.
async fn watchdog<F>(
    pull: F,
    progress: &Progress,
    timeout: Duration,
    image: &ImageRef,
) -> Result<Arc<ImageRecord>, EnsureError>
where
    F: std::future::Future<Output = Result<Arc<ImageRecord>, crate::pull::PullError>>,
{
    tokio::pin!(pull);
    let mut tick = tokio::time::interval((timeout / 10).clamp(Duration::from_millis(50), Duration::from_secs(1)));
    loop {
        tokio::select! {
            r = &mut pull => return r.map_err(|e| EnsureError::Pull(Arc::new(e))),
            _ = tick.tick() => {
                let idle = progress.idle();
                if idle >= timeout {
                    return Err(EnsureError::Stalled { image: image.to_string(), idle, timeout });
                }
            }
        }
    }
}
