//! The rate cap of one connection: a token bucket on elapsed time. Bytes are paid for before they are sent
//! (the bucket starts empty), so N bytes at rate R take N / R, whatever the timer's granularity: a late
//! wake-up leaves credit that the next piece uses. Credit saved while the connection waits for its upstream
//! is kept up to [`BURST`], as a token bucket's depth.
//!
//! A pure policy: it takes `now` and answers when a piece may go, so it is tested without sleeping (in
//! `tests/fixture_front.rs`).

use std::time::{Duration, Instant};

/// The bucket's depth, in time at the capped rate.
pub const BURST: Duration = Duration::from_millis(50);

/// The largest piece the forwarder sends at once under a cap: small enough that one piece is a small part
/// of the burst even at low rates, so pacing stays smooth.
pub fn max_piece(rate: u64) -> usize {
    let per_burst = rate as f64 * BURST.as_secs_f64() / 4.0;
    (per_burst as usize).clamp(1024, 64 * 1024)
}

/// One connection's bucket.
#[derive(Clone, Debug)]
pub struct Pacer {
    rate: f64,
    /// The instant at which every byte paid for so far is covered by the rate.
    paid_until: Option<Instant>,
}

impl Pacer {
    /// A bucket for `rate` bytes per second (> 0), empty.
    pub fn new(rate: u64) -> Pacer {
        Pacer {
            rate: rate.max(1) as f64,
            paid_until: None,
        }
    }

    /// Pays for `n` bytes at `now`; returns the instant before which they must not be sent.
    pub fn pay(&mut self, n: usize, now: Instant) -> Instant {
        // Credit is what lies between `paid_until` and now; more than the bucket's depth is forgotten.
        let base = match self.paid_until {
            Some(p) if p + BURST >= now => p,
            Some(_) => now - BURST,
            None => now,
        };
        let due = base + Duration::from_secs_f64(n as f64 / self.rate);
        self.paid_until = Some(due);
        due
    }
}
