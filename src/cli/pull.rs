//! `imaged pull IMAGE [--creds USER:PASS]`: imaged's streaming Pull, showing progress on stderr, or plain CRI
//! PullImage where the service is not imaged; then `Image is up to date for <image_ref>`.

use std::convert::Infallible;
use std::io::Write;
use std::time::Instant;

use serde_json::json;
use tonic::transport::Channel;
use tonic::{Code, Status};

use super::progress::{ProgressMode, Reporter};
use super::{CliError, Common, OutputFormat, output};
use crate::proto::imaged::v1::PullEvent;
use crate::proto::imaged::v1::pull_event::Event;
use crate::proto::runtime::v1 as cri;

/// The value of `--creds`, `USER:PASS`. Its `Debug` hides it; it is checked only when used, so that no
/// parse error (clap's would quote the value) can print the password.
#[derive(Clone)]
pub struct Creds(String);

impl Creds {
    /// Takes the flag's value as it is (clap's `value_parser`).
    pub fn from_arg(value: &str) -> Result<Self, Infallible> {
        Ok(Self(value.to_string()))
    }

    /// The CRI auth config: user and password split at the first colon; the password may contain colons
    /// or be empty, the user may not be empty.
    pub fn auth(&self) -> Result<cri::AuthConfig, CliError> {
        match self.0.split_once(':') {
            Some((user, password)) if !user.is_empty() => Ok(cri::AuthConfig {
                username: user.to_string(),
                password: password.to_string(),
                ..Default::default()
            }),
            _ => Err(CliError::InvalidCreds),
        }
    }
}

impl std::fmt::Debug for Creds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Creds(<redacted>)")
    }
}

/// Pulls `image`, showing its progress on stderr as `progress` says (plain lines go to `err`), and prints the
/// image reference the service answers with.
pub async fn run(
    common: &Common,
    image: &str,
    creds: Option<&Creds>,
    progress: ProgressMode,
    out: &mut (dyn Write + Send),
    err: &mut (dyn Write + Send),
) -> Result<(), CliError> {
    // Checked before connecting, so a typo fails at once, whether or not the service is up.
    let auth = creds.map(Creds::auth).transpose()?;
    let channel = super::open(common).await?;
    let request = request(image, auth);
    let pulled = match pull_streaming(channel.clone(), request.clone(), progress, err).await {
        Ok(Some(image_ref)) => Ok(image_ref),
        Ok(None) => super::cri_client(channel)
            .pull_image(request)
            .await
            .map(|r| r.into_inner().image_ref),
        Err(status) => Err(status),
    };
    let image_ref = pulled.map_err(|s| CliError::rpc(format!("pull {image}"), &s))?;
    match common.output {
        OutputFormat::Table => writeln!(out, "Image is up to date for {image_ref}")?,
        OutputFormat::Json => output::write_json(out, &json!({ "imageRef": image_ref }))?,
    }
    Ok(())
}

/// Pulls through imaged's streaming `Pull`, showing each progress event; `None` if the service has no such
/// call (it is not imaged), before anything was shown. Progress is best effort: if stderr cannot be written,
/// the pull goes on without it.
async fn pull_streaming(
    channel: Channel,
    request: cri::PullImageRequest,
    mode: ProgressMode,
    err: &mut (dyn Write + Send),
) -> Result<Option<String>, Status> {
    let mut stream = match super::imaged_client(channel).pull(request).await {
        Ok(response) => response.into_inner(),
        Err(s) if s.code() == Code::Unimplemented => return Ok(None),
        Err(s) => return Err(s),
    };
    let mut reporter = Some(Reporter::new(mode));
    let mut shown = false;
    let outcome = loop {
        match stream.message().await {
            Ok(Some(PullEvent {
                event: Some(Event::Progress(progress)),
            })) => {
                shown = true;
                let failed = reporter
                    .as_mut()
                    .map(|r| r.show(&progress, Instant::now(), err).is_err());
                if failed == Some(true) {
                    reporter = None;
                }
            }
            Ok(Some(PullEvent {
                event: Some(Event::ImageRef(image_ref)),
            })) => break Ok(Some(image_ref)),
            // An event of a newer kind than this client knows.
            Ok(Some(PullEvent { event: None })) => {}
            Ok(None) => break Err(Status::internal("the pull stream ended without an image reference")),
            // A server may answer an unknown call in the stream's trailers rather than its headers.
            Err(s) if s.code() == Code::Unimplemented && !shown => break Ok(None),
            Err(s) => break Err(s),
        }
    };
    if let Some(r) = &reporter {
        r.finish(matches!(outcome, Ok(Some(_))));
    }
    outcome
}

/// The PullImage request: what the user typed is both the image and `user_specified_image`.
fn request(image: &str, auth: Option<cri::AuthConfig>) -> cri::PullImageRequest {
    cri::PullImageRequest {
        image: Some(cri::ImageSpec {
            image: image.to_string(),
            user_specified_image: image.to_string(),
            ..Default::default()
        }),
        auth,
        sandbox_config: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creds_split_at_the_first_colon() {
        let auth = Creds::from_arg("me:pa:ss").unwrap().auth().unwrap();
        assert_eq!((auth.username.as_str(), auth.password.as_str()), ("me", "pa:ss"));
        let auth = Creds::from_arg("me:").unwrap().auth().unwrap();
        assert_eq!((auth.username.as_str(), auth.password.as_str()), ("me", ""));
    }

    #[test]
    fn creds_without_colon_or_user_are_rejected_without_echoing_them() {
        for bad in ["secret", ":secret", ""] {
            let err = Creds::from_arg(bad).unwrap().auth().unwrap_err();
            assert!(matches!(err, CliError::InvalidCreds));
            assert!(!err.to_string().contains("secret"));
        }
    }

    #[test]
    fn creds_debug_is_redacted() {
        let creds = Creds::from_arg("me:secret").unwrap();
        assert_eq!(format!("{creds:?}"), "Creds(<redacted>)");
    }

    #[test]
    fn request_sets_the_user_specified_image() {
        let req = request("busybox", None);
        let spec = req.image.unwrap();
        assert_eq!(
            (spec.image.as_str(), spec.user_specified_image.as_str()),
            ("busybox", "busybox")
        );
        assert!(req.auth.is_none());
    }
}
