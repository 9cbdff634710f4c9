//! kubelet's `imagePullCredentialsVerificationPolicy` and `preloadedImagesVerificationAllowlist` (KEP-2535;
//! `pkg/kubelet/images/pullmanager/image_pull_policies.go`), and the pure decision of whether a request for
//! an image the store holds must first be verified with the registry ([`must_verify`]).

use std::fmt;

use serde::Deserialize;

use crate::metadata::AccessView;
use crate::reference::ImageRef;

/// Which images present in the store need their requests' credentials verified. Written as kubelet
/// writes it: `NeverVerify`, `NeverVerifyPreloadedImages`, `NeverVerifyAllowlistedImages`, `AlwaysVerify`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum VerifyPolicy {
    /// Never verify: any request may use any image present (the behaviour before KEP-2535).
    NeverVerify,
    /// Verify requests for images imaged pulled (and recorded who it pulled them for); images it has no
    /// record of (preloaded, or pulled before imaged kept records) are used without verification. kubelet's
    /// default, and imaged's.
    #[default]
    NeverVerifyPreloadedImages,
    /// Verify every request, for preloaded images too, except for images the allowlist names.
    NeverVerifyAllowlistedImages,
    /// Verify every request whose credentials have no record for the image.
    AlwaysVerify,
}

impl fmt::Display for VerifyPolicy {
    /// kubelet's spelling.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            VerifyPolicy::NeverVerify => "NeverVerify",
            VerifyPolicy::NeverVerifyPreloadedImages => "NeverVerifyPreloadedImages",
            VerifyPolicy::NeverVerifyAllowlistedImages => "NeverVerifyAllowlistedImages",
            VerifyPolicy::AlwaysVerify => "AlwaysVerify",
        })
    }
}

/// Whether a request for a present image must be verified with the registry before it is answered from
/// the store, as kubelet's `MustAttemptImagePull` decides: when the policy asks for verification, unless
/// the records say the node may use the image from this repository (it was served without request
/// credentials) or these credentials may. `allowlisted` is whether the allowlist names the image.
pub fn must_verify(policy: VerifyPolicy, allowlisted: bool, view: &AccessView) -> bool {
    let required = match policy {
        VerifyPolicy::NeverVerify => false,
        VerifyPolicy::NeverVerifyPreloadedImages => view.tracked,
        VerifyPolicy::NeverVerifyAllowlistedImages => !allowlisted,
        VerifyPolicy::AlwaysVerify => true,
    };
    required && !view.node && !view.granted
}

/// Why an allowlist entry cannot be used; every message quotes it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllowlistError {
    /// The entry has leading or trailing spaces.
    #[error("allowlist entry {0:?}: leading or trailing spaces are not allowed")]
    Spaces(String),
    /// A `*` stands elsewhere than in a final `/*`.
    #[error("allowlist entry {0:?}: only a final \"/*\" may be a wildcard (e.g. \"registry.example/team/*\")")]
    Wildcard(String),
    /// A wildcard without at least a registry host before it.
    #[error("allowlist entry {0:?}: a wildcard needs at least a registry host before it (\"registry.example/*\")")]
    NoRegistry(String),
    /// The entry is not an image name.
    #[error("allowlist entry {pattern:?} is not an image name: {reason}")]
    NotAName {
        /// The entry.
        pattern: String,
        /// The parser's reason.
        reason: String,
    },
    /// The entry has a tag or digest: the allowlist names repositories.
    #[error("allowlist entry {0:?}: neither tag nor digest is accepted, name the repository")]
    TagOrDigest(String),
    /// The entry is not written fully qualified, so it would never match.
    #[error("allowlist entry {pattern:?} is not fully qualified: write {qualified:?}")]
    Unqualified {
        /// The entry.
        pattern: String,
        /// The entry as it must be written.
        qualified: String,
    },
    /// An allowlist with a policy that does not read it.
    #[error("an allowlist of {count} entries is only read by the policy NeverVerifyAllowlistedImages, not {policy}")]
    Unused {
        /// The configured policy.
        policy: VerifyPolicy,
        /// The entries.
        count: usize,
    },
}

/// One allowlist entry, in kubelet's syntax: a repository (`registry.example/team/app`) or every
/// repository under a path (`registry.example/team/*`, `registry.example/*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowPattern {
    /// This repository.
    Exact(String),
    /// Every repository whose name starts with this (ends with `/`).
    Prefix(String),
}

impl AllowPattern {
    /// Parses an entry as kubelet validates it.
    pub fn parse(s: &str) -> Result<AllowPattern, AllowlistError> {
        if s != s.trim() {
            return Err(AllowlistError::Spaces(s.to_string()));
        }
        if let Some(prefix) = s.strip_suffix('*').filter(|p| p.ends_with('/')) {
            if prefix.contains('*') {
                return Err(AllowlistError::Wildcard(s.to_string()));
            }
            if prefix == "/" {
                return Err(AllowlistError::NoRegistry(s.to_string()));
            }
            return Ok(AllowPattern::Prefix(prefix.to_string()));
        }
        if s.contains('*') {
            return Err(AllowlistError::Wildcard(s.to_string()));
        }
        let parsed = ImageRef::parse(s).map_err(|e| AllowlistError::NotAName {
            pattern: s.to_string(),
            reason: e.to_string(),
        })?;
        let name = parsed.name();
        if name == s {
            return Ok(AllowPattern::Exact(name));
        }
        let last = s.rsplit('/').next().unwrap_or(s);
        if s.contains('@') || last.contains(':') {
            return Err(AllowlistError::TagOrDigest(s.to_string()));
        }
        Err(AllowlistError::Unqualified {
            pattern: s.to_string(),
            qualified: name,
        })
    }

    /// Whether the repository `name` (normalised, without tag or digest) matches.
    pub fn matches(&self, name: &str) -> bool {
        match self {
            AllowPattern::Exact(n) => n == name,
            AllowPattern::Prefix(p) => name.starts_with(p.as_str()),
        }
    }
}

/// The configured policy with its allowlist.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyRules {
    policy: VerifyPolicy,
    allowlist: Vec<AllowPattern>,
}

impl VerifyRules {
    /// The rules for `policy` and the allowlist `entries` (only `NeverVerifyAllowlistedImages` reads one).
    pub fn new(policy: VerifyPolicy, entries: &[String]) -> Result<VerifyRules, AllowlistError> {
        if !entries.is_empty() && policy != VerifyPolicy::NeverVerifyAllowlistedImages {
            return Err(AllowlistError::Unused {
                policy,
                count: entries.len(),
            });
        }
        let allowlist = entries
            .iter()
            .map(|e| AllowPattern::parse(e))
            .collect::<Result<_, _>>()?;
        Ok(VerifyRules { policy, allowlist })
    }

    /// The policy.
    pub fn policy(&self) -> VerifyPolicy {
        self.policy
    }

    /// [`must_verify`] for the repository `name` with what the records say.
    pub fn must_verify(&self, name: &str, view: &AccessView) -> bool {
        let allowlisted = self.allowlist.iter().any(|p| p.matches(name));
        must_verify(self.policy, allowlisted, view)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use VerifyPolicy::*;

    fn view(tracked: bool, node: bool, granted: bool) -> AccessView {
        AccessView { tracked, node, granted }
    }

    #[test]
    fn decides_as_kubelet_for_every_combination() {
        let untracked = view(false, false, false);
        let other_creds = view(true, false, false);
        let node = view(true, true, false);
        let these_creds = view(true, false, true);
        // (policy, allowlisted, view) -> must verify
        let table = [
            (NeverVerify, false, other_creds, false),
            (NeverVerify, false, untracked, false),
            (NeverVerifyPreloadedImages, false, untracked, false),
            (NeverVerifyPreloadedImages, true, untracked, false),
            (NeverVerifyPreloadedImages, false, other_creds, true),
            (NeverVerifyPreloadedImages, true, other_creds, true),
            (NeverVerifyPreloadedImages, false, node, false),
            (NeverVerifyPreloadedImages, false, these_creds, false),
            (NeverVerifyAllowlistedImages, false, untracked, true),
            (NeverVerifyAllowlistedImages, true, untracked, false),
            (NeverVerifyAllowlistedImages, true, other_creds, false),
            (NeverVerifyAllowlistedImages, false, other_creds, true),
            (NeverVerifyAllowlistedImages, false, node, false),
            (NeverVerifyAllowlistedImages, false, these_creds, false),
            (AlwaysVerify, true, untracked, true),
            (AlwaysVerify, false, other_creds, true),
            (AlwaysVerify, false, node, false),
            (AlwaysVerify, false, these_creds, false),
        ];
        for (policy, allowlisted, v, want) in table {
            assert_eq!(
                must_verify(policy, allowlisted, &v),
                want,
                "{policy} allowlisted={allowlisted} {v:?}"
            );
        }
    }

    #[test]
    fn parses_kubelets_allowlist_syntax() {
        let ok = [
            (
                "registry.example/team/app",
                AllowPattern::Exact("registry.example/team/app".into()),
            ),
            (
                "docker.io/library/busybox",
                AllowPattern::Exact("docker.io/library/busybox".into()),
            ),
            (
                "registry.example/team/*",
                AllowPattern::Prefix("registry.example/team/".into()),
            ),
            ("registry.example/*", AllowPattern::Prefix("registry.example/".into())),
            ("localhost:5000/a", AllowPattern::Exact("localhost:5000/a".into())),
        ];
        for (s, want) in ok {
            assert_eq!(AllowPattern::parse(s), Ok(want), "{s}");
        }
        let bad = [
            (" registry.example/a", "leading or trailing spaces"),
            ("registry.example/*/a", "only a final"),
            ("registry.example/a*", "only a final"),
            ("*", "only a final"),
            ("/*", "registry host"),
            ("registry.example/a:1", "neither tag nor digest"),
            ("busybox", "write \"docker.io/library/busybox\""),
            ("Registry.example/A", "not an image name"),
        ];
        for (s, want) in bad {
            let err = AllowPattern::parse(s).unwrap_err().to_string();
            assert!(err.contains(want) && err.contains(&format!("{s:?}")), "{s}: {err}");
        }
    }

    #[test]
    fn allowlist_entries_match_repositories_and_need_their_policy() {
        let entries = [
            "registry.example/team/*".to_string(),
            "docker.io/library/busybox".to_string(),
        ];
        let rules = VerifyRules::new(NeverVerifyAllowlistedImages, &entries).unwrap();
        let untracked = AccessView::default();
        assert!(!rules.must_verify("registry.example/team/app", &untracked));
        assert!(!rules.must_verify("registry.example/team/a/b", &untracked));
        assert!(!rules.must_verify("docker.io/library/busybox", &untracked));
        assert!(rules.must_verify("docker.io/library/busybox2", &untracked));
        assert!(rules.must_verify("registry.example/teams/app", &untracked));
        let err = VerifyRules::new(AlwaysVerify, &entries).unwrap_err().to_string();
        assert!(
            err.contains("only read by the policy NeverVerifyAllowlistedImages, not AlwaysVerify"),
            "{err}"
        );
        assert_eq!(VerifyRules::default().policy(), NeverVerifyPreloadedImages);
    }

    #[test]
    fn policies_are_written_as_kubelet_writes_them() {
        #[derive(Deserialize)]
        struct T {
            p: VerifyPolicy,
        }
        for p in [
            NeverVerify,
            NeverVerifyPreloadedImages,
            NeverVerifyAllowlistedImages,
            AlwaysVerify,
        ] {
            let t: T = toml::from_str(&format!("p = \"{p}\"")).unwrap();
            assert_eq!(t.p, p);
        }
        assert!(toml::from_str::<T>("p = \"never-verify\"").is_err());
    }
}
