//! Registry authentication: credentials from the request (username/password, base64 `auth`) or from a
//! docker `config.json`; missing or wrong ones are Unauthenticated, and no password ever shows up in an
//! error or the log.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use base64::Engine;
use common::daemon::setup::{Setup, small_image};
use common::daemon::{DaemonOptions, list, pull};
use common::registry::RegistryOptions;
use imaged::proto::runtime::v1 as cri;
use tonic::Code;

const USER: &str = "puller";
const PASSWORD: &str = "s3cret-Pa55word";

fn basic(user: &str, password: &str) -> Option<cri::AuthConfig> {
    Some(cri::AuthConfig {
        username: user.into(),
        password: password.into(),
        ..Default::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_credentials_are_used_and_bad_ones_refused_without_leaking() {
    let s = Setup::start_with(RegistryOptions::with_htpasswd(USER, PASSWORD), DaemonOptions::default()).await;
    let img = small_image(1, None);
    s.push("private", "v1", &img).await;
    let image = s.image("private", "v1");
    let mut c = s.daemon.client().await;

    let err = pull(&mut c, &image, None).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert!(err.message().starts_with("pulling image "), "{}", err.message());
    common::runtimes::kubelet::assert_reason_once(&err, &image, "ErrImagePull");

    let wrong = "not-the-Pa55word";
    let err = pull(&mut c, &image, basic(USER, wrong)).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert!(!err.message().contains(wrong), "the password leaked: {}", err.message());
    assert!(list(&mut c).await.is_empty());

    assert_eq!(
        pull(&mut c, &image, basic(USER, PASSWORD)).await.unwrap(),
        img.config_digest
    );

    // The base64 `auth` form, as kubelet sends it from a dockerconfigjson secret.
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    let mut c2 = s.daemon.client().await;
    let other = small_image(2, None);
    s.push("private", "v2", &other).await;
    let by_auth = Some(cri::AuthConfig {
        auth,
        ..Default::default()
    });
    assert_eq!(
        pull(&mut c2, &s.image("private", "v2"), by_auth).await.unwrap(),
        other.config_digest
    );

    let bad_auth = Some(cri::AuthConfig {
        auth: "!!!not base64!!!".into(),
        ..Default::default()
    });
    let err = pull(&mut c2, &image, bad_auth).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");

    let log = s.daemon.log();
    assert!(
        !log.contains(PASSWORD) && !log.contains(wrong),
        "a password appears in the daemon log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_come_from_a_docker_config_json() {
    let dir = tempfile::tempdir().unwrap();
    let auth_file = dir.path().join("config.json");
    let s = Setup::start_with(
        RegistryOptions::with_htpasswd(USER, PASSWORD),
        DaemonOptions {
            auth_files: vec![auth_file.clone()],
            ..Default::default()
        },
    )
    .await;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    let json = serde_json::json!({ "auths": { format!("http://{}", s.registry.addr()): { "auth": auth } } });
    std::fs::write(&auth_file, serde_json::to_vec(&json).unwrap()).unwrap();

    let img = small_image(3, None);
    s.push("private", "v1", &img).await;
    let mut c = s.daemon.client().await;
    assert_eq!(
        pull(&mut c, &s.image("private", "v1"), None).await.unwrap(),
        img.config_digest
    );
    assert!(!s.daemon.log().contains(PASSWORD));
}
