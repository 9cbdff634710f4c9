//! The changing operations: Prepare, View, Commit, Remove, Update, Cleanup.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};

use super::idmap::IdMap;
use super::records::{Change, Labels, Record};
use super::{Kind, Mount, SNAPSHOT_REF_LABEL, Snapshotter, SnapshotterError, error, record_info};
use crate::clock::now_ns;
use crate::digest::Digest;

/// Label keys and values containerd accepts (`pkg/labels`): at most 4096 bytes each pair.
const MAX_LABEL_BYTES: usize = 4096;

impl Snapshotter {
    /// Creates an active snapshot `key` on `parent` (a committed snapshot, or none) and returns its mounts.
    pub fn prepare(&self, key: &str, parent: &str, labels: Labels) -> Result<Vec<Mount>, SnapshotterError> {
        self.create(Kind::Active, key, parent, labels)
    }

    /// Creates a read-only view `key` of `parent` and returns its mounts.
    pub fn view(&self, key: &str, parent: &str, labels: Labels) -> Result<Vec<Mount>, SnapshotterError> {
        self.create(Kind::View, key, parent, labels)
    }

    fn create(&self, kind: Kind, key: &str, parent: &str, labels: Labels) -> Result<Vec<Mount>, SnapshotterError> {
        validate(key, &labels)?;
        let mapped_root = IdMap::from_labels(&labels)?.map(|m| m.root()).transpose()?;
        let _writer = self.writer();
        let state = self.read();
        // containerd's remote snapshot protocol: the layer it is about to unpack is one of ours, on the
        // same parent, so it should adopt ours instead.
        if let Some(target) = labels.get(SNAPSHOT_REF_LABEL)
            && let Some(layer) = self.layer_info(&state, target)
            && layer.parent == parent
        {
            return Err(SnapshotterError::TargetExists { target: target.clone() });
        }
        if state.records.contains_key(key) || self.layer_info(&state, key).is_some() {
            return Err(SnapshotterError::AlreadyExists(key.to_string()));
        }
        // Lease the layers below before checking that they exist: from here on no removal can take them.
        let (lease, missing) = if parent.is_empty() {
            (self.leases.lease(), None)
        } else {
            self.lease_layers_below(&state, parent)
        };
        if let Some(layer) = missing {
            return Err(SnapshotterError::NotFound(layer.to_string()));
        }
        if !parent.is_empty() && !state.records.contains_key(parent) && self.layer_info(&state, parent).is_none() {
            return Err(SnapshotterError::NotFound(parent.to_string()));
        }
        let lowers = self.lowers(&state, parent)?;
        if let Some(d) = lease.digests().iter().find(|d| !self.layers.exists(d)) {
            return Err(SnapshotterError::NotFound(d.to_string()));
        }
        let id = state.next_id;
        drop(state);

        // The directory first (built aside, then renamed into place), the row second.
        let snapshots = self.dir.join("snapshots");
        let tmp = snapshots.join(format!("new-{id}"));
        let _ = fs::remove_dir_all(&tmp);
        let built = (|| {
            fs::create_dir(&tmp).map_err(error::io("create", &tmp))?;
            let fs_dir = tmp.join("fs");
            fs::DirBuilder::new()
                .mode(0o755)
                .create(&fs_dir)
                .map_err(error::io("create", &fs_dir))?;
            if kind == Kind::Active {
                let work = tmp.join("work");
                fs::DirBuilder::new()
                    .mode(0o711)
                    .create(&work)
                    .map_err(error::io("create", &work))?;
            }
            // As containerd: a user-namespaced snapshot's own directory belongs to the pod's root; any
            // other new layer's root to the owner of the parent's top directory.
            if let Some((uid, gid)) = mapped_root {
                std::os::unix::fs::lchown(&fs_dir, Some(uid), Some(gid))
                    .map_err(error::io("chown to the user namespace's root", &fs_dir))?;
            } else if let Some(top) = lowers.first()
                && rustix::process::geteuid().is_root()
            {
                let m = fs::metadata(&top.real).map_err(error::io("stat", &top.real))?;
                std::os::unix::fs::lchown(&fs_dir, Some(m.uid()), Some(m.gid()))
                    .map_err(error::io("chown", &fs_dir))?;
            }
            let dir = self.record_dir(id);
            fs::rename(&tmp, &dir).map_err(error::io("rename", &dir))
        })();
        if let Err(e) = built {
            let _ = fs::remove_dir_all(&tmp);
            return Err(e);
        }
        let now = now_ns();
        let rec = Record {
            id,
            kind,
            parent: parent.to_string(),
            labels,
            created_ns: now,
            updated_ns: now,
            bytes: 0,
            inodes: 0,
        };
        let change = Change {
            put: vec![(key.to_string(), rec.clone())],
            next_id: Some(id + 1),
            ..Default::default()
        };
        if let Err(e) = self.records.commit(&change) {
            let _ = fs::remove_dir_all(self.record_dir(id));
            return Err(e);
        }
        self.write_state(change);
        if !lease.digests().is_empty() {
            self.holds().insert(key.to_string(), lease);
        }
        Ok(self.mounts_of(&rec, &lowers))
    }

    /// Commits the active snapshot `key` as `name`, with `labels`. A non-empty `parent` must be the one it
    /// was prepared on (containerd 2's rebase on commit is not supported).
    pub fn commit(&self, name: &str, key: &str, labels: Labels, parent: &str) -> Result<(), SnapshotterError> {
        validate(name, &labels)?;
        let _writer = self.writer();
        let state = self.read();
        let rec = state
            .records
            .get(key)
            .cloned()
            .ok_or_else(|| SnapshotterError::NotFound(key.to_string()))?;
        if rec.kind != Kind::Active {
            return Err(SnapshotterError::FailedPrecondition {
                name: key.to_string(),
                why: "is not active: only active snapshots can be committed".into(),
            });
        }
        if !parent.is_empty() && parent != rec.parent {
            return Err(SnapshotterError::InvalidArgument(format!(
                "cannot change the parent of active snapshot {key:?} on commit (from {:?} to {parent:?})",
                rec.parent
            )));
        }
        if state.records.contains_key(name) || self.layer_info(&state, name).is_some() {
            return Err(SnapshotterError::AlreadyExists(name.to_string()));
        }
        drop(state);
        let fs_dir = self.record_dir(rec.id).join("fs");
        let (bytes, inodes) = crate::layers::measure(&fs_dir).map_err(error::io("measure", &fs_dir))?;
        let now = now_ns();
        let committed = Record {
            kind: Kind::Committed,
            labels,
            created_ns: now,
            updated_ns: now,
            bytes,
            inodes,
            ..rec
        };
        let change = Change {
            put: vec![(name.to_string(), committed)],
            delete: vec![key.to_string()],
            ..Default::default()
        };
        self.records.commit(&change)?;
        self.write_state(change);
        let mut holds = self.holds();
        if let Some(lease) = holds.remove(key) {
            holds.insert(name.to_string(), lease);
        }
        Ok(())
    }

    /// Removes snapshot `key` (not one with children, not one of imaged's layers), then the imaged layers it
    /// held that nothing protects any more (no image record, no lease, no other snapshot on them: their image
    /// was removed while a container used them). Returns the bytes those layers freed.
    pub fn remove(&self, key: &str) -> Result<u64, SnapshotterError> {
        let writer = self.writer();
        let state = self.read();
        let Some(rec) = state.records.get(key).cloned() else {
            if self.layer_info(&state, key).is_some() {
                return Err(SnapshotterError::FailedPrecondition {
                    name: key.to_string(),
                    why: "is a layer of imaged's image store: imaged removes it with the last image or snapshot \
                          that needs it"
                        .into(),
                });
            }
            return Err(SnapshotterError::NotFound(key.to_string()));
        };
        if state.has_children(key) {
            return Err(SnapshotterError::FailedPrecondition {
                name: key.to_string(),
                why: "cannot remove a snapshot with a child".into(),
            });
        }
        drop(state);
        let change = Change {
            delete: vec![key.to_string()],
            ..Default::default()
        };
        self.records.commit(&change)?;
        self.write_state(change);
        let released = self.holds().remove(key);
        drop(writer);
        // The row is gone: the directory is garbage now, whatever happens to it below.
        let dir = self.record_dir(rec.id);
        let doomed = self.dir.join("snapshots").join(format!("rm-{}", rec.id));
        match fs::rename(&dir, &doomed) {
            Ok(()) => {
                if let Err(e) = fs::remove_dir_all(&doomed) {
                    tracing::warn!(path = %doomed.display(), error = %e, "snapshotter: cannot remove a removed snapshot's directory; Cleanup will");
                }
            }
            Err(e) => {
                tracing::warn!(path = %dir.display(), error = %e, "snapshotter: cannot remove a removed snapshot's directory; Cleanup will")
            }
        }
        let chains = released.as_ref().map(|l| l.digests()).unwrap_or_default();
        drop(released);
        Ok(self.release(&chains))
    }

    /// Deletes the layers among `chains` that the layer store no longer protects; it refuses, under its
    /// lease lock, what a lease or a recorded image still needs, so this cannot race a pull or a removal.
    fn release(&self, chains: &[Digest]) -> u64 {
        let mut freed = 0;
        for chain in chains {
            match self.layers.delete(chain) {
                Ok(n) => freed += n,
                Err(e) => {
                    tracing::warn!(snapshot = %chain, error = %e, "could not remove a layer no snapshot holds any more")
                }
            }
        }
        if freed > 0 {
            tracing::info!(
                freed_bytes = freed,
                "removed layers no image or container needs any more"
            );
        }
        freed
    }

    /// Changes the labels of snapshot `name` (`fieldpaths`: `labels`, `labels.<key>`, or none for all
    /// labels), as containerd's storage does; returns the new information.
    pub fn update(&self, name: &str, labels: Labels, fieldpaths: &[String]) -> Result<super::Info, SnapshotterError> {
        validate(name, &labels)?;
        let _writer = self.writer();
        let state = self.read();
        let (mut current, layer) = match state.records.get(name) {
            Some(r) => (r.labels.clone(), false),
            None if self.layer_info(&state, name).is_some() => {
                (state.layer_labels.get(name).cloned().unwrap_or_default(), true)
            }
            None => return Err(SnapshotterError::NotFound(name.to_string())),
        };
        if fieldpaths.is_empty() {
            current = labels.clone();
        }
        for path in fieldpaths {
            if let Some(key) = path.strip_prefix("labels.") {
                match labels.get(key).filter(|v| !v.is_empty()) {
                    Some(v) => current.insert(key.to_string(), v.clone()),
                    None => current.remove(key),
                };
            } else if path == "labels" {
                current = labels.clone();
            } else {
                return Err(SnapshotterError::InvalidArgument(format!(
                    "cannot update {path:?} field on snapshot {name:?}: only labels can change"
                )));
            }
        }
        current.retain(|_, v| !v.is_empty());
        let mut change = Change::default();
        if layer {
            // A layer's identity label is not the caller's to change.
            current.remove(SNAPSHOT_REF_LABEL);
            change.layer_labels.push((name.to_string(), current));
        } else if let Some(r) = state.records.get(name) {
            let rec = Record {
                labels: current,
                updated_ns: now_ns(),
                ..r.clone()
            };
            change.put.push((name.to_string(), rec));
        }
        drop(state);
        self.records.commit(&change)?;
        self.write_state(change);
        let state = self.read();
        match state.records.get(name) {
            Some(r) => Ok(record_info(name, r)),
            None => self
                .layer_info(&state, name)
                .ok_or_else(|| SnapshotterError::NotFound(name.to_string())),
        }
    }

    /// Removes directories no record owns (a crash between a directory and its row, removals whose
    /// directory could not go). Returns how many.
    pub fn cleanup(&self) -> Result<usize, SnapshotterError> {
        let _writer = self.writer();
        let ids: std::collections::HashSet<String> = self.read().records.values().map(|r| r.id.to_string()).collect();
        let snapshots = self.dir.join("snapshots");
        let mut removed = 0;
        for entry in fs::read_dir(&snapshots).map_err(error::io("read", &snapshots))? {
            let entry = entry.map_err(error::io("read", &snapshots))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if ids.contains(&name) {
                continue;
            }
            let path = entry.path();
            let gone = if entry.file_type().is_ok_and(|t| t.is_dir()) {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            gone.map_err(error::io("remove", &path))?;
            removed += 1;
        }
        Ok(removed)
    }

    fn write_state(&self, change: Change) {
        self.state.write().unwrap_or_else(|p| p.into_inner()).apply(change);
    }
}

fn validate(key: &str, labels: &Labels) -> Result<(), SnapshotterError> {
    if key.is_empty() {
        return Err(SnapshotterError::InvalidArgument(
            "a snapshot key must not be empty".into(),
        ));
    }
    for (k, v) in labels {
        if k.len() + v.len() > MAX_LABEL_BYTES {
            return Err(SnapshotterError::InvalidArgument(format!(
                "label {k:?} is longer than {MAX_LABEL_BYTES} bytes with its value"
            )));
        }
    }
    Ok(())
}
