//! `ImageSpec.image_ref` on PullImage (Kubernetes 1.36, KEP-5365) through the real socket: it pins the pull
//! to that image whatever the tag names now, and an answer that is not the pinned image is refused.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::daemon::setup::{Setup, small_image};
use common::daemon::{spec, status};
use imaged::proto::runtime::v1 as cri;
use tonic::Code;

async fn pull_pinned(s: &Setup, image: &str, image_ref: &str) -> Result<String, tonic::Status> {
    let mut c = s.daemon.client().await;
    let mut image_spec = spec(image).unwrap();
    image_spec.image_ref = image_ref.to_string();
    c.pull_image(cri::PullImageRequest {
        image: Some(image_spec),
        auth: None,
        sandbox_config: None,
    })
    .await
    .map(|r| r.into_inner().image_ref)
}

fn manifest_gets(s: &Setup) -> usize {
    s.registry
        .requests()
        .iter()
        .filter(|r| r.path.contains("/manifests/"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_ref_pins_the_pull_and_a_mismatch_is_refused() {
    // The default pull policy (`always`) resolves tags: without a pin, app:v1 would be the newest.
    let s = Setup::start().await;
    let (v1, v2) = (small_image(1, None), small_image(2, None));
    s.push("app", "v1", &v1).await;
    let image = s.image("app", "v1");
    assert_eq!(pull_pinned(&s, &image, "").await.unwrap(), v1.config_digest);
    s.push("app", "v1", &v2).await; // The tag moves on.

    // Pinned by image id (what PullImage answers): the image held, without asking the registry.
    let before = manifest_gets(&s);
    assert_eq!(
        pull_pinned(&s, &image, &v1.config_digest).await.unwrap(),
        v1.config_digest
    );
    assert_eq!(manifest_gets(&s), before, "a held pinned image needs no tag resolution");

    // Pinned by repo digest (what a pod's imageID says) to an image not held: pulled by that digest, and
    // the tag is left where this node had it.
    let v2_ref = format!("{}@{}", s.name("app"), v2.manifest_digest);
    assert_eq!(pull_pinned(&s, &image, &v2_ref).await.unwrap(), v2.config_digest);
    let mut c = s.daemon.client().await;
    assert_eq!(status(&mut c, &image).await.unwrap().id, v1.config_digest);
    assert!(status(&mut c, &v2_ref).await.is_some());

    // A held image of the repository answers its pin whatever tag is asked for.
    let v3 = small_image(3, None);
    s.push("app", "v3", &v3).await;
    let v3_image = s.image("app", "v3");
    assert_eq!(
        pull_pinned(&s, &v3_image, &v1.config_digest).await.unwrap(),
        v1.config_digest
    );

    // Pinned by id to an image not held, which the tag does not name: the pull happens (an id cannot be
    // pulled by), and its answer is refused, clearly.
    let elsewhere = small_image(4, None);
    let err = pull_pinned(&s, &v3_image, &elsewhere.config_digest).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    let msg = err.message();
    assert!(
        msg.starts_with("pulling image ")
            && msg.contains(&format!(
                "image_ref {:?} pins the pull to another image",
                elsewhere.config_digest
            ))
            && msg.contains(&v3.config_digest),
        "{msg}"
    );

    // Not a digest of the requested repository: refused before anything is asked.
    let other = format!("{}@{}", s.name("other"), v1.manifest_digest);
    let err = pull_pinned(&s, &image, &other).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("invalid image_ref"), "{}", err.message());
}
