//! The OAuth2 refresh-token grant for CRI's `identity_token`.
//!
//! `oci-client` implements the anonymous and basic token flows, but not the one where the client holds a
//! refresh token (what `docker login` stores as `identitytoken` for registries such as ACR or GCR). As
//! containerd does, we exchange it at the registry's token realm for an access token, which is then
//! presented as a bearer token.

use serde::Deserialize;

use super::RegistryError;
use super::error::transport_detail;

#[derive(Deserialize)]
struct TokenResponse {
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    token: Option<String>,
}

/// Exchanges `refresh_token` for an access token allowing pulls from `repository` on the host at `host_url`.
pub(super) async fn exchange_identity_token(
    http: &reqwest::Client,
    host_url: &str,
    repository: &str,
    refresh_token: &str,
) -> Result<String, RegistryError> {
    let unreachable = |e: reqwest::Error| RegistryError::Unreachable {
        host: host_url.to_string(),
        detail: transport_detail(&e),
    };
    let what = format!("repository {repository}");
    let resp = http.get(format!("{host_url}/v2/")).send().await.map_err(unreachable)?;
    let challenge = resp
        .headers()
        .get(reqwest::header::WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_bearer_challenge)
        .ok_or_else(|| RegistryError::Unauthorized {
            host: host_url.to_string(),
            what: what.clone(),
            detail: "an identity token was given but the registry offers no bearer token service".into(),
        })?;
    let scope = format!("repository:{repository}:pull");
    let mut form = vec![
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh_token),
        ("scope", scope.as_str()),
        ("client_id", "imaged"),
    ];
    if let Some(service) = challenge.service.as_deref() {
        form.push(("service", service));
    }
    let resp = http
        .post(&challenge.realm)
        .form(&form)
        .send()
        .await
        .map_err(unreachable)?;
    let status = resp.status().as_u16();
    let body = resp.bytes().await.map_err(unreachable)?;
    if !(200..300).contains(&status) {
        return Err(RegistryError::from_status(host_url, &what, status, &body));
    }
    let t: TokenResponse = serde_json::from_slice(&body).map_err(|e| RegistryError::Unauthorized {
        host: host_url.to_string(),
        what: what.clone(),
        detail: format!("token service answered with unreadable JSON: {e}"),
    })?;
    t.access_token
        .or(t.token)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| RegistryError::Unauthorized {
            host: host_url.to_string(),
            what,
            detail: "token service answered without a token".into(),
        })
}

/// A `WWW-Authenticate: Bearer realm="…",service="…"` challenge.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct BearerChallenge {
    pub realm: String,
    pub service: Option<String>,
}

/// Parses a bearer challenge; `None` for other schemes or a missing realm.
pub(super) fn parse_bearer_challenge(header: &str) -> Option<BearerChallenge> {
    let (scheme, params) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut realm = None;
    let mut service = None;
    let mut rest = params.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let after = after.trim_start();
        let (value, tail) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"')?;
            (&quoted[..end], &quoted[end + 1..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        match key.trim().to_ascii_lowercase().as_str() {
            "realm" => realm = Some(value.to_string()),
            "service" => service = Some(value.to_string()),
            _ => {}
        }
        rest = tail.trim_start().trim_start_matches(',').trim_start();
    }
    Some(BearerChallenge { realm: realm?, service })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_challenges() {
        let c = parse_bearer_challenge(r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#).unwrap();
        assert_eq!(c.realm, "https://auth.docker.io/token");
        assert_eq!(c.service.as_deref(), Some("registry.docker.io"));
        let c = parse_bearer_challenge("bearer realm=https://x/token").unwrap();
        assert_eq!(
            c,
            BearerChallenge {
                realm: "https://x/token".into(),
                service: None
            }
        );
        assert!(parse_bearer_challenge(r#"Basic realm="Registry Realm""#).is_none());
        assert!(parse_bearer_challenge(r#"Bearer service="x""#).is_none());
    }
}
