//! Tests of `flight`: each request's outcome is logged in that request's span.

use tracing::Level;

use super::*;

#[test]
fn a_coalesced_pull_logs_each_outcome_in_its_callers_span() {
    let flights = Flights::new(Backoff::new(Default::default()), Arc::new(Metrics::new()), false);
    let mut receivers = Vec::new();
    let lines = crate::test_log::logged(Level::INFO, || {
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
    let log = lines.join("\n");
    let pulled: Vec<&String> = lines
        .iter()
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
