//! Pull limits: how many pulls run at once ([`PullSlots`]) and how fast new pulls may start ([`RateLimiter`]).
//!
//! kubelet has both (`pkg/kubelet/images/puller.go`, `helpers.go`): `serializeImagePulls` /
//! `maxParallelImagePulls` bound the pulls in flight, and `registryPullQPS` (5) / `registryBurst` (10) feed a
//! token bucket. kubelet's bucket does not wait: a pull without a token fails at once with "pull QPS exceeded"
//! and the pod goes into back-off. Here a pull waits for its token, up to a bound, and only fails when the wait
//! would be longer than that.
//!
//! The bucket is a pure reservation model ([`TokenBucket::reserve`], time as an argument): each caller
//! reserves the next token and is told how long to wait for it, so concurrent callers are served in the order
//! they reserved. It is kept as the instant at which the bucket is full again (GCRA's "theoretical arrival
//! time") rather than a float count of tokens: the same behaviour, with exact nanosecond arithmetic.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::{Classify, ErrorKind};

/// Why a pull may not start, or a limit is misconfigured.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LimitError {
    /// The token for this pull is further away than the longest wait allowed; nothing was reserved.
    #[error(
        "pull QPS exceeded: a token would take {waited_would_be:?}, more than the {max_wait:?} allowed \
         (registry.qps = {qps}, burst = {burst})"
    )]
    QpsExceeded {
        /// How long the pull would have had to wait.
        waited_would_be: Duration,
        /// The longest wait allowed.
        max_wait: Duration,
        /// The configured rate.
        qps: f64,
        /// The configured burst.
        burst: u32,
    },
    /// The rate is negative or not a number, or the burst is zero with a non-zero rate.
    #[error(
        "invalid pull rate limit (registry.qps = {qps}, burst = {burst}): qps must be a finite number >= 0 \
         (0 = unlimited) and burst at least 1"
    )]
    InvalidRate {
        /// The configured rate.
        qps: f64,
        /// The configured burst.
        burst: u32,
    },
}

impl Classify for LimitError {
    fn kind(&self) -> ErrorKind {
        match self {
            LimitError::QpsExceeded { .. } => ErrorKind::ResourceExhausted,
            LimitError::InvalidRate { .. } => ErrorKind::InvalidArgument,
        }
    }
}

/// Bounds the pulls in flight: kubelet's `maxParallelImagePulls` (0 = unlimited, 1 = serialised pulls).
///
/// Waiters are served first come, first served: this relies on tokio's [`Semaphore`] being fair (its
/// documentation: "permits are given out in the order they were requested"). Cloning shares the slots.
#[derive(Debug, Clone)]
pub struct PullSlots {
    semaphore: Option<Arc<Semaphore>>,
    limit: usize,
    counters: Arc<Counters>,
}

#[derive(Debug, Default)]
struct Counters {
    in_use: AtomicUsize,
    waiting: AtomicUsize,
}

/// A slot held by one pull; dropping it frees the slot for the next waiter.
#[derive(Debug)]
pub struct SlotGuard {
    _permit: Option<OwnedSemaphorePermit>,
    counters: Arc<Counters>,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        self.counters.in_use.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Decrements a counter when dropped, so a waiter that is cancelled stops counting as waiting.
struct CountedWhileAlive<'a>(&'a AtomicUsize);

impl<'a> CountedWhileAlive<'a> {
    fn new(counter: &'a AtomicUsize) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        CountedWhileAlive(counter)
    }
}

impl Drop for CountedWhileAlive<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl PullSlots {
    /// At most `max_parallel_pulls` pulls at once; 0 means no limit.
    pub fn new(max_parallel_pulls: usize) -> PullSlots {
        let limit = max_parallel_pulls.min(Semaphore::MAX_PERMITS);
        PullSlots {
            semaphore: (limit > 0).then(|| Arc::new(Semaphore::new(limit))),
            limit,
            counters: Arc::default(),
        }
    }

    /// The limit, or `None` when unlimited.
    pub fn limit(&self) -> Option<usize> {
        (self.limit > 0).then_some(self.limit)
    }

    /// Waits for a free slot, behind every caller that started waiting earlier.
    pub async fn acquire(&self) -> SlotGuard {
        let permit = match &self.semaphore {
            None => None,
            Some(semaphore) => {
                let _waiting = CountedWhileAlive::new(&self.counters.waiting);
                // Err only if the semaphore is closed; it is private and never closed.
                semaphore.clone().acquire_owned().await.ok()
            }
        };
        self.counters.in_use.fetch_add(1, Ordering::Relaxed);
        SlotGuard {
            _permit: permit,
            counters: self.counters.clone(),
        }
    }

    /// How many slots are held (for metrics).
    pub fn in_use(&self) -> usize {
        self.counters.in_use.load(Ordering::Relaxed)
    }

    /// How many callers are waiting for a slot (for metrics).
    pub fn waiting(&self) -> usize {
        self.counters.waiting.load(Ordering::Relaxed)
    }
}

/// A token bucket of `burst` tokens refilled at `qps` per second, where callers reserve tokens ahead.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    qps: f64,
    burst: u32,
    max_wait: Duration,
    /// Time per token (1/qps, rounded up to a nanosecond); zero when unlimited.
    interval: Duration,
    /// `burst - 1` intervals: how far ahead of `full_at` a token can still be had at once.
    tolerance: Duration,
    /// When the bucket is full again once every reserved token is paid for; `None` before the first.
    full_at: Option<Instant>,
}

impl TokenBucket {
    /// A full bucket. `qps` 0 means unlimited; otherwise `burst` must be at least 1. A caller is refused
    /// rather than made to wait longer than `max_wait`.
    pub fn new(qps: f64, burst: u32, max_wait: Duration) -> Result<TokenBucket, LimitError> {
        if !qps.is_finite() || qps < 0.0 || (qps > 0.0 && burst == 0) {
            return Err(LimitError::InvalidRate { qps, burst });
        }
        // The cast saturates: a rate so low that the interval overflows means "practically never".
        let interval = if qps > 0.0 {
            Duration::from_nanos((1e9 / qps).ceil() as u64)
        } else {
            Duration::ZERO
        };
        Ok(TokenBucket {
            qps,
            burst,
            max_wait,
            interval,
            tolerance: interval.saturating_mul(burst.saturating_sub(1)),
            full_at: None,
        })
    }

    /// Reserves the next token at `now` and returns how long the caller must wait before using it (zero when
    /// a token is there). If that wait would exceed `max_wait`, nothing is reserved and the error says how long
    /// it would have been. A reservation cannot be returned: a caller that gives up loses its token, which only
    /// makes the limit stricter. A `now` earlier than an earlier caller's is taken as that caller's.
    pub fn reserve(&mut self, now: Instant) -> Result<Duration, LimitError> {
        if self.interval.is_zero() {
            return Ok(Duration::ZERO);
        }
        let full_at = self.full_at.map_or(now, |t| t.max(now));
        // The token is free once the bucket is at most `burst - 1` tokens short, at `full_at - tolerance`.
        let wait = match now.checked_add(self.tolerance) {
            Some(t) => full_at.saturating_duration_since(t),
            None => Duration::ZERO,
        };
        if wait > self.max_wait {
            return Err(LimitError::QpsExceeded {
                waited_would_be: wait,
                max_wait: self.max_wait,
                qps: self.qps,
                burst: self.burst,
            });
        }
        self.full_at = Some(full_at.checked_add(self.interval).unwrap_or(full_at));
        Ok(wait)
    }

    /// How many tokens could be taken at `now` without waiting (`u32::MAX` when unlimited).
    pub fn available(&self, now: Instant) -> u32 {
        if self.interval.is_zero() {
            return u32::MAX;
        }
        let short = self.full_at.map_or(0, |t| t.saturating_duration_since(now).as_nanos());
        let short_tokens = short.div_ceil(self.interval.as_nanos());
        u32::try_from(short_tokens).map_or(0, |s| self.burst.saturating_sub(s))
    }
}

/// The waiting rate limiter for pulls: a [`TokenBucket`] behind a lock, on tokio's clock (so tests can pause
/// and advance it).
#[derive(Debug)]
pub struct RateLimiter {
    // A std mutex, not tokio's: it guards a few arithmetic operations and is never held across an await.
    bucket: Mutex<TokenBucket>,
}

impl RateLimiter {
    /// A limiter over `bucket`.
    pub fn new(bucket: TokenBucket) -> RateLimiter {
        RateLimiter {
            bucket: Mutex::new(bucket),
        }
    }

    /// Waits for a token and returns how long that took, or fails at once with [`LimitError::QpsExceeded`]
    /// if the token is further away than the bucket's `max_wait`.
    pub async fn wait(&self) -> Result<Duration, LimitError> {
        let now = tokio::time::Instant::now();
        let wait = self
            .bucket
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .reserve(now.into_std())?;
        if !wait.is_zero() {
            tokio::time::sleep_until(now + wait).await;
        }
        Ok(wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;

    const MS: Duration = Duration::from_millis(1);

    fn bucket(qps: f64, burst: u32, max_wait_secs: u64) -> TokenBucket {
        TokenBucket::new(qps, burst, Duration::from_secs(max_wait_secs)).unwrap()
    }

    #[test]
    fn the_burst_is_taken_at_once_then_tokens_come_every_one_over_qps() {
        let mut b = bucket(5.0, 10, 60);
        let t0 = Instant::now();
        assert_eq!(b.available(t0), 10);
        for _ in 0..10 {
            assert_eq!(b.reserve(t0), Ok(Duration::ZERO));
        }
        assert_eq!(b.available(t0), 0);
        // Reservation order: each caller at t0 queues one interval behind the previous one.
        for i in 1..=5 {
            assert_eq!(b.reserve(t0), Ok(200 * MS * i));
        }
        // Tokens come back every 200 ms after the reserved ones: a caller at 1 s gets the one due at 1.2 s, and
        // the next is free at 1.4 s.
        assert_eq!(b.reserve(t0 + 1000 * MS), Ok(200 * MS));
        assert_eq!(b.available(t0 + 1400 * MS), 1);
        assert_eq!(b.reserve(t0 + 1400 * MS), Ok(Duration::ZERO));
        // After a long idle time, the bucket is full again, and no fuller.
        assert_eq!(b.available(t0 + Duration::from_secs(3600)), 10);
    }

    #[test]
    fn a_caller_paced_at_qps_never_waits() {
        let mut b = bucket(2.0, 1, 60);
        let t0 = Instant::now();
        for i in 0..10 {
            assert_eq!(b.reserve(t0 + 500 * MS * i), Ok(Duration::ZERO), "request {i}");
        }
        assert_eq!(b.reserve(t0 + 500 * MS * 9 + 499 * MS), Ok(MS));
    }

    #[test]
    fn a_wait_longer_than_max_wait_is_refused_without_reserving() {
        let mut b = bucket(1.0, 2, 2);
        let t0 = Instant::now();
        assert_eq!(b.reserve(t0), Ok(Duration::ZERO));
        assert_eq!(b.reserve(t0), Ok(Duration::ZERO));
        assert_eq!(b.reserve(t0), Ok(Duration::from_secs(1)));
        assert_eq!(b.reserve(t0), Ok(Duration::from_secs(2))); // Exactly max_wait: allowed.
        let refused = b.reserve(t0).unwrap_err();
        assert_eq!(
            refused,
            LimitError::QpsExceeded {
                waited_would_be: Duration::from_secs(3),
                max_wait: Duration::from_secs(2),
                qps: 1.0,
                burst: 2
            }
        );
        assert_eq!(refused.kind(), ErrorKind::ResourceExhausted);
        // The refusal reserved nothing: the next caller is still 3 s away, not 4.
        assert_eq!(b.reserve(t0 + Duration::from_secs(1)), Ok(Duration::from_secs(2)));
    }

    #[test]
    fn the_refusal_message_names_the_settings() {
        let mut b = TokenBucket::new(5.0, 10, Duration::from_secs(10)).unwrap();
        let t0 = Instant::now();
        // 10 tokens at once, then one every 200 ms: the 60th caller waits 10 s, the 61st would wait 10.2 s.
        for _ in 0..60 {
            b.reserve(t0).unwrap();
        }
        assert_eq!(
            b.reserve(t0).unwrap_err().to_string(),
            "pull QPS exceeded: a token would take 10.2s, more than the 10s allowed (registry.qps = 5, burst = 10)"
        );
    }

    #[test]
    fn qps_zero_is_unlimited_and_bad_settings_are_rejected() {
        let mut b = bucket(0.0, 0, 0);
        let t0 = Instant::now();
        for _ in 0..1000 {
            assert_eq!(b.reserve(t0), Ok(Duration::ZERO));
        }
        assert_eq!(b.available(t0), u32::MAX);
        for (qps, burst) in [(-1.0, 10), (f64::NAN, 10), (f64::INFINITY, 10), (5.0, 0)] {
            let err = TokenBucket::new(qps, burst, Duration::ZERO).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{qps} {burst}");
        }
        assert!(
            TokenBucket::new(-1.0, 10, Duration::ZERO)
                .unwrap_err()
                .to_string()
                .starts_with("invalid pull rate limit (registry.qps = -1, burst = 10)")
        );
    }

    #[test]
    fn a_tiny_rate_does_not_overflow() {
        let mut b = bucket(1e-300, 1, 60);
        let t0 = Instant::now();
        assert_eq!(b.reserve(t0), Ok(Duration::ZERO));
        assert!(matches!(b.reserve(t0), Err(LimitError::QpsExceeded { .. })));
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_proceed_in_order_and_wait_instead_of_failing() {
        let limiter = Arc::new(RateLimiter::new(bucket(5.0, 2, 10)));
        let start = tokio::time::Instant::now();
        let done = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for i in 0..5u32 {
            let (limiter, done) = (limiter.clone(), done.clone());
            tasks.push(tokio::spawn(async move {
                let waited = limiter.wait().await.unwrap();
                done.lock().unwrap().push((i, waited, start.elapsed()));
            }));
            tokio::task::yield_now().await; // Task i reserves before task i + 1 exists.
        }
        for t in tasks {
            t.await.unwrap();
        }
        let want: Vec<_> = [0, 0, 200, 400, 600]
            .into_iter()
            .enumerate()
            .map(|(i, ms)| (i as u32, ms * MS, ms * MS))
            .collect();
        assert_eq!(*done.lock().unwrap(), want);
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_beyond_max_wait_fails_at_once() {
        let limiter = RateLimiter::new(bucket(1.0, 1, 1));
        let start = tokio::time::Instant::now();
        assert_eq!(limiter.wait().await, Ok(Duration::ZERO));
        assert_eq!(limiter.wait().await, Ok(Duration::from_secs(1)));
        assert_eq!(start.elapsed(), Duration::from_secs(1));
        // Another caller queues first, for the token at 2 s; the next one would wait until 3 s.
        let queued = limiter
            .bucket
            .lock()
            .unwrap()
            .reserve(tokio::time::Instant::now().into_std());
        assert_eq!(queued, Ok(Duration::from_secs(1)));
        let err = limiter.wait().await.unwrap_err();
        assert!(
            matches!(err, LimitError::QpsExceeded { waited_would_be, .. } if waited_would_be == Duration::from_secs(2))
        );
        assert_eq!(start.elapsed(), Duration::from_secs(1), "a refusal does not wait");
    }

    #[tokio::test]
    async fn unlimited_slots_never_block() {
        let slots = PullSlots::new(0);
        assert_eq!(slots.limit(), None);
        let guards: Vec<_> = (0..100).map(|_| slots.acquire().now_or_never().unwrap()).collect();
        assert_eq!((slots.in_use(), slots.waiting()), (100, 0));
        drop(guards);
        assert_eq!(slots.in_use(), 0);
    }

    #[tokio::test]
    async fn slots_bound_the_pulls_in_flight_and_count_waiters() {
        let slots = PullSlots::new(2);
        assert_eq!(slots.limit(), Some(2));
        let a = slots.acquire().await;
        let _b = slots.acquire().await;
        assert_eq!(slots.in_use(), 2);
        // A third caller waits; giving up (dropping the future) stops it counting as waiting.
        let mut third = Box::pin(slots.acquire());
        assert!((&mut third).now_or_never().is_none());
        assert_eq!(slots.waiting(), 1);
        drop(third);
        assert_eq!(slots.waiting(), 0);
        drop(a);
        let _c = slots.acquire().now_or_never().expect("a slot was freed");
        assert_eq!((slots.in_use(), slots.waiting()), (2, 0));
    }

    #[tokio::test]
    async fn serialised_waiters_are_served_in_arrival_order() {
        let slots = PullSlots::new(1);
        let first = slots.acquire().await;
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for i in 0..5 {
            let (slots2, order) = (slots.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let _slot = slots2.acquire().await;
                assert_eq!(slots2.in_use(), 1, "serialised");
                order.lock().unwrap().push(i);
                tokio::task::yield_now().await; // Hold the slot while the others are runnable.
            }));
            while slots.waiting() < i + 1 {
                tokio::task::yield_now().await;
            }
        }
        drop(first);
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), [0, 1, 2, 3, 4]);
        assert_eq!((slots.in_use(), slots.waiting()), (0, 0));
    }
}
