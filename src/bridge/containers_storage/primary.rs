//! What the runtimes' own (primary) containers/storage stores build on imaged's layers.
//!
//! A container made from an image of imaged's store gets a layer in the runtime's primary store whose
//! `overlay/<id>/lower` file lists the link names (`l/<name>`) of every layer below it, imaged's
//! included: the overlay driver mounts those. An image a runtime pulled itself may also reuse imaged's
//! layers by id (containers/image finds a layer with the id it would create), as its `layer` in
//! `overlay-images/images.json`. Both are read under the primary store's `layers.lock` (shared), which
//! the bridge holds until its own `layers.json` no longer lists what it removes: containers/storage
//! creates a layer on a parent from another store while holding its primary layer lock for writing and
//! the other store's for reading, so no container can appear on a layer between this read and its
//! removal from imaged's store.

use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::lockfile::{LockFile, Locked, Mode};

/// The primary stores' layer locks, held shared.
#[derive(Debug, Default)]
pub struct PrimaryLocks(#[allow(dead_code)] Vec<Locked>);

/// What the primary stores use of imaged's store.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Uses {
    /// Link names listed in their layers' `lower` files.
    pub links: HashSet<String>,
    /// Layer ids their images name as top layers.
    pub layer_ids: HashSet<String>,
}

/// One image of a primary `images.json`: only what names layers.
#[derive(Deserialize)]
struct PrimaryImage {
    #[serde(default)]
    layer: String,
    #[serde(rename = "mapped-layers", default)]
    mapped_layers: Vec<String>,
}

/// Locks each primary store's layers (shared) and reads what they use. A root without a store (no
/// `overlay-layers/layers.lock`) uses nothing.
pub fn read(roots: &[PathBuf], timeout: Duration) -> io::Result<(PrimaryLocks, Uses)> {
    let mut locks = Vec::new();
    let mut uses = Uses::default();
    for root in roots {
        let path = root.join("overlay-layers").join("layers.lock");
        let Some(lock) = LockFile::open_ro(&path)? else {
            continue;
        };
        locks.push(lock.lock(Mode::Shared, timeout).map_err(|e| context(&path, e))?);
        read_lowers(&root.join("overlay"), &mut uses.links)?;
        read_images(&root.join("overlay-images"), timeout, &mut uses.layer_ids)?;
    }
    Ok((PrimaryLocks(locks), uses))
}

/// Adds the link names in every `overlay/<id>/lower` under `dir`.
fn read_lowers(dir: &Path, links: &mut HashSet<String>) -> io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(context(dir, e)),
    };
    for entry in entries {
        let path = entry.map_err(|e| context(dir, e))?.path().join("lower");
        match std::fs::read_to_string(&path) {
            Ok(lower) => links.extend(lower_links(&lower)),
            // Base layers and `l/` itself have no lower file; a layer being deleted may vanish.
            Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) => {}
            Err(e) => return Err(context(&path, e)),
        }
    }
    Ok(())
}

/// The link names of a `lower` file (`l/AAA:l/BBB`).
pub fn lower_links(lower: &str) -> impl Iterator<Item = String> + '_ {
    lower
        .trim()
        .split(':')
        .filter_map(|l| l.strip_prefix("l/"))
        .filter(|n| !n.is_empty())
        .map(str::to_string)
}

/// Adds the top layers (and their id-mapped copies) of the images in `dir/images.json`, read under
/// `images.lock`.
fn read_images(dir: &Path, timeout: Duration, ids: &mut HashSet<String>) -> io::Result<()> {
    let lock_path = dir.join("images.lock");
    let Some(lock) = LockFile::open_ro(&lock_path)? else {
        return Ok(());
    };
    let _held = lock.lock(Mode::Shared, timeout).map_err(|e| context(&lock_path, e))?;
    let path = dir.join("images.json");
    let data = match std::fs::read(&path) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(context(&path, e)),
    };
    if data.is_empty() {
        return Ok(());
    }
    let images: Vec<PrimaryImage> =
        serde_json::from_slice(&data).map_err(|e| context(&path, io::Error::new(io::ErrorKind::InvalidData, e)))?;
    for image in images {
        ids.extend(image.mapped_layers);
        if !image.layer.is_empty() {
            ids.insert(image.layer);
        }
    }
    Ok(())
}

fn context(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_lower_chains_and_top_layers_of_a_primary_store() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("storage");
        let absent = dir.path().join("no-store");
        assert_eq!(
            read(std::slice::from_ref(&absent), Duration::from_secs(1)).unwrap().1,
            Uses::default()
        );

        std::fs::create_dir_all(root.join("overlay-layers")).unwrap();
        std::fs::write(root.join("overlay-layers/layers.lock"), b"").unwrap();
        for (id, lower) in [
            ("c1", Some("l/abcdefghij:l/ABCDEFGHIJKLMNOPQRSTUVWXYZ")),
            ("base", None),
        ] {
            std::fs::create_dir_all(root.join("overlay").join(id).join("diff")).unwrap();
            if let Some(l) = lower {
                std::fs::write(root.join("overlay").join(id).join("lower"), l).unwrap();
            }
        }
        std::fs::create_dir_all(root.join("overlay/l")).unwrap();
        std::os::unix::fs::symlink("../base/diff", root.join("overlay/l/XYZ")).unwrap();
        std::fs::create_dir_all(root.join("overlay-images")).unwrap();
        std::fs::write(root.join("overlay-images/images.lock"), b"").unwrap();
        std::fs::write(
            root.join("overlay-images/images.json"),
            br#"[{"id":"i1","layer":"top1","mapped-layers":["m1"]},{"id":"i2"}]"#,
        )
        .unwrap();
        let (locks, uses) = read(&[absent, root], Duration::from_secs(1)).unwrap();
        assert_eq!(locks.0.len(), 1);
        assert_eq!(
            uses.links,
            ["abcdefghij", "ABCDEFGHIJKLMNOPQRSTUVWXYZ"].map(String::from).into()
        );
        assert_eq!(uses.layer_ids, ["top1", "m1"].map(String::from).into());
    }
}
