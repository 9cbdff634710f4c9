//! The composition root: the one place that turns a configuration into a running image service, with the
//! bridges the configuration turns on. `imaged serve` and `imaged fsck` both open the daemon here, so fsck
//! checks exactly what a start would have opened.
//!
//! The order matters: the stores first (the metadata database's lock stops a second daemon on the same
//! root before anything is touched), then the bridges over them, then the service that announces to them.
//! The containers-storage bridge leases the layers runtimes' containers sit on when it opens, so it is open
//! before the start's sweep ([`ImageService::recover`]) can run.

use std::sync::Arc;

use crate::bridge::containerd::ContainerdBridge;
use crate::bridge::containers_storage::ContainersStorageBridge;
use crate::bridge::cri_runtime::CriRuntime;
use crate::config::Config;
use crate::events::Bridge;
use crate::service::{ImageService, Opened, ServiceError};

/// Opens the image service under `config.root` with its bridges. The sweep of unreferenced content
/// follows: [`ImageService::recover`]; the bridges' background work starts with
/// [`ImageService::start_bridges`].
pub fn open(config: &Config) -> Result<ImageService, ServiceError> {
    let opened = ImageService::open_stores(config)?;
    let bridges = bridges(config, &opened)?;
    ImageService::open(config, opened, bridges)
}

/// The bridges the configuration turns on: containerd (`[containerd] address`), containers-storage
/// (`[containers_storage] root`), and the CRI runtime GC asks (`[gc] runtime_endpoint`).
fn bridges(config: &Config, opened: &Opened) -> Result<Vec<Arc<dyn Bridge>>, ServiceError> {
    let mut bridges: Vec<Arc<dyn Bridge>> = Vec::new();
    if let Some(c) = &config.containerd {
        let root = config.root.clone();
        bridges.push(ContainerdBridge::new(
            c.clone(),
            opened.stores.clone(),
            root,
            opened.pinned.clone(),
        ));
    }
    if let Some(c) = &config.containers_storage {
        let bridge = ContainersStorageBridge::open(c, opened.stores.clone()).map_err(|e| ServiceError::Open {
            path: config.root.display().to_string(),
            detail: e.to_string(),
        })?;
        bridges.push(bridge);
    }
    if let Some(endpoint) = &config.gc.runtime_endpoint {
        bridges.push(Arc::new(CriRuntime::new(endpoint, opened.stores.metadata.clone())));
    }
    Ok(bridges)
}
