//! Docker credential helpers: the programs `credsStore` and `credHelpers` in a docker `config.json` name
//! (`docker-credential-ecr-login`, `-gcloud`, `-acr-env`, ...), run as docker and podman run them
//! (docker/docker-credential-helpers' protocol): `docker-credential-<name> get`, the registry's server URL on
//! stdin, and on stdout `{"ServerURL": …, "Username": …, "Secret": …}`, where the user name `<token>` means
//! the secret is an identity token. A helper that has nothing for the registry says
//! `credentials not found in native keychain` and exits non-zero: that is an anonymous pull, not an error.
//!
//! A helper is given a bounded time, then killed; a missing or failing helper is an error naming it. What
//! it answers is never logged and never put in an error message.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::auth::Credentials;
use super::text::first_line;
use crate::error::{Classify, ErrorKind};

/// How long a helper may take unless configured otherwise (`registry.credential_helper_timeout`).
pub const DEFAULT_HELPER_TIMEOUT: Duration = Duration::from_secs(20);

/// What a helper prints when it has no credentials for the registry (docker-credential-helpers'
/// `errCredentialsNotFoundMessage`).
const NOT_FOUND: &str = "credentials not found in native keychain";
/// The user name that marks the secret as an identity token.
const TOKEN_USERNAME: &str = "<token>";
/// The most of a helper's stdout and stderr that is read.
const MAX_OUTPUT: u64 = 64 * 1024;

/// Why a credential helper gave no usable answer. Messages name the helper and the registry, never what the
/// helper printed on success.
#[derive(Debug, thiserror::Error)]
pub enum HelperError {
    /// The helper's name cannot name a program.
    #[error("invalid docker credential helper name {helper:?}: it must not be empty or contain '/'")]
    InvalidName {
        /// The name from config.json.
        helper: String,
    },
    /// The program is not on PATH.
    #[error(
        "docker credential helper docker-credential-{helper} (for {registry}) is not installed: it is not on PATH; install it or remove it from the docker config.json"
    )]
    Missing {
        /// The helper's name.
        helper: String,
        /// The registry asked for.
        registry: String,
    },
    /// The program could not be started or talked to.
    #[error("docker credential helper docker-credential-{helper} (for {registry}) could not be run: {detail}")]
    Run {
        /// The helper's name.
        helper: String,
        /// The registry asked for.
        registry: String,
        /// The I/O error.
        detail: String,
    },
    /// The helper did not finish in time and was killed.
    #[error(
        "docker credential helper docker-credential-{helper} did not answer for {registry} within {after:?} and was killed (registry.credential_helper_timeout)"
    )]
    TimedOut {
        /// The helper's name.
        helper: String,
        /// The registry asked for.
        registry: String,
        /// The time limit.
        after: Duration,
    },
    /// The helper exited with a failure other than "not found".
    #[error("docker credential helper docker-credential-{helper} failed for {registry} ({status}): {message}")]
    Failed {
        /// The helper's name.
        helper: String,
        /// The registry asked for.
        registry: String,
        /// How it exited.
        status: String,
        /// The first line it printed (its error message).
        message: String,
    },
    /// The helper succeeded but its answer is not the protocol's JSON.
    #[error("docker credential helper docker-credential-{helper} answered for {registry} with {reason}")]
    BadAnswer {
        /// The helper's name.
        helper: String,
        /// The registry asked for.
        registry: String,
        /// What is wrong (never the answer itself).
        reason: &'static str,
    },
}

impl Classify for HelperError {
    fn kind(&self) -> ErrorKind {
        match self {
            HelperError::TimedOut { .. } => ErrorKind::Unavailable,
            _ => ErrorKind::FailedPrecondition,
        }
    }
}

#[derive(serde::Deserialize)]
struct Answer {
    #[serde(rename = "Username", default)]
    username: String,
    #[serde(rename = "Secret", default)]
    secret: String,
}

/// The server URL docker hands a helper for `registry`: Docker Hub's historical index URL, else the host.
pub fn server_url(registry: &str) -> String {
    if registry == "docker.io" {
        "https://index.docker.io/v1/".to_string()
    } else {
        registry.to_string()
    }
}

/// Runs `docker-credential-<helper> get` for `registry`; `None` when the helper has nothing for it.
pub async fn get(helper: &str, registry: &str, timeout: Duration) -> Result<Option<Credentials>, HelperError> {
    if helper.is_empty() || helper.contains('/') {
        return Err(HelperError::InvalidName {
            helper: helper.to_string(),
        });
    }
    run(
        format!("docker-credential-{helper}").as_ref(),
        helper,
        registry,
        timeout,
    )
    .await
}

/// Runs `program get` as the helper named `helper`.
async fn run(
    program: &std::ffi::OsStr,
    helper: &str,
    registry: &str,
    timeout: Duration,
) -> Result<Option<Credentials>, HelperError> {
    let (h, r) = (helper.to_string(), registry.to_string());
    let run_err = |e: std::io::Error| HelperError::Run {
        helper: h.clone(),
        registry: r.clone(),
        detail: e.to_string(),
    };
    let mut child = tokio::process::Command::new(program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => HelperError::Missing {
                helper: h.clone(),
                registry: r.clone(),
            },
            _ => run_err(e),
        })?;
    let (stdin, stdout, stderr) = (child.stdin.take(), child.stdout.take(), child.stderr.take());
    let talk = async {
        if let Some(mut stdin) = stdin {
            // A helper that exits without reading its input closes the pipe: not our failure.
            let _ = stdin.write_all(server_url(registry).as_bytes()).await;
        }
        // Both pipes at once: a helper filling one while we wait on the other would stall.
        let (out, err) = tokio::join!(read_all(stdout), read_all(stderr));
        let status = child.wait().await?;
        Ok::<_, std::io::Error>((status, out?, err?))
    };
    let outcome = tokio::time::timeout(timeout, talk).await;
    let (status, out, err) = match outcome {
        Ok(r) => r.map_err(run_err)?,
        Err(_) => {
            let _ = child.start_kill();
            // Reaped here if it dies at once; kill_on_drop covers the rest.
            let _ = tokio::time::timeout(Duration::from_secs(1), child.wait()).await;
            return Err(HelperError::TimedOut {
                helper: h,
                registry: r,
                after: timeout,
            });
        }
    };
    let said = String::from_utf8_lossy(&out);
    if !status.success() {
        if said.trim() == NOT_FOUND {
            return Ok(None);
        }
        let text = if said.trim().is_empty() {
            String::from_utf8_lossy(&err).into_owned()
        } else {
            said.into_owned()
        };
        return Err(HelperError::Failed {
            helper: h,
            registry: r,
            status: status.to_string(),
            message: first_line(text.trim()),
        });
    }
    let answer: Answer = serde_json::from_slice(&out).map_err(|e| HelperError::BadAnswer {
        helper: h.clone(),
        registry: r.clone(),
        reason: match e.classify() {
            serde_json::error::Category::Data => "JSON of the wrong shape",
            _ => "something that is not JSON",
        },
    })?;
    Ok(match (answer.username.as_str(), answer.secret) {
        (_, secret) if secret.is_empty() => None,
        (TOKEN_USERNAME, secret) => Some(Credentials::IdentityToken(secret)),
        (_, secret) => Some(Credentials::Basic {
            username: answer.username,
            password: secret,
        }),
    })
}

async fn read_all<R: tokio::io::AsyncRead + Unpin>(pipe: Option<R>) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    if let Some(p) = pipe {
        p.take(MAX_OUTPUT).read_to_end(&mut buf).await?;
    }
    Ok(buf)
}

#[cfg(test)]
#[path = "helper_tests.rs"]
mod tests;
