//! kubelet's ensure logic in the server, end to end: the per-pod back-off and recovery (with the events that
//! name the pod), and server-side pull policy with stale-if-unavailable, counting registry requests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::daemon::setup::{Setup, small_image};
use common::daemon::{DaemonOptions, pull, spec};
use common::registry::RegistryOptions;
use imaged::proto::runtime::v1 as cri;
use tonic::Code;

fn backoff_config(extra: &str) -> String {
    format!("[pull]\nbackoff_initial = \"1s\"\nbackoff_max = \"2s\"\n{extra}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_image_backs_off_and_recovers_when_served() {
    let s = Setup::start_with(
        RegistryOptions::default(),
        DaemonOptions {
            config: Some(backoff_config("")),
            ..Default::default()
        },
    )
    .await;
    let image = s.image("late", "v1");
    let sandbox = |uid: &str| cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: "web".into(),
            uid: uid.into(),
            namespace: "prod".into(),
            attempt: 0,
        }),
        ..Default::default()
    };
    let mut c = s.daemon.client().await;
    let req = |uid: &str| cri::PullImageRequest {
        image: spec(&image),
        auth: None,
        sandbox_config: Some(sandbox(uid)),
    };

    let first = c.pull_image(req("pod-1")).await.unwrap_err();
    assert_eq!(first.code(), Code::NotFound, "{first:?}");
    assert!(first.message().starts_with("pulling image "), "{}", first.message());
    common::runtimes::kubelet::assert_reason_once(&first, &image, "ErrImagePull");
    let manifests_before = s.registry.gets("/manifests/v1");

    let second = c.pull_image(req("pod-1")).await.unwrap_err();
    assert!(
        second
            .message()
            .starts_with(&format!("Back-off pulling image \"{image}\": ")),
        "{}",
        second.message()
    );
    common::runtimes::kubelet::assert_reason_once(&second, &image, "ErrImagePull");
    assert_eq!(
        s.registry.gets("/manifests/v1"),
        manifests_before,
        "a backing-off request does not reach the registry"
    );

    // Another pod has its own key.
    let other = c.pull_image(req("pod-2")).await.unwrap_err();
    assert_eq!(other.code(), Code::NotFound);

    // The registry starts serving the image; once the back-off has passed the pull succeeds. Until then
    // each request is refused by the back-off (a refusal does not extend it, as in kubelet).
    let img = small_image(3, None);
    s.push("late", "v1", &img).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let pulled = loop {
        match c.pull_image(req("pod-1")).await {
            Ok(r) => break r.into_inner().image_ref,
            Err(e) => assert!(
                e.message().starts_with("Back-off pulling image ") && Instant::now() < deadline,
                "{e:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(pulled, img.config_digest);
    let log = s.daemon.log();
    for event in ["Pulling", "Failed", "BackOff", "Pulled"] {
        assert!(
            log.contains(&format!("reason=\"{event}\"")) || log.contains(&format!("reason={event}")),
            "no {event} event:\n{log}"
        );
    }
    assert!(log.contains("pod-1") && log.contains("prod"), "events name the pod");
}

/// A fake registry serving `images` as `app{i}:v1`, each blob slowed down so overlap would show.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_policies_decide_what_reaches_the_registry() {
    let config = "[pull]\nbackoff_initial = \"0s\"\nstale_if_unavailable = true\n[pull.policy]\ndefault = \"always\"\nrules = [\n  { pattern = \"*never*\", policy = \"never\" },\n  { pattern = \"*lazy*\", policy = \"if-not-present\" },\n]\n";
    let mut s = Setup::start_with(
        RegistryOptions::default(),
        DaemonOptions {
            config: Some(config.into()),
            ..Default::default()
        },
    )
    .await;
    let (never, lazy, always) = (small_image(60, None), small_image(61, None), small_image(62, None));
    s.push("never", "v1", &never).await;
    s.push("lazy", "v1", &lazy).await;
    s.push("always", "v1", &always).await;
    let mut c = s.daemon.client().await;

    let before = s.registry.requests().len();
    let err = pull(&mut c, &s.image("never", "v1"), None).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().starts_with("Container image"), "{}", err.message());
    common::runtimes::kubelet::assert_reason_once(&err, &s.image("never", "v1"), "ErrImagePull");
    assert_eq!(s.registry.requests().len(), before, "never: no registry request at all");

    pull(&mut c, &s.image("lazy", "v1"), None).await.unwrap();
    let before = s.registry.requests().len();
    pull(&mut c, &s.image("lazy", "v1"), None).await.unwrap();
    assert_eq!(
        s.registry.requests().len(),
        before,
        "if-not-present: a present image costs no request"
    );

    pull(&mut c, &s.image("always", "v1"), None).await.unwrap();
    let before = s.registry.requests();
    pull(&mut c, &s.image("always", "v1"), None).await.unwrap();
    let after = s.registry.requests();
    let new: Vec<_> = after[before.len()..].to_vec();
    assert!(
        !new.is_empty() && new.iter().all(|r| r.path.contains("/manifests/v1")),
        "always re-resolves the tag only: {new:?}"
    );

    // The registry goes away: the present tag is served (stale-if-unavailable), an absent one fails.
    s.registry.stop();
    assert_eq!(
        pull(&mut c, &s.image("always", "v1"), None).await.unwrap(),
        always.config_digest
    );
    assert!(s.daemon.log().contains("stale_if_unavailable"));
    let err = pull(&mut c, &s.image("absent", "v1"), None).await.unwrap_err();
    assert!(err.message().starts_with("RegistryUnavailable: "), "{}", err.message());
    common::runtimes::kubelet::assert_reason_once(&err, &s.image("absent", "v1"), "RegistryUnavailable");
}
