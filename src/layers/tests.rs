//! Tests of the layer store: top-directory placement, links, parents.
use super::*;
use rustix::fs::{IFlags, Mode, OFlags};

/// On ext2/3/4 (where this machine's and CI's temp dirs live) the store root carries the Orlov
/// top-directory flag; elsewhere opening must still work.
#[test]
fn store_root_is_a_top_directory_on_ext4() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("snapshots");
    LayerStore::open(&root, Arc::new(LeaseTable::default())).unwrap();
    let fs = rustix::fs::statfs(&root).unwrap();
    const EXT_SUPER_MAGIC: i64 = 0xEF53;
    if fs.f_type as i64 == EXT_SUPER_MAGIC {
        let dir = rustix::fs::open(&root, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap();
        assert!(rustix::fs::ioctl_getflags(&dir).unwrap().contains(IFlags::TOPDIR));
    }
}

fn commit(store: &LayerStore, n: u8, parent: Option<&Digest>) -> Digest {
    let chain = Digest::of(&[n]);
    let p = store.prepare().unwrap();
    fs::write(p.fs().join("f"), [n]).unwrap();
    store.commit(p, &chain, parent, true, Vec::new(), Some(1)).unwrap();
    chain
}

#[test]
fn layers_get_links_and_parents_which_survive_reopening_and_go_with_the_layer() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("snapshots");
    let leases = Arc::new(LeaseTable::default());
    let store = LayerStore::open(&root, leases.clone()).unwrap();
    let a = commit(&store, 1, None);
    let b = commit(&store, 2, Some(&a));
    assert_eq!(store.meta(&a).unwrap().parent(), Some(LayerParent::Base));
    assert_eq!(store.meta(&b).unwrap().parent(), Some(LayerParent::Layer(a)));
    let link = store.link_path(&b).unwrap();
    assert!(link.file_name().unwrap().len() <= 10);
    assert_eq!(fs::read(link.join("f")).unwrap(), [2]);

    // A link lost, a stray link, a link to a removed layer: repaired at open.
    fs::remove_file(store.link_path(&a).unwrap()).unwrap();
    std::os::unix::fs::symlink("../nowhere/fs", root.join("l/strayabcde")).unwrap();
    drop(store);
    let store = LayerStore::open(&root, leases.clone()).unwrap();
    assert_eq!(fs::read(store.link_path(&a).unwrap().join("f")).unwrap(), [1]);
    assert!(!root.join("l/strayabcde").exists());
    assert!(store.delete(&b).unwrap() > 0);
    assert!(
        !link.exists() && fs::symlink_metadata(&link).is_err(),
        "the link goes with the layer"
    );
    assert_eq!(fs::read_dir(root.join("l")).unwrap().count(), 1);
}

#[test]
fn parents_of_an_older_store_come_from_the_image_chains() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("snapshots");
    let store = LayerStore::open(&root, Arc::new(LeaseTable::default())).unwrap();
    let a = commit(&store, 1, None);
    let b = commit(&store, 2, Some(&a));
    // As written before parents and links were recorded.
    for c in [&a, &b] {
        let mut m = store.meta(c).unwrap();
        m.parent = None;
        m.link = None;
        write_meta_atomically(&store.dir(c), &m).unwrap();
    }
    drop(store);
    let store = LayerStore::open(&root, Arc::new(LeaseTable::default())).unwrap();
    assert!(store.link_path(&b).is_some(), "links are made at open");
    assert_eq!(store.meta(&b).unwrap().parent(), None);
    assert_eq!(store.fill_parents([[a, b].as_slice()]).unwrap(), 2);
    assert_eq!(store.meta(&b).unwrap().parent(), Some(LayerParent::Layer(a)));
    assert_eq!(store.meta(&a).unwrap().parent(), Some(LayerParent::Base));
    assert_eq!(store.fill_parents([[a, b].as_slice()]).unwrap(), 0);
}
