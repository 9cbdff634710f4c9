//! Tests of the store's entries.

use std::sync::Arc;

use super::*;
use crate::metadata::LayerRecord;

fn desc(media_type: &str, data: &[u8]) -> Descriptor {
    Descriptor {
        media_type: media_type.into(),
        digest: Digest::of(data),
        size: data.len() as u64,
    }
}

fn record(name: &str, layers: &[&str], seen: i64) -> Arc<ImageRecord> {
    let config = desc("application/vnd.oci.image.config.v1+json", name.as_bytes());
    let manifest = desc(
        "application/vnd.oci.image.manifest.v1+json",
        format!("m-{name}").as_bytes(),
    );
    let layers = layers
        .iter()
        .map(|l| LayerRecord {
            blob: desc(
                "application/vnd.oci.image.layer.v1.tar+gzip",
                format!("gz-{l}").as_bytes(),
            ),
            diff_id: Digest::of(l.as_bytes()),
        })
        .collect();
    Arc::new(
        ImageRecord::sample(name)
            .with_config(config)
            .with_manifest(manifest)
            .with_layers(layers)
            .tagged(&[&format!("example.com/{name}:v1")])
            .digested(&[&format!("example.com/{name}@sha256:{}", "a".repeat(64))])
            .created("2024-05-06T07:08:09.5+02:00")
            .seen_at(seen),
    )
}

fn facts(chain: &Digest) -> Option<LayerFacts> {
    Some(LayerFacts {
        link: chain.hex()[..10].to_string(),
        created_ns: 1_000_000_000,
        diff_size: 512,
    })
}

#[test]
fn layer_ids_are_what_containers_image_gives_the_same_layers() {
    let (a, b) = (Digest::of(b"a"), Digest::of(b"b"));
    let ids = layer_ids([a, b]);
    assert_eq!(ids[0], a.hex());
    // storage_dest.go: digest.Canonical.FromString(parent + "+" + diffID.Encoded()).Encoded()
    assert_eq!(ids[1], Digest::of(format!("{}+{}", a.hex(), b.hex()).as_bytes()).hex());
}

#[test]
fn big_data_keys_become_containers_storage_file_names() {
    assert_eq!(big_data_file_name("manifest"), "manifest");
    // "sha256:..." has a colon: base64 of the whole key, after "=".
    let key = format!("sha256:{}", "0".repeat(64));
    let name = big_data_file_name(&key);
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(name.strip_prefix('=').unwrap())
            .unwrap(),
        key.as_bytes()
    );
    assert!(big_data_file_name("manifest-sha256:ab").starts_with('='));
    assert!(big_data_file_name("Manifest").starts_with('='));
}

#[test]
fn images_share_layers_and_name_each_entry_as_containers_storage_reads_it() {
    let base = record("base", &["l0"], 1);
    let app = record("app", &["l0", "l1"], 2);
    let p = plan(&[app.clone(), base.clone()], facts);
    assert!(p.skipped.is_empty());
    assert_eq!(p.layers.len(), 2, "the shared base layer is listed once");
    let ids = layer_ids(app.layers.iter().map(|l| l.diff_id));
    let top = &p.layers[&ids[1]];
    assert_eq!(top.json.parent, ids[0]);
    assert_eq!(top.json.metadata, app.chain_ids()[1].to_string());
    assert_eq!(top.json.diff_digest, app.layers[1].diff_id.to_string());
    assert_eq!((top.json.diff_size, top.json.compression), (512, 2));
    assert_eq!(top.json.created, "1970-01-01T00:00:01Z");
    assert_eq!(top.lower, [app.chain_ids()[0].hex()[..10].to_string()]);
    assert!(p.layers[&ids[0]].lower.is_empty() && p.layers[&ids[0]].json.parent.is_empty());

    let img = &p.images[&app.id.hex()].json;
    assert_eq!(img.top_layer, ids[1]);
    assert_eq!(img.digest, app.manifest.digest.to_string());
    assert_eq!(
        img.names,
        [app.repo_tags[0].clone()],
        "the tagged repository's digest is derived"
    );
    assert_eq!(img.created, "2024-05-06T05:08:09.5Z");
    let config_key = app.config.digest.to_string();
    assert_eq!(
        img.big_data_names,
        [
            config_key.clone(),
            format!("manifest-{}", app.manifest.digest),
            "manifest".into()
        ]
    );
    assert_eq!(img.big_data_sizes[&config_key], app.config.size);
    assert_eq!(img.big_data_digests["manifest"], app.manifest.digest.to_string());

    let json = serde_json::to_value(&p.layers[&ids[0]].json).unwrap();
    assert!(json.get("parent").is_none(), "a base layer has no parent field: {json}");
    assert_eq!(json["diff-size"], 512);
}

#[test]
fn a_name_on_two_images_stays_with_the_older_and_a_missing_layer_skips_its_image() {
    let mut old = (*record("old", &["x"], 1)).clone();
    old.repo_tags.clear();
    let old = Arc::new(old);
    let mut newer = (*record("new", &["y"], 2)).clone();
    newer.repo_digests = old.repo_digests.clone();
    let newer = Arc::new(newer);
    let p = plan(&[newer.clone(), old.clone()], facts);
    assert!(p.images[&old.id.hex()].json.names.contains(&old.repo_digests[0]));
    assert!(!p.images[&newer.id.hex()].json.names.contains(&old.repo_digests[0]));

    let missing = newer.chain_ids()[0];
    let p = plan(&[newer.clone(), old.clone()], |c| {
        if *c == missing { None } else { facts(c) }
    });
    assert_eq!(p.skipped, [newer.id]);
    assert_eq!(p.images.len(), 1);
}
