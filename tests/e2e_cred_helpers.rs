//! Docker credential helpers (`credHelpers`, `credsStore` in config.json), as real programs on the daemon's
//! PATH, against a registry that requires a password: the helper's answer is used (and never logged); a
//! missing, failing or hanging helper fails the pull with an error naming it, within a bounded time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::daemon::setup::{Setup, small_image};
use common::daemon::{DaemonOptions, pull};
use common::registry::RegistryOptions;
use tonic::Code;

const USER: &str = "helped";
const PASSWORD: &str = "Helper-S3cret-91";

/// Writes the executable `docker-credential-<name>` into `bin`.
fn helper(bin: &Path, name: &str, body: &str) {
    let path = bin.join(format!("docker-credential-{name}"));
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn write_config(path: &Path, json: serde_json::Value) {
    std::fs::write(path, serde_json::to_vec(&json).unwrap()).unwrap();
}

struct Helped {
    s: Setup,
    bin: PathBuf,
    config: PathBuf,
    _dir: tempfile::TempDir,
}

async fn helped() -> Helped {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let config = dir.path().join("config.json");
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let s = Setup::start_with(
        RegistryOptions::with_htpasswd(USER, PASSWORD),
        DaemonOptions {
            auth_files: vec![config.clone()],
            env: vec![("PATH".into(), path)],
            config: Some("[pull]\nbackoff_initial = \"0s\"\n[registry]\ncredential_helper_timeout = \"2s\"\n".into()),
            ..Default::default()
        },
    )
    .await;
    Helped {
        s,
        bin,
        config,
        _dir: dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credential_helper_answers_for_its_registry() {
    let h = helped().await;
    let registry = h.s.registry.addr();
    let asked = h.bin.join("asked");
    // As docker-credential-helpers do: the server URL on stdin, the credentials as JSON on stdout.
    helper(
        &h.bin,
        "test",
        &format!(
            r#"[ "$1" = get ] || exit 2
read url; echo "$url" >> {}
printf '{{"ServerURL":"%s","Username":"{USER}","Secret":"{PASSWORD}"}}' "$url""#,
            asked.display()
        ),
    );
    helper(
        &h.bin,
        "empty",
        "echo 'credentials not found in native keychain'; exit 1",
    );
    let img = small_image(61, None);
    h.s.push("private", "v1", &img).await;
    let image = h.s.image("private", "v1");
    let mut c = h.s.daemon.client().await;

    write_config(
        &h.config,
        serde_json::json!({ "credHelpers": { registry.clone(): "test" } }),
    );
    assert_eq!(pull(&mut c, &image, None).await.unwrap(), img.config_digest);
    assert_eq!(std::fs::read_to_string(&asked).unwrap().trim(), registry);

    // credsStore serves registries without a helper of their own.
    write_config(
        &h.config,
        serde_json::json!({ "credsStore": "test", "credHelpers": { "other.io": "empty" } }),
    );
    assert_eq!(pull(&mut c, &image, None).await.unwrap(), img.config_digest);

    // A helper without credentials for the registry: an anonymous pull, which this registry refuses.
    write_config(
        &h.config,
        serde_json::json!({ "credHelpers": { registry.clone(): "empty" } }),
    );
    let err = pull(&mut c, &image, None).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");

    assert!(!h.s.daemon.log().contains(PASSWORD), "the helper's secret was logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_failing_or_hanging_helper_is_an_error_naming_it() {
    let h = helped().await;
    let registry = h.s.registry.addr();
    let img = small_image(62, None);
    h.s.push("private", "v1", &img).await;
    let image = h.s.image("private", "v1");
    let mut c = h.s.daemon.client().await;
    let with_helper = |name: &str| {
        write_config(
            &h.config,
            serde_json::json!({ "credHelpers": { registry.clone(): name } }),
        )
    };

    with_helper("gone");
    let err = pull(&mut c, &image, None).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains("docker-credential-gone") && err.message().contains("not installed"),
        "{}",
        err.message()
    );

    helper(
        &h.bin,
        "broken",
        "echo 'error getting credentials - keychain locked' >&2; exit 1",
    );
    with_helper("broken");
    let err = pull(&mut c, &image, None).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains("docker-credential-broken") && err.message().contains("keychain locked"),
        "{}",
        err.message()
    );

    let pid_file = h.bin.join("hang.pid");
    helper(
        &h.bin,
        "hang",
        &format!("echo $$ > {}; exec sleep 600", pid_file.display()),
    );
    with_helper("hang");
    let err = tokio::time::timeout(Duration::from_secs(60), pull(&mut c, &image, None))
        .await
        .expect("a hanging helper must not hang the pull")
        .unwrap_err();
    assert!(
        err.message().contains("docker-credential-hang") && err.message().contains("was killed"),
        "{}",
        err.message()
    );
    let pid = std::fs::read_to_string(&pid_file).unwrap();
    let proc = PathBuf::from(format!("/proc/{}", pid.trim()));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while proc.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the helper {} still runs",
            pid.trim()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
