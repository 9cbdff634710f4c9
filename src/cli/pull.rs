//! `imaged pull IMAGE [--creds USER:PASS]`: PullImage, then `Image is up to date for <image_ref>`.

use std::convert::Infallible;
use std::io::Write;

use serde_json::json;

use super::{CliError, Common, OutputFormat, output};
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

/// Pulls `image` and prints the image reference the service answers with.
pub async fn run(
    common: &Common,
    image: &str,
    creds: Option<&Creds>,
    out: &mut (dyn Write + Send),
) -> Result<(), CliError> {
    // Checked before connecting, so a typo fails at once, whether or not the service is up.
    let auth = creds.map(Creds::auth).transpose()?;
    let mut client = super::client(common).await?;
    let request = request(image, auth);
    let response = client
        .pull_image(request)
        .await
        .map_err(|s| CliError::rpc(format!("pull {image}"), &s))?;
    let image_ref = response.into_inner().image_ref;
    match common.output {
        OutputFormat::Table => writeln!(out, "Image is up to date for {image_ref}")?,
        OutputFormat::Json => output::write_json(out, &json!({ "imageRef": image_ref }))?,
    }
    Ok(())
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
