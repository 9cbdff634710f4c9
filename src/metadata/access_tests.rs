use redb::ReadableDatabase;

use super::*;
use crate::metadata::ImageRecord;

fn image(config: &str) -> ImageRecord {
    ImageRecord::sample(config).tagged(&[&format!("r.example/a:{config}")])
}

fn keyed(s: &str) -> Accessor {
    Accessor::Keyed(s.repeat(64 / s.len()))
}

fn grant(repository: &str, accessor: Accessor) -> Grant {
    Grant {
        repository: repository.into(),
        accessor,
    }
}

fn view(tracked: bool, node: bool, granted: bool) -> AccessView {
    AccessView { tracked, node, granted }
}

#[test]
fn a_pull_records_its_access_with_the_image_and_both_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.redb");
    let (alice, bob) = (keyed("a"), keyed("b"));
    let id = Digest::of(b"one");
    {
        let m = MetadataStore::open(&path).unwrap();
        assert_eq!(m.access(&id, "r.example/a", &alice), view(false, false, false));
        m.record_granted(image("one"), Some(&grant("r.example/a", alice.clone())), 5)
            .unwrap();
        assert_eq!(m.access(&id, "r.example/a", &alice), view(true, false, true));
        assert_eq!(m.access(&id, "r.example/a", &bob), view(true, false, false));
        assert_eq!(
            m.access(&id, "r.example/b", &alice),
            view(true, false, false),
            "per repository"
        );
        assert!(m.grant(&id, &grant("r.example/a", Accessor::Node), 6).unwrap());
    }
    let m = MetadataStore::open(&path).unwrap();
    assert_eq!(m.access(&id, "r.example/a", &alice), view(true, true, true));
    assert_eq!(m.access(&id, "r.example/a", &bob), view(true, true, false));
    assert_eq!(m.access(&id, "r.example/a", &Accessor::Node), view(true, true, true));
}

#[test]
fn records_go_with_their_image_and_are_never_written_for_an_absent_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.redb");
    let alice = keyed("a");
    let (one, two) = (Digest::of(b"one"), Digest::of(b"two"));
    {
        let m = MetadataStore::open(&path).unwrap();
        m.record_granted(image("one"), Some(&grant("r.example/a", alice.clone())), 1)
            .unwrap();
        m.record_granted(image("two"), Some(&grant("r.example/a", alice.clone())), 1)
            .unwrap();
        m.remove(&one).unwrap();
        assert_eq!(m.access(&one, "r.example/a", &alice), view(false, false, false));
        assert!(
            !m.grant(&one, &grant("r.example/a", alice.clone()), 2).unwrap(),
            "absent"
        );
        assert_eq!(m.access(&one, "r.example/a", &alice), view(false, false, false));
        // Pulled again: untracked until its new pull records who it was for.
        m.record(image("one")).unwrap();
        assert_eq!(m.access(&one, "r.example/a", &alice), view(false, false, false));
    }
    let m = MetadataStore::open(&path).unwrap();
    assert_eq!(m.access(&one, "r.example/a", &alice), view(false, false, false));
    assert_eq!(m.access(&two, "r.example/a", &alice), view(true, false, true));
}

#[test]
fn rows_of_images_gone_or_unreadable_are_dropped_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.redb");
    let id = Digest::of(b"one");
    {
        let m = MetadataStore::open(&path).unwrap();
        m.record_granted(image("one"), Some(&grant("r.example/a", Accessor::Node)), 1)
            .unwrap();
        let tx = m.db.begin_write().unwrap();
        {
            let mut t = tx.open_table(ACCESS).unwrap();
            t.insert(format!("{} r.example/a node", Digest::of(b"gone")).as_str(), 1)
                .unwrap();
            t.insert("not a row", 1).unwrap();
        }
        tx.commit().unwrap();
    }
    let m = MetadataStore::open(&path).unwrap();
    assert_eq!(m.access(&id, "r.example/a", &Accessor::Node), view(true, true, true));
    let tx = m.db.begin_read().unwrap();
    let rows = tx.open_table(ACCESS).unwrap().iter().unwrap().count();
    assert_eq!(rows, 1, "only the row of a recorded image is left");
}

#[test]
fn the_oldest_records_give_way_beyond_the_cap() {
    let dir = tempfile::tempdir().unwrap();
    let m = MetadataStore::open(&dir.path().join("m.redb")).unwrap();
    let id = Digest::of(b"one");
    m.record(image("one")).unwrap();
    let who = |i: usize| Accessor::Keyed(format!("{i:064x}"));
    for i in 0..MAX_ACCESSORS + 2 {
        assert!(m.grant(&id, &grant("r.example/a", who(i)), i as i64).unwrap());
    }
    assert!(!m.access(&id, "r.example/a", &who(0)).granted);
    assert!(!m.access(&id, "r.example/a", &who(1)).granted);
    assert!(m.access(&id, "r.example/a", &who(2)).granted);
    assert!(m.access(&id, "r.example/a", &who(MAX_ACCESSORS + 1)).granted);
    // Granting again what is recorded writes nothing and keeps it.
    assert!(m.grant(&id, &grant("r.example/a", who(5)), 1_000).unwrap());
    assert_eq!(m.read().access[&id]["r.example/a"].len(), MAX_ACCESSORS);
}
