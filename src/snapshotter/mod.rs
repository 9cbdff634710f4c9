//! containerd's snapshot model over imaged's layers: what a runtime needs to build containers' root
//! filesystems from the images imaged pulled, without a second copy of any layer.
//!
//! # Design note
//!
//! containerd's snapshotter contract (`core/snapshots/snapshotter.go`): a snapshot is *active* (writable,
//! being built or a container's rootfs), a *view* (read-only) or *committed* (immutable, a parent for
//! others). `Prepare`/`View` create an active snapshot or a view on top of a committed parent and return
//! the mounts that assemble it; `Commit` turns an active snapshot into a committed one under a new name;
//! `Remove` refuses a snapshot that others sit on. The semantics follow containerd's overlayfs snapshotter
//! (`plugins/snapshots/overlay`): an upper and a work directory per active snapshot, an `overlay` mount over
//! the parents, a bind mount where one directory is all it takes.
//!
//! Two kinds of snapshots live here:
//! - **imaged's layers** are committed snapshots named by their chain id (`sha256:…`), each with its
//!   parent layer, labelled `containerd.io/snapshot.ref=<chain id>`. They are owned by the layer store
//!   ([`crate::layers`]) and never created or removed through this API: `Remove` answers
//!   FailedPrecondition (what containerd's garbage collection logs and skips), and a `Prepare` whose
//!   `containerd.io/snapshot.ref` label names a layer that exists on the same parent answers
//!   AlreadyExists, which is how containerd adopts a remote snapshot instead of unpacking it.
//! - **records**: snapshots created through the API (containers' writable layers, the layers containerd
//!   unpacks itself), kept in a redb database with their directories under `snapshots/<id>` — short
//!   numeric names, like containerd's, so deep chains fit overlay's option page.
//!
//! Data safety: every record holds a lease ([`crate::lease`]) on the imaged layers below it, taken before
//! their existence is checked and held until the record is removed, so a layer stays on disk while any
//! container's rootfs depends on it, even after its image was removed. When a record goes, the layers it
//! held are handed back to the caller, which asks the stores to remove what nothing else references.
//!
//! User namespaces (containerd's `remap-ids`, [`idmap`]): a snapshot prepared with a pod's id mappings gets
//! its own directory chowned to the pod's root and mounts that ask containerd for idmapped lower
//! directories; the layers are never copied or chowned.
//!
//! Crash safety: a record's directory is created (and renamed into place) before its row is committed, and
//! its row is deleted before its directory: a crash leaves at most a directory without a row, removed when
//! the snapshotter opens and by `Cleanup`.

mod error;
pub mod filter;
pub mod idmap;
mod mounts;
mod ops;
mod records;
mod usage;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard};

use serde::{Deserialize, Serialize};

pub use error::SnapshotterError;
pub use records::Labels;

use crate::digest::Digest;
use crate::layers::{LayerParent, LayerStore};
use crate::lease::{Lease, LeaseTable};
use records::{Record, Records, State};

/// The label containerd puts on the Prepare of a layer it is about to unpack, naming the layer's chain id;
/// imaged's layers carry it, so that containerd finds them (its remote snapshot protocol).
pub const SNAPSHOT_REF_LABEL: &str = "containerd.io/snapshot.ref";

/// The snapshotter capabilities (containerd's names) this snapshotter implements. A proxy plugin learns
/// them only from containerd's config (`[proxy_plugins.NAME] capabilities`, 1.7.23+), which
/// `imaged containerd-config` writes from this list.
///
/// - `remap-ids`: user-namespaced pods get idmapped layers ([`idmap`]) instead of a chowned copy.
/// - Not `only-remap-ids`: it only tells containerd to refuse the copy when `remap-ids` is absent.
/// - Not `rebase`: see README.md ("containerd's own pulls unpack into imaged one layer at a time").
pub const CAPABILITIES: &[&str] = &["remap-ids"];

/// What a snapshot is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Read-only, on top of a committed parent.
    View,
    /// Writable.
    Active,
    /// Immutable; may be a parent.
    Committed,
}

impl Kind {
    /// containerd's name of the kind, as filters use it.
    pub fn as_str(&self) -> &'static str {
        match self {
            Kind::View => "view",
            Kind::Active => "active",
            Kind::Committed => "committed",
        }
    }
}

/// What `Stat` and `List` tell of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    /// Its name (key).
    pub name: String,
    /// Its parent's name, empty for none.
    pub parent: String,
    /// Its kind.
    pub kind: Kind,
    /// Its labels.
    pub labels: Labels,
    /// Creation time (Unix nanoseconds).
    pub created_ns: i64,
    /// Last change (Unix nanoseconds).
    pub updated_ns: i64,
}

/// One mount of a snapshot's filesystem, as containerd's `mount.Mount`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// `bind` or `overlay`.
    pub kind: String,
    /// The source (a directory, or `overlay`).
    pub source: String,
    /// fstab-style options.
    pub options: Vec<String>,
}

/// Bytes and inodes a snapshot takes (its own changes, not its parents').
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Bytes allocated.
    pub bytes: u64,
    /// Files, directories and other nodes.
    pub inodes: u64,
}

/// The snapshotter; share it behind an `Arc`.
pub struct Snapshotter {
    dir: PathBuf,
    layers: LayerStore,
    leases: Arc<LeaseTable>,
    records: Records,
    state: RwLock<State>,
    /// Held across each change (check, directories, transaction, memory), so changes are serial.
    writer: Mutex<()>,
    /// The lease each record holds on the imaged layers below it.
    holds: Mutex<HashMap<String, Lease>>,
    /// Whether overlay mounts get `index=off` (the kernel knows the option).
    index_off: bool,
    /// The last measurement of active snapshots' usage (see [`Snapshotter::usage_total`]).
    active_usage: usage::ActiveUsage,
}

impl Snapshotter {
    /// Opens (creating) the snapshotter in `dir`, over the layers of `layers` (leased on `leases`): removes
    /// directories left without a record by a crash and takes the records' leases on their layers.
    pub fn open(dir: &Path, layers: LayerStore, leases: Arc<LeaseTable>) -> Result<Snapshotter, SnapshotterError> {
        let snapshots = dir.join("snapshots");
        std::fs::create_dir_all(&snapshots).map_err(error::io("create", &snapshots))?;
        let (records, state) = Records::open(&dir.join("metadata.redb"))?;
        let s = Snapshotter {
            dir: dir.to_path_buf(),
            layers,
            leases,
            records,
            state: RwLock::new(state),
            writer: Mutex::new(()),
            holds: Mutex::new(HashMap::new()),
            index_off: Path::new("/sys/module/overlay/parameters/index").exists(),
            active_usage: usage::ActiveUsage::default(),
        };
        let removed = s.cleanup()?;
        if removed > 0 {
            tracing::info!(
                directories = removed,
                "snapshotter: removed directories without a snapshot (left by a crash)"
            );
        }
        let names: Vec<String> = s.read().records.keys().cloned().collect();
        let mut holds = s.holds();
        for name in names {
            let (lease, missing) = s.lease_layers_below(&s.read(), &name);
            if let Some(layer) = missing {
                tracing::warn!(snapshot = %name, layer = %layer, "snapshotter: a layer below this snapshot is missing; its mounts will fail");
            }
            if !lease.digests().is_empty() {
                holds.insert(name, lease);
            }
        }
        drop(holds);
        Ok(s)
    }

    /// The information of snapshot `name`.
    pub fn stat(&self, name: &str) -> Result<Info, SnapshotterError> {
        let state = self.read();
        if let Some(r) = state.records.get(name) {
            return Ok(record_info(name, r));
        }
        self.layer_info(&state, name)
            .ok_or_else(|| SnapshotterError::NotFound(name.to_string()))
    }

    /// Every snapshot that matches `filters` (containerd's filter syntax; none = all).
    pub fn list(&self, filters: &[String]) -> Result<Vec<Info>, SnapshotterError> {
        let f = filter::Filters::parse_all(filters).map_err(|e| SnapshotterError::InvalidArgument(e.to_string()))?;
        let state = self.read();
        let mut out: Vec<Info> = state.records.iter().map(|(n, r)| record_info(n, r)).collect();
        for chain in self.layers.list().unwrap_or_default() {
            if let Some(info) = self.layer_info(&state, &chain.to_string()) {
                out.push(info);
            }
        }
        drop(state);
        out.retain(|i| f.matches(|path| field(i, path)));
        Ok(out)
    }

    /// The mounts of an active snapshot or a view.
    pub fn mounts(&self, key: &str) -> Result<Vec<Mount>, SnapshotterError> {
        let state = self.read();
        let Some(rec) = state.records.get(key) else {
            if self.layer_info(&state, key).is_some() {
                return Err(SnapshotterError::FailedPrecondition {
                    name: key.to_string(),
                    why: "a committed snapshot has no mounts; prepare or view on top of it".into(),
                });
            }
            return Err(SnapshotterError::NotFound(key.to_string()));
        };
        if rec.kind == Kind::Committed {
            return Err(SnapshotterError::FailedPrecondition {
                name: key.to_string(),
                why: "a committed snapshot has no mounts; prepare or view on top of it".into(),
            });
        }
        let lowers = self.lowers(&state, &rec.parent)?;
        Ok(self.mounts_of(rec, &lowers))
    }

    /// The directory of a record.
    fn record_dir(&self, id: u64) -> PathBuf {
        self.dir.join("snapshots").join(id.to_string())
    }

    /// Imaged's layer `name` as a committed snapshot, if it is one (a chain id whose layer exists and whose
    /// parent is known).
    fn layer_info(&self, state: &State, name: &str) -> Option<Info> {
        let chain: Digest = name.parse().ok()?;
        let meta = self.layers.meta(&chain)?;
        let parent = match meta.parent()? {
            LayerParent::Base => String::new(),
            LayerParent::Layer(p) => p.to_string(),
        };
        let mut labels = state.layer_labels.get(name).cloned().unwrap_or_default();
        labels.insert(SNAPSHOT_REF_LABEL.to_string(), name.to_string());
        Some(Info {
            name: name.to_string(),
            parent,
            kind: Kind::Committed,
            labels,
            created_ns: meta.created_ns,
            updated_ns: meta.created_ns,
        })
    }

    /// A lease on every imaged layer below the snapshot `name` (itself included if it is a layer), and the
    /// first layer found missing, if any.
    fn lease_layers_below(&self, state: &State, name: &str) -> (Lease, Option<Digest>) {
        let mut lease = self.leases.lease();
        let mut missing = None;
        let mut next = name.to_string();
        while !next.is_empty() {
            if let Some(r) = state.records.get(&next) {
                next = r.parent.clone();
                continue;
            }
            let Ok(chain) = next.parse::<Digest>() else { break };
            lease.add(crate::lease::Item::Snapshot(chain));
            match self.layers.meta(&chain).and_then(|m| m.parent()) {
                Some(LayerParent::Layer(p)) => next = p.to_string(),
                Some(LayerParent::Base) => break,
                None => {
                    missing = Some(chain);
                    break;
                }
            }
        }
        (lease, missing)
    }

    fn read(&self) -> RwLockReadGuard<'_, State> {
        // Memory changes only after a successful commit, each in one step: a poisoned lock is consistent.
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn writer(&self) -> MutexGuard<'_, ()> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn holds(&self) -> MutexGuard<'_, HashMap<String, Lease>> {
        self.holds.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn record_info(name: &str, r: &Record) -> Info {
    Info {
        name: name.to_string(),
        parent: r.parent.clone(),
        kind: r.kind,
        labels: r.labels.clone(),
        created_ns: r.created_ns,
        updated_ns: r.updated_ns,
    }
}

/// A snapshot's fields for filters, as containerd's `adaptSnapshot`.
fn field<'a>(info: &'a Info, path: &[String]) -> Option<&'a str> {
    match path.first().map(String::as_str)? {
        "kind" => Some(info.kind.as_str()),
        "name" => Some(&info.name),
        "parent" => Some(&info.parent),
        "labels" => info.labels.get(&path[1..].join(".")).map(String::as_str),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
