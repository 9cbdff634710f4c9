//! What imaged does about what registries say besides the content: their `Warning` headers ([`super::warning`])
//! and their `429 Too Many Requests` ([`super::rate_limit`]). One per daemon, shared by every host client.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use reqwest::header::HeaderMap;

use super::rate_limit;
use super::warning::Warnings;
use crate::metrics::Metrics;

/// The shared state and settings.
pub(super) struct Manners {
    metrics: Arc<Metrics>,
    /// The most one request waits over all its `Retry-After`s (`registry.rate_limit_wait`).
    rate_limit_wait: Duration,
    warnings: Warnings,
}

impl Default for Manners {
    fn default() -> Self {
        Manners::new(Arc::default(), rate_limit::DEFAULT_RATE_LIMIT_WAIT)
    }
}

impl Manners {
    pub(super) fn new(metrics: Arc<Metrics>, rate_limit_wait: Duration) -> Manners {
        Manners {
            metrics,
            rate_limit_wait,
            warnings: Warnings::default(),
        }
    }

    /// Notes the `Warning` headers of a response of `host` to the request for `what`.
    pub(super) fn warnings(&self, host: &str, what: &str, headers: &HeaderMap) {
        let n = self.warnings.note(host, what, headers);
        if n > 0 {
            self.metrics.registry_warnings.inc_by(n);
        }
    }

    /// Counts a 429 of `host` to the request for `what`, whose `Retry-After` ([`retry_after`]) `asked` for
    /// a wait, and says how long to wait before the same request again, given that it `waited` already
    /// (which the wait is added to); `None`: fail with the 429.
    pub(super) fn rate_limited(
        &self,
        host: &str,
        what: &str,
        asked: Option<Duration>,
        waited: &mut Duration,
    ) -> Option<Duration> {
        self.metrics.registry_rate_limited.inc();
        let wait = rate_limit::wait_for(asked, *waited, self.rate_limit_wait);
        match wait {
            Some(wait) => {
                tracing::warn!(
                    host,
                    request = what,
                    ?wait,
                    "the registry is rate limiting; waiting as its Retry-After asks"
                );
                *waited += wait;
            }
            None => {
                tracing::warn!(host, request = what, retry_after = ?asked, waited = ?*waited, "the registry is rate limiting; not waiting that long")
            }
        }
        wait
    }
}

/// The wait a response's `Retry-After` asks for, if it has a readable one.
pub(super) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    rate_limit::parse_retry_after(value, SystemTime::now())
}
