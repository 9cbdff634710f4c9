//! Waiting for a state instead of sleeping for a guess: poll a condition until it holds, and fail the test
//! with what was awaited once a deadline has passed.

use std::future::Future;
use std::time::{Duration, Instant};

/// How often [`until`] asks again.
const POLL: Duration = Duration::from_millis(20);

/// Waits until `cond` holds, asking every 20 ms; panics naming `what` if it does not within `within`.
pub async fn until<F, Fut>(what: &str, within: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !cond().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}
