//! One way for unit tests to make an image record: [`ImageRecord::sample`] and the names it is given.

use super::{Descriptor, ImageRecord, LayerRecord};
use crate::digest::Digest;

impl ImageRecord {
    /// A record of one layer whose config blob is `config` (its id is that blob's digest), its manifest
    /// `manifest of <config>`, no names, platform linux/amd64, first seen and last used at 1 ns.
    pub fn sample(config: &str) -> ImageRecord {
        let desc = |data: &str| Descriptor {
            media_type: "application/octet-stream".into(),
            digest: Digest::of(data.as_bytes()),
            size: 1,
        };
        ImageRecord {
            id: Digest::of(config.as_bytes()),
            manifest: desc(&format!("manifest of {config}")),
            index: None,
            config: desc(config),
            layers: vec![LayerRecord {
                blob: desc("layer"),
                diff_id: Digest::of(b"diff"),
            }],
            repo_tags: Vec::new(),
            repo_digests: Vec::new(),
            user: String::new(),
            platform: "linux/amd64".into(),
            created: None,
            first_seen_ns: 1,
            last_used_ns: 1,
            pinned: false,
        }
    }

    /// The record with these tags.
    pub fn tagged(mut self, tags: &[&str]) -> ImageRecord {
        self.repo_tags = tags.iter().map(|s| s.to_string()).collect();
        self
    }

    /// The record with these repo digests.
    pub fn digested(mut self, digests: &[&str]) -> ImageRecord {
        self.repo_digests = digests.iter().map(|s| s.to_string()).collect();
        self
    }
}
