//! The snapshotter's records in a redb database, mirrored in memory.
//!
//! One row per snapshot created through the API (name → [`Record`]), the labels given to imaged's own
//! layers (chain id → labels), and the next directory id. Each change is one write transaction; memory is
//! updated after the commit, so readers never see what the disk does not hold.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use super::{Kind, SnapshotterError};

const SNAPSHOTS: TableDefinition<&str, &[u8]> = TableDefinition::new("snapshots");
const LAYER_LABELS: TableDefinition<&str, &[u8]> = TableDefinition::new("layer_labels");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const NEXT_ID: &str = "next_id";

/// Labels, ordered so that answers are stable.
pub type Labels = BTreeMap<String, String>;

/// A snapshot created through the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Its directory's name under `snapshots/`.
    pub id: u64,
    /// Active, view or committed.
    pub kind: Kind,
    /// The name of its parent (a record or one of imaged's layers), empty for none.
    pub parent: String,
    /// Its labels.
    pub labels: Labels,
    /// Creation time (Unix nanoseconds).
    pub created_ns: i64,
    /// Last change (Unix nanoseconds).
    pub updated_ns: i64,
    /// Bytes of its directory, measured when committed (0 for active snapshots and views).
    pub bytes: u64,
    /// Inodes of its directory, measured when committed.
    pub inodes: u64,
}

/// What is in the database, in memory.
#[derive(Debug, Default, Clone)]
pub struct State {
    /// Records by name.
    pub records: BTreeMap<String, Record>,
    /// Labels set on imaged's layers, by layer name.
    pub layer_labels: HashMap<String, Labels>,
    /// The next directory id to hand out.
    pub next_id: u64,
}

/// One transaction's changes.
#[derive(Debug, Default)]
pub struct Change {
    /// Records written (created or replaced).
    pub put: Vec<(String, Record)>,
    /// Records deleted.
    pub delete: Vec<String>,
    /// Layer labels written.
    pub layer_labels: Vec<(String, Labels)>,
    /// The next id, if it moved.
    pub next_id: Option<u64>,
}

/// The database.
pub struct Records {
    db: Database,
    path: PathBuf,
}

impl Records {
    /// Opens (creating) the database and reads everything.
    pub fn open(path: &Path) -> Result<(Records, State), SnapshotterError> {
        let err = |e: redb::Error| SnapshotterError::Db {
            path: path.to_path_buf(),
            detail: e.to_string(),
        };
        let db = Database::create(path).map_err(|e| err(e.into()))?;
        let tx = db.begin_write().map_err(|e| err(e.into()))?;
        tx.open_table(SNAPSHOTS).map_err(|e| err(e.into()))?;
        tx.open_table(LAYER_LABELS).map_err(|e| err(e.into()))?;
        tx.open_table(META).map_err(|e| err(e.into()))?;
        tx.commit().map_err(|e| err(e.into()))?;

        let mut state = State::default();
        let tx = db.begin_read().map_err(|e| err(e.into()))?;
        let corrupt = |key: &str, e: serde_json::Error| SnapshotterError::Db {
            path: path.to_path_buf(),
            detail: format!("record {key} is unreadable: {e}"),
        };
        let table = tx.open_table(SNAPSHOTS).map_err(|e| err(e.into()))?;
        for row in table.iter().map_err(|e| err(e.into()))? {
            let (k, v) = row.map_err(|e| err(e.into()))?;
            let rec: Record = serde_json::from_slice(v.value()).map_err(|e| corrupt(k.value(), e))?;
            state.records.insert(k.value().to_string(), rec);
        }
        let table = tx.open_table(LAYER_LABELS).map_err(|e| err(e.into()))?;
        for row in table.iter().map_err(|e| err(e.into()))? {
            let (k, v) = row.map_err(|e| err(e.into()))?;
            let labels: Labels = serde_json::from_slice(v.value()).map_err(|e| corrupt(k.value(), e))?;
            state.layer_labels.insert(k.value().to_string(), labels);
        }
        let table = tx.open_table(META).map_err(|e| err(e.into()))?;
        let stored = table.get(NEXT_ID).map_err(|e| err(e.into()))?.map_or(1, |v| v.value());
        let max = state.records.values().map(|r| r.id).max().unwrap_or(0);
        state.next_id = stored.max(max + 1);
        Ok((
            Records {
                db,
                path: path.to_path_buf(),
            },
            state,
        ))
    }

    /// Writes `change` in one transaction (fsynced).
    pub fn commit(&self, change: &Change) -> Result<(), SnapshotterError> {
        let err = |e: redb::Error| SnapshotterError::Db {
            path: self.path.clone(),
            detail: e.to_string(),
        };
        let tx = self.db.begin_write().map_err(|e| err(e.into()))?;
        {
            let mut table = tx.open_table(SNAPSHOTS).map_err(|e| err(e.into()))?;
            for (name, rec) in &change.put {
                // Serialising strings, numbers and maps cannot fail.
                let json = serde_json::to_vec(rec).unwrap_or_default();
                table
                    .insert(name.as_str(), json.as_slice())
                    .map_err(|e| err(e.into()))?;
            }
            for name in &change.delete {
                table.remove(name.as_str()).map_err(|e| err(e.into()))?;
            }
            let mut table = tx.open_table(LAYER_LABELS).map_err(|e| err(e.into()))?;
            for (name, labels) in &change.layer_labels {
                if labels.is_empty() {
                    table.remove(name.as_str()).map_err(|e| err(e.into()))?;
                } else {
                    let json = serde_json::to_vec(labels).unwrap_or_default();
                    table
                        .insert(name.as_str(), json.as_slice())
                        .map_err(|e| err(e.into()))?;
                }
            }
            if let Some(next) = change.next_id {
                let mut table = tx.open_table(META).map_err(|e| err(e.into()))?;
                table.insert(NEXT_ID, next).map_err(|e| err(e.into()))?;
            }
        }
        tx.commit().map_err(|e| err(e.into()))
    }
}

impl State {
    /// Applies a committed change.
    pub fn apply(&mut self, change: Change) {
        for name in change.delete {
            self.records.remove(&name);
        }
        for (name, rec) in change.put {
            self.records.insert(name, rec);
        }
        for (name, labels) in change.layer_labels {
            if labels.is_empty() {
                self.layer_labels.remove(&name);
            } else {
                self.layer_labels.insert(name, labels);
            }
        }
        if let Some(next) = change.next_id {
            self.next_id = self.next_id.max(next);
        }
    }

    /// Whether any record sits on `name`.
    pub fn has_children(&self, name: &str) -> bool {
        self.records.values().any(|r| r.parent == name)
    }
}
