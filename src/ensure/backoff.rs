//! kubelet's per-image pull back-off (`client-go/util/flowcontrol/backoff.go` as used by
//! `pkg/kubelet/images/image_manager.go`), as a pure state machine: time is the `now` argument of every method.
//!
//! Each key (kubelet's `podUID_image`, see [`key`]) has a delay and the time of its last failure. A pull of that
//! key is refused while less than the delay has passed since the failure ([`Backoff::check`], kubelet's
//! `IsInBackOffSinceUpdate`). Each failure ([`Backoff::failed`], kubelet's `Next`) starts the delay at
//! [`BackoffPolicy::initial`] or doubles it, up to [`BackoffPolicy::max`]. An entry untouched for more than
//! twice the maximum has expired: it no longer holds pulls back, the next failure starts again from the
//! initial delay, and [`Backoff::gc`] drops it. kubelet uses 10 s and 300 s, with no jitter.
//!
//! Where this differs from kubelet, on purpose:
//! - A success clears the key ([`Backoff::succeeded`]). kubelet only garbage-collects expired entries after a
//!   success, so a pod whose pull failed, then worked, then failed again waits the doubled delay.
//! - The entry keeps the failure's message, so the back-off refusal can say why ([`backoff_message`]); kubelet
//!   keeps that message in a separate map (`prevPullErrMsg`).
//! - The delay never exceeds the maximum, even if the initial delay is configured above it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The delays of the back-off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffPolicy {
    /// The delay after a first failure (kubelet: 10 s). Zero disables the back-off.
    pub initial: Duration,
    /// The longest delay (kubelet: 300 s). Entries idle for more than twice this expire.
    pub max: Duration,
}

impl Default for BackoffPolicy {
    /// kubelet's `flowcontrol.NewBackOff(10*time.Second, 300*time.Second)`.
    fn default() -> Self {
        BackoffPolicy {
            initial: Duration::from_secs(10),
            max: Duration::from_secs(300),
        }
    }
}

impl BackoffPolicy {
    /// How long an entry may stay idle before it expires: twice the maximum delay.
    pub fn expiry(&self) -> Duration {
        self.max.saturating_mul(2)
    }
}

/// A refusal: the key failed recently and its delay has not passed yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackingOff {
    /// How long until a pull of the key is allowed again.
    pub remaining: Duration,
    /// The message of the failure that started this delay.
    pub last_error: String,
}

#[derive(Debug, Clone)]
struct Entry {
    delay: Duration,
    last_update: Instant,
    last_error: String,
}

/// The back-off state of every key. Not synchronised: the caller holds it in a mutex.
#[derive(Debug, Clone, Default)]
pub struct Backoff {
    policy: BackoffPolicy,
    entries: HashMap<String, Entry>,
}

impl Backoff {
    /// An empty back-off with the given delays.
    pub fn new(policy: BackoffPolicy) -> Backoff {
        Backoff {
            policy,
            entries: HashMap::new(),
        }
    }

    /// The delays in use.
    pub fn policy(&self) -> BackoffPolicy {
        self.policy
    }

    /// Whether `key` is backing off at `now`: it failed less than its delay ago. At exactly the delay, it is
    /// not. A `now` earlier than the failure (callers racing for the lock) counts as no time passed.
    pub fn check(&self, key: &str, now: Instant) -> Option<BackingOff> {
        let entry = self.entries.get(key)?;
        if self.expired(entry, now) {
            return None;
        }
        let elapsed = now.saturating_duration_since(entry.last_update);
        (elapsed < entry.delay).then(|| BackingOff {
            remaining: entry.delay - elapsed,
            last_error: entry.last_error.clone(),
        })
    }

    /// Records a failed pull of `key` at `now`: the first failure, or one after the entry expired, starts at the
    /// initial delay; any other doubles the delay, up to the maximum.
    pub fn failed(&mut self, key: &str, now: Instant, error: String) {
        let initial = self.policy.initial.min(self.policy.max);
        let delay = match self.entries.get(key) {
            Some(entry) if !self.expired(entry, now) => entry.delay.saturating_mul(2).min(self.policy.max),
            _ => initial,
        };
        let entry = Entry {
            delay,
            last_update: now,
            last_error: error,
        };
        self.entries.insert(key.to_string(), entry);
    }

    /// Records a successful pull of `key`: its back-off is forgotten.
    pub fn succeeded(&mut self, key: &str) {
        self.entries.remove(key);
    }

    /// Drops the entries idle for more than twice the maximum delay at `now` (kubelet's `GC`).
    pub fn gc(&mut self, now: Instant) {
        let expiry = self.policy.expiry();
        self.entries
            .retain(|_, e| now.saturating_duration_since(e.last_update) <= expiry);
    }

    /// How many keys have an entry (expired ones included until [`Backoff::gc`]).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no key has an entry.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// kubelet's `hasExpired`: idle for strictly more than twice the maximum.
    fn expired(&self, entry: &Entry, now: Instant) -> bool {
        now.saturating_duration_since(entry.last_update) > self.policy.expiry()
    }
}

/// The back-off key of an image for a pod: kubelet's `podUID_image`. The pod UID comes from the pull's sandbox
/// config and may be empty (e.g. `crictl pull`), in which case every such caller shares one key per image.
/// Use the image as the client wrote it, or always normalised: the key only needs to be consistent.
pub fn key(pod_uid: &str, image: &str) -> String {
    format!("{pod_uid}_{image}")
}

/// The refusal message, in kubelet's words: `Back-off pulling image "IMAGE": LAST_ERROR` (kubelet ≥ 1.32 appends
/// the previous failure; without one, the message ends after the quoted image).
pub fn backoff_message(image: &str, last_error: &str) -> String {
    // `{:?}` quotes like Go's `%q` for the characters image references can contain.
    if last_error.is_empty() {
        format!("Back-off pulling image {image:?}")
    } else {
        format!("Back-off pulling image {image:?}: {last_error}")
    }
}

#[cfg(test)]
#[path = "backoff_tests.rs"]
mod tests;
