use std::io::Write;

use super::*;

fn store() -> (tempfile::TempDir, ContentStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = ContentStore::open(dir.path(), LeaseTable::new()).unwrap();
    (dir, store)
}

#[test]
fn opening_creates_an_oci_layout() {
    let (dir, _store) = store();
    let layout = std::fs::read_to_string(dir.path().join("oci-layout")).unwrap();
    assert_eq!(layout, r#"{"imageLayoutVersion":"1.0.0"}"#);
    assert!(dir.path().join("blobs/sha256").is_dir());
}

#[test]
fn committed_blob_is_readable_under_its_digest() {
    let (_dir, store) = store();
    let data = b"hello blob";
    let d = Digest::of(data);
    let mut w = store.ingest(d, Some(data.len() as u64)).unwrap();
    w.write_all(&data[..5]).unwrap();
    assert!(!store.contains(&d), "a blob must not be visible before commit");
    w.write_all(&data[5..]).unwrap();
    w.commit().unwrap();
    assert_eq!(store.read(&d, 100).unwrap(), data);
    assert_eq!(store.list().unwrap(), vec![d]);
    let (bytes, inodes) = store.usage();
    assert_eq!(inodes, 1);
    assert!(bytes >= data.len() as u64);
}

#[test]
fn digest_mismatch_keeps_nothing() {
    let (dir, store) = store();
    let d = Digest::of(b"expected");
    let mut w = store.ingest(d, None).unwrap();
    w.write_all(b"something else").unwrap();
    let err = w.commit().unwrap_err();
    assert!(matches!(err, ContentError::DigestMismatch { .. }), "{err}");
    assert!(!store.contains(&d));
    assert_eq!(std::fs::read_dir(dir.path().join("ingest")).unwrap().count(), 0);
    assert_eq!(store.usage(), (0, 0));
}

#[test]
fn writing_more_than_announced_fails_early() {
    let (_dir, store) = store();
    let d = Digest::of(b"abc");
    let mut w = store.ingest(d, Some(3)).unwrap();
    assert!(w.write_all(b"abcd").is_err());
    drop(w);
    let mut w = store.ingest(d, Some(4)).unwrap();
    w.write_all(b"abc").unwrap();
    assert!(matches!(
        w.commit(),
        Err(ContentError::SizeMismatch {
            expected: 4,
            actual: 3,
            ..
        })
    ));
}

#[test]
fn committing_an_existing_blob_is_success_and_counted_once() {
    let (_dir, store) = store();
    let d = Digest::of(b"x");
    let a = store.ingest(d, None).unwrap();
    let b = store.ingest(d, None).unwrap();
    for mut w in [a, b] {
        w.write_all(b"x").unwrap();
        w.commit().unwrap();
    }
    store.write_blob(b"x", d).unwrap();
    assert_eq!(store.usage().1, 1);
}

#[test]
fn abandoned_ingest_is_removed_and_leftovers_are_cleaned_at_open() {
    let (dir, store) = store();
    let d = Digest::of(b"partial");
    let mut w = store.ingest(d, None).unwrap();
    w.write_all(b"part").unwrap();
    drop(w);
    assert_eq!(std::fs::read_dir(dir.path().join("ingest")).unwrap().count(), 0);
    // A crash leaves a file behind: simulate one.
    std::fs::write(dir.path().join("ingest/crashed-0"), b"junk").unwrap();
    drop(store);
    let _store = ContentStore::open(dir.path(), LeaseTable::new()).unwrap();
    assert_eq!(std::fs::read_dir(dir.path().join("ingest")).unwrap().count(), 0);
}

#[test]
fn leased_blobs_survive_delete_until_the_lease_ends() {
    let (_dir, store) = store();
    let d = Digest::of(b"shared");
    store.write_blob(b"shared", d).unwrap();
    let leases = store.inner.leases.clone();
    let mut lease = leases.lease();
    lease.add(crate::lease::Item::Blob(d));
    assert_eq!(store.delete(&d).unwrap(), 0);
    assert!(store.contains(&d));
    drop(lease);
    assert!(store.delete(&d).unwrap() > 0);
    assert!(!store.contains(&d));
    assert_eq!(store.usage(), (0, 0));
    assert_eq!(store.delete(&d).unwrap(), 0, "deleting an absent blob is not an error");
}

#[test]
fn read_refuses_oversized_blobs_and_reports_absent_ones() {
    let (_dir, store) = store();
    let d = Digest::of(b"0123456789");
    store.write_blob(b"0123456789", d).unwrap();
    assert!(matches!(
        store.read(&d, 5),
        Err(ContentError::TooLarge { size: 10, .. })
    ));
    assert!(matches!(
        store.read(&Digest::of(b"nope"), 5),
        Err(ContentError::NotFound(_))
    ));
}

#[test]
fn usage_is_remeasured_at_open() {
    let (dir, store) = store();
    store.write_blob(b"a", Digest::of(b"a")).unwrap();
    store.write_blob(b"b", Digest::of(b"b")).unwrap();
    let before = store.usage();
    drop(store);
    let store = ContentStore::open(dir.path(), LeaseTable::new()).unwrap();
    assert_eq!(store.usage(), before);
}
