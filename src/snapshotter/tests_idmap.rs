//! User-namespaced snapshots (containerd's `remap-ids`, [`crate::snapshotter::idmap`]) over the
//! parent module's fixture.

use std::os::unix::fs::MetadataExt;

use super::*;
use crate::snapshotter::idmap::{GID_MAPPING_LABEL, UID_MAPPING_LABEL};

#[test]
fn a_user_namespaced_prepare_owns_its_upper_dir_and_asks_for_idmapped_lowers() {
    let f = fixture();
    let a = f.layer(1, None, "a");
    let b = f.layer(2, Some(&a), "b");
    let c = f.layer(3, Some(&b), "c");
    let mapped = labels(&[
        (UID_MAPPING_LABEL, "0:100000:65536"),
        (GID_MAPPING_LABEL, "0:200000:65536"),
    ]);
    let m = f.sn.prepare("pod", &c.to_string(), mapped.clone()).unwrap();
    assert_eq!(m[0].kind, "overlay");
    assert_eq!(m[0].options[..2], ["uidmap=0:100000:65536", "gidmap=0:200000:65536"]);
    let upper = std::fs::metadata(option(&m[0], "upperdir").unwrap()).unwrap();
    assert_eq!(
        (upper.uid(), upper.gid()),
        (100000, 200000),
        "the pod's root owns its upper dir"
    );
    // The nearest lower by its real path, so that the lowers' common directory is the layer store's root.
    let lower: Vec<&str> = option(&m[0], "lowerdir").unwrap().split(':').collect();
    assert_eq!(lower[0], f.layers.fs_dir(&c).display().to_string());
    assert!(
        lower[1..]
            .iter()
            .all(|l| l.starts_with(f.layers.links_dir().to_str().unwrap()))
    );
    assert_eq!(f.sn.mounts("pod").unwrap(), m);

    // A view on one layer and a snapshot on none are bind mounts, mapped the same way.
    let v = f.sn.view("v", &a.to_string(), mapped.clone()).unwrap();
    assert_eq!(
        v[0].options,
        ["uidmap=0:100000:65536", "gidmap=0:200000:65536", "ro", "rbind"]
    );
    let e = f.sn.prepare("empty", "", mapped).unwrap();
    assert_eq!(std::fs::metadata(&e[0].source).unwrap().uid(), 100000);

    // Without the labels nothing changes: the parent's owner, short links only.
    let plain = f.sn.prepare("plain", &c.to_string(), Labels::new()).unwrap();
    assert!(!plain[0].options.iter().any(|o| o.starts_with("uidmap=")));
    assert_eq!(
        std::fs::metadata(option(&plain[0], "upperdir").unwrap()).unwrap().uid(),
        0
    );
}

#[test]
fn a_malformed_mapping_is_refused_before_anything_is_created() {
    let f = fixture();
    let a = f.layer(1, None, "a");
    let bad = labels(&[(UID_MAPPING_LABEL, "1:100000:65536")]);
    let e = f.sn.prepare("pod", &a.to_string(), bad).unwrap_err();
    assert_eq!(e.kind(), crate::error::ErrorKind::InvalidArgument, "{e}");
    assert!(matches!(f.sn.stat("pod"), Err(SnapshotterError::NotFound(_))));
    let dirs = std::fs::read_dir(f.root.join("snapshotter/snapshots")).unwrap().count();
    assert_eq!(dirs, 0);
}

#[test]
fn a_copy_containerd_chowned_itself_is_not_idmapped_again() {
    let f = fixture();
    let a = f.layer(1, None, "a");
    // containerd without remap-ids: `<id>-remap` unlabelled, chowned by containerd, committed...
    let m = f.sn.prepare("x-remap", &a.to_string(), Labels::new()).unwrap();
    std::os::unix::fs::lchown(option(&m[0], "upperdir").unwrap(), Some(100000), Some(100000)).unwrap();
    f.sn.commit("x", "x-remap", Labels::new(), "").unwrap();
    // ...then the pod's Prepare on it, labelled all the same.
    let mapped = labels(&[
        (UID_MAPPING_LABEL, "0:100000:65536"),
        (GID_MAPPING_LABEL, "0:100000:65536"),
    ]);
    let m = f.sn.prepare("pod", "x", mapped.clone()).unwrap();
    assert!(
        !m[0].options.iter().any(|o| o.starts_with("uidmap=")),
        "{:?}",
        m[0].options
    );
    // On imaged's own layers (or a record of root's) the mapping is asked for.
    let m = f.sn.prepare("pod2", &a.to_string(), mapped).unwrap();
    assert!(m[0].options.iter().any(|o| o.starts_with("uidmap=")));
}
