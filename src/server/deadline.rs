//! A caller's deadline (`grpc-timeout`) that passes is DEADLINE_EXCEEDED, never CANCELLED.
//!
//! tonic's server enforces `grpc-timeout` itself, around the services (`transport::service::GrpcTimeout`),
//! and answers an expired one with CANCELLED ("Timeout expired"). The caller's own timer fires at the same
//! moment, so it saw either its own DEADLINE_EXCEEDED or tonic's CANCELLED, whichever came first (critest's
//! "public image should timeout if requested" flaked on that). [`DeadlineLayer`] wraps the services inside
//! tonic's timeout and answers DEADLINE_EXCEEDED at the same deadline first, deterministically:
//! - it reads the header when tonic hands it the request, which tonic does before it arms its own timer for
//!   the same duration, so this deadline is never the later of the two (and the timer rounds both up to the
//!   same or an earlier millisecond tick for this one);
//! - when both have expired, tonic's timeout polls the service before its timer, so this answer wins.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tonic::Status;
use tonic::codegen::http;

/// The gRPC header carrying the caller's timeout.
const GRPC_TIMEOUT: &str = "grpc-timeout";

/// Wraps every RPC in the caller's deadline (see the module documentation).
#[derive(Debug, Clone, Copy, Default)]
pub struct DeadlineLayer;

impl<S> tower::Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;

    fn layer(&self, inner: S) -> Deadline<S> {
        Deadline { inner }
    }
}

/// The service [`DeadlineLayer`] makes.
#[derive(Debug, Clone)]
pub struct Deadline<S> {
    inner: S,
}

impl<S, B, R> tower::Service<http::Request<B>> for Deadline<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    R: Default,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<http::Response<R>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let timeout = req
            .headers()
            .get(GRPC_TIMEOUT)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_grpc_timeout);
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        let rpc = req.uri().path().to_string();
        let answer = self.inner.call(req);
        Box::pin(async move {
            let Some(deadline) = deadline else {
                return answer.await;
            };
            match tokio::time::timeout_at(deadline, answer).await {
                Ok(answer) => answer,
                Err(_) => {
                    tracing::debug!(rpc, ?timeout, "the caller's deadline passed");
                    Ok(expired(&rpc, timeout.unwrap_or_default()).into_http())
                }
            }
        })
    }
}

/// The answer to a call whose deadline passed.
fn expired(rpc: &str, timeout: Duration) -> Status {
    Status::deadline_exceeded(format!(
        "{rpc}: the caller's deadline ({timeout:?}, grpc-timeout) passed before the call finished; call again \
         with a longer deadline"
    ))
}

/// A `grpc-timeout` value: at most 8 digits and a unit (`H`, `M`, `S`, `m`, `u`, `n`), per gRPC over HTTP/2.
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let unit = value.chars().last()?;
    let digits = &value[..value.len() - unit.len_utf8()];
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        'H' => Duration::from_secs(n * 3600),
        'M' => Duration::from_secs(n * 60),
        'S' => Duration::from_secs(n),
        'm' => Duration::from_millis(n),
        'u' => Duration::from_micros(n),
        'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_grpc_timeouts_and_rejects_the_malformed() {
        let table: &[(&str, Option<Duration>)] = &[
            ("1H", Some(Duration::from_secs(3600))),
            ("2M", Some(Duration::from_secs(120))),
            ("30S", Some(Duration::from_secs(30))),
            ("100m", Some(Duration::from_millis(100))),
            ("99999999u", Some(Duration::from_micros(99_999_999))),
            ("5n", Some(Duration::from_nanos(5))),
            ("123456789m", None),
            ("m", None),
            ("", None),
            ("10x", None),
            ("-1S", None),
            ("1.5S", None),
        ];
        for &(value, want) in table {
            assert_eq!(parse_grpc_timeout(value), want, "{value:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_expired_deadline_answers_deadline_exceeded_and_an_unexpired_one_the_service() {
        use tower::{Layer, ServiceExt};
        let slow = tower::service_fn(|_req: http::Request<()>| async {
            tokio::time::sleep(Duration::from_secs(10)).await;
            Ok::<_, std::convert::Infallible>(http::Response::new(String::from("done")))
        });
        let svc = DeadlineLayer.layer(slow);
        let req = |timeout: &str| {
            http::Request::builder()
                .uri("/runtime.v1.ImageService/PullImage")
                .header(GRPC_TIMEOUT, timeout)
                .body(())
                .unwrap()
        };
        let answer = svc.clone().oneshot(req("100m")).await.unwrap();
        let status = Status::from_header_map(answer.headers()).expect("a gRPC status");
        assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
        assert!(status.message().contains("PullImage"), "{}", status.message());
        let answer = svc.clone().oneshot(req("20S")).await.unwrap();
        assert_eq!(answer.into_body(), "done");
        let no_deadline = http::Request::builder().uri("/x").body(()).unwrap();
        assert_eq!(svc.oneshot(no_deadline).await.unwrap().into_body(), "done");
    }
}
