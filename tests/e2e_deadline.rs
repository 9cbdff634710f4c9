//! A caller's deadline that passes while a pull waits on a registry that never answers is DEADLINE_EXCEEDED,
//! every time (critest's "public image should timeout if requested" flaked: the answer was sometimes
//! CANCELLED, tonic's own answer to an expired `grpc-timeout`).
//!
//! The client here is tonic's generated client over a bare HTTP/2 connection, not a tonic `Channel`:
//! a `Channel` enforces `grpc-timeout` itself and reports its own expiry as CANCELLED, which would hide the
//! server's answer. This client sends the deadline and waits for whatever the server says, as a Go client
//! (kubelet, critest) sees the server's answer when it comes first.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::daemon::setup::small_image;
use common::daemon::spec;
use common::registry::fault_proxy::Fault;
use common::registry::proxied::Proxied;
use hyper_util::rt::{TokioExecutor, TokioIo};
use imaged::proto::runtime::v1 as cri;
use imaged::proto::runtime::v1::image_service_client::ImageServiceClient;
use tonic::Code;
use tonic::codegen::http;
use tower::util::BoxCloneService;

/// A bare HTTP/2 connection as a tonic client's transport.
type Bare = BoxCloneService<http::Request<tonic::body::Body>, http::Response<hyper::body::Incoming>, hyper::Error>;

/// The caller's deadline.
const DEADLINE: Duration = Duration::from_millis(300);

/// A CRI image client on a bare HTTP/2 connection to `socket`: it sends `grpc-timeout` and does not enforce
/// it.
async fn unenforcing_client(socket: &Path) -> ImageServiceClient<Bare> {
    let io = TokioIo::new(tokio::net::UnixStream::connect(socket).await.expect("connect"));
    let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
        .await
        .expect("HTTP/2 handshake");
    tokio::spawn(conn);
    let svc = tower::service_fn(move |req: http::Request<tonic::body::Body>| {
        let mut sender = sender.clone();
        async move { sender.send_request(req).await }
    });
    ImageServiceClient::with_origin(BoxCloneService::new(svc), "http://localhost".parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_past_the_callers_deadline_is_deadline_exceeded_every_time() {
    let p = Proxied::start("[pull]\nbackoff_initial = \"0s\"\n").await;
    p.push("app", "v1", &small_image(23, None)).await;
    // Pushed under a second tag for the last pull: the hung pulls of v1 are not joined.
    p.push("app", "v2", &small_image(23, None)).await;
    p.proxy.set(Fault::Blackhole);
    let mut c = unenforcing_client(&p.daemon.socket).await;
    for i in 0..20 {
        let mut req = tonic::Request::new(cri::PullImageRequest {
            image: spec(&p.image("app", "v1")),
            ..Default::default()
        });
        req.set_timeout(DEADLINE);
        let started = Instant::now();
        let err = c
            .pull_image(req)
            .await
            .expect_err("a blackholed registry never answers");
        let took = started.elapsed();
        assert_eq!(err.code(), Code::DeadlineExceeded, "iteration {i}: {err:?}");
        assert!(
            err.message().contains("deadline") && err.message().contains("PullImage"),
            "iteration {i}: the message says what passed: {}",
            err.message()
        );
        assert!(
            took >= DEADLINE - Duration::from_millis(5) && took < Duration::from_secs(5),
            "iteration {i}: answered at the deadline, not the registry's timeout: {took:?}"
        );
    }
    assert!(
        p.proxy.requests().iter().any(|r| r.fault == Fault::Blackhole),
        "the pulls waited on the blackhole"
    );
    // A pull whose deadline leaves it time is unaffected.
    p.proxy.set(Fault::Pass);
    let mut req = tonic::Request::new(cri::PullImageRequest {
        image: spec(&p.image("app", "v2")),
        ..Default::default()
    });
    req.set_timeout(Duration::from_secs(60));
    let id = c
        .pull_image(req)
        .await
        .expect("pull with time to spare")
        .into_inner()
        .image_ref;
    assert_eq!(id, small_image(23, None).config_digest);
}
