//! Implicit directories: a layer that only implies a directory (creates a file under it without an entry
//! for it) takes the directory's attributes from the layers below, as containerd's applier does.

use std::fs;

use super::{LayerError, LayerStore, err};
use crate::digest::Digest;

impl LayerStore {
    /// Gives the implicit directories of each layer of `chains` (base first) the mode, owner and time of
    /// the same directory in the nearest layer below that has it, as containerd's applier does when it
    /// creates a missing parent. Layers are applied concurrently and independently, so this runs once the
    /// whole chain exists; it is idempotent, and a chain id fixes the layers below, so every image sharing
    /// a snapshot computes the same result.
    pub fn inherit_implicit_dirs(&self, chains: &[Digest]) -> Result<(), LayerError> {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        for (i, chain) in chains.iter().enumerate().skip(1) {
            let Some(meta) = self.meta(chain) else { continue };
            for rel in &meta.implicit_dirs {
                let below = chains[..i].iter().rev().find_map(|c| {
                    let m = fs::symlink_metadata(self.fs_dir(c).join(rel)).ok()?;
                    // A layer that deletes or replaces the path ends the search: nothing below shows.
                    Some(m)
                });
                let Some(below) = below.filter(|m| m.is_dir()) else {
                    continue;
                };
                let path = self.fs_dir(chain).join(rel);
                let e = |op| err(op, &path);
                fs::set_permissions(&path, fs::Permissions::from_mode(below.mode() & 0o7777)).map_err(e("chmod"))?;
                if rustix::process::geteuid().is_root() {
                    rustix::fs::chownat(
                        rustix::fs::CWD,
                        &path,
                        Some(rustix::fs::Uid::from_raw(below.uid())),
                        Some(rustix::fs::Gid::from_raw(below.gid())),
                        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
                    )
                    .map_err(|x| err("chown", &path)(x.into()))?;
                    // chown clears set-id bits: set the mode again.
                    fs::set_permissions(&path, fs::Permissions::from_mode(below.mode() & 0o7777))
                        .map_err(e("chmod"))?;
                }
                let t = rustix::fs::Timespec {
                    tv_sec: below.mtime(),
                    tv_nsec: below.mtime_nsec(),
                };
                let times = rustix::fs::Timestamps {
                    last_access: t,
                    last_modification: t,
                };
                rustix::fs::utimensat(rustix::fs::CWD, &path, &times, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|x| err("set the time of", &path)(x.into()))?;
            }
        }
        Ok(())
    }
}
