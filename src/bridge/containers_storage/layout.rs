//! What the store's files say, as containers/storage's readers parse them (`layers.go`, `images.go`,
//! `drivers/overlay`), and how imaged's images become those entries. Pure: no file is touched here.
//!
//! - A layer's id is the one containers/image gives the layer it would create for the same image
//!   (`storage_dest.go`: the base layer's diff id hex, then `sha256(parent id + "+" + diff id hex)`), so a
//!   podman or CRI-O pull of an image imaged holds finds every layer by id and copies nothing. Its
//!   `metadata` holds imaged's chain id of the layer, and its link name is the one imaged's layer store gave
//!   the layer (`snapshots/l/`), unique and short; lowercase, so it never collides with the uppercase names
//!   containers/storage generates in a runtime's own store.
//! - An image's id is its config digest hex (containers/image's `computeID`), its `digest` the manifest's,
//!   its names its tags and repo digests, its big data the config (under its digest) and the manifest
//!   (under `manifest-<digest>` and `manifest`), plus the index an image was pulled through.

use std::collections::{BTreeMap, HashSet};

use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::metadata::{Descriptor, ImageRecord};

/// One entry of `overlay-layers/layers.json` (fields containers/storage reads; others are left out).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerJson {
    /// The layer id (see the module doc).
    pub id: String,
    /// The id of the layer below; empty for a base layer.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub parent: String,
    /// imaged's chain id of the layer (`sha256:<hex>`): containers/storage keeps `metadata` for its callers.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub metadata: String,
    /// When imaged committed the layer (RFC 3339).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub created: String,
    /// The compressed blob's digest.
    #[serde(rename = "compressed-diff-digest", default, skip_serializing_if = "String::is_empty")]
    pub compressed_digest: String,
    /// The compressed blob's size.
    #[serde(rename = "compressed-size", default)]
    pub compressed_size: u64,
    /// The uncompressed tar's digest (the diff id).
    #[serde(rename = "diff-digest", default)]
    pub diff_digest: String,
    /// The uncompressed tar's size: what containers/storage reports as the layer's size.
    #[serde(rename = "diff-size", default)]
    pub diff_size: u64,
    /// How the blob was compressed (containers/storage's `archive.Compression`: 0 none, 2 gzip, 4 zstd).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub compression: u8,
}

fn is_zero(n: &u8) -> bool {
    *n == 0
}

impl LayerJson {
    /// imaged's chain id of this layer, if the entry is one imaged wrote.
    pub fn chain(&self) -> Option<Digest> {
        self.metadata.parse().ok()
    }
}

/// One entry of `overlay-images/images.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageJson {
    /// The config digest hex.
    pub id: String,
    /// The manifest digest.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub digest: String,
    /// Tags and repo digests.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
    /// The top layer's id; empty for an image without layers.
    #[serde(rename = "layer", default, skip_serializing_if = "String::is_empty")]
    pub top_layer: String,
    /// Keys of the big data items.
    #[serde(rename = "big-data-names", default)]
    pub big_data_names: Vec<String>,
    /// Their sizes.
    #[serde(rename = "big-data-sizes", default)]
    pub big_data_sizes: BTreeMap<String, u64>,
    /// Their digests.
    #[serde(rename = "big-data-digests", default)]
    pub big_data_digests: BTreeMap<String, String>,
    /// The config's creation time (RFC 3339), or when imaged first saw the image.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub created: String,
}

/// What imaged's layer store knows about a layer (its `meta.json`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerFacts {
    /// The name of its link in `snapshots/l/`, reused in the store's `overlay/l/`.
    pub link: String,
    /// When it was committed (Unix nanoseconds).
    pub created_ns: i64,
    /// The uncompressed tar's size.
    pub diff_size: u64,
}

/// A layer to list, and what its directory holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedLayer {
    /// The `layers.json` entry.
    pub json: LayerJson,
    /// imaged's chain id.
    pub chain: Digest,
    /// Its link name.
    pub link: String,
    /// The link names of the layers below, nearest first (the `lower` file).
    pub lower: Vec<String>,
}

/// An image to list, and the blobs its big data items are copied from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedImage {
    /// The `images.json` entry.
    pub json: ImageJson,
    /// Each big data key and the blob holding its bytes.
    pub big_data: Vec<(String, Descriptor)>,
}

/// Everything the store should list for the images imaged holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// By layer id.
    pub layers: BTreeMap<String, PlannedLayer>,
    /// By image id.
    pub images: BTreeMap<String, PlannedImage>,
    /// Images left out because a layer's facts are missing (reported, retried by the next sync).
    pub skipped: Vec<Digest>,
}

/// The containers/storage layer ids of layers with these diff ids, base first.
pub fn layer_ids(diff_ids: impl IntoIterator<Item = Digest>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for diff in diff_ids {
        let id = match out.last() {
            None => diff.hex(),
            Some(parent) => Digest::of(format!("{parent}+{}", diff.hex()).as_bytes()).hex(),
        };
        out.push(id);
    }
    out
}

/// The file name containers/storage keeps a big data item under (`makeBigDataBaseName`): the key itself
/// if it is made of `[0-9a-z.]` only, else `=` and its standard base64.
pub fn big_data_file_name(key: &str) -> String {
    if !key.is_empty()
        && key
            .bytes()
            .all(|b| b == b'.' || b.is_ascii_digit() || b.is_ascii_lowercase())
    {
        key.to_string()
    } else {
        format!("={}", base64::engine::general_purpose::STANDARD.encode(key))
    }
}

/// containers/storage's `archive.Compression` for a layer media type.
fn compression_of(media_type: &str) -> u8 {
    use crate::manifest::Compression;
    match crate::manifest::layer_compression(media_type) {
        Some(Compression::Gzip) => 2,
        Some(Compression::Zstd) => 4,
        Some(Compression::None) | None => 0,
    }
}

/// The entries for `records`, given each layer's facts (`None`: the layer is missing, its image is
/// skipped). A name on two images goes to the first one (containers/storage refuses a read-only store
/// with duplicate names); records are taken oldest first, so a name stays where it was.
pub fn plan(records: &[std::sync::Arc<ImageRecord>], facts: impl Fn(&Digest) -> Option<LayerFacts>) -> Plan {
    let mut out = Plan::default();
    let mut sorted: Vec<&ImageRecord> = records.iter().map(|r| r.as_ref()).collect();
    sorted.sort_by_key(|r| (r.first_seen_ns, r.id));
    let mut names_taken = HashSet::new();
    for rec in sorted {
        let chains = rec.chain_ids();
        let ids = layer_ids(rec.layers.iter().map(|l| l.diff_id));
        let Some(facts) = chains.iter().map(&facts).collect::<Option<Vec<LayerFacts>>>() else {
            out.skipped.push(rec.id);
            continue;
        };
        for (i, id) in ids.iter().enumerate() {
            if out.layers.contains_key(id) {
                continue;
            }
            let layer = &rec.layers[i];
            let f = &facts[i];
            let json = LayerJson {
                id: id.clone(),
                parent: i.checked_sub(1).map(|p| ids[p].clone()).unwrap_or_default(),
                metadata: chains[i].to_string(),
                created: rfc3339(f.created_ns),
                compressed_digest: layer.blob.digest.to_string(),
                compressed_size: layer.blob.size,
                diff_digest: layer.diff_id.to_string(),
                diff_size: f.diff_size,
                compression: compression_of(&layer.blob.media_type),
            };
            let planned = PlannedLayer {
                json,
                chain: chains[i],
                link: f.link.clone(),
                lower: facts[..i].iter().rev().map(|f| f.link.clone()).collect(),
            };
            out.layers.insert(id.clone(), planned);
        }
        let names: Vec<String> = names_of(rec)
            .into_iter()
            .filter(|n| names_taken.insert(n.clone()))
            .collect();
        out.images
            .insert(rec.id.hex(), image(rec, names, ids.last().cloned().unwrap_or_default()));
    }
    out
}

/// An image's names as containers/image writes them: its tags, and the repo digests of repositories no tag
/// names (podman and CRI-O derive the repo digests of tagged repositories from the manifest digests).
fn names_of(rec: &ImageRecord) -> Vec<String> {
    let repo_of_tag = |t: &String| t.rsplit_once(':').map(|(r, _)| r.to_string()).unwrap_or_default();
    let tagged: HashSet<String> = rec.repo_tags.iter().map(repo_of_tag).collect();
    let digested = rec
        .repo_digests
        .iter()
        .filter(|d| d.split_once('@').is_none_or(|(repo, _)| !tagged.contains(repo)));
    rec.repo_tags.iter().chain(digested).cloned().collect()
}

fn image(rec: &ImageRecord, names: Vec<String>, top_layer: String) -> PlannedImage {
    let manifest_key = format!("manifest-{}", rec.manifest.digest);
    let mut big_data = vec![
        (rec.config.digest.to_string(), rec.config.clone()),
        (manifest_key, rec.manifest.clone()),
        ("manifest".to_string(), rec.manifest.clone()),
    ];
    if let Some(index) = &rec.index {
        big_data.push((format!("manifest-{}", index.digest), index.clone()));
    }
    let created_ns = rec
        .created
        .as_deref()
        .and_then(crate::clock::rfc3339_ns)
        .unwrap_or(rec.first_seen_ns);
    let json = ImageJson {
        id: rec.id.hex(),
        digest: rec.manifest.digest.to_string(),
        names,
        top_layer,
        big_data_names: big_data.iter().map(|(k, _)| k.clone()).collect(),
        big_data_sizes: big_data.iter().map(|(k, d)| (k.clone(), d.size)).collect(),
        big_data_digests: big_data
            .iter()
            .map(|(k, d)| (k.clone(), d.digest.to_string()))
            .collect(),
        created: rfc3339(created_ns),
    };
    PlannedImage { json, big_data }
}

/// Unix nanoseconds as RFC 3339 in UTC with nanoseconds, as Go's `time.Time` writes and reads it.
pub fn rfc3339(ns: i64) -> String {
    crate::clock::rfc3339_from_ns(ns)
}

#[cfg(test)]
#[path = "layout_tests.rs"]
mod tests;
