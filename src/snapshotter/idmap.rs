//! User-namespace id mappings on snapshots: containerd's `remap-ids` capability.
//!
//! For a pod with a user namespace, containerd 2.x puts the pod's mappings on the Prepare (or View) of its
//! root filesystem as labels, `containerd.io/snapshot/uidmapping` and `…/gidmapping`, each a comma-separated
//! list of `<container id>:<host id>:<length>` ranges (`internal/userns/idmap.go`; the CRI plugin sends one
//! range). A snapshotter that advertises `remap-ids` honours them as containerd's overlayfs does
//! (`plugins/snapshots/overlay/overlay.go`):
//! - the new snapshot's own directory (the overlay upper dir, or the one bind-mounted directory) belongs to
//!   the host ids of the container's root, so the pod's root can create `/proc`, `/dev` and its files there;
//! - the mounts carry `uidmap=`/`gidmap=` options with the labels' values, which containerd's mount code
//!   (`core/mount/mount_linux.go`, in the shim and in containerd itself) turns into idmapped mounts of the
//!   lower directories (`mount_setattr(MOUNT_ATTR_IDMAP)` with a user namespace of those mappings) before it
//!   mounts the overlay. The layers on disk stay as they are, shared with every other container.
//!
//! Without the capability containerd copies the whole image into a `<id>-remap` snapshot and chowns every
//! file, per pod (`client/snapshotter_opts_unix.go`).

use super::SnapshotterError;
use super::records::Labels;

/// The label with the pod's uid mappings.
pub const UID_MAPPING_LABEL: &str = "containerd.io/snapshot/uidmapping";
/// The label with the pod's gid mappings.
pub const GID_MAPPING_LABEL: &str = "containerd.io/snapshot/gidmapping";

/// containerd's invalid id (`1<<32 - 1`), which no mapping may reach.
const INVALID_ID: u64 = u32::MAX as u64;

/// One range of a mapping: `length` ids from `container` inside map to ids from `host` outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    /// The first id inside the namespace.
    pub container: u32,
    /// The first id outside.
    pub host: u32,
    /// How many ids.
    pub length: u32,
}

/// The mappings a snapshot was prepared with, if any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdMap {
    /// The uid ranges (empty: ids are not mapped).
    pub uids: Vec<Range>,
    /// The gid ranges (empty: ids are not mapped).
    pub gids: Vec<Range>,
}

impl IdMap {
    /// The mappings in `labels`; `None` when neither label is there. A malformed label, or mappings that
    /// leave the container's root unmapped, is InvalidArgument naming the label.
    pub fn from_labels(labels: &Labels) -> Result<Option<IdMap>, SnapshotterError> {
        let uid = labels.get(UID_MAPPING_LABEL);
        let gid = labels.get(GID_MAPPING_LABEL);
        if uid.is_none() && gid.is_none() {
            return Ok(None);
        }
        let map = IdMap {
            uids: parse_list(UID_MAPPING_LABEL, uid.map_or("", String::as_str))?,
            gids: parse_list(GID_MAPPING_LABEL, gid.map_or("", String::as_str))?,
        };
        map.root()?;
        Ok(Some(map))
    }

    /// The host uid and gid of the container's root (id 0), as containerd's `RootPair`: an unmapped kind
    /// of id maps to itself.
    pub fn root(&self) -> Result<(u32, u32), SnapshotterError> {
        let uid = to_host(0, &self.uids).ok_or_else(|| unmapped_root(UID_MAPPING_LABEL))?;
        let gid = to_host(0, &self.gids).ok_or_else(|| unmapped_root(GID_MAPPING_LABEL))?;
        Ok((uid, gid))
    }
}

/// The mount options that ask containerd's mount code for idmapped lower directories (containerd's
/// overlayfs puts them first, on bind and overlay mounts alike).
pub fn mount_options(labels: &Labels) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(v) = labels.get(UID_MAPPING_LABEL) {
        out.push(format!("uidmap={v}"));
    }
    if let Some(v) = labels.get(GID_MAPPING_LABEL) {
        out.push(format!("gidmap={v}"));
    }
    out
}

fn unmapped_root(label: &str) -> SnapshotterError {
    SnapshotterError::InvalidArgument(format!(
        "label {label:?} maps no host id to the container's root (id 0); a pod's mappings must start at 0"
    ))
}

/// containerd's `toHost`: the host id of `id`, `None` if no range holds it or the sum overflows.
fn to_host(id: u32, ranges: &[Range]) -> Option<u32> {
    if ranges.is_empty() {
        return Some(id);
    }
    let r = ranges
        .iter()
        .find(|r| id >= r.container && u64::from(id) < u64::from(r.container) + u64::from(r.length))?;
    let host = u64::from(r.host) + u64::from(id - r.container);
    (host < INVALID_ID).then_some(host as u32)
}

/// A comma-separated list of `<container>:<host>:<length>` ranges (empty: none).
fn parse_list(label: &str, value: &str) -> Result<Vec<Range>, SnapshotterError> {
    if value.is_empty() {
        return Ok(Vec::new());
    }
    value.split(',').map(|r| parse_range(label, r)).collect()
}

fn parse_range(label: &str, s: &str) -> Result<Range, SnapshotterError> {
    let bad = |why: &str| {
        SnapshotterError::InvalidArgument(format!(
            "label {label:?}: range {s:?} {why}; expected <container id>:<host id>:<length>[,…]"
        ))
    };
    let parts: Vec<&str> = s.split(':').collect();
    let [c, h, l] = parts.as_slice() else {
        return Err(bad("does not have three fields"));
    };
    let num = |f: &str| -> Result<u32, SnapshotterError> {
        match f.trim().parse::<u64>() {
            Ok(n) if n < INVALID_ID => Ok(n as u32),
            Ok(_) => Err(bad("has an id or length of 2^32-1 or more")),
            Err(_) => Err(bad("has a field that is not a non-negative number")),
        }
    };
    Ok(Range {
        container: num(c)?,
        host: num(h)?,
        length: num(l)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(uid: Option<&str>, gid: Option<&str>) -> Labels {
        let mut l = Labels::new();
        if let Some(v) = uid {
            l.insert(UID_MAPPING_LABEL.into(), v.into());
        }
        if let Some(v) = gid {
            l.insert(GID_MAPPING_LABEL.into(), v.into());
        }
        l
    }

    #[test]
    fn the_cri_plugins_single_range_maps_root_to_the_host_base() {
        let m = IdMap::from_labels(&labels(Some("0:100000:65536"), Some("0:200000:65536")))
            .unwrap()
            .unwrap();
        assert_eq!(
            m.uids,
            [Range {
                container: 0,
                host: 100000,
                length: 65536
            }]
        );
        assert_eq!(m.root().unwrap(), (100000, 200000));
        assert_eq!(IdMap::from_labels(&Labels::new()).unwrap(), None);
    }

    #[test]
    fn several_ranges_and_one_label_alone_are_containerds_format() {
        let m = IdMap::from_labels(&labels(Some("1:5000:10,0:7000:1"), None))
            .unwrap()
            .unwrap();
        assert_eq!(m.root().unwrap(), (7000, 0), "no gid label: gids are not mapped");
        assert_eq!(to_host(3, &m.uids), Some(5002));
        assert_eq!(to_host(11, &m.uids), None);
    }

    #[test]
    fn malformed_or_rootless_mappings_are_refused_naming_the_label() {
        for bad in [
            "0:100000",
            "a:1:2",
            "0:-1:5",
            "0:4294967295:1",
            "0:1:2,",
            "1:100000:65536",
        ] {
            let e = IdMap::from_labels(&labels(Some(bad), Some("0:1:1"))).unwrap_err();
            assert!(matches!(e, SnapshotterError::InvalidArgument(_)), "{bad}: {e}");
            assert!(e.to_string().contains(UID_MAPPING_LABEL), "{e}");
        }
        let e = IdMap::from_labels(&labels(Some("0:4294967290:65536"), None)).unwrap();
        assert!(e.is_some(), "root itself fits, as in containerd");
    }

    #[test]
    fn mount_options_carry_the_labels_as_given() {
        let l = labels(Some("0:100000:65536"), Some("0:100000:65536"));
        assert_eq!(mount_options(&l), ["uidmap=0:100000:65536", "gidmap=0:100000:65536"]);
        assert!(mount_options(&Labels::new()).is_empty());
    }
}
