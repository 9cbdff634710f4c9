//! The store's files on disk, in the overlay driver's layout:
//!
//! ```text
//! <root>/overlay-layers/layers.json, layers.lock
//! <root>/overlay/<layer id>/diff       → imaged's snapshot directory (a symlink: no layer data is copied)
//! <root>/overlay/<layer id>/link       the layer's link name
//! <root>/overlay/<layer id>/lower      l/<name>:l/<name>… of the layers below, nearest first
//! <root>/overlay/l/<name>              → ../<layer id>/diff
//! <root>/overlay-images/images.json, images.lock
//! <root>/overlay-images/<image id>/<big data file>   config and manifests, copied (they are small)
//! ```
//!
//! Every file and directory is written aside (`.tmp-…`) and renamed into place, so a reader (or a crash)
//! sees the old or the new, never a part. The JSON files are replaced under their lock file's exclusive
//! lock, and the lock's last-writer token is renewed so readers reload.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use super::layout::{ImageJson, LayerJson, PlannedLayer, big_data_file_name};
use super::lockfile::{LockFile, Mode};

/// Prefix of anything being written or deleted; leftovers are removed by a full sync.
pub const TMP_PREFIX: &str = ".tmp-";

/// The store's directory.
#[derive(Debug, Clone)]
pub struct Files {
    root: PathBuf,
    /// How long to wait for readers to let go of a lock.
    pub lock_timeout: Duration,
}

impl Files {
    /// The store at `root` (absolute).
    pub fn new(root: PathBuf, lock_timeout: Duration) -> Files {
        Files { root, lock_timeout }
    }

    /// `overlay/`.
    pub fn overlay(&self) -> PathBuf {
        self.root.join("overlay")
    }

    /// `overlay/l/`.
    pub fn links(&self) -> PathBuf {
        self.overlay().join("l")
    }

    /// `overlay-layers/`.
    pub fn layers_dir(&self) -> PathBuf {
        self.root.join("overlay-layers")
    }

    /// `overlay-images/`.
    pub fn images_dir(&self) -> PathBuf {
        self.root.join("overlay-images")
    }

    /// Creates the directories and lock files readers expect (they create missing lock files themselves,
    /// but only where they may write).
    pub fn create(&self) -> io::Result<()> {
        for dir in [self.links(), self.layers_dir(), self.images_dir()] {
            fs::create_dir_all(&dir).map_err(|e| context(&dir, e))?;
        }
        LockFile::open_rw(&self.layers_dir().join("layers.lock"))?;
        LockFile::open_rw(&self.images_dir().join("images.lock"))?;
        Ok(())
    }

    /// The entries of `layers.json` (none if absent or unreadable: it is rewritten).
    pub fn read_layers(&self) -> Vec<LayerJson> {
        read_json(&self.layers_dir().join("layers.json"))
    }

    /// The entries of `images.json` (none if absent or unreadable: it is rewritten).
    pub fn read_images(&self) -> Vec<ImageJson> {
        read_json(&self.images_dir().join("images.json"))
    }

    /// Replaces `layers.json` under `layers.lock`.
    pub fn write_layers(&self, layers: &[&LayerJson]) -> io::Result<()> {
        self.write_locked(&self.layers_dir(), "layers", layers)
    }

    /// Replaces `images.json` under `images.lock`.
    pub fn write_images(&self, images: &[&ImageJson]) -> io::Result<()> {
        self.write_locked(&self.images_dir(), "images", images)
    }

    fn write_locked<T: Serialize>(&self, dir: &Path, name: &str, entries: &[&T]) -> io::Result<()> {
        let data = serde_json::to_vec(entries).map_err(io::Error::other)?;
        let lock_path = dir.join(format!("{name}.lock"));
        let held = LockFile::open_rw(&lock_path)?
            .lock(Mode::Exclusive, self.lock_timeout)
            .map_err(|e| context(&lock_path, e))?;
        write_atomically(&dir.join(format!("{name}.json")), &data)?;
        held.touch().map_err(|e| context(&lock_path, e))
    }

    /// Whether the directory of `layer` is as planned, pointing its `diff` at `fs_dir`.
    pub fn layer_dir_is(&self, layer: &PlannedLayer, fs_dir: &Path) -> bool {
        let dir = self.overlay().join(&layer.json.id);
        fs::read_link(dir.join("diff")).is_ok_and(|t| t == fs_dir)
            && fs::read_to_string(dir.join("link")).is_ok_and(|l| l == layer.link)
            && fs::read_to_string(dir.join("lower")).unwrap_or_default() == lower_file(&layer.lower)
            && fs::read_link(self.links().join(&layer.link)).is_ok_and(|t| t == link_target(&layer.json.id))
    }

    /// Makes the directory of `layer` (and its link) as planned, its `diff` pointing at `fs_dir`.
    pub fn write_layer_dir(&self, layer: &PlannedLayer, fs_dir: &Path) -> io::Result<()> {
        let id = &layer.json.id;
        let dir = self.overlay().join(id);
        let tmp = self.overlay().join(format!("{TMP_PREFIX}{id}"));
        remove_any(&tmp)?;
        fs::create_dir(&tmp).map_err(|e| context(&tmp, e))?;
        std::os::unix::fs::symlink(fs_dir, tmp.join("diff")).map_err(|e| context(&tmp, e))?;
        fs::write(tmp.join("link"), &layer.link).map_err(|e| context(&tmp, e))?;
        if !layer.lower.is_empty() {
            fs::write(tmp.join("lower"), lower_file(&layer.lower)).map_err(|e| context(&tmp, e))?;
        }
        replace_dir(&tmp, &dir)?;
        let link = self.links().join(&layer.link);
        let tmp_link = self.links().join(format!("{TMP_PREFIX}{}", layer.link));
        remove_any(&tmp_link)?;
        std::os::unix::fs::symlink(link_target(id), &tmp_link).map_err(|e| context(&tmp_link, e))?;
        fs::rename(&tmp_link, &link).map_err(|e| context(&link, e))
    }

    /// Removes the directory of layer `id` and its link `link`.
    pub fn remove_layer_dir(&self, id: &str, link: &str) -> io::Result<()> {
        let l = self.links().join(link);
        if fs::read_link(&l).is_ok_and(|t| t == link_target(id)) {
            remove_any(&l)?;
        }
        self.remove_aside(&self.overlay(), id)
    }

    /// Whether the big data of image `id` holds a file of each size in `items` (name, size).
    pub fn big_data_is(&self, id: &str, items: &[(String, u64)]) -> bool {
        let dir = self.images_dir().join(id);
        items.iter().all(|(key, size)| {
            fs::metadata(dir.join(big_data_file_name(key))).is_ok_and(|m| m.is_file() && m.len() == *size)
        })
    }

    /// Writes the big data of image `id`: each key with its bytes.
    pub fn write_big_data(&self, id: &str, items: &[(String, Vec<u8>)]) -> io::Result<()> {
        let tmp = self.images_dir().join(format!("{TMP_PREFIX}{id}"));
        remove_any(&tmp)?;
        fs::create_dir(&tmp).map_err(|e| context(&tmp, e))?;
        for (key, data) in items {
            let path = tmp.join(big_data_file_name(key));
            let mut f = fs::File::create(&path).map_err(|e| context(&path, e))?;
            f.write_all(data)
                .and_then(|()| f.sync_all())
                .map_err(|e| context(&path, e))?;
        }
        replace_dir(&tmp, &self.images_dir().join(id))
    }

    /// Removes the big data of image `id`.
    pub fn remove_big_data(&self, id: &str) -> io::Result<()> {
        self.remove_aside(&self.images_dir(), id)
    }

    /// Names of the entries of `dir` (not `l`, the lock and JSON files, nor anything being written).
    pub fn entries(dir: &Path) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        for e in fs::read_dir(dir).map_err(|e| context(dir, e))? {
            let name = e
                .map_err(|e| context(dir, e))?
                .file_name()
                .to_string_lossy()
                .into_owned();
            if name != "l" && !name.ends_with(".json") && !name.ends_with(".lock") {
                out.push(name);
            }
        }
        Ok(out)
    }

    /// Renames `dir/name` aside, then removes it: a crash leaves a `.tmp-` leftover, never half of it.
    fn remove_aside(&self, dir: &Path, name: &str) -> io::Result<()> {
        let path = dir.join(name);
        let tmp = dir.join(format!("{TMP_PREFIX}rm-{name}"));
        match fs::rename(&path, &tmp) {
            Ok(()) => remove_any(&tmp),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(context(&path, e)),
        }
    }
}

/// The `lower` file of a layer with these layers below.
pub fn lower_file(lower: &[String]) -> String {
    lower.iter().map(|l| format!("l/{l}")).collect::<Vec<_>>().join(":")
}

/// Where `l/<name>` points for layer `id`.
fn link_target(id: &str) -> PathBuf {
    Path::new("..").join(id).join("diff")
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Vec<T> {
    match fs::read(path) {
        Ok(data) if !data.is_empty() => serde_json::from_slice(&data).unwrap_or_else(|e| {
            tracing::warn!(path = %path.display(), error = %e, "unreadable containers-storage file; it is rewritten");
            Vec::new()
        }),
        _ => Vec::new(),
    }
}

/// Writes `data` to `path` through a synced temporary file renamed over it.
fn write_atomically(path: &Path, data: &[u8]) -> io::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!("{TMP_PREFIX}{name}"));
    let mut f = fs::File::create(&tmp).map_err(|e| context(&tmp, e))?;
    f.write_all(data)
        .and_then(|()| f.sync_all())
        .map_err(|e| context(&tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| context(path, e))?;
    if let Some(dir) = path.parent() {
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| context(dir, e))?;
    }
    Ok(())
}

/// Moves the complete directory `tmp` to `dir`, replacing whatever is there.
fn replace_dir(tmp: &Path, dir: &Path) -> io::Result<()> {
    match fs::rename(tmp, dir) {
        Ok(()) => Ok(()),
        // A directory is there (a damaged one being repaired): move it aside first.
        Err(_) if dir.exists() => {
            let name = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let old = dir.with_file_name(format!("{TMP_PREFIX}old-{name}"));
            remove_any(&old)?;
            fs::rename(dir, &old).map_err(|e| context(dir, e))?;
            fs::rename(tmp, dir).map_err(|e| context(dir, e))?;
            remove_any(&old)
        }
        Err(e) => Err(context(dir, e)),
    }
}

/// Removes a file, symlink or tree; absent is fine.
pub fn remove_any(path: &Path) -> io::Result<()> {
    let r = match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    };
    r.map_err(|e| context(path, e))
}

fn context(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}
