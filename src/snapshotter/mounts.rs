//! The mounts that assemble a snapshot, as containerd's overlayfs snapshotter builds them.

use std::path::PathBuf;

use super::records::{Record, State};
use super::{Kind, Mount, Snapshotter, SnapshotterError, idmap};
use crate::digest::Digest;
use crate::layers::LayerParent;

/// One directory below a snapshot.
#[derive(Debug, Clone)]
pub(super) struct Lower {
    /// The path given to overlay's `lowerdir`: a record's `snapshots/<id>/fs`, a layer's short link.
    pub short: PathBuf,
    /// The directory itself (for bind mounts).
    pub real: PathBuf,
    /// Whether it is a record's (a snapshot made through the API), not one of imaged's layers.
    pub record: bool,
}

impl Snapshotter {
    /// The directories below a snapshot whose parent is `parent`, nearest first.
    pub(super) fn lowers(&self, state: &State, parent: &str) -> Result<Vec<Lower>, SnapshotterError> {
        let mut out = Vec::new();
        let mut next = parent.to_string();
        while !next.is_empty() {
            if let Some(r) = state.records.get(&next) {
                if r.kind != Kind::Committed {
                    return Err(SnapshotterError::InvalidArgument(format!(
                        "parent {next:?} is not a committed snapshot"
                    )));
                }
                let fs = self.record_dir(r.id).join("fs");
                out.push(Lower {
                    short: fs.clone(),
                    real: fs,
                    record: true,
                });
                next = r.parent.clone();
                continue;
            }
            let missing = || SnapshotterError::NotFound(next.clone());
            let chain: Digest = next.parse().map_err(|_| missing())?;
            let meta = self.layers.meta(&chain).ok_or_else(missing)?;
            let parent = meta.parent().ok_or_else(missing)?;
            out.push(Lower {
                short: self.layers.link_path(&chain).ok_or_else(missing)?,
                real: self.layers.fs_dir(&chain),
                record: false,
            });
            next = match parent {
                LayerParent::Base => String::new(),
                LayerParent::Layer(p) => p.to_string(),
            };
        }
        Ok(out)
    }

    /// The mounts of `rec` over `lowers` (nearest first): containerd overlayfs's `mounts`, with the
    /// `uidmap=`/`gidmap=` options of a user-namespaced snapshot first (see [`super::idmap`]).
    pub(super) fn mounts_of(&self, rec: &Record, lowers: &[Lower]) -> Vec<Mount> {
        let dir = self.record_dir(rec.id);
        let mut options = if shifted_below(rec, lowers) {
            Vec::new()
        } else {
            idmap::mount_options(&rec.labels)
        };
        let mapped = !options.is_empty();
        let bind = |source: &PathBuf, mode: &str, mut options: Vec<String>| {
            options.extend([mode.into(), "rbind".into()]);
            Mount {
                kind: "bind".into(),
                source: source.display().to_string(),
                options,
            }
        };
        if lowers.is_empty() {
            let mode = if rec.kind == Kind::View { "ro" } else { "rw" };
            return vec![bind(&dir.join("fs"), mode, options)];
        }
        if rec.kind == Kind::Active {
            options.push(format!("workdir={}", dir.join("work").display()));
            options.push(format!("upperdir={}", dir.join("fs").display()));
        } else if let [only] = lowers {
            return vec![bind(&only.real, "ro", options)];
        }
        // containerd (2.0.7+, 2.1.5+) idmaps the lower directories' common directory in one mount and
        // reaches each lower through it. Short links alone have `l/` as that directory, and their targets
        // (`../<hex>/fs`) would lead out of the idmapped mount; one real path among them makes the layer
        // store's root the common directory, inside which the links resolve.
        let paths: Vec<String> = lowers
            .iter()
            .enumerate()
            .map(|(i, l)| if mapped && i == 0 { &l.real } else { &l.short })
            .map(|p| p.display().to_string())
            .collect();
        options.push(format!("lowerdir={}", paths.join(":")));
        if self.index_off {
            options.push("index=off".into());
        }
        vec![Mount {
            kind: "overlay".into(),
            source: "overlay".into(),
            options,
        }]
    }
}

/// Whether the snapshot below `rec` already holds the pod's ids: a containerd whose config does not declare
/// `remap-ids` still labels the pod's Prepare, but on a copy of the image it chowned itself
/// (`<id>-remap`, committed as a record whose root belongs to the pod's root). Idmapping that copy again
/// would shift its ids twice. An image layer's root never belongs to a pod's mapped root.
fn shifted_below(rec: &Record, lowers: &[Lower]) -> bool {
    let Some(top) = lowers.first().filter(|l| l.record) else {
        return false;
    };
    let Ok(Some(map)) = idmap::IdMap::from_labels(&rec.labels) else {
        return false;
    };
    let (Ok(root), Ok(meta)) = (map.root(), std::fs::metadata(&top.real)) else {
        return false;
    };
    use std::os::unix::fs::MetadataExt;
    root != (0, 0) && (meta.uid(), meta.gid()) == root
}
