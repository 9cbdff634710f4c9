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
         (pull.qps = {qps}, pull.burst = {burst})"
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
        "invalid pull rate limit (pull.qps = {qps}, pull.burst = {burst}): qps must be a finite number >= 0 \
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
#[path = "limits_tests.rs"]
mod tests;
