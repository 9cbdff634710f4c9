//! Tests of `backoff`.

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
    b.failed("p_busybox", clock.at(100), "not found".into());
    let state = b.check("p_busybox", clock.at(100)).unwrap();
    assert_eq!(
        state,
        BackingOff {
            remaining: Duration::from_secs(10),
            last_error: "not found".into()
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
        backoff_message("busybox:1.36", "manifest unknown"),
        "Back-off pulling image \"busybox:1.36\": manifest unknown"
    );
    assert_eq!(backoff_message("busybox", ""), "Back-off pulling image \"busybox\"");
}
