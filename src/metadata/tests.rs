use super::*;
use crate::lease::Item;

fn desc(data: &str) -> Descriptor {
    Descriptor {
        media_type: "application/octet-stream".into(),
        digest: Digest::of(data.as_bytes()),
        size: 10,
    }
}

/// [`ImageRecord::sample`] with blobs of 10 bytes, `tags`, and its manifest's digest in `docker.io/library/x`.
fn image(config: &str, tags: &[&str]) -> ImageRecord {
    let r = ImageRecord::sample(config).sized(10).tagged(tags);
    let digest = format!("docker.io/library/x@{}", r.manifest.digest);
    r.digested(&[&digest])
}

fn open() -> (tempfile::TempDir, MetadataStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = MetadataStore::open(&dir.path().join("meta.redb")).unwrap();
    (dir, store)
}

#[test]
fn records_survive_reopen() {
    let (dir, store) = open();
    let a = image("a", &["docker.io/library/a:latest"]);
    store.record(a.clone()).unwrap();
    drop(store);
    let store = MetadataStore::open(&dir.path().join("meta.redb")).unwrap();
    assert_eq!(*store.get(&a.id).unwrap(), a);
    assert_eq!(store.by_tag("docker.io/library/a:latest").unwrap().id, a.id);
    assert_eq!(store.by_repo_digest(&a.repo_digests[0]).unwrap().id, a.id);
}

#[test]
fn a_second_tag_is_added_and_first_seen_kept() {
    let (_dir, store) = open();
    store.record(image("a", &["r/a:1"])).unwrap();
    let mut again = image("a", &["r/a:2"]);
    again.first_seen_ns = 99;
    again.last_used_ns = 99;
    store.record(again).unwrap();
    let rec = store.get(&Digest::of(b"a")).unwrap();
    assert_eq!(rec.repo_tags, vec!["r/a:1", "r/a:2"]);
    assert_eq!(rec.first_seen_ns, 1);
    assert_eq!(rec.last_used_ns, 99);
    assert_eq!(store.list().len(), 1);
}

#[test]
fn another_form_of_an_image_drops_only_what_the_old_form_alone_named() {
    let (_dir, store) = open();
    let first = image("a", &["r/a:oci"]);
    assert!(store.record(first.clone()).unwrap().dropped.is_empty());
    assert!(
        store.record(first.clone()).unwrap().dropped.is_empty(),
        "the same form again drops nothing"
    );
    // Same config (so same id and diff ids), another manifest and another compressed layer.
    let mut other = image("a", &["r/a:zstd"]);
    other.manifest = desc("manifest of a, zstd");
    other.layers[0].blob = desc("layer, zstd");
    let recorded = store.record(other.clone()).unwrap();
    assert_eq!(
        recorded.dropped,
        vec![first.manifest.digest, first.layers[0].blob.digest]
    );
    assert_eq!(recorded.image.manifest, other.manifest);
    assert_eq!(recorded.image.repo_tags, vec!["r/a:oci", "r/a:zstd"]);
    // Uncompressed: the layer's blob digest is its diff id, which is the (one-layer) chain id. Replaced by
    // the zstd form again, the blob goes although the snapshot of that chain id stays.
    let mut plain = image("a", &["r/a:plain"]);
    plain.manifest = desc("manifest of a, plain");
    plain.layers[0].blob.digest = plain.layers[0].diff_id;
    store.record(plain.clone()).unwrap();
    let recorded = store.record(other).unwrap();
    assert_eq!(recorded.dropped, vec![plain.manifest.digest, plain.layers[0].diff_id]);
}

#[test]
fn moving_a_tag_removes_it_from_the_old_image() {
    let (_dir, store) = open();
    store.record(image("old", &["r/a:latest", "r/a:v1"])).unwrap();
    let untagged = store.record(image("new", &["r/a:latest"])).unwrap().untagged;
    assert_eq!(untagged, vec![Digest::of(b"old")]);
    assert_eq!(store.by_tag("r/a:latest").unwrap().id, Digest::of(b"new"));
    assert_eq!(store.get(&Digest::of(b"old")).unwrap().repo_tags, vec!["r/a:v1"]);
}

#[test]
fn remove_drops_every_name_and_is_idempotent() {
    let (_dir, store) = open();
    let a = image("a", &["r/a:1", "r/a:2"]);
    store.record(a.clone()).unwrap();
    assert!(store.remove(&a.id).unwrap().is_some());
    assert!(store.remove(&a.id).unwrap().is_none());
    assert!(store.by_tag("r/a:1").is_none());
    assert!(store.by_repo_digest(&a.repo_digests[0]).is_none());
    assert!(store.list().is_empty());
}

#[test]
fn id_prefixes_resolve_when_unique() {
    let (_dir, store) = open();
    let a = image("a", &[]);
    let b = image("b", &[]);
    store.record(a.clone()).unwrap();
    store.record(b.clone()).unwrap();
    assert_eq!(store.by_id_prefix(&a.id.hex()[..12]).unwrap().unwrap().id, a.id);
    assert!(store.by_id_prefix("ffffffffffff0000").unwrap().is_none());
    assert!(matches!(store.by_id_prefix(""), Err(MetadataError::Ambiguous(_))));
}

#[test]
fn touch_updates_last_use_in_memory_and_flush_persists_it() {
    let (dir, store) = open();
    let a = image("a", &[]);
    store.record(a.clone()).unwrap();
    store.touch(&a.id, 42);
    store.touch(&a.id, 7); // Never backwards.
    assert_eq!(store.get(&a.id).unwrap().last_used_ns, 42);
    store.touch(&Digest::of(b"absent"), 42);
    assert_eq!(store.flush().unwrap(), 1);
    assert_eq!(store.flush().unwrap(), 0);
    drop(store);
    let store = MetadataStore::open(&dir.path().join("meta.redb")).unwrap();
    assert_eq!(store.get(&a.id).unwrap().last_used_ns, 42);
}

#[test]
fn tag_history_keeps_revisions_newest_first() {
    let (dir, store) = open();
    let mut v1 = image("one", &["r/a:latest"]);
    v1.last_used_ns = 10;
    let mut v2 = image("two", &["r/a:latest"]);
    v2.last_used_ns = 20;
    store.record(v1.clone()).unwrap();
    store.record(v1.clone()).unwrap(); // Same image again: no new revision.
    store.record(v2.clone()).unwrap();
    drop(store);
    let store = MetadataStore::open(&dir.path().join("meta.redb")).unwrap();
    let h = store.history();
    let revs = &h["r/a:latest"];
    assert_eq!(
        revs.iter().map(|r| (r.image, r.since_ns)).collect::<Vec<_>>(),
        vec![(v2.id, 20), (v1.id, 10)]
    );
}

#[test]
fn user_maps_to_uid_or_username() {
    let mut r = image("a", &[]);
    for (user, want) in [
        ("", (None, "")),
        ("1002", (Some(1002), "")),
        ("1002:1002", (Some(1002), "")),
        ("nobody", (None, "nobody")),
        ("nobody:nogroup", (None, "nobody")),
        ("0", (Some(0), "")),
    ] {
        r.user = user.to_string();
        let (uid, name) = r.uid_or_username();
        assert_eq!((uid, name.as_str()), want, "user {user:?}");
    }
}

#[test]
fn size_and_blobs_cover_manifest_config_and_layers() {
    let r = image("a", &[]);
    assert_eq!(r.size(), 30);
    assert_eq!(r.blobs().count(), 3);
}

#[test]
fn chain_ids_follow_the_image_spec() {
    let mut r = image("a", &[]);
    let d1 = Digest::of(b"one");
    let d2 = Digest::of(b"two");
    r.layers = vec![
        LayerRecord {
            blob: desc("l1"),
            diff_id: d1,
        },
        LayerRecord {
            blob: desc("l2"),
            diff_id: d2,
        },
    ];
    let chain = r.chain_ids();
    assert_eq!(chain[0], d1);
    assert_eq!(chain[1], Digest::of(format!("{d1} {d2}").as_bytes()));
}

#[test]
fn references_count_every_image_that_names_a_digest() {
    let (dir, store) = open();
    let (a, b) = (image("a", &["r/a:1"]), image("b", &["r/b:1"]));
    let shared = a.layers[0].blob.digest; // Both images name the same layer.
    store.record(a.clone()).unwrap();
    store.record(b.clone()).unwrap();
    let blob = |d: &Digest| store.references(&Item::Blob(*d));
    assert!(blob(&shared) && blob(&a.config.digest));
    assert!(store.references(&Item::Snapshot(a.chain_ids()[0])));
    assert!(
        !store.references(&Item::Snapshot(shared)),
        "a blob reference is not a snapshot reference"
    );
    store.remove(&a.id).unwrap();
    assert!(blob(&shared), "b still names it");
    assert!(!blob(&a.config.digest) && !blob(&a.manifest.digest));
    drop(store);
    let store = MetadataStore::open(&dir.path().join("meta.redb")).unwrap();
    let blob = |d: &Digest| store.references(&Item::Blob(*d));
    assert!(blob(&shared) && blob(&b.manifest.digest), "counted at open");
    store.remove(&b.id).unwrap();
    assert!(!store.references(&Item::Blob(shared)));
}

#[test]
fn remove_if_removes_only_the_record_it_was_asked_about() {
    let (_dir, store) = open();
    let a = image("a", &["r/a:1"]);
    let planned = store.record(a.clone()).unwrap().image;
    store.touch(&a.id, 5); // Used since the plan: a new record.
    let unchanged = |r: &Arc<ImageRecord>| Arc::ptr_eq(r, &planned);
    assert!(store.remove_if(&a.id, unchanged).unwrap().is_none());
    assert!(store.get(&a.id).is_some(), "kept");
    let now = store.get(&a.id).unwrap();
    let removed = store.remove_if(&a.id, |r| Arc::ptr_eq(r, &now)).unwrap();
    assert_eq!(removed.map(|r| r.id), Some(a.id));
    assert!(store.get(&a.id).is_none() && store.by_tag("r/a:1").is_none());
    assert!(!store.references(&Item::Blob(a.config.digest)));
    assert!(store.remove_if(&a.id, |_| true).unwrap().is_none(), "absent");
    // A pull that comes after records the image again, with only its own names.
    let again = store.record(image("a", &["r/a:2"])).unwrap().image;
    assert_eq!(again.repo_tags, vec!["r/a:2"]);
    assert!(store.references(&Item::Blob(a.config.digest)));
}
