//! The snapshot contract without gRPC, over a real layer store in a temp dir (the gRPC adapter and the real
//! containerd are tested end to end in tests/e2e_snapshotter.rs and tests/e2e_containerd.rs).

use std::collections::BTreeMap;
use std::sync::Arc;

use super::*;
use crate::error::Classify;
use crate::lease::LeaseTable;

struct Fixture {
    _dir: tempfile::TempDir,
    layers: LayerStore,
    leases: Arc<LeaseTable>,
    sn: Snapshotter,
    root: std::path::PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let leases = LeaseTable::new();
    let layers = LayerStore::open(&root.join("snapshots"), leases.clone()).unwrap();
    let sn = Snapshotter::open(&root.join("snapshotter"), layers.clone(), leases.clone()).unwrap();
    Fixture {
        _dir: dir,
        layers,
        leases,
        sn,
        root,
    }
}

impl Fixture {
    /// Commits a layer holding `file` as chain `n` on `parent`.
    fn layer(&self, n: u8, parent: Option<&Digest>, file: &str) -> Digest {
        let chain = Digest::of(&[n]);
        let p = self.layers.prepare().unwrap();
        std::fs::write(p.fs().join(file), file).unwrap();
        self.layers.commit(p, &chain, parent, true, Vec::new(), None).unwrap();
        chain
    }

    fn reopen(self) -> Fixture {
        let Fixture {
            _dir, root, sn, layers, ..
        } = self;
        drop((sn, layers));
        let leases = LeaseTable::new();
        let layers = LayerStore::open(&root.join("snapshots"), leases.clone()).unwrap();
        let sn = Snapshotter::open(&root.join("snapshotter"), layers.clone(), leases.clone()).unwrap();
        Fixture {
            _dir,
            layers,
            leases,
            sn,
            root,
        }
    }
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn option<'a>(m: &'a Mount, key: &str) -> Option<&'a str> {
    m.options.iter().find_map(|o| o.strip_prefix(&format!("{key}=")))
}

#[test]
fn layers_are_committed_snapshots_with_parents_and_their_chain_id_label() {
    let f = fixture();
    let a = f.layer(1, None, "a");
    let b = f.layer(2, Some(&a), "b");
    let info = f.sn.stat(&b.to_string()).unwrap();
    assert_eq!(info.kind, Kind::Committed);
    assert_eq!(info.parent, a.to_string());
    assert_eq!(info.labels.get(SNAPSHOT_REF_LABEL), Some(&b.to_string()));
    assert_eq!(f.sn.stat(&a.to_string()).unwrap().parent, "");
    let all = f.sn.list(&[]).unwrap();
    assert_eq!(all.len(), 2);
    let found =
        f.sn.list(&[format!(r#"labels."{SNAPSHOT_REF_LABEL}"=={b},parent=="{a}""#)])
            .unwrap();
    assert_eq!(found.iter().map(|i| &i.name).collect::<Vec<_>>(), [&b.to_string()]);
    assert!(matches!(f.sn.stat("nope"), Err(SnapshotterError::NotFound(_))));
}

#[test]
fn prepare_on_a_layer_chain_mounts_overlay_over_short_links_and_commit_makes_a_parent() {
    let f = fixture();
    let a = f.layer(1, None, "a");
    let b = f.layer(2, Some(&a), "b");
    let m = f.sn.prepare("c1", &b.to_string(), Labels::new()).unwrap();
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].kind, "overlay");
    let lower: Vec<&str> = option(&m[0], "lowerdir").unwrap().split(':').collect();
    assert_eq!(lower.len(), 2);
    // Nearest first, each a short link resolving to the layer's directory.
    for (l, chain) in lower.iter().zip([&b, &a]) {
        assert!(l.starts_with(f.layers.links_dir().to_str().unwrap()));
        assert_eq!(
            std::fs::canonicalize(l).unwrap(),
            std::fs::canonicalize(f.layers.fs_dir(chain)).unwrap()
        );
    }
    assert!(option(&m[0], "upperdir").unwrap().ends_with("/fs"));
    assert!(option(&m[0], "workdir").unwrap().ends_with("/work"));
    assert_eq!(f.sn.mounts("c1").unwrap(), m);
    assert_eq!(f.sn.stat("c1").unwrap().kind, Kind::Active);

    // Written into the upper dir, then committed: a parent for the next one, a view on it.
    std::fs::write(format!("{}/c", option(&m[0], "upperdir").unwrap()), "c").unwrap();
    f.sn.commit("c", "c1", labels(&[("x", "1")]), "").unwrap();
    assert!(matches!(f.sn.stat("c1"), Err(SnapshotterError::NotFound(_))));
    let c = f.sn.stat("c").unwrap();
    assert_eq!((c.kind, c.parent.as_str()), (Kind::Committed, b.to_string().as_str()));
    assert_eq!(c.labels, labels(&[("x", "1")]));
    assert!(f.sn.usage("c").unwrap().inodes >= 1);
    let v = f.sn.view("v", "c", Labels::new()).unwrap();
    assert_eq!(v[0].kind, "overlay");
    assert!(option(&v[0], "upperdir").is_none(), "a view has no upper dir");
    assert_eq!(option(&v[0], "lowerdir").unwrap().split(':').count(), 3);
    assert!(matches!(
        f.sn.mounts("c"),
        Err(SnapshotterError::FailedPrecondition { .. })
    ));
}

#[test]
fn bind_mounts_where_one_directory_is_enough() {
    let f = fixture();
    let a = f.layer(1, None, "a");
    let m = f.sn.prepare("base", "", Labels::new()).unwrap();
    assert_eq!(
        (m[0].kind.as_str(), m[0].options.clone()),
        ("bind", vec!["rw".into(), "rbind".into()])
    );
    let v = f.sn.view("v", &a.to_string(), Labels::new()).unwrap();
    assert_eq!(v[0].kind, "bind");
    assert_eq!(v[0].options, ["ro", "rbind"]);
    assert_eq!(v[0].source, f.layers.fs_dir(&a).display().to_string());
    let e = f.sn.view("v0", "", Labels::new()).unwrap();
    assert_eq!(e[0].options, ["ro", "rbind"]);
}

#[test]
fn remote_snapshot_protocol_answers_already_exists_only_on_the_same_parent() {
    let f = fixture();
    let a = f.layer(1, None, "a");
    let b = f.layer(2, Some(&a), "b");
    let ref_b = labels(&[(SNAPSHOT_REF_LABEL, &b.to_string())]);
    let e = f.sn.prepare("extract-1", &a.to_string(), ref_b.clone()).unwrap_err();
    assert!(matches!(e, SnapshotterError::TargetExists { .. }), "{e}");
    assert_eq!(e.kind(), crate::error::ErrorKind::AlreadyExists);
    // containerd unpacked the parent itself (another backend name): it must unpack this one too.
    f.sn.prepare("own-a", "", Labels::new()).unwrap();
    f.sn.commit("k8s.io/1/a", "own-a", Labels::new(), "").unwrap();
    f.sn.prepare("extract-2", "k8s.io/1/a", ref_b).unwrap();
}

#[test]
fn errors_follow_containerds_classes() {
    let f = fixture();
    let a = f.layer(1, None, "a");
    f.sn.prepare("k", "", Labels::new()).unwrap();
    assert!(matches!(
        f.sn.prepare("k", "", Labels::new()),
        Err(SnapshotterError::AlreadyExists(_))
    ));
    assert!(matches!(
        f.sn.prepare(&a.to_string(), "", Labels::new()),
        Err(SnapshotterError::AlreadyExists(_))
    ));
    assert!(matches!(
        f.sn.prepare("x", "missing", Labels::new()),
        Err(SnapshotterError::NotFound(_))
    ));
    assert!(matches!(
        f.sn.prepare("x", "k", Labels::new()),
        Err(SnapshotterError::InvalidArgument(_))
    ));
    assert!(matches!(
        f.sn.prepare("", "", Labels::new()),
        Err(SnapshotterError::InvalidArgument(_))
    ));
    assert!(matches!(
        f.sn.commit("n", "missing", Labels::new(), ""),
        Err(SnapshotterError::NotFound(_))
    ));
    f.sn.view("v", &a.to_string(), Labels::new()).unwrap();
    assert!(matches!(
        f.sn.commit("n", "v", Labels::new(), ""),
        Err(SnapshotterError::FailedPrecondition { .. })
    ));
    assert!(matches!(
        f.sn.commit(&a.to_string(), "k", Labels::new(), ""),
        Err(SnapshotterError::AlreadyExists(_))
    ));
    assert!(matches!(
        f.sn.commit("n", "k", Labels::new(), "other"),
        Err(SnapshotterError::InvalidArgument(_))
    ));
    assert!(matches!(f.sn.remove("missing"), Err(SnapshotterError::NotFound(_))));
    assert!(matches!(
        f.sn.list(&["kind==".to_string()]),
        Err(SnapshotterError::InvalidArgument(_))
    ));
}

#[test]
fn remove_refuses_parents_and_layers_and_releases_the_layers_it_held() {
    let f = fixture();
    let a = f.layer(1, None, "a");
    f.sn.prepare("p", &a.to_string(), Labels::new()).unwrap();
    f.sn.commit("P", "p", Labels::new(), "").unwrap();
    f.sn.prepare("child", "P", Labels::new()).unwrap();
    assert!(f.leases.is_leased(&crate::lease::Item::Snapshot(a)));
    assert!(matches!(
        f.sn.remove("P"),
        Err(SnapshotterError::FailedPrecondition { .. })
    ));
    let e = f.sn.remove(&a.to_string()).unwrap_err();
    assert_eq!(e.kind(), crate::error::ErrorKind::FailedPrecondition);
    // While held, the layer store refuses to delete the layer.
    assert_eq!(f.layers.delete(&a).unwrap(), 0);
    assert!(f.layers.exists(&a));
    assert_eq!(f.sn.remove("child").unwrap(), 0, "P still sits on the layer");
    assert!(
        f.leases.is_leased(&crate::lease::Item::Snapshot(a)),
        "P still sits on it"
    );
    assert!(f.layers.exists(&a));
    // No image references the layer in this fixture: the last snapshot on it frees it.
    assert!(f.sn.remove("P").unwrap() > 0);
    assert!(!f.leases.is_leased(&crate::lease::Item::Snapshot(a)));
    assert!(!f.layers.exists(&a));
    assert!(f.sn.list(&[]).unwrap().is_empty());
    let dirs = std::fs::read_dir(f.root.join("snapshotter/snapshots")).unwrap().count();
    assert_eq!(dirs, 0, "removed snapshots leave no directory");
}

#[test]
fn update_changes_labels_only() {
    let f = fixture();
    let a = f.layer(1, None, "a");
    f.sn.prepare("k", "", labels(&[("a", "1"), ("b", "2")])).unwrap();
    let i =
        f.sn.update("k", labels(&[("b", "3"), ("c", "4")]), &["labels.b".into()])
            .unwrap();
    assert_eq!(i.labels, labels(&[("a", "1"), ("b", "3")]));
    let i = f.sn.update("k", labels(&[]), &["labels.a".into()]).unwrap();
    assert_eq!(i.labels, labels(&[("b", "3")]));
    let i = f.sn.update("k", labels(&[("z", "9")]), &[]).unwrap();
    assert_eq!(i.labels, labels(&[("z", "9")]));
    assert!(matches!(
        f.sn.update("k", Labels::new(), &["parent".into()]),
        Err(SnapshotterError::InvalidArgument(_))
    ));
    let i =
        f.sn.update(&a.to_string(), labels(&[("containerd.io/snapshot/x", "y")]), &[])
            .unwrap();
    assert_eq!(i.labels.get("containerd.io/snapshot/x").map(String::as_str), Some("y"));
    assert_eq!(
        i.labels.get(SNAPSHOT_REF_LABEL),
        Some(&a.to_string()),
        "the chain id label stays"
    );
    assert!(matches!(
        f.sn.update("nope", Labels::new(), &[]),
        Err(SnapshotterError::NotFound(_))
    ));
}

#[test]
fn walk_filters_by_kind_name_parent_and_labels() {
    let f = fixture();
    let a = f.layer(1, None, "a");
    f.sn.prepare("x", &a.to_string(), labels(&[("team", "red")])).unwrap();
    f.sn.view("y", &a.to_string(), labels(&[("team", "blue")])).unwrap();
    let names = |filters: &[&str]| -> Vec<String> {
        let fs: Vec<String> = filters.iter().map(|s| s.to_string()).collect();
        let mut v: Vec<String> = f.sn.list(&fs).unwrap().into_iter().map(|i| i.name).collect();
        v.sort();
        v
    };
    assert_eq!(names(&["kind==active"]), ["x"]);
    assert_eq!(names(&["kind==view"]), ["y"]);
    assert_eq!(names(&["kind==committed"]), [a.to_string()]);
    assert_eq!(names(&[&format!("parent=={a}")]), ["x", "y"]);
    assert_eq!(names(&["labels.team==red", "labels.team==blue"]), ["x", "y"]);
    assert_eq!(names(&["labels.team~=^bl"]), ["y"]);
    assert_eq!(names(&["name==x"]), ["x"]);
}

#[test]
fn records_and_their_leases_survive_a_restart_and_cleanup_removes_orphans() {
    let f = fixture();
    let a = f.layer(1, None, "a");
    f.sn.prepare("c", &a.to_string(), labels(&[("k", "v")])).unwrap();
    let before = f.sn.stat("c").unwrap();
    // A directory without a row (a crash between the two).
    std::fs::create_dir_all(f.root.join("snapshotter/snapshots/999/fs")).unwrap();
    let f = f.reopen();
    assert_eq!(f.sn.stat("c").unwrap(), before);
    assert!(
        f.leases.is_leased(&crate::lease::Item::Snapshot(a)),
        "the container's layers are protected again after a restart"
    );
    assert!(!f.root.join("snapshotter/snapshots/999").exists());
    let m = f.sn.prepare("d", "", Labels::new()).unwrap();
    assert!(!m[0].source.ends_with("/1/fs"), "ids are not reused after a restart");
}

#[test]
fn usage_counts_active_and_committed_snapshots() {
    let f = fixture();
    let m = f.sn.prepare("k", "", Labels::new()).unwrap();
    std::fs::write(format!("{}/big", m[0].source), vec![7u8; 64 * 1024]).unwrap();
    let u = f.sn.usage("k").unwrap();
    assert!(u.bytes >= 64 * 1024 && u.inodes == 1, "{u:?}");
    assert!(f.sn.usage_total().1, "never measured: stale");
    f.sn.refresh_active_usage();
    let (total, stale) = f.sn.usage_total();
    assert!(total.bytes >= 64 * 1024 && !stale);
    f.sn.commit("K", "k", BTreeMap::new(), "").unwrap();
    assert_eq!(f.sn.usage("K").unwrap(), u);
}

// User namespaces (containerd's remap-ids).
#[path = "tests_idmap.rs"]
mod idmap;
