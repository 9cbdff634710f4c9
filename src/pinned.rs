//! The images GC and prune never remove and that ImageStatus and ListImages report `pinned`: the configured
//! `pinned_images` patterns and, always added to them, the sandbox image.
//!
//! containerd and CRI-O pin their sandbox (pause) image, and kubelet's image GC skips pinned images only:
//! it counts containers, not sandboxes, as users of an image, so an unpinned sandbox image is a candidate.
//! The sandbox image is containerd's when the containerd bridge has read it (its CRI `Status`), else
//! [`DEFAULT_SANDBOX_PATTERNS`]: every tag and digest of `registry.k8s.io/pause`. The bridge may learn it
//! late (containerd started after imaged, or pulled its sandbox image only now), so that part can change
//! while imaged runs.

use std::sync::RwLock;

use crate::metadata::ImageRecord;
use crate::pattern::ImagePattern;

/// What is pinned as the sandbox image while containerd's is not known: `registry.k8s.io/pause`, every
/// tag (`pause:3.10`) and every repo digest (`pause@sha256:…`).
pub const DEFAULT_SANDBOX_PATTERNS: [&str; 2] = ["registry.k8s.io/pause:*", "registry.k8s.io/pause@*"];

/// Image patterns that are never collected: the configured ones and the sandbox image.
#[derive(Debug)]
pub struct Pinned {
    configured: Vec<ImagePattern>,
    /// The sandbox image's patterns; a std lock: held only to match names, never across an await.
    sandbox: RwLock<Vec<ImagePattern>>,
}

impl Default for Pinned {
    fn default() -> Pinned {
        Pinned::new(Vec::new())
    }
}

impl Pinned {
    /// Pins images matching any of `patterns`, and the default sandbox image.
    pub fn new(patterns: Vec<ImagePattern>) -> Pinned {
        Pinned {
            configured: patterns,
            sandbox: RwLock::new(default_sandbox()),
        }
    }

    /// Whether any name of the image matches a pin (or the image was pinned when recorded).
    pub fn is_pinned(&self, rec: &ImageRecord) -> bool {
        let sandbox = self.sandbox.read().unwrap_or_else(|p| p.into_inner());
        rec.pinned
            || rec
                .repo_tags
                .iter()
                .chain(&rec.repo_digests)
                .any(|n| self.configured.iter().chain(sandbox.iter()).any(|p| p.matches(n)))
    }

    /// Pins `names` (image references, as a runtime names its sandbox image) as the sandbox image instead
    /// of what was pinned as such; no name restores the default. Names that are not references are
    /// skipped with a warning. Returns whether the pins changed.
    pub fn set_sandbox_images(&self, names: &[String]) -> bool {
        let mut patterns: Vec<ImagePattern> = names
            .iter()
            .filter_map(|n| match ImagePattern::parse(n) {
                Ok(p) if p.is_exact() => Some(p),
                Ok(_) | Err(_) => {
                    tracing::warn!(image = %n, "the runtime's sandbox image is not an image reference; not pinned");
                    None
                }
            })
            .collect();
        if patterns.is_empty() {
            patterns = default_sandbox();
        }
        patterns.sort_by_key(|p| p.to_string());
        patterns.dedup();
        let mut sandbox = self.sandbox.write().unwrap_or_else(|p| p.into_inner());
        let changed = *sandbox != patterns;
        *sandbox = patterns;
        changed
    }

    /// The sandbox image's patterns, as they are written.
    pub fn sandbox_patterns(&self) -> Vec<String> {
        let sandbox = self.sandbox.read().unwrap_or_else(|p| p.into_inner());
        sandbox.iter().map(ToString::to_string).collect()
    }
}

fn default_sandbox() -> Vec<ImagePattern> {
    DEFAULT_SANDBOX_PATTERNS
        .iter()
        .filter_map(|p| ImagePattern::parse(p).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(tags: &[&str], digests: &[&str]) -> ImageRecord {
        ImageRecord::sample("config").tagged(tags).digested(digests)
    }

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn the_default_sandbox_image_is_every_tag_and_digest_of_registry_k8s_io_pause() {
        let pinned = Pinned::default();
        let pause_digest = format!("registry.k8s.io/pause@{DIGEST}");
        assert!(pinned.is_pinned(&named(&["registry.k8s.io/pause:3.10"], &[])));
        assert!(pinned.is_pinned(&named(&["registry.k8s.io/pause:3.6"], &[])));
        assert!(pinned.is_pinned(&named(&[], &[&pause_digest])));
        assert!(!pinned.is_pinned(&named(&["registry.k8s.io/pause-amd64:3.1"], &[])));
        assert!(!pinned.is_pinned(&named(&["docker.io/library/busybox:latest"], &[])));
        assert_eq!(pinned.sandbox_patterns(), DEFAULT_SANDBOX_PATTERNS);
    }

    #[test]
    fn containerds_sandbox_image_replaces_the_default_and_configured_patterns_stay() {
        let pinned = Pinned::new(vec![ImagePattern::parse("quay.io/sys/*").unwrap()]);
        assert!(pinned.set_sandbox_images(&["mirror.example/k8s/pause:3.9".to_string()]));
        assert!(pinned.is_pinned(&named(&["mirror.example/k8s/pause:3.9"], &[])));
        assert!(!pinned.is_pinned(&named(&["registry.k8s.io/pause:3.10"], &[])));
        assert!(pinned.is_pinned(&named(&["quay.io/sys/agent:1"], &[])));
        // The same again changes nothing; no name restores the default.
        assert!(!pinned.set_sandbox_images(&["mirror.example/k8s/pause:3.9".to_string()]));
        assert!(pinned.set_sandbox_images(&[]));
        assert!(pinned.is_pinned(&named(&["registry.k8s.io/pause:3.10"], &[])));
        assert!(pinned.is_pinned(&named(&["quay.io/sys/agent:1"], &[])));
    }

    #[test]
    fn a_sandbox_image_by_digest_pins_that_digest_and_bad_names_fall_back_to_the_default() {
        let pinned = Pinned::default();
        let by_digest = format!("mirror.example/pause@{DIGEST}");
        pinned.set_sandbox_images(std::slice::from_ref(&by_digest));
        assert!(pinned.is_pinned(&named(&["mirror.example/pause:x"], &[&by_digest])));
        assert!(!pinned.is_pinned(&named(&["mirror.example/pause:x"], &[])));
        pinned.set_sandbox_images(&["Not A Reference".to_string(), "*pause*".to_string()]);
        assert_eq!(pinned.sandbox_patterns(), DEFAULT_SANDBOX_PATTERNS);
    }
}
