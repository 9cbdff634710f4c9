//! Image name patterns in configuration: which images a pull-policy rule (and later, pinning) applies to.
//!
//! The syntax is CRI-O's `pinned_images` (`internal/storage/image.go`, `CompileRegexpsForPinnedImages`):
//!
//! - **exact**: a whole reference such as `busybox` or `quay.io/foo/bar:1.2`. It is normalised with
//!   [`ImageRef::parse`] first, so `busybox` means `docker.io/library/busybox:latest` and matches exactly that
//!   (not `busybox:1.36`: use a glob for every tag).
//! - **glob**: a literal followed by one `*` at the end, such as `quay.io/foo/*` or
//!   `docker.io/library/busybox:*`. It matches every name that starts with the literal; the `*` matches any
//!   run of characters, `/`, `:` and `@` included, so `quay.io/foo/*` covers `quay.io/foo/a/b:1` too.
//! - **keyword**: `*` at both ends, such as `*pause*`: every name that contains the keyword. `*` (or `**`)
//!   alone matches every name.
//!
//! Names are matched in their normalised form (`docker.io/library/busybox:latest`, `name@sha256:…`), which is
//! what callers pass to [`ImagePattern::matches`]. Like CRI-O, matching ignores ASCII case.
//!
//! Where this differs from CRI-O, on purpose:
//! - A glob is anchored at the start of the name. CRI-O's regular expression lacks the `^`, so there
//!   `quay.io/*` also matches `notquay.io/x`.
//! - A glob must be written fully qualified, because it is matched against normalised names: `busybox*`,
//!   `busybox:*`, `library/busybox:*`, `docker.io/busybox:*` or `foo/*` would (almost) never match, and are
//!   rejected with the pattern to write instead (`docker.io/library/busybox:*`, `docker.io/foo/*`). A glob
//!   whose literal starts with a registry host, or a part of one (`localhost:5000/*`, `quay.io*`), is taken as
//!   written.
//! - A `*` anywhere else (`*foo`, `quay.io/*/bar`) is an error. CRI-O takes such a pattern as an exact name
//!   containing a literal `*`, which never matches.

use std::fmt;
use std::str::FromStr;

use serde::Deserialize;

use crate::error::{Classify, ErrorKind};
use crate::reference::{ImageRef, ReferenceError};

/// Why a string is not a valid image pattern. Every message quotes the pattern.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// The pattern is empty.
    #[error("invalid image pattern \"\": pattern is empty")]
    Empty,
    /// A `*` stands somewhere other than at the end, or at both ends.
    #[error(
        "invalid image pattern {0:?}: '*' may only end the pattern (a glob such as \"quay.io/foo/*\") \
         or start and end it (a keyword such as \"*pause*\")"
    )]
    MisplacedWildcard(String),
    /// An exact pattern is not a valid image reference.
    #[error("invalid image pattern: {0}")]
    InvalidReference(#[from] ReferenceError),
    /// A glob is not fully qualified, so it could never match a normalised name.
    #[error(
        "invalid image pattern {pattern:?}: globs match fully qualified names, so this one never would; write {suggestion:?}"
    )]
    Unqualified {
        /// The pattern as written.
        pattern: String,
        /// The fully qualified glob the user most likely meant.
        suggestion: String,
    },
}

impl Classify for PatternError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::InvalidArgument
    }
}

/// A parsed image name pattern; see the [module documentation](self) for the syntax.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct ImagePattern {
    kind: Kind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    /// A normalised reference; the whole name must equal it.
    Exact(String),
    /// The literal part of a glob; the name must start with it.
    Prefix(String),
    /// The inside of a keyword pattern (non-empty); the name must contain it.
    Keyword(String),
    /// `*` or `**`.
    Any,
}

impl ImagePattern {
    /// Parses a pattern: an exact reference (normalised), a glob `prefix*` or a keyword `*word*`.
    pub fn parse(s: &str) -> Result<ImagePattern, PatternError> {
        if s.is_empty() {
            return Err(PatternError::Empty);
        }
        let misplaced = || PatternError::MisplacedWildcard(s.to_string());
        let kind = if s == "*" || s == "**" {
            Kind::Any
        } else if let Some(word) = s.strip_prefix('*').and_then(|rest| rest.strip_suffix('*')) {
            if word.contains('*') {
                return Err(misplaced());
            }
            Kind::Keyword(word.to_string())
        } else if let Some(prefix) = s.strip_suffix('*') {
            if prefix.contains('*') {
                return Err(misplaced());
            }
            let qualified = qualify(prefix);
            if qualified != prefix {
                return Err(PatternError::Unqualified {
                    pattern: s.to_string(),
                    suggestion: format!("{qualified}*"),
                });
            }
            Kind::Prefix(prefix.to_string())
        } else if s.contains('*') {
            return Err(misplaced());
        } else {
            Kind::Exact(ImageRef::parse(s)?.to_string())
        };
        Ok(ImagePattern { kind })
    }

    /// Whether the normalised image name `name` matches, ignoring ASCII case.
    pub fn matches(&self, name: &str) -> bool {
        let name = name.as_bytes();
        match &self.kind {
            Kind::Exact(exact) => name.eq_ignore_ascii_case(exact.as_bytes()),
            Kind::Prefix(prefix) => {
                name.len() >= prefix.len() && name[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
            }
            Kind::Keyword(word) => name
                .windows(word.len())
                .any(|w| w.eq_ignore_ascii_case(word.as_bytes())),
            Kind::Any => true,
        }
    }

    /// Whether this is an exact pattern (it matches one normalised reference and nothing else).
    pub fn is_exact(&self) -> bool {
        matches!(self.kind, Kind::Exact(_))
    }
}

/// Whether the first component of a name is a registry host, by `distribution/reference`'s rule.
fn is_registry(component: &str) -> bool {
    component.contains(['.', ':']) || component == "localhost" || component.chars().any(|c| c.is_ascii_uppercase())
}

/// The fully qualified form of a glob's literal part, as far as it can be known: the registry made explicit
/// (`docker.io` for Docker Hub, `index.docker.io` renamed) and `library/` added to complete single-component
/// Docker Hub names. A partial last component (`docker.io/bus`) is left alone: it may be a namespace.
fn qualify(prefix: &str) -> String {
    let (registry, rest) = match prefix.split_once('/') {
        Some((first, rest)) if is_registry(first) => (first, rest),
        Some(_) => ("docker.io", prefix),
        // No '/': a registry prefix (`quay.io`, `localhost:5000`) stays; anything else (`busybox`, `busybox:`)
        // is a Docker Hub name.
        None => {
            let stem = prefix.strip_suffix([':', '@']).unwrap_or(prefix);
            if is_registry(stem) || stem.starts_with("localhost") {
                return prefix.to_string();
            }
            ("docker.io", prefix)
        }
    };
    let registry = if registry == "index.docker.io" {
        "docker.io"
    } else {
        registry
    };
    if registry == "docker.io" && !rest.contains('/') && rest.contains([':', '@']) {
        format!("docker.io/library/{rest}")
    } else if registry == "docker.io" && !rest.contains('/') && !prefix.contains('/') {
        // A bare word such as `busybox`: the most likely meaning is the official image's name.
        format!("docker.io/library/{rest}")
    } else {
        format!("{registry}/{rest}")
    }
}

impl fmt::Display for ImagePattern {
    /// The pattern in the form that parses back to it; exact patterns are shown normalised.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Exact(exact) => f.write_str(exact),
            Kind::Prefix(prefix) => write!(f, "{prefix}*"),
            Kind::Keyword(word) => write!(f, "*{word}*"),
            Kind::Any => f.write_str("*"),
        }
    }
}

impl FromStr for ImagePattern {
    type Err = PatternError;

    fn from_str(s: &str) -> Result<ImagePattern, PatternError> {
        ImagePattern::parse(s)
    }
}

impl TryFrom<String> for ImagePattern {
    type Error = PatternError;

    fn try_from(s: String) -> Result<ImagePattern, PatternError> {
        ImagePattern::parse(&s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn matches_like_the_table_says() {
        let busybox_digest = format!("docker.io/library/busybox@{DIGEST}");
        let table: &[(&str, &str, bool)] = &[
            // Exact patterns are normalised, then compared whole.
            ("busybox", "docker.io/library/busybox:latest", true),
            ("busybox", "docker.io/library/busybox:1.36", false),
            ("busybox:1.36", "docker.io/library/busybox:1.36", true),
            ("library/busybox", "docker.io/library/busybox:latest", true),
            (
                "index.docker.io/library/busybox",
                "docker.io/library/busybox:latest",
                true,
            ),
            ("quay.io/foo/bar:1", "quay.io/foo/bar:1", true),
            ("quay.io/foo/bar:1", "quay.io/foo/bar:10", false),
            ("quay.io/foo/bar:1", "quay.io/foo/bar:1-extra", false),
            ("localhost:5000/app", "localhost:5000/app:latest", true),
            // Exact matching ignores case, as CRI-O's (?i) does.
            ("busybox:Stable", "docker.io/library/busybox:stable", true),
            // Globs: a prefix, anchored at the start; `*` crosses '/', ':' and '@'.
            ("quay.io/foo/*", "quay.io/foo/bar:1", true),
            ("quay.io/foo/*", "quay.io/foo/a/b/c:1", true),
            ("quay.io/foo/*", "quay.io/foobar/x:1", false),
            ("quay.io/foo/*", "notquay.io/foo/x:1", false),
            ("quay.io/foo/*", "quay.io/foo", false),
            ("quay.io/*", "QUAY.IO/foo/bar:1", true),
            ("docker.io/library/busybox:*", "docker.io/library/busybox:1.36", true),
            ("docker.io/library/busybox:*", "docker.io/library/busyboxes:1", false),
            ("docker.io/library/busybox@*", &busybox_digest, true),
            ("docker.io/library/busybox*", "docker.io/library/busyboxes:1", true),
            ("registry.k8s.io/*", "registry.k8s.io/pause:3.10", true),
            ("localhost:5000/*", "localhost:5000/a:1", true),
            ("quay.io*", "quay.io.example.com/a:1", true),
            // Keywords: anywhere in the name, ignoring case.
            ("*pause*", "registry.k8s.io/pause:3.10", true),
            ("*Fedora*", "quay.io/crio/fedora34:latest", true),
            ("*pause*", "docker.io/library/busybox:latest", false),
            ("*:latest*", "docker.io/library/busybox:latest", true),
            ("*", "anything:at-all", true),
            ("**", "docker.io/library/busybox:latest", true),
        ];
        for &(pattern, name, want) in table {
            let p = ImagePattern::parse(pattern).unwrap_or_else(|e| panic!("{pattern}: {e}"));
            assert_eq!(p.matches(name), want, "pattern {pattern:?} against {name:?}");
        }
    }

    #[test]
    fn digest_patterns_match_digest_references() {
        let p = ImagePattern::parse(&format!("busybox@{DIGEST}")).unwrap();
        assert!(p.is_exact());
        assert!(p.matches(&format!("docker.io/library/busybox@{DIGEST}")));
        assert!(!p.matches("docker.io/library/busybox:latest"));
    }

    #[test]
    fn rejects_bad_patterns_saying_why() {
        let table: &[(&str, &str)] = &[
            ("", "invalid image pattern \"\": pattern is empty"),
            ("*foo", "invalid image pattern \"*foo\": '*' may only end the pattern"),
            (
                "quay.io/*/bar",
                "invalid image pattern \"quay.io/*/bar\": '*' may only end",
            ),
            ("quay.io/*/*", "invalid image pattern \"quay.io/*/*\": '*' may only end"),
            ("*a*b*", "invalid image pattern \"*a*b*\": '*' may only end"),
            (
                "Busybox",
                "invalid image pattern: invalid image reference \"Busybox\": repository name must be lowercase",
            ),
            (
                "busybox:",
                "invalid image pattern: invalid image reference \"busybox:\": invalid tag",
            ),
        ];
        for &(pattern, want) in table {
            let err = ImagePattern::parse(pattern).expect_err(pattern).to_string();
            assert!(err.starts_with(want), "{pattern:?}: got {err:?}");
        }
    }

    #[test]
    fn unqualified_globs_are_rejected_with_the_glob_to_write() {
        let table: &[(&str, &str)] = &[
            ("busybox:*", "docker.io/library/busybox:*"),
            ("busybox@*", "docker.io/library/busybox@*"),
            ("busybox*", "docker.io/library/busybox*"),
            ("library/busybox:*", "docker.io/library/busybox:*"),
            ("docker.io/busybox:*", "docker.io/library/busybox:*"),
            ("index.docker.io/library/*", "docker.io/library/*"),
            ("foo/*", "docker.io/foo/*"),
            ("foo/bar:*", "docker.io/foo/bar:*"),
        ];
        for &(pattern, suggestion) in table {
            match ImagePattern::parse(pattern) {
                Err(PatternError::Unqualified {
                    pattern: p,
                    suggestion: s,
                }) => {
                    assert_eq!((p.as_str(), s.as_str()), (pattern, suggestion));
                    // The suggestion itself is accepted.
                    assert!(ImagePattern::parse(&s).is_ok(), "{s}");
                }
                other => panic!("{pattern:?}: {other:?}"),
            }
        }
        let err = ImagePattern::parse("busybox:*").unwrap_err().to_string();
        assert_eq!(
            err,
            "invalid image pattern \"busybox:*\": globs match fully qualified names, so this one never would; \
             write \"docker.io/library/busybox:*\""
        );
    }

    #[test]
    fn displays_the_effective_pattern_which_parses_back_to_itself() {
        let table: &[(&str, &str)] = &[
            ("busybox", "docker.io/library/busybox:latest"),
            ("quay.io/foo/*", "quay.io/foo/*"),
            ("*pause*", "*pause*"),
            ("**", "*"),
            ("*", "*"),
        ];
        for &(pattern, shown) in table {
            let p: ImagePattern = pattern.parse().unwrap();
            assert_eq!(p.to_string(), shown);
            assert_eq!(ImagePattern::parse(shown).unwrap(), p);
        }
    }

    #[test]
    fn deserialises_from_a_string_and_rejects_bad_ones() {
        #[derive(Deserialize)]
        struct C {
            p: ImagePattern,
        }
        let c: C = toml::from_str("p = \"*pause*\"").unwrap();
        assert!(c.p.matches("registry.k8s.io/pause:3.10"));
        let err = toml::from_str::<C>("p = \"*foo\"").err().unwrap().to_string();
        assert!(err.contains("'*' may only end the pattern"), "{err}");
    }

    #[test]
    fn is_classified_as_invalid_argument() {
        assert_eq!(PatternError::Empty.kind(), ErrorKind::InvalidArgument);
    }
}
