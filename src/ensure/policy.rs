//! The server's own pull policy: for each image, whether a pull request goes to the registry at all.
//!
//! kubelet decides with the container's `imagePullPolicy` before it calls `PullImage` (`shouldPullImage` in
//! `pkg/kubelet/images/image_manager.go`); CRI does not pass that policy on. This is a second, node-side
//! policy, chosen per image by [`PolicySet::for_image`] (first matching rule wins) and turned into an action by
//! [`decide`], a pure function of the policy and what the store holds.

use std::fmt;

use serde::Deserialize;

use crate::pattern::{ImagePattern, PatternError};

/// When to go to the registry for an image. Written `always`, `if-not-present` or `never` in configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PullPolicy {
    /// Check the registry on every pull (for a tag; a digest cannot change).
    #[default]
    Always,
    /// Use the image if the store has it; pull only when it is absent.
    IfNotPresent,
    /// Never pull: the image must already be in the store.
    Never,
}

impl fmt::Display for PullPolicy {
    /// The configuration spelling: `always`, `if-not-present`, `never`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PullPolicy::Always => "always",
            PullPolicy::IfNotPresent => "if-not-present",
            PullPolicy::Never => "never",
        })
    }
}

/// What a pull request should do, given the policy and the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Answer with the image in the store; no registry request at all.
    UseLocal,
    /// The image is absent: resolve the reference and fetch every blob the store lacks.
    Pull,
    /// The image is present under a tag and the policy is `always`: ask the registry what the tag points at now
    /// (a manifest HEAD, or GET if HEAD is not answered), and fetch only the blobs the store lacks. If the tag
    /// still points at the manifest we have, nothing else is fetched.
    ResolveThenMaybePull,
    /// The policy is `never` and the image is absent: fail with kubelet's `ErrImageNeverPull` (see
    /// [`never_pull_message`]).
    NeverPullError,
}

/// Decides what a pull request does, from the image's policy, whether the store has the image, and whether
/// the requested reference names a digest (`name@sha256:…`) rather than only a tag.
///
/// - `never`: the local image, or [`Decision::NeverPullError`] when absent (kubelet's `PullNever`).
/// - `if-not-present`: the local image, or [`Decision::Pull`] when absent (kubelet's `PullIfNotPresent`).
/// - `always` with a digest: the local image when present, since content addressed by digest cannot have
///   changed; [`Decision::Pull`] when absent.
/// - `always` with a tag: [`Decision::ResolveThenMaybePull`] when present, as the tag may have moved;
///   [`Decision::Pull`] when absent.
pub fn decide(policy: PullPolicy, present: bool, reference_is_digest: bool) -> Decision {
    match (policy, present) {
        (PullPolicy::Never, false) => Decision::NeverPullError,
        (_, false) => Decision::Pull,
        (PullPolicy::Never | PullPolicy::IfNotPresent, true) => Decision::UseLocal,
        (PullPolicy::Always, true) if reference_is_digest => Decision::UseLocal,
        (PullPolicy::Always, true) => Decision::ResolveThenMaybePull,
    }
}

/// kubelet's message for [`Decision::NeverPullError`]: `Container image "IMAGE" is not present with pull policy
/// of Never`.
pub fn never_pull_message(image: &str) -> String {
    format!("Container image {image:?} is not present with pull policy of Never")
}

/// One rule: images matching the pattern get the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyRule {
    /// Which images the rule covers.
    pub pattern: ImagePattern,
    /// Their policy.
    pub policy: PullPolicy,
}

/// An ordered list of rules and the policy for images no rule matches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicySet {
    rules: Vec<PolicyRule>,
    default: PullPolicy,
}

impl PolicySet {
    /// A set trying `rules` in order, with `default` for images none matches.
    pub fn new(rules: Vec<PolicyRule>, default: PullPolicy) -> PolicySet {
        PolicySet { rules, default }
    }

    /// The policy of the first rule matching the normalised reference, else the default.
    pub fn for_image(&self, normalised: &str) -> PullPolicy {
        self.rules
            .iter()
            .find(|r| r.pattern.matches(normalised))
            .map_or(self.default, |r| r.policy)
    }

    /// The rules, in the order they are tried.
    pub fn rules(&self) -> &[PolicyRule] {
        &self.rules
    }

    /// The policy for images no rule matches.
    pub fn default_policy(&self) -> PullPolicy {
        self.default
    }
}

/// The pull policy section of the configuration, e.g. in TOML:
///
/// ```toml
/// default = "if-not-present"
/// rules = [
///   { pattern = "registry.k8s.io/pause:*", policy = "never" },
///   { pattern = "*:latest*", policy = "always" },
/// ]
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// The policy for images no rule matches; `always` if unset.
    #[serde(default)]
    pub default: Option<PullPolicy>,
    /// Rules tried in order; the first whose pattern matches decides.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
}

/// One rule as written in the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// An image pattern (see [`crate::pattern`]): `busybox`, `quay.io/foo/*`, `*pause*`.
    pub pattern: String,
    /// The policy of the images it matches.
    pub policy: PullPolicy,
}

impl PolicyConfig {
    /// Parses the patterns and builds the policy set; the error names the first bad pattern.
    pub fn build(&self) -> Result<PolicySet, PatternError> {
        let rules = self
            .rules
            .iter()
            .map(|r| {
                Ok(PolicyRule {
                    pattern: ImagePattern::parse(&r.pattern)?,
                    policy: r.policy,
                })
            })
            .collect::<Result<Vec<_>, PatternError>>()?;
        Ok(PolicySet::new(rules, self.default.unwrap_or_default()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Decision::*;
    use PullPolicy::*;

    #[test]
    fn decides_every_combination() {
        // (policy, present, digest reference) -> decision
        let table = [
            (Never, false, false, NeverPullError),
            (Never, false, true, NeverPullError),
            (Never, true, false, UseLocal),
            (Never, true, true, UseLocal),
            (IfNotPresent, false, false, Pull),
            (IfNotPresent, false, true, Pull),
            (IfNotPresent, true, false, UseLocal),
            (IfNotPresent, true, true, UseLocal),
            (Always, false, false, Pull),
            (Always, false, true, Pull),
            (Always, true, false, ResolveThenMaybePull),
            (Always, true, true, UseLocal),
        ];
        for (policy, present, digest, want) in table {
            assert_eq!(
                decide(policy, present, digest),
                want,
                "{policy} present={present} digest={digest}"
            );
        }
    }

    #[test]
    fn the_never_message_is_kubelets() {
        assert_eq!(
            never_pull_message("busybox"),
            "Container image \"busybox\" is not present with pull policy of Never"
        );
    }

    fn rule(pattern: &str, policy: PullPolicy) -> PolicyRule {
        PolicyRule {
            pattern: ImagePattern::parse(pattern).unwrap(),
            policy,
        }
    }

    #[test]
    fn the_first_matching_rule_wins_else_the_default() {
        let set = PolicySet::new(
            vec![
                rule("registry.k8s.io/pause:3.10", Never),
                rule("registry.k8s.io/*", IfNotPresent),
                rule("*pause*", Always),
            ],
            IfNotPresent,
        );
        assert_eq!(set.for_image("registry.k8s.io/pause:3.10"), Never);
        assert_eq!(set.for_image("registry.k8s.io/pause:3.9"), IfNotPresent);
        assert_eq!(set.for_image("quay.io/x/pause:1"), Always);
        assert_eq!(set.for_image("docker.io/library/busybox:latest"), IfNotPresent);
        assert_eq!(set.rules().len(), 3);
        assert_eq!(set.default_policy(), IfNotPresent);
        assert_eq!(
            PolicySet::default().for_image("docker.io/library/busybox:latest"),
            Always
        );
    }

    #[test]
    fn builds_from_toml() {
        let config: PolicyConfig = toml::from_str(
            r#"
            default = "if-not-present"
            rules = [
              { pattern = "busybox", policy = "never" },
              { pattern = "quay.io/team/*", policy = "always" },
            ]
            "#,
        )
        .unwrap();
        let set = config.build().unwrap();
        assert_eq!(set.default_policy(), IfNotPresent);
        assert_eq!(set.for_image("docker.io/library/busybox:latest"), Never);
        assert_eq!(set.for_image("quay.io/team/app:1"), Always);
        assert_eq!(set.for_image("quay.io/other/app:1"), IfNotPresent);
    }

    #[test]
    fn an_empty_section_means_always_for_everything() {
        let config: PolicyConfig = toml::from_str("").unwrap();
        assert_eq!(config, PolicyConfig::default());
        assert_eq!(config.build().unwrap(), PolicySet::default());
    }

    #[test]
    fn rejects_unknown_fields_bad_policies_and_bad_patterns() {
        let unknown_top = toml::from_str::<PolicyConfig>("defualt = \"never\"")
            .unwrap_err()
            .to_string();
        assert!(unknown_top.contains("unknown field `defualt`"), "{unknown_top}");
        let unknown_rule = toml::from_str::<PolicyConfig>("rules = [{ pattern = \"a\", policy = \"never\", x = 1 }]")
            .unwrap_err()
            .to_string();
        assert!(unknown_rule.contains("unknown field `x`"), "{unknown_rule}");
        let bad_policy = toml::from_str::<PolicyConfig>("default = \"IfNotPresent\"")
            .unwrap_err()
            .to_string();
        assert!(bad_policy.contains("if-not-present"), "{bad_policy}");
        let config: PolicyConfig = toml::from_str(
            "rules = [{ pattern = \"ok\", policy = \"never\" }, { pattern = \"busybox:*\", policy = \"always\" }]",
        )
        .unwrap();
        let err = config.build().unwrap_err().to_string();
        assert!(err.starts_with("invalid image pattern \"busybox:*\""), "{err}");
    }

    #[test]
    fn policies_display_as_configured() {
        let shown: Vec<String> = [Always, IfNotPresent, Never].iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["always", "if-not-present", "never"]);
        assert_eq!(PullPolicy::default(), Always);
    }
}
