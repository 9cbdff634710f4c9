//! The OCI image layout files at the store's root: `oci-layout` and `index.json`.
//!
//! The metadata database is the source of truth for images; `index.json` is rewritten from it after each
//! change (and at start, so a crash between the two is repaired), which keeps the store readable by OCI
//! tools such as `umoci` and `skopeo`. Being derived, it is replaced atomically (rename) but not fsynced:
//! whatever a crash leaves of it, the start compares it with the database and rewrites it. That keeps a
//! pull from paying an fsync of a file that grows with the store, and an unchanged index is not rewritten.

use std::fs;
use std::io::Write;
use std::path::Path;

use serde::Serialize;

use super::ContentError;
use crate::digest::Digest;

/// One manifest listed in `index.json`.
#[derive(Debug, Clone, Serialize)]
pub struct IndexEntry {
    /// The manifest's media type.
    #[serde(rename = "mediaType")]
    pub media_type: String,
    /// The manifest's digest.
    pub digest: Digest,
    /// The manifest's size in bytes.
    pub size: u64,
    /// `org.opencontainers.image.ref.name` and friends.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub annotations: std::collections::BTreeMap<String, String>,
}

#[derive(Serialize)]
struct Index<'a> {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(rename = "mediaType")]
    media_type: &'static str,
    manifests: &'a [IndexEntry],
}

/// Writes `oci-layout` if it is missing.
pub(super) fn ensure_layout_file(root: &Path) -> Result<(), ContentError> {
    let path = root.join("oci-layout");
    if path.exists() {
        return Ok(());
    }
    write_atomic(root, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)
}

/// Replaces `index.json` with one listing `entries`.
pub(super) fn write_index(root: &Path, entries: &[IndexEntry]) -> Result<(), ContentError> {
    let index = Index {
        schema_version: 2,
        media_type: "application/vnd.oci.image.index.v1+json",
        manifests: entries,
    };
    // Serialising plain structs of strings and numbers cannot fail.
    let json = serde_json::to_vec_pretty(&index).unwrap_or_default();
    let target = root.join("index.json");
    if fs::read(&target).is_ok_and(|old| old == json) {
        return Ok(());
    }
    let tmp = root.join(".index.json.tmp");
    fs::write(&tmp, &json).map_err(ContentError::io("write", &tmp))?;
    fs::rename(&tmp, &target).map_err(ContentError::io("rename", &target))
}

/// Write to a temporary file, sync it, rename it over `name`, sync the directory.
fn write_atomic(dir: &Path, name: &str, data: &[u8]) -> Result<(), ContentError> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let target = dir.join(name);
    let mut f = fs::File::create(&tmp).map_err(ContentError::io("create", &tmp))?;
    f.write_all(data).map_err(ContentError::io("write", &tmp))?;
    f.sync_all().map_err(ContentError::io("sync", &tmp))?;
    fs::rename(&tmp, &target).map_err(ContentError::io("rename", &target))?;
    sync_dir(dir)
}

/// fsync a directory so a rename in it survives a crash.
pub(super) fn sync_dir(dir: &Path) -> Result<(), ContentError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(ContentError::io("sync directory", dir))
}
