//! Token flows, against a small token-issuing registry (the real registry here
//! has no token service): `registry_token` is presented as a bearer token as is; `identity_token` is
//! exchanged at the registry's token realm with the OAuth2 refresh-token grant, as containerd does.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::daemon::pull;
use common::daemon::setup::small_image;
use common::images::image::OCI_MANIFEST;
use common::registry::fake_registry::{Canned, FakeRegistry, daemon_for};
use imaged::proto::runtime::v1 as cri;

/// A fake registry serving one image and a token realm; `/v2/` challenges for a bearer token.
async fn token_registry() -> (FakeRegistry, common::images::image::BuiltImage) {
    let fake = FakeRegistry::start().await;
    let img = small_image(9, None);
    fake.manifest("app", "v1", OCI_MANIFEST, &img.manifest);
    fake.blob("app", &img.config_digest, img.config.clone());
    for l in &img.layers {
        fake.blob("app", &l.digest, l.blob.clone());
    }
    let mut challenge = Canned::status(401);
    challenge.headers.push((
        "WWW-Authenticate".into(),
        format!(r#"Bearer realm="http://{}/token",service="fake-registry""#, fake.addr()),
    ));
    fake.route("/v2/", challenge);
    fake.route(
        "/token",
        Canned::ok(
            "application/json",
            br#"{"access_token":"access-from-refresh"}"#.to_vec(),
        ),
    );
    (fake, img)
}

fn manifest_requests(fake: &FakeRegistry) -> Vec<String> {
    fake.requests()
        .into_iter()
        .filter(|r| r.starts_with("GET /v2/app/manifests/v1"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_token_is_presented_as_a_bearer_token() {
    let (fake, img) = token_registry().await;
    let (_hosts, d) = daemon_for(&fake, None).await;
    let mut c = d.client().await;
    let auth = Some(cri::AuthConfig {
        registry_token: "given-registry-token".into(),
        ..Default::default()
    });
    assert_eq!(
        pull(&mut c, &format!("{}/app:v1", fake.addr()), auth).await.unwrap(),
        img.config_digest
    );
    let m = manifest_requests(&fake);
    assert!(!m.is_empty());
    assert!(
        m.iter()
            .all(|r| r.to_lowercase().contains("authorization: bearer given-registry-token")),
        "{m:?}"
    );
    assert!(
        !fake.requests().iter().any(|r| r.starts_with("POST /token")),
        "no token exchange for a registry token"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identity_token_is_exchanged_for_an_access_token() {
    let (fake, img) = token_registry().await;
    let (_hosts, d) = daemon_for(&fake, None).await;
    let mut c = d.client().await;
    let auth = Some(cri::AuthConfig {
        identity_token: "my-refresh-token".into(),
        ..Default::default()
    });
    assert_eq!(
        pull(&mut c, &format!("{}/app:v1", fake.addr()), auth).await.unwrap(),
        img.config_digest
    );
    let exchange: Vec<String> = fake
        .requests()
        .into_iter()
        .filter(|r| r.starts_with("POST /token"))
        .collect();
    assert!(!exchange.is_empty(), "{:?}", fake.seen());
    let body = &exchange[0];
    for part in [
        "grant_type=refresh_token",
        "refresh_token=my-refresh-token",
        "service=fake-registry",
        "scope=repository%3Aapp%3Apull",
    ] {
        assert!(body.contains(part), "token request lacks {part}: {body}");
    }
    let m = manifest_requests(&fake);
    assert!(
        m.iter()
            .all(|r| r.to_lowercase().contains("authorization: bearer access-from-refresh")),
        "{m:?}"
    );
    assert!(
        !d.log().contains("my-refresh-token"),
        "the identity token leaked into the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_credentials_the_anonymous_token_flow_is_used() {
    let (fake, img) = token_registry().await;
    let (_hosts, d) = daemon_for(&fake, None).await;
    let mut c = d.client().await;
    assert_eq!(
        pull(&mut c, &format!("{}/app:v1", fake.addr()), None).await.unwrap(),
        img.config_digest
    );
    // The challenge sent us to the realm for a pull-scoped token, asked for without credentials.
    let asked: Vec<String> = fake
        .requests()
        .into_iter()
        .filter(|r| r.starts_with("GET /token"))
        .collect();
    assert!(!asked.is_empty(), "{:?}", fake.seen());
    assert!(
        asked[0].contains("scope=repository%3Aapp%3Apull") && asked[0].contains("service=fake-registry"),
        "{}",
        asked[0]
    );
    assert!(
        !asked[0].to_lowercase().contains("authorization:"),
        "an anonymous token request carries no credentials"
    );
    let m = manifest_requests(&fake);
    assert!(
        m.iter()
            .all(|r| r.to_lowercase().contains("authorization: bearer access-from-refresh")),
        "{m:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_token_rejected_early_is_dropped_and_the_token_flow_run_once_more() {
    let (fake, img) = token_registry().await;
    let issue = |token: &str| {
        let body = format!(r#"{{"token":"{token}","expires_in":300}}"#);
        fake.route("/token", Canned::ok("application/json", body.into_bytes()));
        fake.require_authorization(&format!("Bearer {token}"));
    };
    issue("tok-alpha-71");
    // The registry as its only host, so each pull asks it once.
    let hosts = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(hosts.path().join(fake.addr())).unwrap();
    let toml = format!("server = \"http://{}\"\n", fake.addr());
    std::fs::write(hosts.path().join(fake.addr()).join("hosts.toml"), toml).unwrap();
    let d = common::daemon::Daemon::start(common::daemon::DaemonOptions {
        hosts_dir: Some(hosts.path().into()),
        ..Default::default()
    })
    .await;
    let mut c = d.client().await;
    let image = format!("{}/app:v1", fake.addr());
    assert_eq!(pull(&mut c, &image, None).await.unwrap(), img.config_digest);
    let tokens = |fake: &FakeRegistry| fake.seen().iter().filter(|r| r.starts_with("GET /token")).count();
    assert_eq!(tokens(&fake), 1);

    // The registry revokes the first token long before its 300 s are over; its token service now issues another.
    // The tag is present, so each pull revalidates it with a manifest HEAD (pull policy `always`).
    issue("tok-beta-72");
    let before = fake.requests().len();
    assert_eq!(pull(&mut c, &image, None).await.unwrap(), img.config_digest);
    let asked: Vec<String> = fake.requests()[before..]
        .iter()
        .filter(|r| r.starts_with("HEAD /v2/app/manifests/v1"))
        .map(|r| r.to_lowercase())
        .collect();
    assert_eq!(asked.len(), 2, "the rejected request is made once more: {asked:?}");
    assert!(
        asked[0].contains("authorization: bearer tok-alpha-71")
            && asked[1].contains("authorization: bearer tok-beta-72")
    );
    assert_eq!(tokens(&fake), 2);

    // A registry that refuses even the new token: one more try, then the pull fails as unauthenticated.
    fake.require_authorization("Bearer never-issued");
    let before = fake.requests().len();
    let err = pull(&mut c, &image, None).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
    let manifests = fake.requests()[before..]
        .iter()
        .filter(|r| r.starts_with("HEAD /v2/app/manifests/v1"))
        .count();
    assert_eq!(manifests, 2, "{:?}", fake.seen());
    assert_eq!(tokens(&fake), 3);
    assert!(
        !d.log().contains("tok-beta-72") && !d.log().contains("tok-alpha-71"),
        "tokens are never logged"
    );
}
