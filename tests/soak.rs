//! The soak test (issue 12): concurrent CRI clients against the real daemon with GC, prune, a slow and an
//! absent registry and a SIGKILL in the middle, every answer checked (`tests/common/soak`). About a minute
//! here; `hack/soak` runs the same test for as long as asked and keeps the report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/soak/mod.rs"]
#[allow(dead_code)]
mod soak;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_under_concurrent_load() {
    let cfg = soak::SoakConfig::from_env();
    let outcome = soak::run(cfg).await;
    println!("{}", outcome.report);
    if let Ok(path) = std::env::var("IMAGED_SOAK_REPORT") {
        std::fs::write(&path, &outcome.report).expect("write the report");
    }
    assert!(
        outcome.problems.is_empty(),
        "the soak found {} problems:\n{}\n--- daemon log (end) ---\n{}",
        outcome.problems.len(),
        outcome.problems.join("\n"),
        outcome.log_tail
    );
}

/// The ledger's rule: after a pull answered at A, a removal excuses a missing image only if it may have
/// acted after A (answered after A, or still in flight and issued before the check answered).
#[test]
fn ledger_excuses_only_removals_that_may_have_acted_after_the_pull() {
    use soak::ledger::{Kind, Ledger, Scope};
    let l = Ledger::new();
    let id = "sha256:aa";
    // A removal issued and answered before the pull answered (A = 5) excuses nothing.
    let t = l.begin(Kind::Removal, Scope::Id(id.into()), 1.0);
    l.end(t, 2.0);
    assert!(!l.may_have_acted(Kind::Removal, id, 5.0, 6.0));
    // One issued before A and answered after it does: it may have acted after the pull.
    let t = l.begin(Kind::Removal, Scope::Id(id.into()), 4.0);
    l.end(t, 5.5);
    assert!(l.may_have_acted(Kind::Removal, id, 5.0, 6.0));
    assert!(!l.may_have_acted(Kind::Removal, id, 5.6, 6.0));
    // In flight: only if issued before the check answered.
    let t = l.begin(Kind::Removal, Scope::Id(id.into()), 7.0);
    assert!(l.may_have_acted(Kind::Removal, id, 6.5, 7.5));
    assert!(!l.may_have_acted(Kind::Removal, id, 6.5, 6.9));
    l.end(t, 8.0);
    // Another image's removal excuses nothing; a GC or prune excuses every image.
    assert!(!l.may_have_acted(Kind::Removal, "sha256:bb", 6.0, 9.0));
    let t = l.begin(Kind::Removal, Scope::All, 9.0);
    assert!(l.may_have_acted(Kind::Removal, "sha256:bb", 9.5, 10.0));
    l.end(t, 9.2);
    assert!(!l.may_have_acted(Kind::Removal, "sha256:bb", 9.5, 10.0));
    // Pulls never excuse a missing image, and GC never excuses a present one.
    assert!(!l.may_have_acted(Kind::Pull, id, 0.0, 10.0));
    let t = l.begin(Kind::Pull, Scope::Id(id.into()), 11.0);
    assert!(l.may_have_acted(Kind::Pull, id, 10.5, 12.0));
    assert!(!l.may_have_acted(Kind::Removal, id, 10.5, 12.0));
    l.end(t, 12.0);
}

/// The trend test compares medians of the first and last thirds, so a single spike does not fail it and a
/// steady climb does.
#[test]
fn trend_ignores_spikes_and_catches_a_climb() {
    use soak::stats::{Tolerance, trend};
    let tol = Tolerance {
        relative: 0.25,
        absolute: 16,
    };
    let mut flat = vec![100u64; 30];
    flat[28] = 10_000;
    flat[3] = 1;
    assert!(trend(&flat, tol).unwrap().flat());
    let climb: Vec<u64> = (0..30).map(|i| 100 + i * 5).collect();
    let t = trend(&climb, tol).unwrap();
    assert!(!t.flat(), "{t:?}");
    assert_eq!(trend(&[1, 2, 3, 4, 5], tol), None, "too short to judge");
}

#[test]
fn quantiles_by_nearest_rank() {
    use soak::stats::quantile;
    let mut v: Vec<u32> = (1..=100).rev().collect();
    assert_eq!(quantile(&mut v, 0.5), Some(50));
    assert_eq!(quantile(&mut v, 0.99), Some(99));
    assert_eq!(quantile(&mut [7], 0.99), Some(7));
    assert_eq!(quantile(&mut [], 0.5), None);
}

/// Expected classes need their cause: an outage error outside the outage, or a back-off armed by a local
/// conflict, is a finding.
#[test]
fn failures_are_expected_only_where_their_cause_was() {
    use soak::classify::{Disturbances, Failure, Rpc, classify, normalize};
    use soak::ledger::Ledger;
    use tonic::Code;
    let ledger = Ledger::new();
    let d = Disturbances {
        outage_start: Some(10.0),
        outage_end: Some(12.0),
        kill_at: Some(30.0),
        restarted_at: Some(30.4),
        ..Default::default()
    };
    let f = |issued: f64, answered: f64, code: Code, message: &'static str| Failure {
        rpc: Rpc::Pull,
        id: Some("sha256:aa"),
        issued,
        answered,
        code,
        message,
    };
    let unavailable = "RegistryUnavailable: pulling image \"x\": connection refused";
    assert!(classify(&f(9.0, 10.5, Code::Unknown, unavailable), &d, &ledger).expected);
    assert!(!classify(&f(1.0, 2.0, Code::Unknown, unavailable), &d, &ledger).expected);
    let backoff_outage = "RegistryUnavailable: Back-off pulling image \"x\": refused";
    assert!(classify(&f(13.0, 13.1, Code::Unknown, backoff_outage), &d, &ledger).expected);
    let backoff_local = "Back-off pulling image \"x\": image x was removed";
    assert!(!classify(&f(13.0, 13.1, Code::Unavailable, backoff_local), &d, &ledger).expected);
    assert!(classify(&f(29.0, 30.2, Code::Unknown, "transport error"), &d, &ledger).expected);
    assert!(classify(&f(30.2, 30.2, Code::Unavailable, "Connection refused"), &d, &ledger).expected);
    assert!(!classify(&f(30.5, 30.6, Code::Unknown, "transport error"), &d, &ledger).expected);
    assert_eq!(
        normalize("image 127.0.0.1:4000/a:1 (sha256:0123abcd) was removed"),
        "image N:N/a:N (sha256:…) was removed"
    );
}
