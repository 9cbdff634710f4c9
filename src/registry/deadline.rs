//! Time limits of registry requests, and the memory of hosts that just failed.
//!
//! Every request gets a connect deadline (the HTTP clients' connect timeout: `registry.connect_timeout_secs`,
//! or the host's `dial_timeout`) and a response deadline ([`Deadlines::response`]): the registry must send the
//! response headers within it, and then, while the body streams, never go silent for that long
//! ([`IdleCut`]). A request cut this way fails as [`RegistryError::TimedOut`], which is `Unavailable`: the
//! next host (mirror, then upstream) is tried, and `pull.stale_if_unavailable` applies. Only time spent
//! waiting for the registry counts: a body that is read slowly because the disk is slow is not cut.
//!
//! [`HostHealth`] remembers which hosts failed that way recently; they are tried after the others for a
//! while, so a pull does not wait once per request on a mirror that is down.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::Stream;

use super::{BlobStream, RegistryError};

/// How long a host that failed to answer is tried after the others.
pub const FAILED_HOST_COOLDOWN: Duration = Duration::from_secs(30);

/// The time limits of one host's requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    /// To connect (TCP and TLS).
    pub connect: Duration,
    /// The longest silence of the registry: for the response headers, counted from the start of the request
    /// (connecting included), and then between the bytes of a body.
    pub response: Duration,
}

impl Deadlines {
    /// The deadlines of a host: `dial_timeout` from its hosts.toml entry, else `connect`; and `response`.
    /// A `dial_timeout` longer than `response` extends the wait for that host's headers, since connecting
    /// is part of it. A zero `dial_timeout` means no limit of its own (as Go's dialer reads it): `connect`.
    pub fn for_host(dial_timeout: Option<Duration>, connect: Duration, response: Duration) -> Deadlines {
        match dial_timeout.filter(|d| !d.is_zero()) {
            Some(dial) => Deadlines {
                connect: dial,
                response: response.max(dial),
            },
            None => Deadlines { connect, response },
        }
    }

    /// How long a request may wait for its response headers, counted from its start.
    pub fn headers(&self) -> Duration {
        self.response
    }

    /// Runs `request` (anything up to and including the response headers) within [`Deadlines::headers`].
    pub async fn headers_within<T>(
        &self,
        host: &str,
        what: &str,
        request: impl Future<Output = Result<T, RegistryError>>,
    ) -> Result<T, RegistryError> {
        match tokio::time::timeout(self.headers(), request).await {
            Ok(r) => r,
            Err(_) => Err(RegistryError::TimedOut {
                host: host.to_string(),
                what: what.to_string(),
                after: self.headers(),
            }),
        }
    }

    /// `body` cut when the registry sends nothing for [`Deadlines::response`] while it is waited for.
    pub fn idle_cut(&self, host: &str, what: &str, body: BlobStream) -> BlobStream {
        Box::pin(IdleCut {
            inner: body,
            idle: self.response,
            silence: None,
            message: Some(format!(
                "registry {host} sent nothing for {:?} in the middle of {what} (registry.response_timeout)",
                self.response
            )),
        })
    }
}

/// A body stream that fails when the registry stays silent for `idle` while the consumer waits for it.
struct IdleCut {
    inner: BlobStream,
    idle: Duration,
    /// Armed when the consumer starts waiting, cleared when bytes come.
    silence: Option<Pin<Box<tokio::time::Sleep>>>,
    /// `None` once the stream has ended (by its end or by the cut).
    message: Option<String>,
}

impl Stream for IdleCut {
    type Item = std::io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.message.is_none() {
            return Poll::Ready(None);
        }
        match self.inner.as_mut().poll_next(cx) {
            Poll::Ready(item) => {
                self.silence = None;
                if item.is_none() {
                    self.message = None;
                }
                Poll::Ready(item)
            }
            Poll::Pending => {
                let idle = self.idle;
                let silence = self.silence.get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                match silence.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        let message = self.message.take().unwrap_or_default();
                        Poll::Ready(Some(Err(std::io::Error::new(std::io::ErrorKind::TimedOut, message))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

/// Hosts that recently failed to answer (unreachable, timed out, 5xx), by URL.
#[derive(Debug, Default)]
pub struct HostHealth {
    failed: Mutex<HashMap<String, Instant>>,
}

impl HostHealth {
    /// Notes how a request to `url` went: a failure of the kind `Unavailable` marks the host, anything
    /// else (an answer, even "not found") clears it.
    pub fn note(&self, url: &str, failed: bool) {
        let mut map = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        if failed {
            map.insert(url.to_string(), Instant::now());
        } else {
            map.remove(url);
        }
    }

    /// When `url` failed, if within [`FAILED_HOST_COOLDOWN`].
    pub fn failed_recently(&self, url: &str) -> Option<Duration> {
        let map = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        map.get(url).map(Instant::elapsed).filter(|e| *e < FAILED_HOST_COOLDOWN)
    }

    /// `hosts` in the order to try them: as configured, except that hosts which failed recently go last
    /// (still in configured order among themselves, and still tried).
    pub fn order<'a, T>(&self, hosts: impl IntoIterator<Item = &'a T>, url: impl Fn(&T) -> String) -> Vec<&'a T>
    where
        T: 'a,
    {
        let (mut healthy, failed): (Vec<&T>, Vec<&T>) =
            hosts.into_iter().partition(|h| self.failed_recently(&url(h)).is_none());
        healthy.extend(failed);
        healthy
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    #[tokio::test(start_paused = true)]
    async fn a_silent_body_is_cut_and_a_slow_reader_is_not() {
        let d = Deadlines {
            connect: Duration::from_secs(1),
            response: Duration::from_secs(2),
        };
        // Two chunks, then silence.
        let chunks = futures_util::stream::iter([Ok(Bytes::from_static(b"ab")), Ok(Bytes::from_static(b"cd"))]);
        let body: BlobStream = Box::pin(chunks.chain(futures_util::stream::pending()));
        let mut cut = d.idle_cut("http://r", "blob x", body);
        assert_eq!(cut.next().await.unwrap().unwrap(), "ab");
        // The reader dawdles longer than the deadline: not the registry's silence.
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(cut.next().await.unwrap().unwrap(), "cd");
        let started = tokio::time::Instant::now();
        let err = cut.next().await.unwrap().unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(2));
        assert!(err.to_string().contains("registry.response_timeout"), "{err}");
        assert!(cut.next().await.is_none(), "ended after the cut");
    }

    #[tokio::test(start_paused = true)]
    async fn headers_must_come_within_the_deadline() {
        let d = Deadlines::for_host(None, Duration::from_secs(10), Duration::from_secs(2));
        assert_eq!(d.headers(), Duration::from_secs(2), "connecting is part of it");
        let slow = Deadlines::for_host(
            Some(Duration::from_secs(30)),
            Duration::from_secs(10),
            Duration::from_secs(2),
        );
        assert_eq!(
            (slow.connect, slow.headers()),
            (Duration::from_secs(30), Duration::from_secs(30))
        );
        let never = std::future::pending::<Result<(), RegistryError>>();
        let err = d.headers_within("http://r", "manifest a:1", never).await.unwrap_err();
        assert!(matches!(err, RegistryError::TimedOut { .. }), "{err}");
        assert_eq!(crate::error::Classify::kind(&err), crate::error::ErrorKind::Unavailable);
    }

    #[test]
    fn hosts_that_just_failed_are_tried_last() {
        let health = HostHealth::default();
        let hosts = ["http://m1", "http://m2", "https://up"];
        let order =
            |h: &HostHealth| -> Vec<&str> { h.order(hosts.iter(), |u| u.to_string()).into_iter().copied().collect() };
        assert_eq!(order(&health), hosts);
        health.note("http://m1", true);
        assert_eq!(order(&health), ["http://m2", "https://up", "http://m1"]);
        health.note("http://m1", false);
        assert_eq!(order(&health), hosts);
    }
}
