//! Tests of `limits`.

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
        "pull QPS exceeded: a token would take 10.2s, more than the 10s allowed (pull.qps = 5, pull.burst = 10)"
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
            .starts_with("invalid pull rate limit (pull.qps = -1, pull.burst = 10)")
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
