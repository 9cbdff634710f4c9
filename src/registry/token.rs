//! Authorization against a registry host, as the distribution spec's token flow and docker/containerd do it.
//!
//! `GET /v2/` tells what the host wants: nothing (any answer without a challenge), HTTP Basic (a `Basic`
//! challenge: the user name and password are sent with every request), or a bearer token from the realm of a
//! `Bearer` challenge, asked for with the repository's pull scope: anonymously, with the user name and
//! password (`GET` with Basic auth), or with an identity token (the OAuth2 refresh-token grant, `POST`, what
//! `docker login` stores as `identitytoken` for registries such as ACR or GCR). A CRI `registry_token` is
//! presented as a bearer token as is. The answer is a [`Grant`]: what to present, and for how long it may
//! be reused (the token's `expires_in`, 60 s when the token server does not say).

use std::fmt;
use std::time::Duration;

use serde::Deserialize;

use super::RegistryError;
use super::auth::Credentials;

/// How long an authorization that does not expire by itself (Basic, none, a given registry token) is
/// reused before the host is asked again.
const REUSE: Duration = Duration::from_secs(45);
/// How long before its announced expiry a token stops being reused.
const EXPIRY_MARGIN: Duration = Duration::from_secs(10);
/// The lifetime of a token whose server does not announce one (the distribution spec's default).
const DEFAULT_EXPIRES_IN: u64 = 60;
/// The most of a token server's answer that is read.
const MAX_TOKEN_RESPONSE: usize = 1 << 20;

/// What to present on requests to a host.
#[derive(Clone, PartialEq, Eq)]
pub(super) enum Presented {
    /// `Authorization: Bearer <token>`.
    Bearer(String),
    /// `Authorization: Basic <user:password>`.
    Basic(String, String),
    /// No `Authorization` header.
    Nothing,
}

impl fmt::Debug for Presented {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Presented::Bearer(_) => "Bearer(<redacted>)",
            Presented::Basic(..) => "Basic(<redacted>)",
            Presented::Nothing => "Nothing",
        })
    }
}

impl Presented {
    /// `req` with this authorization.
    pub(super) fn apply(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self {
            Presented::Bearer(t) => req.bearer_auth(t),
            Presented::Basic(u, p) => req.basic_auth(u, Some(p)),
            Presented::Nothing => req,
        }
    }
}

/// An authorization and how long it may be reused.
#[derive(Debug, Clone)]
pub(super) struct Grant {
    /// What to present.
    pub presented: Presented,
    /// How long it may be reused from now (zero: use it for this request only).
    pub reuse: Duration,
}

/// Finds out what `host_url` wants for pulling `repository` and obtains it with `creds`.
/// Transport errors become registry errors through `transport` (the caller knows its deadlines).
pub(super) async fn authorize(
    http: &reqwest::Client,
    headers: &reqwest::header::HeaderMap,
    transport: impl Fn(&reqwest::Error) -> RegistryError,
    host_url: &str,
    repository: &str,
    creds: Option<&Credentials>,
) -> Result<Grant, RegistryError> {
    if let Some(Credentials::RegistryToken(t)) = creds {
        return Ok(Grant {
            presented: Presented::Bearer(t.clone()),
            reuse: REUSE,
        });
    }
    let unreachable = |e: reqwest::Error| transport(&e);
    let resp = http
        .get(format!("{host_url}/v2/"))
        .headers(headers.clone())
        .send()
        .await
        .map_err(unreachable)?;
    let challenges: Vec<String> = resp
        .headers()
        .get_all(reqwest::header::WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_string))
        .collect();
    drop(resp);
    let basic = || match creds {
        Some(Credentials::Basic { username, password }) => Presented::Basic(username.clone(), password.clone()),
        _ => Presented::Nothing,
    };
    let bearer = challenges.iter().find_map(|c| parse_bearer_challenge(c));
    let Some(challenge) = bearer else {
        // No challenge: nothing is needed. A Basic challenge: the user name and password, if any.
        let wants_basic = challenges.iter().any(|c| scheme_of(c).eq_ignore_ascii_case("basic"));
        return Ok(Grant {
            presented: if wants_basic { basic() } else { Presented::Nothing },
            reuse: REUSE,
        });
    };
    let what = format!("repository {repository}");
    let scope = format!("repository:{repository}:pull");
    let mut query = vec![("scope", scope.as_str())];
    if let Some(service) = challenge.service.as_deref() {
        query.push(("service", service));
    }
    let request = match creds {
        Some(Credentials::IdentityToken(refresh)) => {
            let mut form = vec![
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh.as_str()),
                ("client_id", "imaged"),
            ];
            form.extend(query.iter().copied());
            http.post(&challenge.realm).form(&form)
        }
        Some(Credentials::Basic { username, password }) => http
            .get(&challenge.realm)
            .query(&query)
            .basic_auth(username, Some(password)),
        _ => http.get(&challenge.realm).query(&query),
    };
    let resp = request.headers(headers.clone()).send().await.map_err(unreachable)?;
    let status = resp.status().as_u16();
    let retry_after = super::manners::retry_after(resp.headers());
    let body = read_capped(resp, MAX_TOKEN_RESPONSE).await.map_err(unreachable)?;
    if !(200..300).contains(&status) {
        // A token server refusing the credentials is a 401 or 403; both mean "not these credentials".
        let status = if status == 403 { 401 } else { status };
        return Err(RegistryError::from_status(host_url, &what, status, &body).with_retry_after(retry_after));
    }
    let t: TokenResponse = serde_json::from_slice(&body).map_err(|e| RegistryError::Unauthorized {
        host: host_url.to_string(),
        what: what.clone(),
        detail: format!("the token service answered with unreadable JSON ({e})"),
    })?;
    let expires_in = Duration::from_secs(t.expires_in.filter(|s| *s > 0).unwrap_or(DEFAULT_EXPIRES_IN));
    let token = t
        .token
        .or(t.access_token)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| RegistryError::Unauthorized {
            host: host_url.to_string(),
            what,
            detail: "the token service answered without a token".into(),
        })?;
    Ok(Grant {
        presented: Presented::Bearer(token),
        reuse: expires_in.saturating_sub(EXPIRY_MARGIN),
    })
}

#[derive(Deserialize)]
struct TokenResponse {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// Reads a body, at most `limit` bytes of it.
pub(super) async fn read_capped(mut resp: reqwest::Response, limit: usize) -> Result<Vec<u8>, reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        let room = limit.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= limit {
            break;
        }
    }
    Ok(body)
}

/// A `WWW-Authenticate: Bearer realm="…",service="…"` challenge.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct BearerChallenge {
    pub realm: String,
    pub service: Option<String>,
}

fn scheme_of(header: &str) -> &str {
    header.trim().split(' ').next().unwrap_or_default()
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
        assert_eq!(scheme_of(r#" Basic realm="Registry Realm""#), "Basic");
    }

    #[test]
    fn presented_authorizations_are_redacted() {
        let shown = format!(
            "{:?} {:?}",
            Presented::Bearer("tok-secret".into()),
            Presented::Basic("u".into(), "pw-secret".into())
        );
        assert!(!shown.contains("secret"), "{shown}");
    }
}
