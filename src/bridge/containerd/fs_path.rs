//! The filesystem containerd's CRI reports for imaged's snapshotter.
//!
//! containerd's CRI names one directory as the filesystem of images and of containers' writable layers
//! (ImageFsInfo, ContainerStats); kubelet `stat`s it for its summary API and eviction, and a missing one
//! makes every summary fail. containerd takes the proxy plugin's `exports.root` (1.7.23+, 2.x, written by
//! `imaged containerd-config`) and otherwise `<containerd root>/io.containerd.snapshotter.v1.<name>`, which
//! nobody creates for a proxy plugin. So when containerd's introspection shows no exported root for
//! imaged's plugin, the bridge makes that path a symbolic link to imaged's store (`stat` follows it):
//! containerd's root is the parent of its content plugin's exported root, the one root every release
//! exports. An existing file or directory there is left alone.

use std::path::{Path, PathBuf};

use containerd_client::services::v1 as ctd;

use super::{BridgeError, Conn};

/// containerd's snapshot plugin type, the prefix of its plugins' directories.
const SNAPSHOT_PLUGIN: &str = "io.containerd.snapshotter.v1";

/// What [`ensure`] found or did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FsPath {
    /// containerd reads the proxy plugin's exported root: nothing to make.
    Exported(PathBuf),
    /// The path containerd reports already exists.
    Present(PathBuf),
    /// Made: a link from the path containerd reports to imaged's store.
    Linked(PathBuf),
}

/// Makes sure the path containerd's CRI reports for snapshotter `name` exists and lies on `store`'s
/// filesystem (see the module doc).
pub async fn ensure(conn: &Conn, name: &str, store: &Path) -> Result<FsPath, BridgeError> {
    if let Some(root) = exported_root(conn, SNAPSHOT_PLUGIN, name).await? {
        return Ok(FsPath::Exported(PathBuf::from(root)));
    }
    let content = exported_root(conn, "io.containerd.content.v1", "content")
        .await?
        .ok_or_else(|| {
            BridgeError::other(
                conn.address(),
                "find containerd's root",
                "its content plugin exports no root; create <containerd root>/io.containerd.snapshotter.v1.<name> \
                 as a link to imaged's store by hand",
            )
        })?;
    let Some(root) = Path::new(&content).parent() else {
        return Err(BridgeError::other(
            conn.address(),
            "find containerd's root",
            &format!("its content root {content:?} has no parent"),
        ));
    };
    let path = root.join(format!("{SNAPSHOT_PLUGIN}.{name}"));
    if std::fs::symlink_metadata(&path).is_ok() {
        return Ok(FsPath::Present(path));
    }
    match std::os::unix::fs::symlink(store, &path) {
        Ok(()) => Ok(FsPath::Linked(path)),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(FsPath::Present(path)),
        Err(e) => Err(BridgeError::other(
            conn.address(),
            "link the snapshotter's filesystem path",
            &format!(
                "{} -> {}: {e}; without it containerd's stats of writable layers fail (kubelet's summary too)",
                path.display(),
                store.display()
            ),
        )),
    }
}

/// The `root` that plugin `r#type`/`id` exports, if it is loaded and exports one.
async fn exported_root(conn: &Conn, r#type: &str, id: &str) -> Result<Option<String>, BridgeError> {
    let req = ctd::PluginsRequest {
        filters: vec![format!("type=={type},id=={id}")],
    };
    let plugins = conn
        .introspection()
        .plugins(conn.req(req, None))
        .await
        .map_err(|s| BridgeError::rpc(conn.address(), "list containerd's plugins", &s))?
        .into_inner()
        .plugins;
    Ok(plugins.into_iter().find_map(|p| p.exports.get("root").cloned()))
}
