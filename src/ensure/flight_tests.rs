//! Tests of `flight`: each request's outcome is logged in that request's span.

use std::sync::Mutex as StdMutex;

use tracing::Level;

use super::*;

/// A log sink the fmt layer writes into.
#[derive(Clone, Default)]
struct Sink(Arc<StdMutex<Vec<u8>>>);

impl std::io::Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_coalesced_pull_logs_each_outcome_in_its_callers_span() {
    let sink = Sink::default();
    let writer = sink.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(Level::INFO)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let flights = Flights::new(Backoff::new(Default::default()), Arc::new(Metrics::new()), false);
    let mut receivers = Vec::new();
    tracing::subscriber::with_default(subscriber, || {
        let mut started = None;
        for pod in ["web", "db"] {
            let span = tracing::info_span!("rpc", pod);
            let (tx, rx) = oneshot::channel();
            receivers.push(rx);
            let waiter = span.in_scope(|| Waiter::new(Caller::default(), "app:v1".into(), None, tx));
            if let Joined::Started(f) = flights.join_or_start("key", waiter) {
                started = Some(f);
            }
        }
        let flight = started.unwrap_or_else(|| panic!("the first request starts the pull"));
        // Outside both spans, as the pull's task is.
        flights.finish("key", &flight, Ok(Arc::new(ImageRecord::sample("config"))));
    });
    for mut rx in receivers {
        assert!(matches!(rx.try_recv(), Ok(Ok(_))), "every request has its answer");
    }
    let bytes = sink.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let log = String::from_utf8_lossy(&bytes);
    let pulled: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("Successfully pulled image"))
        .collect();
    assert_eq!(pulled.len(), 2, "{log}");
    assert!(
        pulled[0].contains("rpc{pod=\"web\"}:") && pulled[1].contains("rpc{pod=\"db\"}:"),
        "{log}"
    );
    assert!(
        pulled.iter().all(|l| l.contains("reason=\"Pulled\" image=app:v1")),
        "{log}"
    );
}
