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

/// Writes `data[range]` through a resumable ingest of `data` and drops it (an interrupted download).
fn interrupt(store: &ContentStore, data: &[u8], parts: &[(usize, usize)]) {
    let d = Digest::of(data);
    let (ingest, had) = store.ingest_resumable(d, data.len() as u64).unwrap();
    let (mut w, _file) = ingest.positional(had).unwrap();
    for &(a, b) in parts {
        w.write_at(a as u64, &data[a..b]).unwrap();
    }
    w.save();
    drop(w);
    drop(ingest);
}

/// Hashes the file of a resumable ingest in order and commits it.
fn complete(store: &ContentStore, data: &[u8]) -> RangeSet {
    let d = Digest::of(data);
    let (mut ingest, had) = store.ingest_resumable(d, data.len() as u64).unwrap();
    let (mut w, file) = ingest.positional(had.clone()).unwrap();
    let mut at = 0;
    while at < data.len() {
        let next = had.next_missing(at as u64) as usize;
        let end = had
            .ranges()
            .iter()
            .map(|&(a, _)| a as usize)
            .find(|&a| a > next)
            .unwrap_or(data.len());
        w.write_at(next as u64, &data[next..end]).unwrap();
        at = end;
    }
    let mut back = vec![0u8; data.len()];
    std::os::unix::fs::FileExt::read_exact_at(&*file, &mut back, 0).unwrap();
    ingest.absorb(&back).unwrap();
    ingest.commit().unwrap();
    had
}

#[test]
fn an_interrupted_resumable_download_keeps_its_ranges_across_a_restart_and_completes() {
    let (dir, store) = store();
    let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    interrupt(&store, &data, &[(0, 3000), (6000, 8000)]);
    drop(store);
    let store = ContentStore::open(dir.path(), LeaseTable::new()).unwrap();
    assert_eq!(store.remove_stale_ingests(), 0, "a resumable download is not stale");
    let had = complete(&store, &data);
    assert_eq!(had.ranges(), &[(0, 3000), (6000, 8000)]);
    assert_eq!(store.read(&Digest::of(&data), 1 << 20).unwrap(), data);
    assert_eq!(
        std::fs::read_dir(dir.path().join("ingest")).unwrap().count(),
        0,
        "commit drops the partial"
    );
}

#[test]
fn a_resumed_download_whose_bytes_do_not_verify_is_dropped() {
    let (dir, store) = store();
    let data = vec![7u8; 4096];
    let d = Digest::of(&data);
    let mut wrong = data.clone();
    wrong[10] = 8;
    // The digest of `data` asked for, other bytes written (a registry that sent garbage, a disk that lost them).
    let (ingest, had) = store.ingest_resumable(d, 4096).unwrap();
    let (mut w, file) = ingest.positional(had).unwrap();
    w.write_at(0, &wrong).unwrap();
    drop(w);
    let mut ingest = ingest;
    let mut back = vec![0u8; 4096];
    std::os::unix::fs::FileExt::read_exact_at(&*file, &mut back, 0).unwrap();
    ingest.absorb(&back).unwrap();
    assert!(matches!(ingest.commit(), Err(ContentError::DigestMismatch { .. })));
    assert_eq!(std::fs::read_dir(dir.path().join("ingest")).unwrap().count(), 0);
    let (_ingest, had) = store.ingest_resumable(d, 4096).unwrap();
    assert_eq!(had.total(), 0, "starts over");
}

#[test]
fn a_discarded_or_stale_partial_is_removed_and_a_second_writer_gets_a_plain_ingest() {
    let (dir, store) = store();
    let data = vec![1u8; 1000];
    let d = Digest::of(&data);
    let (first, _) = store.ingest_resumable(d, 1000).unwrap();
    let (second, had) = store.ingest_resumable(d, 1000).unwrap();
    assert_eq!(had.total(), 0);
    assert!(
        second.path().extension().is_none(),
        "not the partial: {}",
        second.path().display()
    );
    drop(second);
    first.discard();
    assert_eq!(std::fs::read_dir(dir.path().join("ingest")).unwrap().count(), 0);

    interrupt(&store, &data, &[(0, 500)]);
    let ranges = dir.path().join(format!("ingest/{}.ranges", d.hex()));
    let old = SystemTime::now() - PARTIAL_MAX_AGE - Duration::from_secs(60);
    std::fs::File::options()
        .write(true)
        .open(&ranges)
        .unwrap()
        .set_modified(old)
        .unwrap();
    drop(store);
    let store = ContentStore::open(dir.path(), LeaseTable::new()).unwrap();
    assert_eq!(
        std::fs::read_dir(dir.path().join("ingest")).unwrap().count(),
        0,
        "older than a day"
    );
    drop(store);
}
