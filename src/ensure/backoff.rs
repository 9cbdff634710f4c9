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
mod tests {
    use super::*;

    /// A fake clock: instants at offsets from one fixed origin; nothing sleeps.
    struct Clock(Instant);

    impl Clock {
        fn at(&self, secs: u64) -> Instant {
            self.0 + Duration::from_secs(secs)
        }
    }

    fn setup() -> (Backoff, Clock) {
        (Backoff::new(BackoffPolicy::default()), Clock(Instant::now()))
    }

    fn remaining(b: &Backoff, key: &str, now: Instant) -> Option<Duration> {
        b.check(key, now).map(|s| s.remaining)
    }

    #[test]
    fn default_policy_is_kubelets() {
        let p = BackoffPolicy::default();
        assert_eq!(
            (p.initial, p.max, p.expiry()),
            (
                Duration::from_secs(10),
                Duration::from_secs(300),
                Duration::from_secs(600)
            )
        );
    }

    #[test]
    fn an_unknown_key_is_not_backing_off() {
        let (b, clock) = setup();
        assert_eq!(b.check("p_busybox", clock.at(0)), None);
        assert!(b.is_empty());
    }

    #[test]
    fn first_failure_backs_off_for_the_initial_delay_with_its_message() {
        let (mut b, clock) = setup();
        b.failed("p_busybox", clock.at(100), "ErrImagePull: not found".into());
        let state = b.check("p_busybox", clock.at(100)).unwrap();
        assert_eq!(
            state,
            BackingOff {
                remaining: Duration::from_secs(10),
                last_error: "ErrImagePull: not found".into()
            }
        );
        assert_eq!(remaining(&b, "p_busybox", clock.at(104)), Some(Duration::from_secs(6)));
        assert_eq!(remaining(&b, "p_busybox", clock.at(109)), Some(Duration::from_secs(1)));
    }

    #[test]
    fn the_delay_boundary_is_exclusive() {
        let (mut b, clock) = setup();
        b.failed("k", clock.at(0), "e".into());
        let just_before = clock.at(10) - Duration::from_nanos(1);
        assert_eq!(remaining(&b, "k", just_before), Some(Duration::from_nanos(1)));
        // Remaining would be 0 at exactly the delay: not backing off (kubelet: elapsed < backoff).
        assert_eq!(b.check("k", clock.at(10)), None);
        assert_eq!(b.check("k", clock.at(11)), None);
    }

    #[test]
    fn a_now_before_the_failure_counts_as_no_time_passed() {
        let (mut b, clock) = setup();
        b.failed("k", clock.at(50), "e".into());
        assert_eq!(remaining(&b, "k", clock.at(40)), Some(Duration::from_secs(10)));
    }

    #[test]
    fn failures_double_the_delay_up_to_the_maximum() {
        let (mut b, clock) = setup();
        let mut t = 0;
        for want in [10, 20, 40, 80, 160, 300, 300, 300] {
            b.failed("k", clock.at(t), format!("failure at {t}"));
            assert_eq!(
                remaining(&b, "k", clock.at(t)),
                Some(Duration::from_secs(want)),
                "at {t}"
            );
            // Retry as soon as allowed, as kubelet's pod workers do.
            t += want;
            assert_eq!(b.check("k", clock.at(t)), None);
        }
    }

    #[test]
    fn failing_again_while_backing_off_still_doubles() {
        let (mut b, clock) = setup();
        b.failed("k", clock.at(0), "first".into());
        b.failed("k", clock.at(3), "second".into());
        let state = b.check("k", clock.at(3)).unwrap();
        assert_eq!(
            state,
            BackingOff {
                remaining: Duration::from_secs(20),
                last_error: "second".into()
            }
        );
    }

    #[test]
    fn an_entry_idle_for_more_than_twice_the_max_expires_and_restarts_at_initial() {
        let (mut b, clock) = setup();
        for t in [0, 10, 30, 70] {
            b.failed("k", clock.at(t), "e".into()); // delays 10, 20, 40, 80
        }
        // Idle exactly 2 × max: not expired, so the next failure doubles.
        let mut same = b.clone();
        same.failed("k", clock.at(70 + 600), "e".into());
        assert_eq!(remaining(&same, "k", clock.at(670)), Some(Duration::from_secs(160)));
        // Idle more than 2 × max: expired, the next failure starts over.
        let later = clock.at(70 + 600) + Duration::from_nanos(1);
        b.failed("k", later, "e".into());
        assert_eq!(remaining(&b, "k", later), Some(Duration::from_secs(10)));
    }

    #[test]
    fn expired_entries_stay_until_gc_without_holding_pulls_back() {
        let (mut b, clock) = setup();
        b.failed("k", clock.at(0), "e".into());
        assert_eq!(b.check("k", clock.at(601)), None);
        assert_eq!(b.len(), 1);
        b.gc(clock.at(601));
        assert_eq!(b.len(), 0);
    }

    #[test]
    fn gc_drops_only_entries_idle_for_more_than_twice_the_max() {
        let (mut b, clock) = setup();
        b.failed("old", clock.at(0), "e".into());
        b.failed("edge", clock.at(100), "e".into());
        b.failed("fresh", clock.at(650), "e".into());
        b.gc(clock.at(700));
        let mut keys: Vec<_> = b.entries.keys().cloned().collect();
        keys.sort();
        assert_eq!(keys, ["edge", "fresh"]);
        b.gc(clock.at(700) + Duration::from_nanos(1));
        assert_eq!(b.entries.keys().collect::<Vec<_>>(), ["fresh"]);
        b.gc(clock.at(10_000));
        assert!(b.is_empty());
    }

    #[test]
    fn success_clears_the_key_so_the_next_failure_starts_over() {
        let (mut b, clock) = setup();
        for t in [0, 10, 30] {
            b.failed("k", clock.at(t), "e".into());
        }
        b.succeeded("k");
        assert_eq!(b.check("k", clock.at(31)), None);
        assert!(b.is_empty());
        b.failed("k", clock.at(40), "e".into());
        assert_eq!(remaining(&b, "k", clock.at(40)), Some(Duration::from_secs(10)));
        b.succeeded("absent"); // Harmless.
    }

    #[test]
    fn keys_are_independent_per_pod_and_image() {
        let (mut b, clock) = setup();
        let (a, other_pod, other_image) = (key("uid-a", "busybox"), key("uid-b", "busybox"), key("uid-a", "nginx"));
        b.failed(&a, clock.at(0), "e".into());
        b.failed(&a, clock.at(10), "e".into());
        b.failed(&other_pod, clock.at(10), "e".into());
        assert_eq!(remaining(&b, &a, clock.at(10)), Some(Duration::from_secs(20)));
        assert_eq!(remaining(&b, &other_pod, clock.at(10)), Some(Duration::from_secs(10)));
        assert_eq!(b.check(&other_image, clock.at(10)), None);
        b.succeeded(&other_pod);
        assert!(b.check(&a, clock.at(10)).is_some());
    }

    #[test]
    fn keys_follow_kubelet_and_an_empty_pod_uid_is_shared() {
        assert_eq!(key("8f2c", "busybox:1.36"), "8f2c_busybox:1.36");
        assert_eq!(key("", "busybox"), "_busybox");
        let (mut b, clock) = setup();
        b.failed(&key("", "busybox"), clock.at(0), "e".into());
        assert!(b.check(&key("", "busybox"), clock.at(1)).is_some());
        assert_eq!(b.check(&key("", "nginx"), clock.at(1)), None);
    }

    #[test]
    fn zero_initial_delay_disables_and_initial_above_max_is_capped() {
        let clock = Clock(Instant::now());
        let mut off = Backoff::new(BackoffPolicy {
            initial: Duration::ZERO,
            max: Duration::from_secs(300),
        });
        off.failed("k", clock.at(0), "e".into());
        off.failed("k", clock.at(0), "e".into());
        assert_eq!(off.check("k", clock.at(0)), None);
        let mut capped = Backoff::new(BackoffPolicy {
            initial: Duration::from_secs(60),
            max: Duration::from_secs(30),
        });
        capped.failed("k", clock.at(0), "e".into());
        assert_eq!(remaining(&capped, "k", clock.at(0)), Some(Duration::from_secs(30)));
    }

    #[test]
    fn the_message_uses_kubelets_words() {
        assert_eq!(
            backoff_message("busybox:1.36", "ErrImagePull: manifest unknown"),
            "Back-off pulling image \"busybox:1.36\": ErrImagePull: manifest unknown"
        );
        assert_eq!(backoff_message("busybox", ""), "Back-off pulling image \"busybox\"");
    }
}
