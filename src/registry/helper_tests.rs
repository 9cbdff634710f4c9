//! Tests of `helper`, with real helper programs (shell scripts) written into a temp dir.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use super::*;

/// Writes an executable `docker-credential-test` running `body` (sh) and returns its path.
fn script(dir: &tempfile::TempDir, body: &str) -> PathBuf {
    let path = dir.path().join("docker-credential-test");
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

async fn ask(body: &str, registry: &str) -> Result<Option<Credentials>, HelperError> {
    let dir = tempfile::tempdir().unwrap();
    let path = script(&dir, body);
    run(path.as_os_str(), "test", registry, Duration::from_secs(10)).await
}

#[tokio::test]
async fn answers_are_read_as_docker_reads_them() {
    // The helper is asked with `get` and the server URL on stdin; it echoes both back in its answer.
    let echo = r#"read url; printf '{"ServerURL":"%s","Username":"%s","Secret":"s3cret"}' "$url" "$1""#;
    let creds = ask(echo, "registry.test:5000").await.unwrap();
    assert_eq!(
        creds,
        Some(Credentials::Basic {
            username: "get".into(),
            password: "s3cret".into()
        })
    );
    let hub =
        r#"read url; [ "$url" = "https://index.docker.io/v1/" ] && echo '{"Username":"<token>","Secret":"refresh"}'"#;
    assert_eq!(
        ask(hub, "docker.io").await.unwrap(),
        Some(Credentials::IdentityToken("refresh".into()))
    );
    let not_found = "echo 'credentials not found in native keychain'; exit 1";
    assert_eq!(ask(not_found, "r.test").await.unwrap(), None);
    assert_eq!(
        ask(r#"echo '{"Username":"","Secret":""}'"#, "r.test").await.unwrap(),
        None
    );
}

#[tokio::test]
async fn failures_name_the_helper_and_never_the_answer() {
    let err = ask("echo 'error getting credentials: token expired' >&2; exit 3", "r.test")
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("docker-credential-test") && msg.contains("r.test") && msg.contains("token expired"),
        "{msg}"
    );
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition);

    let err = ask(r#"echo '{"Username": 5, "Secret": "leaked-secret"}'"#, "r.test")
        .await
        .unwrap_err();
    assert!(matches!(err, HelperError::BadAnswer { .. }), "{err}");
    assert!(!err.to_string().contains("leaked-secret"), "{err}");

    let missing = tempfile::tempdir().unwrap().path().join("docker-credential-absent");
    let err = run(missing.as_os_str(), "absent", "r.test", Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(matches!(err, HelperError::Missing { .. }), "{err}");
    assert!(err.to_string().contains("docker-credential-absent"), "{err}");

    let err = get("../../bin/sh", "r.test", Duration::from_secs(5)).await.unwrap_err();
    assert!(matches!(err, HelperError::InvalidName { .. }), "{err}");
}

#[tokio::test]
async fn a_helper_that_hangs_is_killed_at_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pid");
    // The shell execs into sleep, so the pid it wrote is the process that must be killed.
    let path = script(&dir, &format!("echo $$ > {}; exec sleep 600", pid_file.display()));
    let err = run(path.as_os_str(), "test", "r.test", Duration::from_millis(500))
        .await
        .unwrap_err();
    assert!(matches!(err, HelperError::TimedOut { .. }), "{err}");
    assert!(err.to_string().contains("killed"), "{err}");
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    let pid: i32 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
    // Killed and reaped: the process is gone (no zombie left either).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        assert!(std::time::Instant::now() < deadline, "helper {pid} still runs");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
