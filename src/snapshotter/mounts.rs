//! The mounts that assemble a snapshot, as containerd's overlayfs snapshotter builds them.

use std::path::PathBuf;

use super::records::{Record, State};
use super::{Kind, Mount, Snapshotter, SnapshotterError};
use crate::digest::Digest;
use crate::snapshot::LayerParent;

/// One directory below a snapshot.
#[derive(Debug, Clone)]
pub(super) struct Lower {
    /// The path given to overlay's `lowerdir`: a record's `snapshots/<id>/fs`, a layer's short link.
    pub short: PathBuf,
    /// The directory itself (for bind mounts).
    pub real: PathBuf,
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
            });
            next = match parent {
                LayerParent::Base => String::new(),
                LayerParent::Layer(p) => p.to_string(),
            };
        }
        Ok(out)
    }

    /// The mounts of `rec` over `lowers` (nearest first): containerd overlayfs's `mounts`.
    pub(super) fn mounts_of(&self, rec: &Record, lowers: &[Lower]) -> Vec<Mount> {
        let dir = self.record_dir(rec.id);
        let bind = |source: &PathBuf, mode: &str| Mount {
            kind: "bind".into(),
            source: source.display().to_string(),
            options: vec![mode.into(), "rbind".into()],
        };
        if lowers.is_empty() {
            let mode = if rec.kind == Kind::View { "ro" } else { "rw" };
            return vec![bind(&dir.join("fs"), mode)];
        }
        let mut options = Vec::new();
        if rec.kind == Kind::Active {
            options.push(format!("workdir={}", dir.join("work").display()));
            options.push(format!("upperdir={}", dir.join("fs").display()));
        } else if let [only] = lowers {
            return vec![bind(&only.real, "ro")];
        }
        let paths: Vec<String> = lowers.iter().map(|l| l.short.display().to_string()).collect();
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
