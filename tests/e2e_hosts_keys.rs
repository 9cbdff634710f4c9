//! hosts.toml keys beyond mirrors and capabilities, each against a host that needs it: `header` (a P2P mirror
//! that routes by a header, as Dragonfly does), `dial_timeout` (a dead peer mirror, as Spegel configures
//! them) and `client` (a registry that requires client certificates: Debian's docker-registry with
//! `http.tls.clientcas`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::daemon::setup::{Setup, small_image};
use common::daemon::{DaemonOptions, pull, remove};
use common::registry::blackhole::DroppingPort;
use common::registry::fault_proxy::{Fault, FaultProxy};
use common::registry::pki::TestPki;
use common::registry::push;
use common::registry::{RegistryOptions, RegistryTls, TestRegistry};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_header_goes_with_every_request_to_that_host_and_nowhere_else() {
    let upstream = TestRegistry::start(RegistryOptions::default()).await;
    let (one, two) = (small_image(31, None), small_image(32, None));
    push::push_image(&upstream.addr(), "app", "v1", &one, None).await;
    push::push_image(&upstream.addr(), "app", "v2", &two, None).await;
    // The peer answers only requests that say which registry they are for.
    let peer = FaultProxy::start(&upstream.addr()).await;
    peer.require_header("X-Dragonfly-Registry", &upstream.url());
    let server = FaultProxy::start(&upstream.addr()).await;
    let peer_url = peer.url();
    let upstream_url = upstream.url();
    let hosts = format!(
        r#"server = "{}"

[host."{peer_url}"]
  capabilities = ["pull", "resolve"]
  [host."{peer_url}".header]
    X-Dragonfly-Registry = "{upstream_url}"
    x-custom = ["a", "b"]
"#,
        server.url(),
    );
    let s = Setup::with_hosts(upstream, &hosts, DaemonOptions::default()).await;
    let mut c = s.daemon.client().await;
    let image = |tag: &str| s.image("app", tag);
    assert_eq!(pull(&mut c, &image("v1"), None).await.unwrap(), one.config_digest);

    let seen = peer.requests();
    assert!(
        seen.iter().any(|r| r.is_blob_get()),
        "the peer served the blobs: {seen:?}"
    );
    for r in &seen {
        assert_eq!(
            r.header("x-dragonfly-registry"),
            [upstream_url.as_str()],
            "{} {}",
            r.method,
            r.path
        );
        assert_eq!(r.header("x-custom"), ["a", "b"], "{} {}", r.method, r.path);
        assert_eq!(r.status, Some(200), "{} {}", r.method, r.path);
    }
    assert!(server.requests().is_empty(), "the server was not needed");

    // With the peer down the server is used, and it does not get the peer's headers.
    peer.set(Fault::Refuse);
    peer.wait_listening(false).await;
    assert_eq!(pull(&mut c, &image("v2"), None).await.unwrap(), two.config_digest);
    let at_server = server.requests();
    assert!(at_server.iter().any(|r| r.is_blob_get()), "{at_server:?}");
    for r in &at_server {
        assert!(
            r.header("x-dragonfly-registry").is_empty() && r.header("x-custom").is_empty(),
            "{r:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_peer_mirror_costs_its_dial_timeout_not_the_connect_timeout() {
    let upstream = TestRegistry::start(RegistryOptions::default()).await;
    let img = small_image(33, None);
    push::push_image(&upstream.addr(), "app", "v1", &img, None).await;
    let dead = DroppingPort::start().await;
    let hosts = format!(
        "server = \"{}\"\n\n[host.\"{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n  dial_timeout = \"200ms\"\n",
        upstream.url(),
        dead.url()
    );
    // Without the dial_timeout, each attempt on the dead mirror would wait 5 minutes.
    let options = DaemonOptions {
        config: Some(
            "[pull]\nbackoff_initial = \"0s\"\n[registry]\nconnect_timeout_secs = 300\nresponse_timeout = \"300s\"\n"
                .into(),
        ),
        ..Default::default()
    };
    let s = Setup::with_hosts(upstream, &hosts, options).await;
    let mut c = s.daemon.client().await;
    let image = s.image("app", "v1");
    let pulled = tokio::time::timeout(Duration::from_secs(90), pull(&mut c, &image, None))
        .await
        .expect("the pull waited on the dead mirror far beyond its dial_timeout");
    assert_eq!(pulled.unwrap(), img.config_digest);
    let log = s.daemon.log();
    let expected = format!(
        "registry {} did not accept a connection within 200ms (its dial_timeout in hosts.toml)",
        dead.url()
    );
    assert!(log.contains(&expected), "{log}");
}

/// A registry that requires client certificates signed by the test CA, serving what a plain-HTTP registry
/// (returned too, for pushing) holds.
async fn mtls_registry(pki: &TestPki) -> (TestRegistry, TestRegistry) {
    let plain = TestRegistry::start(RegistryOptions::default()).await;
    let tls = TestRegistry::start(RegistryOptions {
        tls: Some(RegistryTls {
            cert: pki.server_cert.clone(),
            key: pki.server_key.clone(),
            client_ca: Some(pki.ca.clone()),
            ca: pki.ca.clone(),
            probe_identity: Some(pki.client_pem.clone()),
        }),
        storage: Some(plain.dir().join("storage")),
        ..Default::default()
    })
    .await;
    (plain, tls)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_requiring_client_certificates_takes_every_client_form() {
    let pki_dir = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(pki_dir.path());
    let (plain, registry) = mtls_registry(&pki).await;
    let img = small_image(34, None);
    push::push_image(&plain.addr(), "app", "v1", &img, None).await;
    let (ca, cert, key) = (pki.ca.display(), pki.client_cert.display(), pki.client_key.display());
    let server = registry.url();
    let hosts_with = |client: &str| format!("server = \"{server}\"\nca = \"{ca}\"\n{client}\n");
    let s = Setup::with_hosts(registry, &hosts_with(""), DaemonOptions::default()).await;
    let (registry, mut c) = (&s.registry, s.daemon.client().await);
    let image = s.image("app", "v1");
    let with_client = |client: &str| s.write_hosts(&hosts_with(client));

    // Without a client certificate the registry ends the handshake.
    with_client("");
    let err = pull(&mut c, &image, None).await.unwrap_err();
    assert_eq!(err.code(), Code::Unknown, "{err:?}");
    assert!(err.message().starts_with("RegistryUnavailable: "), "{}", err.message());
    registry.wait_for_log("client didn't provide a certificate").await;

    // A certificate from a CA the registry does not trust is refused too.
    let (stranger, stranger_key) = (pki.stranger_cert.display(), pki.stranger_key.display());
    with_client(&format!("client = [[\"{stranger}\", \"{stranger_key}\"]]"));
    let err = pull(&mut c, &image, None).await.unwrap_err();
    assert_eq!(err.code(), Code::Unknown, "{err:?}");
    assert!(err.message().starts_with("RegistryUnavailable: "), "{}", err.message());
    registry.wait_for_log("certificate signed by unknown authority").await;

    let forms = [
        format!("client = [[\"{cert}\", \"{key}\"]]"),
        format!("client = \"{}\"", pki.client_pem.display()),
        format!("client = [\"{}\"]", pki.client_pem.display()),
        // The registry names the CA it accepts: the certificate it signed is presented, not the first.
        format!("client = [[\"{stranger}\", \"{stranger_key}\"], [\"{cert}\", \"{key}\"]]"),
    ];
    for form in &forms {
        with_client(form);
        match pull(&mut c, &image, None).await {
            Ok(r) => assert_eq!(r, img.config_digest, "{form}"),
            Err(e) => panic!("{form}: {e:?}\nregistry log:\n{}", registry.log()),
        }
        remove(&mut c, &image).await.unwrap();
    }

    // Docker's certs.d layout: no hosts.toml, `ca.crt` and a `client.cert`/`client.key` pair.
    let dir = s.hosts_dir().join(registry.addr());
    std::fs::remove_file(dir.join("hosts.toml")).unwrap();
    std::fs::copy(&pki.ca, dir.join("ca.crt")).unwrap();
    std::fs::copy(&pki.client_cert, dir.join("client.cert")).unwrap();
    std::fs::copy(&pki.client_key, dir.join("client.key")).unwrap();
    assert_eq!(pull(&mut c, &image, None).await.unwrap(), img.config_digest);
}
