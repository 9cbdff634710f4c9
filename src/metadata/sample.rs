//! One way for unit tests to make an image record: [`ImageRecord::sample`], then what a test needs set
//! (names, blobs, times), so a new field of [`ImageRecord`] is given its sample value in one place.

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

    /// The record with this manifest.
    pub fn with_manifest(mut self, manifest: Descriptor) -> ImageRecord {
        self.manifest = manifest;
        self
    }

    /// The record pulled through this index.
    pub fn with_index(mut self, index: Descriptor) -> ImageRecord {
        self.index = Some(index);
        self
    }

    /// The record with this config blob, whose digest is then its id.
    pub fn with_config(mut self, config: Descriptor) -> ImageRecord {
        self.id = config.digest;
        self.config = config;
        self
    }

    /// The record with these layers, bottom first.
    pub fn with_layers(mut self, layers: Vec<LayerRecord>) -> ImageRecord {
        self.layers = layers;
        self
    }

    /// The record with every blob (manifest, config, layers) `size` bytes long.
    pub fn sized(mut self, size: u64) -> ImageRecord {
        self.manifest.size = size;
        self.config.size = size;
        for l in &mut self.layers {
            l.blob.size = size;
        }
        self
    }

    /// The record with this creation time (RFC 3339, as the image config writes it).
    pub fn created(mut self, created: &str) -> ImageRecord {
        self.created = Some(created.into());
        self
    }

    /// The record first seen and last used at `ns`.
    pub fn seen_at(mut self, ns: i64) -> ImageRecord {
        self.first_seen_ns = ns;
        self.last_used_ns = ns;
        self
    }
}
