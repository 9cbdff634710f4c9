//! Image references (`[registry/]repository[:tag][@digest]`), parsed and normalised like the Docker and
//! containerd ecosystem does it: `distribution/reference`'s `ParseNormalizedNamed` followed by
//! `TagNameOnly`.
//!
//! The grammar, from `distribution/reference`:
//!
//! ```text
//! reference        := name [ ":" tag ] [ "@" digest ]
//! name             := [domain '/'] path-component ['/' path-component]*
//! domain           := host [':' port-number]
//! host             := domain-name | '[' IPv6 ']'
//! domain-name      := domain-component ['.' domain-component]*
//! domain-component := /([a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])/
//! path-component   := /[a-z0-9]+/ [separator /[a-z0-9]+/]*
//! separator        := /[_.]|__|[-]+/
//! tag              := /[\w][\w.-]{0,127}/
//! ```
//!
//! Normalisation: the first `/`-separated component is a registry if it contains `.` or `:`, is
//! `localhost`, or contains an upper-case letter; otherwise the registry is `docker.io`.
//! `index.docker.io` becomes `docker.io`, and single-component Docker Hub names get `library/`.
//! A reference with neither tag nor digest gets the tag `latest`; one with both keeps both.
//!
//! imaged only handles sha256 content, so digests of other algorithms are rejected here.

use std::fmt;
use std::str::FromStr;

use crate::digest::Digest;

/// Docker Hub's canonical name.
const DOCKER_HUB: &str = "docker.io";
/// Docker Hub's legacy name, normalised to [`DOCKER_HUB`].
const LEGACY_DOCKER_HUB: &str = "index.docker.io";
/// The longest allowed name (registry, `/` and repository).
const NAME_MAX: usize = 255;
/// The longest allowed tag.
const TAG_MAX: usize = 128;

/// Why a string is not a valid image reference. Every message quotes the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    /// The reference is empty.
    #[error("invalid image reference \"\": reference is empty")]
    Empty,
    /// The input is an image ID (64 hex digits, optionally prefixed `sha256:`), not a reference;
    /// callers may look it up as an ID instead.
    #[error("invalid image reference {input:?}: a 64-digit hex string is an image id, not a name")]
    LooksLikeId {
        /// The input.
        input: String,
    },
    /// A repository path component contains upper-case letters.
    #[error("invalid image reference {input:?}: repository name must be lowercase")]
    Uppercase {
        /// The input.
        input: String,
    },
    /// The registry and repository together are longer than 255 characters.
    #[error("invalid image reference {input:?}: repository name must not be more than 255 characters")]
    NameTooLong {
        /// The input.
        input: String,
    },
    /// The repository name breaks the grammar.
    #[error("invalid image reference {input:?}: {reason}")]
    InvalidName {
        /// The input.
        input: String,
        /// What is wrong.
        reason: String,
    },
    /// The registry host (and port) is malformed.
    #[error("invalid image reference {input:?}: invalid registry host {host:?}")]
    InvalidHost {
        /// The input.
        input: String,
        /// The registry part.
        host: String,
    },
    /// The tag is empty, too long or has invalid characters.
    #[error("invalid image reference {input:?}: invalid tag {tag:?}: {reason}")]
    InvalidTag {
        /// The input.
        input: String,
        /// The tag part.
        tag: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// `@` is not followed by anything.
    #[error("invalid image reference {input:?}: '@' must be followed by a digest")]
    MissingDigest {
        /// The input.
        input: String,
    },
    /// The digest is malformed.
    #[error("invalid image reference {input:?}: invalid digest {digest:?}: expected sha256:<64 lowercase hex digits>")]
    InvalidDigest {
        /// The input.
        input: String,
        /// The digest part.
        digest: String,
    },
    /// The digest is well-formed but not sha256.
    #[error("invalid image reference {input:?}: unsupported digest algorithm {algorithm:?}: only sha256 is supported")]
    UnsupportedDigest {
        /// The input.
        input: String,
        /// The digest's algorithm.
        algorithm: String,
    },
}

/// A parsed, normalised image reference. It always has a tag or a digest (or both).
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct ImageRef {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl ImageRef {
    /// Parses and normalises `s`: `busybox` becomes `docker.io/library/busybox:latest`.
    pub fn parse(s: &str) -> Result<ImageRef, ReferenceError> {
        let err_name = |reason: String| ReferenceError::InvalidName {
            input: s.to_string(),
            reason,
        };
        if s.is_empty() {
            return Err(ReferenceError::Empty);
        }
        if is_id(s) || s.strip_prefix("sha256:").is_some_and(is_id) {
            return Err(ReferenceError::LooksLikeId { input: s.to_string() });
        }
        let (registry, remainder) = split_docker_domain(s);
        // Like ParseNormalizedNamed: the repository (up to any tag) must be lowercase.
        let remote = remainder.split_once(':').map_or(remainder.as_str(), |(r, _)| r);
        if remote.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(ReferenceError::Uppercase { input: s.to_string() });
        }

        let (rest, digest) = match remainder.split_once('@') {
            None => (remainder.as_str(), None),
            Some((_, "")) => {
                return Err(ReferenceError::MissingDigest { input: s.to_string() });
            }
            Some((rest, d)) => (rest, Some(parse_digest(s, d)?)),
        };
        // The remainder has no domain, so any ':' left separates the tag.
        let (repository, tag) = match rest.split_once(':') {
            None => (rest, None),
            Some((r, t)) => (r, Some(check_tag(s, t)?)),
        };
        if !valid_domain(registry) {
            return Err(ReferenceError::InvalidHost {
                input: s.to_string(),
                host: registry.to_string(),
            });
        }
        for component in repository.split('/') {
            check_component(component).map_err(&err_name)?;
        }
        if registry.len() + 1 + repository.len() > NAME_MAX {
            return Err(ReferenceError::NameTooLong { input: s.to_string() });
        }
        let tag = match (tag, &digest) {
            (None, None) => Some("latest".to_string()),
            (t, _) => t.map(str::to_string),
        };
        Ok(ImageRef {
            registry: registry.to_string(),
            repository: repository.to_string(),
            tag,
            digest,
        })
    }

    /// The registry host, with port if any: `docker.io`, `localhost:5000`.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository path within the registry: `library/busybox`.
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag, if the reference has one.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest, if the reference has one.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// The full name without tag or digest: `docker.io/library/busybox`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// `name:tag`, if the reference has a tag.
    pub fn tagged(&self) -> Option<String> {
        self.tag.as_ref().map(|t| format!("{}:{t}", self.name()))
    }

    /// `name@digest` for the given digest (e.g. the resolved manifest digest of a tag).
    pub fn with_digest(&self, d: &Digest) -> String {
        format!("{}@{d}", self.name())
    }

    /// What to ask the registry for: the digest if there is one (it pins the content), else the tag.
    pub fn reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            // parse() guarantees a tag or a digest; an empty string is the safe impossible answer.
            (None, None) => String::new(),
        }
    }
}

impl fmt::Display for ImageRef {
    /// The full normalised form: `name:tag`, `name@digest` or `name:tag@digest`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl FromStr for ImageRef {
    type Err = ReferenceError;

    fn from_str(s: &str) -> Result<ImageRef, ReferenceError> {
        ImageRef::parse(s)
    }
}

/// 64 lowercase hex digits: distribution's "identifier".
fn is_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// distribution's `splitDockerDomain`: returns the registry and the rest (repository, tag, digest).
fn split_docker_domain(s: &str) -> (&str, String) {
    let (domain, mut remainder) = match s.split_once('/') {
        None => (DOCKER_HUB, s.to_string()),
        Some((LEGACY_DOCKER_HUB, rest)) => (DOCKER_HUB, rest.to_string()),
        Some((d, rest)) if d == "localhost" || d.contains(['.', ':']) || d.chars().any(|c| c.is_ascii_uppercase()) => {
            (d, rest.to_string())
        }
        Some(_) => (DOCKER_HUB, s.to_string()),
    };
    if domain == DOCKER_HUB && !remainder.contains('/') {
        remainder.insert_str(0, "library/");
    }
    (domain, remainder)
}

/// Checks a digest: distribution's digest grammar first, then sha256 with 64 lowercase hex digits.
fn parse_digest(input: &str, d: &str) -> Result<Digest, ReferenceError> {
    let invalid = || ReferenceError::InvalidDigest {
        input: input.to_string(),
        digest: d.to_string(),
    };
    let (algorithm, hex) = d.split_once(':').ok_or_else(invalid)?;
    let algorithm_ok = algorithm.split(['-', '_', '+', '.']).all(|part| {
        part.starts_with(|c: char| c.is_ascii_alphabetic()) && part.chars().all(|c| c.is_ascii_alphanumeric())
    });
    if !algorithm_ok || hex.len() < 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(invalid());
    }
    if algorithm != "sha256" {
        return Err(ReferenceError::UnsupportedDigest {
            input: input.to_string(),
            algorithm: algorithm.to_string(),
        });
    }
    d.parse().map_err(|_| invalid())
}

/// Checks a tag against `[\w][\w.-]{0,127}`.
fn check_tag<'a>(input: &str, tag: &'a str) -> Result<&'a str, ReferenceError> {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let reason = if tag.is_empty() {
        "tag is empty"
    } else if tag.len() > TAG_MAX {
        "tag must not be more than 128 characters"
    } else if !tag.starts_with(word) || !tag.chars().all(|c| word(c) || c == '.' || c == '-') {
        "tag must be letters, digits, '_', '.' or '-', not starting with '.' or '-'"
    } else {
        return Ok(tag);
    };
    Err(ReferenceError::InvalidTag {
        input: input.to_string(),
        tag: tag.to_string(),
        reason,
    })
}

/// Checks one path component against `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*`.
fn check_component(c: &str) -> Result<(), String> {
    if c.is_empty() {
        return Err("repository name has an empty path component (leading, trailing or double '/')".into());
    }
    if let Some(bad) = c
        .chars()
        .find(|&ch| !matches!(ch, 'a'..='z' | '0'..='9' | '.' | '_' | '-'))
    {
        return Err(format!("invalid character {bad:?} in repository name"));
    }
    let alnum = |ch: char| ch.is_ascii_lowercase() || ch.is_ascii_digit();
    if !c.starts_with(alnum) || !c.ends_with(alnum) {
        return Err(format!(
            "path component {c:?} must start and end with a lowercase letter or digit"
        ));
    }
    for sep in c.split(alnum).filter(|s| !s.is_empty()) {
        if !(sep == "." || sep == "_" || sep == "__" || sep.chars().all(|ch| ch == '-')) {
            return Err(format!("invalid separator {sep:?} in path component {c:?}"));
        }
    }
    Ok(())
}

/// Checks `host[:port]`, where host is a domain name, an IPv4 address or a bracketed IPv6 address
/// (distribution's `domainAndPort`; also used for registry URLs in `hosts.toml`).
pub(crate) fn valid_domain(d: &str) -> bool {
    let (host, port) = if let Some(v6) = d.strip_prefix('[') {
        let Some((addr, after)) = v6.split_once(']') else {
            return false;
        };
        if addr.is_empty() || !addr.chars().all(|c| c.is_ascii_hexdigit() || c == ':') {
            return false;
        }
        match after {
            "" => return true,
            _ => match after.strip_prefix(':') {
                Some(port) => (None, Some(port)),
                None => return false,
            },
        }
    } else {
        match d.split_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(d), None),
        }
    };
    let component_ok = |c: &str| {
        !c.is_empty()
            && c.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '-')
            && !c.starts_with('-')
            && !c.ends_with('-')
    };
    let host_ok = host.is_none_or(|h| h.split('.').all(component_ok));
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()));
    host_ok && port_ok
}

#[cfg(test)]
#[path = "reference_tests.rs"]
mod tests;
