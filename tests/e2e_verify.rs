//! Credential re-verification (kubelet's KEP-2535, enforced in the server) through the real socket,
//! against the real registry with htpasswd auth: with an `if-not-present` rule, an image pulled by pod A
//! with valid credentials is refused to pod B with wrong ones (the registry's log shows the manifest
//! request with B's user), answered to pod C with A's credentials without any registry request, and still
//! so after a restart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::daemon::setup::{Setup, small_image};
use common::daemon::{Daemon, DaemonOptions, spec};
use common::registry::fault_proxy::{Fault, FaultProxy};
use common::registry::push::push_image;
use common::registry::registry_log::{UserRequest, user_requests};
use common::registry::{RegistryOptions, TestRegistry, write_hosts_toml};
use imaged::proto::runtime::v1 as cri;
use tonic::Code;

const USER: &str = "puller";
const PASSWORD: &str = "s3cret-Pa55word";

fn config(extra: &str) -> String {
    format!(
        "[pull]\nbackoff_initial = \"0s\"\n{extra}\n[pull.policy]\nrules = [{{ pattern = \"*private*\", policy = \"if-not-present\" }}]\n"
    )
}

async fn start(extra: &str) -> Setup {
    let opts = DaemonOptions {
        config: Some(config(extra)),
        ..Default::default()
    };
    Setup::start_with(RegistryOptions::with_htpasswd(USER, PASSWORD), opts).await
}

/// PullImage of `image` for pod `pod` with `user`/`password` (none when `user` is empty).
async fn pull_as(s: &Setup, pod: &str, image: &str, user: &str, password: &str) -> Result<String, tonic::Status> {
    let mut c = s.daemon.client().await;
    let auth = (!user.is_empty()).then(|| cri::AuthConfig {
        username: user.into(),
        password: password.into(),
        ..Default::default()
    });
    let sandbox = cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: pod.into(),
            uid: format!("uid-{pod}"),
            namespace: "tenants".into(),
            attempt: 0,
        }),
        ..Default::default()
    };
    c.pull_image(cri::PullImageRequest {
        image: spec(image),
        auth,
        sandbox_config: Some(sandbox),
    })
    .await
    .map(|r| r.into_inner().image_ref)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn present_images_are_answered_only_to_credentials_the_registry_accepted() {
    let mut s = start("").await;
    let img = small_image(1, None);
    s.push("private/app", "v1", &img).await;
    let image = s.image("private/app", "v1");

    // Pod A pulls with valid credentials.
    assert_eq!(
        pull_as(&s, "a", &image, USER, PASSWORD).await.unwrap(),
        img.config_digest
    );

    // Pod B, wrong credentials: the store has the image, but the registry is asked, and says no.
    let before = s.registry.requests().len();
    let err = pull_as(&s, "b", &image, "intruder", "guess").await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    let msg = err.message();
    assert!(
        msg.starts_with("pulling image ") && msg.contains("did not confirm that the request's credentials may pull"),
        "{msg}"
    );
    common::runtimes::kubelet::assert_reason_once(&err, &image, "ErrImagePull");
    assert!(!msg.contains("guess"), "the password leaked: {msg}");
    let manifest = format!("/v2/private/app/manifests/{}", img.manifest_digest);
    let by_b: Vec<UserRequest> = user_requests(&s.registry)
        .into_iter()
        .filter(|r| r.user == "intruder")
        .collect();
    assert_eq!(
        by_b,
        [UserRequest {
            user: "intruder".into(),
            // A HEAD: Docker Hub does not count it as a pull.
            method: "HEAD".into(),
            uri: manifest.clone(),
            accepted: false,
        }],
        "one manifest request, with B's user, refused; log:\n{}",
        s.registry.log()
    );
    let since_b = &s.registry.requests()[before..];
    assert!(
        since_b.iter().all(|r| !r.path.contains("/blobs/")),
        "no blob is fetched to verify: {since_b:?}"
    );

    // Pod C, A's credentials: answered from the store, the registry is not asked.
    let before = s.registry.requests().len();
    assert_eq!(
        pull_as(&s, "c", &image, USER, PASSWORD).await.unwrap(),
        img.config_digest
    );
    assert_eq!(
        s.registry.requests().len(),
        before,
        "{:?}",
        &s.registry.requests()[before..]
    );

    // After a restart: still so, both ways.
    s.daemon.restart().await;
    let before = s.registry.requests().len();
    assert_eq!(
        pull_as(&s, "c", &image, USER, PASSWORD).await.unwrap(),
        img.config_digest
    );
    assert_eq!(s.registry.requests().len(), before, "the record survived the restart");
    let err = pull_as(&s, "b", &image, "intruder", "guess").await.unwrap_err();
    assert_eq!(
        err.code(),
        Code::Unauthenticated,
        "a refusal was never recorded: {err:?}"
    );
    let asked = user_requests(&s.registry)
        .iter()
        .filter(|r| r.user == "intruder")
        .count();
    assert_eq!(asked, 2, "B is asked about again");

    // A pod without credentials is the node: the image was only ever served with credentials, so the
    // registry is asked (anonymously: this node has no credentials of its own), and says no.
    let err = pull_as(&s, "d", &image, "", "").await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert!(
        err.message().contains("did not confirm that this node"),
        "{}",
        err.message()
    );

    // The password is in no log line of the daemon, nor is the keyed hash of it a plain SHA-256 of it.
    let log = s.daemon.log();
    assert!(!log.contains(PASSWORD) && !log.contains("guess"));
    let key = std::fs::metadata(s.daemon.root.join("credentials.key")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&key.permissions()) & 0o777,
        0o600
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_verify_answers_every_request_from_the_store_as_before() {
    let s = start("credentials_verification_policy = \"NeverVerify\"").await;
    let img = small_image(2, None);
    s.push("private/app", "v1", &img).await;
    let image = s.image("private/app", "v1");
    assert_eq!(
        pull_as(&s, "a", &image, USER, PASSWORD).await.unwrap(),
        img.config_digest
    );
    let before = s.registry.requests().len();
    assert_eq!(
        pull_as(&s, "b", &image, "intruder", "guess").await.unwrap(),
        img.config_digest
    );
    assert_eq!(pull_as(&s, "d", &image, "", "").await.unwrap(), img.config_digest);
    assert_eq!(s.registry.requests().len(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_with_the_same_credentials_share_one_verification() {
    // The registry behind a proxy that can hold manifest requests, so that requests arrive while the
    // first verification is still waiting for its answer.
    let registry = TestRegistry::start(RegistryOptions::with_htpasswd(USER, PASSWORD)).await;
    let proxy = FaultProxy::start(&registry.addr()).await;
    let hosts = tempfile::tempdir().unwrap();
    write_hosts_toml(hosts.path(), &proxy.addr(), &proxy.url());
    let daemon = Daemon::start(DaemonOptions {
        hosts_dir: Some(hosts.path().to_path_buf()),
        config: Some(config("[registry]\nresponse_timeout = \"2s\"")),
        ..Default::default()
    })
    .await;
    let img = small_image(3, None);
    push_image(&registry.addr(), "private/app", "v1", &img, registry.credentials()).await;
    let image = proxy.image("private/app", "v1");
    let pull = |pod: String, user: &'static str, password: &'static str| {
        let (socket, image) = (daemon.socket.clone(), image.clone());
        async move {
            let mut c = imaged::cli::connect(&socket).await.unwrap();
            let req = cri::PullImageRequest {
                image: spec(&image),
                auth: Some(cri::AuthConfig {
                    username: user.into(),
                    password: password.into(),
                    ..Default::default()
                }),
                sandbox_config: Some(cri::PodSandboxConfig {
                    metadata: Some(cri::PodSandboxMetadata {
                        name: pod.clone(),
                        uid: format!("uid-{pod}"),
                        namespace: "tenants".into(),
                        attempt: 0,
                    }),
                    ..Default::default()
                }),
            };
            c.pull_image(req).await
        }
    };
    assert_eq!(
        pull("a".into(), USER, PASSWORD).await.unwrap().into_inner().image_ref,
        img.config_digest
    );

    proxy.set_for("/manifests/", Fault::Blackhole);
    proxy.clear_log();
    let tasks: Vec<_> = (0..20)
        .map(|i| tokio::spawn(pull(format!("b{i}"), "intruder", "guess")))
        .collect();
    for t in tasks {
        let err = t.await.unwrap().unwrap_err();
        assert_eq!(err.code(), Code::Unknown, "{err:?}");
        assert!(err.message().starts_with("RegistryUnavailable: "), "{}", err.message());
    }
    let manifests = proxy
        .requests()
        .iter()
        .filter(|r| r.path.contains("/manifests/"))
        .count();
    assert_eq!(manifests, 1, "20 requests, one verification: {:?}", proxy.requests());

    // An unreachable registry is a refusal too: nothing was recorded, the next request asks again.
    proxy.clear_rules();
    let err = pull("b".into(), "intruder", "guess").await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
}
