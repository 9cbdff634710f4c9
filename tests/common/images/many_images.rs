//! A store with thousands of image records, written fast through imaged's own metadata store (the daemon
//! must be stopped: redb locks the file).
//!
//! Pulling thousands of images through the registry takes minutes; ListImages and StreamImages only read
//! the records, so the records are written directly, with the same code a pull records them with. Their
//! blobs are not in the content store (`imaged fsck` would say so): only use such a store for the RPCs that
//! answer from the records.

use std::path::Path;
use std::time::Instant;

use imaged::digest::Digest;
use imaged::metadata::{Descriptor, ImageRecord, LayerRecord, MetadataStore};

/// Records `n` distinct images in the store under `root`, tagged `<name>:i00000`, `<name>:i00001`, …, each
/// with a repo digest, a user and one layer of its own; returns their tags.
pub fn fill(root: &Path, name: &str, n: usize) -> Vec<String> {
    let start = Instant::now();
    std::fs::create_dir_all(root).expect("create the store root");
    let store = MetadataStore::open(&root.join("metadata.redb")).expect("open the metadata store");
    let desc = |what: String, size: u64| Descriptor {
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        digest: Digest::of(what.as_bytes()),
        size,
    };
    let mut tags = Vec::with_capacity(n);
    for i in 0..n {
        let tag = format!("{name}:i{i:05}");
        let manifest = desc(format!("manifest {i}"), 400 + i as u64 % 100);
        let rec = ImageRecord {
            id: Digest::of(format!("config {i}").as_bytes()),
            repo_digests: vec![format!("{name}@{}", manifest.digest)],
            manifest,
            index: None,
            config: desc(format!("config {i}"), 600),
            layers: vec![LayerRecord {
                blob: desc(format!("layer {i}"), 10_000 + i as u64),
                diff_id: Digest::of(format!("diff {i}").as_bytes()),
            }],
            repo_tags: vec![tag.clone()],
            user: if i % 2 == 0 {
                "1000:1000".into()
            } else {
                "nobody".into()
            },
            platform: "linux/amd64".into(),
            created: Some("2026-01-01T00:00:00Z".into()),
            first_seen_ns: 1,
            last_used_ns: 1,
            pinned: false,
        };
        store.record(rec).expect("record an image");
        tags.push(tag);
    }
    eprintln!("recorded {n} images in {:.1} s", start.elapsed().as_secs_f64());
    tags
}
