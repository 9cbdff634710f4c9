//! A registry's `429 Too Many Requests`: how long its `Retry-After` asks to wait, and whether imaged waits.
//!
//! A 429 with a `Retry-After` (delay-seconds or an HTTP-date, RFC 9110 section 10.2.3) is waited out and the
//! same request made again, as long as the waits of that request add up to at most `registry.rate_limit_wait`
//! (one minute by default): a registry asking for an hour is answered at once with a `RegistryRateLimited`
//! error, not after the hour. A 429 without `Retry-After` is not waited for: nothing says when to come back,
//! and kubelet's back-off spaces the next try. The waits also count against `pull.progress_timeout`, which
//! cancels a pull that stands still for that long whatever it waits for.

use std::time::{Duration, SystemTime};

/// How long imaged waits, at most, over all the `Retry-After`s of one request, unless configured.
pub const DEFAULT_RATE_LIMIT_WAIT: Duration = Duration::from_secs(60);

/// The wait a `Retry-After` value asks for, from `now`: delay-seconds or an HTTP-date (a date in the past
/// is no wait). `None` when it is neither.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // More digits than a u64 holds is "forever".
        return Some(value.parse().map_or(Duration::MAX, Duration::from_secs));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Whether to wait `retry_after` before the same request again, when it has waited `waited` already and may
/// wait `budget` in all: the wait, or `None` to fail now.
pub fn wait_for(retry_after: Option<Duration>, waited: Duration, budget: Duration) -> Option<Duration> {
    let wait = retry_after?;
    (waited.saturating_add(wait) <= budget).then_some(wait)
}

/// The text of a rate-limited error for its `Retry-After`.
pub(super) fn describe(retry_after: Option<Duration>) -> String {
    match retry_after {
        None => "it sent no Retry-After".to_string(),
        Some(d) => format!(
            "it asks to retry after {}, beyond what imaged waits: registry.rate_limit_wait",
            crate::duration::format(d)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_seconds_or_an_http_date() {
        let now = httpdate::parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT").unwrap();
        assert_eq!(parse_retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:29:30 GMT", now),
            Some(Duration::from_secs(90))
        );
        // RFC 850 and asctime forms are HTTP-dates too.
        assert_eq!(
            parse_retry_after("Wednesday, 21-Oct-15 07:28:05 GMT", now),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            parse_retry_after("Wed Oct 21 07:28:10 2015", now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO),
            "a date past is no wait"
        );
        assert_eq!(parse_retry_after("99999999999999999999999", now), Some(Duration::MAX));
        for bad in ["", "-1", "1.5", "soon", "12s"] {
            assert_eq!(parse_retry_after(bad, now), None, "{bad:?}");
        }
    }

    #[test]
    fn waits_add_up_to_the_budget_and_no_further() {
        let s = Duration::from_secs;
        assert_eq!(wait_for(Some(s(1)), s(0), s(60)), Some(s(1)));
        assert_eq!(wait_for(Some(s(30)), s(30), s(60)), Some(s(30)));
        assert_eq!(wait_for(Some(s(31)), s(30), s(60)), None);
        assert_eq!(wait_for(Some(s(3600)), s(0), s(60)), None);
        assert_eq!(wait_for(Some(Duration::MAX), s(1), s(60)), None);
        assert_eq!(wait_for(None, s(0), s(60)), None, "no Retry-After, no wait");
        assert_eq!(wait_for(Some(s(1)), s(0), s(0)), None, "0s never waits");
    }

    #[test]
    fn the_error_says_why_it_did_not_wait() {
        assert_eq!(describe(None), "it sent no Retry-After");
        assert!(describe(Some(Duration::from_secs(3600))).contains("registry.rate_limit_wait"));
    }
}
