//! Tests of `instrument`: what a call's lines say, as the daemon's log format prints them.

use super::*;

/// The lines logged (at debug and above, as the daemon's format prints them) while `f` runs.
fn logged(f: impl FnOnce()) -> Vec<String> {
    crate::test_log::logged(Level::DEBUG, f)
}

/// Runs `call` to its end on this thread.
fn block_on<T>(call: impl Future<Output = T>) -> T {
    let rt = tokio::runtime::Builder::new_current_thread().build();
    rt.map(|rt| rt.block_on(call))
        .unwrap_or_else(|e| panic!("runtime: {e}"))
}

/// A pull for pod `web` in `prod`, with a password.
fn pull_request() -> cri::PullImageRequest {
    cri::PullImageRequest {
        image: Some(cri::ImageSpec {
            image: "registry.example/app:v1".into(),
            ..Default::default()
        }),
        auth: Some(cri::AuthConfig {
            username: "user".into(),
            password: "s3cret-password".into(),
            ..Default::default()
        }),
        sandbox_config: Some(cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: "web".into(),
                namespace: "prod".into(),
                uid: "uid-1".into(),
                attempt: 0,
            }),
            ..Default::default()
        }),
    }
}

#[test]
fn a_call_logs_entry_and_exit_in_a_span_naming_image_and_pod_but_no_credentials() {
    let lines = logged(|| {
        let rpc = Rpc::info("PullImage", &pull_request());
        let r = block_on(rpc.run(async {
            tracing::info!("inside");
            Ok(())
        }));
        assert!(r.is_ok());
    });
    let prefix = "rpc{method=\"PullImage\" image=registry.example/app:v1 pod=web namespace=prod pod_uid=uid-1}:";
    assert_eq!(lines.len(), 3, "{lines:#?}");
    for (line, text) in lines.iter().zip(["request received", "inside", "request answered"]) {
        assert!(
            line.contains(" INFO ") && line.contains(prefix) && line.contains(text),
            "{line}"
        );
    }
    assert!(
        !lines.iter().any(|l| l.contains("s3cret") || l.contains("user")),
        "{lines:#?}"
    );
}

#[test]
fn a_failed_call_logs_its_error_and_a_read_logs_at_debug() {
    let lines = logged(|| {
        let req = cri::ImageStatusRequest {
            image: Some(cri::ImageSpec {
                image: "app".into(),
                ..Default::default()
            }),
            verbose: false,
        };
        let r: Result<(), Status> =
            block_on(Rpc::debug("ImageStatus", &req).run(async { Err(Status::not_found("no app")) }));
        assert!(r.is_err());
    });
    assert_eq!(lines.len(), 2, "{lines:#?}");
    let exit = &lines[1];
    assert!(exit.contains("DEBUG rpc{method=\"ImageStatus\" image=app}:"), "{exit}");
    assert!(
        exit.contains("request failed") && exit.contains("code=NotFound") && exit.contains("error=\"no app\""),
        "{exit}"
    );
}

#[test]
fn a_call_dropped_before_it_answers_says_so() {
    let lines = logged(|| {
        let req = cri::RemoveImageRequest { image: None };
        drop(Rpc::info("RemoveImage", &req).enter());
    });
    assert_eq!(lines.len(), 2, "{lines:#?}");
    assert!(lines[0].contains("rpc{method=\"RemoveImage\"}:"), "{}", lines[0]);
    assert!(
        lines[1].contains("request dropped before it was answered"),
        "{}",
        lines[1]
    );
}
