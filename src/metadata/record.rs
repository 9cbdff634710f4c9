//! What imaged remembers about one image.

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::manifest::Descriptor;

/// One layer of an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRecord {
    /// The compressed blob as the manifest lists it.
    pub blob: Descriptor,
    /// The digest of the uncompressed tar, from the config's `rootfs.diff_ids`.
    pub diff_id: Digest,
}

/// An image: one config (its id), the manifest it came from, its names and bookkeeping.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// The image id: the digest of its config, as containerd and CRI-O use it.
    pub id: Digest,
    /// The platform-specific manifest.
    pub manifest: Descriptor,
    /// The index (manifest list) the manifest was selected from, if the reference named one.
    pub index: Option<Descriptor>,
    /// The config blob.
    pub config: Descriptor,
    /// The layers, base first.
    pub layers: Vec<LayerRecord>,
    /// `name:tag` references pointing at this image.
    pub repo_tags: Vec<String>,
    /// `name@sha256:…` references pointing at this image.
    pub repo_digests: Vec<String>,
    /// The user from the config (`User`), as written there.
    pub user: String,
    /// `os/architecture[/variant]`.
    pub platform: String,
    /// The config's `created` time, as written there.
    pub created: Option<String>,
    /// When imaged first recorded this image (Unix nanoseconds).
    pub first_seen_ns: i64,
    /// When the image was last pulled or asked about (Unix nanoseconds).
    pub last_used_ns: i64,
    /// Whether the image is pinned (never garbage-collected).
    pub pinned: bool,
}

impl ImageRecord {
    /// The image size reported to kubelet: manifest, config and compressed layers, as containerd counts it.
    pub fn size(&self) -> u64 {
        self.manifest.size + self.config.size + self.layers.iter().map(|l| l.blob.size).sum::<u64>()
    }

    /// Every blob this image needs in the store.
    pub fn blobs(&self) -> impl Iterator<Item = Digest> + '_ {
        self.index
            .iter()
            .map(|d| d.digest)
            .chain([self.manifest.digest, self.config.digest])
            .chain(self.layers.iter().map(|l| l.blob.digest))
    }

    /// The layers' chain ids (OCI image spec): `chain[0] = diff[0]`,
    /// `chain[n] = sha256(chain[n-1] + " " + diff[n])`. Snapshots are keyed by them.
    pub fn chain_ids(&self) -> Vec<Digest> {
        chain_ids(self.layers.iter().map(|l| l.diff_id))
    }

    /// The config's user split into CRI's `uid` (numeric user) or `username` (named user), dropping the
    /// group, as kubelet expects: `"1002:1002"` → uid 1002, `"nobody:nogroup"` → username `nobody`.
    pub fn uid_or_username(&self) -> (Option<i64>, String) {
        let user = self.user.split(':').next().unwrap_or_default();
        if user.is_empty() {
            return (None, String::new());
        }
        match user.parse::<i64>() {
            Ok(uid) => (Some(uid), String::new()),
            Err(_) => (None, user.to_string()),
        }
    }
}

/// Chain ids (OCI image spec) of layers with these diff ids, base first.
pub fn chain_ids(diff_ids: impl IntoIterator<Item = Digest>) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::new();
    for diff in diff_ids {
        let next = match out.last() {
            None => diff,
            Some(prev) => Digest::of(format!("{prev} {diff}").as_bytes()),
        };
        out.push(next);
    }
    out
}
