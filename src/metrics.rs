//! Prometheus metrics of the daemon, and the HTTP endpoint that serves them (`--metrics-addr`).
//!
//! Names follow Prometheus conventions: counters end in `_total`, durations are `_seconds`, sizes `_bytes`.

use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

/// The `result` label of pulls.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// `success`, `failure`, `backoff`, `never` (refused by policy) or `present` (served locally).
    pub result: String,
}

/// Every metric imaged exports.
pub struct Metrics {
    registry: Registry,
    /// Pull requests by result.
    pub pulls: Family<ResultLabel, Counter>,
    /// Pulls running now (not counting joined callers).
    pub pulls_in_progress: Gauge,
    /// Duration of pulls that reached the registry.
    pub pull_duration: Histogram,
    /// Bytes downloaded from registries.
    pub pulled_bytes: Counter,
    /// Bytes of layers that were already present and not downloaded.
    pub skipped_bytes: Counter,
    /// Pull requests that joined a pull already in flight.
    pub coalesced_pulls: Counter,
    /// Pull requests refused because the image is backing off.
    pub backoffs: Counter,
    /// Time pulls waited for a slot and a rate-limit token.
    pub queue_wait: Histogram,
    /// Bytes the store uses (blobs, snapshots, metadata), updated on every scrape and change.
    pub store_bytes: Gauge,
    /// Images in the store.
    pub images: Gauge,
    /// Garbage collection and prune runs.
    pub gc_runs: Counter,
    /// Images removed by garbage collection and prune.
    pub gc_images_removed: Counter,
    /// Bytes freed by garbage collection and prune (measured, not estimated).
    pub gc_freed_bytes: Counter,
    /// Credential re-verifications with the registry, by result (`verified`, `refused`).
    pub credential_verifications: Family<ResultLabel, Counter>,
    /// Responses `429 Too Many Requests` from registries (waited out or not).
    pub registry_rate_limited: Counter,
    /// Warnings registries sent in `Warning` headers (one per warning, however often it is logged).
    pub registry_warnings: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("imaged");
        let m = Metrics {
            pulls: Family::default(),
            pulls_in_progress: Gauge::default(),
            pull_duration: Histogram::new(exponential_buckets(0.05, 2.0, 14)),
            pulled_bytes: Counter::default(),
            skipped_bytes: Counter::default(),
            coalesced_pulls: Counter::default(),
            backoffs: Counter::default(),
            queue_wait: Histogram::new(exponential_buckets(0.001, 4.0, 10)),
            store_bytes: Gauge::default(),
            images: Gauge::default(),
            gc_runs: Counter::default(),
            gc_images_removed: Counter::default(),
            gc_freed_bytes: Counter::default(),
            credential_verifications: Family::default(),
            registry_rate_limited: Counter::default(),
            registry_warnings: Counter::default(),
            registry: Registry::default(),
        };
        registry.register("pulls", "Image pull requests by result", m.pulls.clone());
        registry.register(
            "pulls_in_progress",
            "Image pulls running now",
            m.pulls_in_progress.clone(),
        );
        registry.register_with_unit(
            "pull_duration",
            "Duration of image pulls",
            Unit::Seconds,
            m.pull_duration.clone(),
        );
        registry.register_with_unit(
            "pulled",
            "Bytes downloaded from registries",
            Unit::Bytes,
            m.pulled_bytes.clone(),
        );
        registry.register_with_unit(
            "skipped",
            "Bytes of layers already present, not downloaded",
            Unit::Bytes,
            m.skipped_bytes.clone(),
        );
        registry.register(
            "coalesced_pulls",
            "Pull requests that joined a pull in flight",
            m.coalesced_pulls.clone(),
        );
        registry.register(
            "pull_backoffs",
            "Pull requests refused while backing off",
            m.backoffs.clone(),
        );
        registry.register_with_unit(
            "pull_queue_wait",
            "Time pulls waited for a pull slot and a rate-limit token",
            Unit::Seconds,
            m.queue_wait.clone(),
        );
        registry.register_with_unit(
            "store",
            "Bytes used by the image store",
            Unit::Bytes,
            m.store_bytes.clone(),
        );
        registry.register("images", "Images in the store", m.images.clone());
        registry.register("gc_runs", "Garbage collection and prune runs", m.gc_runs.clone());
        registry.register(
            "gc_images_removed",
            "Images removed by GC and prune",
            m.gc_images_removed.clone(),
        );
        registry.register_with_unit(
            "gc_freed",
            "Bytes freed by GC and prune",
            Unit::Bytes,
            m.gc_freed_bytes.clone(),
        );
        registry.register(
            "credential_verifications",
            "Credential re-verifications with the registry, by result",
            m.credential_verifications.clone(),
        );
        registry.register(
            "registry_rate_limited",
            "Responses 429 Too Many Requests from registries",
            m.registry_rate_limited.clone(),
        );
        registry.register(
            "registry_warnings",
            "Warnings registries sent in Warning headers",
            m.registry_warnings.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Counts a pull request with `result`.
    pub fn pull_result(&self, result: &str) {
        self.pulls
            .get_or_create(&ResultLabel {
                result: result.to_string(),
            })
            .inc();
    }

    /// Counts a credential re-verification with `result` (`verified` or `refused`).
    pub fn verification(&self, result: &str) {
        self.credential_verifications
            .get_or_create(&ResultLabel {
                result: result.to_string(),
            })
            .inc();
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Serves `GET /metrics` (any path, in fact) on `addr` until the task is dropped. `refresh` runs before
/// each scrape to update gauges that are cheaper to read than to track.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    refresh: Arc<dyn Fn() + Send + Sync>,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving metrics");
    loop {
        let (stream, _) = listener.accept().await?;
        let (metrics, refresh) = (metrics.clone(), refresh.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |_req| {
                refresh();
                let body = metrics.encode();
                async move {
                    hyper::Response::builder()
                        .header(
                            "content-type",
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )
                        .body(Full::new(Bytes::from(body)))
                }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(error = %e, "metrics connection ended");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_prometheus_conventions() {
        let m = Metrics::new();
        m.pull_result("success");
        m.pulled_bytes.inc_by(42);
        m.pull_duration.observe(1.5);
        let text = m.encode();
        for name in [
            "imaged_pulls_total{result=\"success\"} 1",
            "imaged_pulled_bytes_total 42",
            "imaged_pull_duration_seconds_count 1",
            "imaged_pulls_in_progress 0",
            "imaged_store_bytes 0",
            "imaged_gc_freed_bytes_total 0",
            "imaged_coalesced_pulls_total 0",
            "imaged_pull_queue_wait_seconds_count 0",
            "imaged_registry_rate_limited_total 0",
            "imaged_registry_warnings_total 0",
        ] {
            assert!(text.contains(name), "missing {name} in:\n{text}");
        }
    }
}
