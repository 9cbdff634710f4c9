//! kubelet's image manager (`EnsureImageExists`) inside the server, so every client gets it.
//!
//! # Design note
//!
//! A PullImage request goes through, in order:
//! 1. the **pull policy** of its image (`never`, `if-not-present`, `always`): a present image may be
//!    answered without any registry request, an absent one under `never` fails with `ErrImageNeverPull`;
//!    before a present image answers, **credential verification** ([`verify`], kubelet's KEP-2535) decides
//!    whether the request's credentials must first be confirmed by the registry (one manifest request, run
//!    like a pull through the steps below);
//! 2. the **back-off** of its key (pod UID + image): after a failure, requests fail at once with
//!    `ImagePullBackOff` until the delay (10 s doubling to 5 min) has passed;
//! 3. **coalescing**: requests for the same image with the same credentials join the pull in flight, which
//!    runs in its own task, so a caller that goes away does not cancel it for the others; the task answers
//!    every request that joined (counted and logged even if its caller left) and forgets the pull when it
//!    ends, and a pull that stands still is not joined (see [`flight`]);
//! 4. the **limits**, inside that task: a pull slot (`max_parallel_pulls`, first come first served) and a
//!    rate-limit token that is waited for, up to a bound, rather than failing at once;
//! 5. the pull itself under a **progress watchdog**: when no byte moves for `progress_timeout`, it is
//!    cancelled (its partial work is discarded by the puller's cleanup).
//!
//! Every request logs kubelet's events (`Pulling`, `Pulled`, `Failed`, `BackOff`) in its span (the RPC's,
//! which names the pod), and the outcome is counted in the metrics. Only failures of the registry or of the image arm the back-off; a local
//! one (a disk error, a cancelled pull, the local rate limit) does not ([`EnsureError::arms_backoff`]).

pub mod backoff;
mod error;
mod flight;
pub mod limits;
pub mod policy;
pub mod verify;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

pub use error::EnsureError;
pub use flight::{Caller, JOIN_IDLE_LIMIT};

use crate::error::Reason;
use crate::metadata::{Grant, ImageRecord};
use crate::metrics::Metrics;
use crate::pull::{LayerState, Progress, Puller};
use crate::reference::ImageRef;
use crate::registry::auth::Credentials;
use backoff::{Backoff, BackoffPolicy};
use flight::{Flights, Joined, PullResult, Waiter};
use limits::{PullSlots, RateLimiter};
use policy::{Decision, PolicySet, PullPolicy};
use verify::{Check, Verifier};

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

/// The ensure logic over a [`Puller`].
pub struct Ensurer {
    puller: Arc<Puller>,
    /// The image records, read to answer from the store and touched when an image is used.
    metadata: Arc<crate::metadata::MetadataStore>,
    options: EnsureOptions,
    flights: Arc<Flights>,
    slots: PullSlots,
    rate: Arc<RateLimiter>,
    metrics: Arc<Metrics>,
    events: Arc<dyn crate::events::ImageEvents>,
    verifier: Arc<Verifier>,
}

/// A request on its way: [`Ticket::progress`] while waiting, [`Ticket::finish`] for the result.
pub struct Ticket<'a> {
    state: TicketState,
    ensurer: &'a Ensurer,
}

enum TicketState {
    Done(PullResult),
    Waiting {
        progress: Arc<Progress>,
        result: oneshot::Receiver<PullResult>,
    },
}

impl Ensurer {
    /// The ensure logic with `options`, pulling through `puller` and verifying credentials with `verifier`.
    /// Successful answers are announced to `events` (bridges) before they are returned.
    pub fn new(
        puller: Arc<Puller>,
        metadata: Arc<crate::metadata::MetadataStore>,
        options: EnsureOptions,
        metrics: Arc<Metrics>,
        events: Arc<dyn crate::events::ImageEvents>,
        verifier: Verifier,
    ) -> Result<Ensurer, EnsureError> {
        let bucket = limits::TokenBucket::new(options.qps, options.burst, options.max_qps_wait)?;
        Ok(Ensurer {
            puller,
            metadata,
            slots: PullSlots::new(options.max_parallel_pulls),
            rate: Arc::new(RateLimiter::new(bucket)),
            flights: Arc::new(Flights::new(
                Backoff::new(options.backoff),
                metrics.clone(),
                options.stale_if_unavailable,
            )),
            options,
            metrics,
            events,
            verifier: Arc::new(verifier),
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

    /// Starts a request: decides at once when it can, else joins or starts the pull (or the verification).
    pub fn begin(&self, image: ImageRef, creds: Option<Credentials>, caller: Caller) -> Ticket<'_> {
        let name = image.to_string();
        let present = self.present(&image);
        let pull_policy = self.options.policy.for_image(&name);
        let decision = policy::decide(pull_policy, present.is_some(), image.digest().is_some());
        // May the store answer these credentials with the image it holds (KEP-2535)?
        let check = present
            .as_ref()
            .map(|rec| self.verifier.check(rec, &image, creds.as_ref()));
        let state = match (decision, present, check) {
            (Decision::UseLocal, Some(rec), Some(Check::Local)) => {
                self.metrics.pull_result("present");
                self.metadata.touch(&rec.id, crate::clock::now_ns());
                TicketState::Done(Ok(rec))
            }
            (Decision::UseLocal, _, Some(Check::Verify(_))) if pull_policy == PullPolicy::Never => {
                self.metrics.pull_result("never");
                TicketState::Done(Err(EnsureError::NeverVerifiable {
                    image: name,
                    policy: self.verifier.policy(),
                }))
            }
            (Decision::UseLocal, _, Some(Check::Verify(target))) => self.start(caller, name, None, "verify", |w| {
                self.join_verify(&image, creds, target, w)
            }),
            (Decision::NeverPullError, _, _) => {
                self.metrics.pull_result("never");
                TicketState::Done(Err(EnsureError::NeverPull(policy::never_pull_message(&name))))
            }
            (_, present, check) => {
                // Served stale only to requests the store could have answered anyway.
                let stale = present.filter(|_| matches!(check, Some(Check::Local)));
                let grant = self.verifier.grant_for(&image, creds.as_ref());
                self.start(caller, name, stale, "pull", |w| self.join(&image, creds, grant, w))
            }
        };
        Ticket { state, ensurer: self }
    }

    /// Past the back-off, hands a new waiter to `join` (which joins or starts the `work` it waits for: a
    /// pull or a verification).
    fn start(
        &self,
        caller: Caller,
        name: String,
        present: Option<Arc<ImageRecord>>,
        work: &'static str,
        join: impl FnOnce(Waiter) -> Arc<Progress>,
    ) -> TicketState {
        if let Some(err) = self.check_backoff(&caller, &name) {
            return TicketState::Done(Err(err));
        }
        tracing::info!(reason = "Pulling", image = %name, work, "Pulling image");
        let (tx, rx) = oneshot::channel();
        let waiter = Waiter::new(caller, name, present, tx);
        TicketState::Waiting {
            progress: join(waiter),
            result: rx,
        }
    }

    fn present(&self, image: &ImageRef) -> Option<Arc<ImageRecord>> {
        let m = &self.metadata;
        match image.digest() {
            Some(d) => m.by_repo_digest(&image.with_digest(d)),
            None => image.tagged().and_then(|t| m.by_tag(&t)),
        }
    }

    fn check_backoff(&self, caller: &Caller, name: &str) -> Option<EnsureError> {
        let key = backoff::key(&caller.uid, name);
        let mut b = self.flights.backoff.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        b.gc(now);
        let off = b.check(&key, now)?;
        self.metrics.backoffs.inc();
        self.metrics.pull_result("backoff");
        // A failure whose reason kubelet reads (RegistryUnavailable) stays its reason, at the front.
        let (reason, last_error) = match Reason::read_from(&off.last_error) {
            Some((reason, rest)) => (reason, rest),
            None => (Reason::ImagePullBackOff, off.last_error.as_str()),
        };
        let message = backoff::backoff_message(name, last_error);
        tracing::warn!(reason = "BackOff", image = %name, remaining = ?off.remaining, "{message}");
        Some(EnsureError::BackOff {
            message,
            remaining: off.remaining,
            reason,
        })
    }

    /// Joins the pull of `image` with these credentials, or starts one; returns its progress. The pull runs
    /// in its own task, which settles every waiting request when it ends (see [`flight`]).
    fn join(&self, image: &ImageRef, creds: Option<Credentials>, grant: Grant, waiter: Waiter) -> Arc<Progress> {
        let key = flight_key("pull", image, creds.as_ref());
        let flight = match self.flights.join_or_start(&key, waiter) {
            Joined::Joined(progress) => return progress,
            Joined::Started(flight) => flight,
        };
        let task = PullTask {
            puller: self.puller.clone(),
            slots: self.slots.clone(),
            rate: self.rate.clone(),
            metrics: self.metrics.clone(),
            timeout: self.options.progress_timeout,
            progress: flight.progress.clone(),
        };
        let (image, flights, progress) = (image.clone(), self.flights.clone(), flight.progress.clone());
        let events = self.events.clone();
        tokio::spawn(async move {
            let result = task.run(&image, creds, grant).await;
            // The runtimes see the image before any request hears of it: kubelet's next call creates a
            // container from it.
            if let Ok(rec) = &result {
                events.recorded(rec).await;
            }
            flights.finish(&key, &flight, result);
        });
        progress
    }

    /// Joins the verification of `image` with these credentials, or starts one, like [`Ensurer::join`]
    /// does pulls: in its own task, past the rate limit (not a pull slot: it is one small request).
    fn join_verify(
        &self,
        image: &ImageRef,
        creds: Option<Credentials>,
        target: verify::Target,
        waiter: Waiter,
    ) -> Arc<Progress> {
        let key = flight_key("verify", image, creds.as_ref());
        let flight = match self.flights.join_or_start(&key, waiter) {
            Joined::Joined(progress) => return progress,
            Joined::Started(flight) => flight,
        };
        let (image, flights, progress) = (image.clone(), self.flights.clone(), flight.progress.clone());
        let (verifier, rate, events) = (self.verifier.clone(), self.rate.clone(), self.events.clone());
        tokio::spawn(async move {
            let result = match rate.wait().await {
                Ok(_waited) => verifier.verify(&image, creds, target).await,
                Err(e) => Err(e.into()),
            };
            // Like a pull's answer: the runtimes must have the image. A refusal is announced to nobody.
            if let Ok(rec) = &result {
                events.recorded(rec).await;
            }
            flights.finish(&key, &flight, result);
        });
        progress
    }
}

/// The flight of `what` (`pull`, `verify`) for `image` with these credentials (by fingerprint: the key
/// lives in memory only).
fn flight_key(what: &str, image: &ImageRef, creds: Option<&Credentials>) -> String {
    let who = creds.map_or_else(|| "anonymous".into(), Credentials::fingerprint);
    format!("{what}|{image}|{who}")
}

impl Ticket<'_> {
    /// The pull's live progress, when a pull is in flight for this request.
    pub fn progress(&self) -> Option<Arc<Progress>> {
        match &self.state {
            TicketState::Waiting { progress, .. } => Some(progress.clone()),
            TicketState::Done(_) => None,
        }
    }

    /// Waits for the result. Dropping the ticket instead leaves the pull running; its outcome for this
    /// request is counted and logged all the same.
    pub async fn finish(self) -> Result<Arc<ImageRecord>, EnsureError> {
        match self.state {
            TicketState::Done(r) => {
                // Answered from the store: the runtimes must have it all the same (they may have lost it).
                if let Ok(rec) = &r {
                    self.ensurer.events.recorded(rec).await;
                }
                r
            }
            TicketState::Waiting { result, .. } => result
                .await
                .unwrap_or_else(|_| Err(EnsureError::Pull(Arc::new(crate::pull::PullError::Interrupted)))),
        }
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
    async fn run(
        self,
        image: &ImageRef,
        creds: Option<Credentials>,
        grant: Grant,
    ) -> Result<Arc<ImageRecord>, EnsureError> {
        let queued = Instant::now();
        let waiting = self.progress.queued();
        let _slot = self.slots.acquire().await;
        self.rate.wait().await?;
        drop(waiting);
        self.metrics.queue_wait.observe(queued.elapsed().as_secs_f64());
        self.metrics.pulls_in_progress.inc();
        let started = Instant::now();
        self.progress.advance();
        let pull = self.puller.pull(image, creds, Some(grant), &self.progress);
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
