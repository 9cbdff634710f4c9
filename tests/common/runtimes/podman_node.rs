//! A node with imaged keeping a containers-storage store and a real podman 4.3 reading it, on one test
//! registry; and what the podman tests need to know of an image (containers/storage's ids and sizes).

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};

use tempfile::TempDir;

use crate::common::daemon::{Daemon, DaemonOptions};
use crate::common::images::busybox::busybox_image;
use crate::common::images::image::{BuiltImage, Compression, Entry, Layer, MediaStyle};
use crate::common::registry::push::push_image;
use crate::common::registry::{RegistryOptions, TestRegistry, write_hosts_toml};
use crate::common::runtimes::podman::Podman;

/// imaged with a containers-storage store, podman reading it, one registry.
pub struct Node {
    /// Dropped first: its containers sit on imaged's layers.
    pub podman: Podman,
    pub imaged: Daemon,
    pub registry: TestRegistry,
    /// The containers-storage store.
    pub store: TempDir,
    pub _hosts: TempDir,
}

impl Node {
    /// Starts the registry and imaged (CRI-O's image id form, `extra` appended to its config).
    pub async fn start(extra: &str) -> Node {
        let registry = TestRegistry::start(RegistryOptions::default()).await;
        let hosts = TempDir::new().unwrap();
        write_hosts_toml(hosts.path(), &registry.addr(), &registry.url());
        let store = tempfile::Builder::new().prefix("imaged-cs-").tempdir().unwrap();
        let podman = Podman::new(store.path());
        let config = format!(
            "image_id_format = \"hex\"\n[pull]\nbackoff_initial = \"0s\"\n[containers_storage]\nroot = \"{}\"\n\
             primary_roots = [\"{}\"]\n{extra}",
            store.path().display(),
            podman.graph_root().display()
        );
        let imaged = Daemon::start(DaemonOptions {
            hosts_dir: Some(hosts.path().to_path_buf()),
            config: Some(config),
            ..Default::default()
        })
        .await;
        Node {
            podman,
            imaged,
            registry,
            store,
            _hosts: hosts,
        }
    }

    pub async fn push(&self, repo: &str, image: &BuiltImage) {
        push_image(&self.registry.addr(), repo, "v1", image, None).await;
    }

    /// PullImage of `repo:v1` through imaged; returns the image ref.
    pub async fn pull(&self, repo: &str) -> String {
        let image = self.registry.image_ref(repo, "v1");
        let mut c = self.imaged.client().await;
        crate::common::daemon::pull(&mut c, &image, None)
            .await
            .unwrap_or_else(|e| panic!("PullImage {image}: {e}; imaged log:\n{}", self.imaged.log()))
    }

    pub async fn remove(&self, name: &str) {
        let mut c = self.imaged.client().await;
        crate::common::daemon::remove(&mut c, name).await.unwrap();
    }

    /// The ids of the images podman lists, in its order.
    pub async fn image_ids(&self) -> Vec<String> {
        let images = self.podman.images().await;
        images
            .iter()
            .map(|i| i["Id"].as_str().expect("podman image id").to_string())
            .collect()
    }

    /// Runs imaged's garbage collection now; returns the ids it removed.
    pub async fn gc(&self) -> Vec<String> {
        crate::common::daemon::garbage_collect(&self.imaged.socket, false).await
    }

    /// The chain-id directories of imaged's layer store.
    pub fn layer_dirs(&self) -> BTreeSet<String> {
        std::fs::read_dir(self.imaged.root.join("snapshots"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.len() == 64)
            .collect()
    }

    /// The layer ids `layers.json` lists.
    pub fn listed_layers(&self) -> BTreeSet<String> {
        let data = std::fs::read(self.store.path().join("overlay-layers/layers.json")).unwrap();
        let layers: Vec<serde_json::Value> = serde_json::from_slice(&data).unwrap();
        layers.iter().map(|l| l["id"].as_str().unwrap().to_string()).collect()
    }

    /// The image ids `images.json` lists.
    pub fn listed_images(&self) -> BTreeSet<String> {
        let data = std::fs::read(self.store.path().join("overlay-images/images.json")).unwrap();
        let images: Vec<serde_json::Value> = serde_json::from_slice(&data).unwrap();
        images.iter().map(|i| i["id"].as_str().unwrap().to_string()).collect()
    }

    /// Holds the store's `images.lock` for writing, as a runtime writing it would: imaged's next update
    /// of `images.json` waits for it. Released when the file is dropped.
    pub fn hold_images_lock(&self) -> std::fs::File {
        let f = std::fs::File::options()
            .read(true)
            .write(true)
            .open(self.store.path().join("overlay-images/images.lock"))
            .unwrap();
        rustix::fs::fcntl_lock(&f, rustix::fs::FlockOperation::LockExclusive).unwrap();
        f
    }

    /// Waits (up to a minute) until imaged's ImageStatus of `name` is `present` or not.
    pub async fn wait_status(&self, name: &str, present: bool) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let mut c = self.imaged.client().await;
        while crate::common::daemon::status(&mut c, name).await.is_some() != present {
            assert!(
                std::time::Instant::now() < deadline,
                "ImageStatus({name}) never became {present}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// `imaged fsck` with this node's config (the daemon must be stopped).
    pub fn fsck(&self) -> String {
        let config = self.imaged.dir().join("config.toml");
        let root = self.imaged.root.as_os_str();
        let out = crate::common::images::rootfs::imaged(&[
            "fsck".as_ref(),
            "--root".as_ref(),
            root,
            "--config".as_ref(),
            config.as_os_str(),
        ]);
        let report = format!("{}{}", out.stdout, out.stderr);
        assert!(out.ok && report.contains("\nok"), "fsck: {report}");
        report
    }
}

/// busybox + `/etc/marker`, cmd `cat /etc/marker` (the containerd tests' marker image too).
pub use crate::common::images::busybox::app_image;

/// The size of a layer's uncompressed tar.
pub fn tar_len(layer: &Layer) -> u64 {
    let mut tar = Vec::new();
    if layer.media_type.ends_with("gzip") {
        flate2::read::GzDecoder::new(&layer.blob[..])
            .read_to_end(&mut tar)
            .unwrap();
    } else if layer.media_type.ends_with("zstd") {
        tar = zstd::decode_all(&layer.blob[..]).unwrap();
    } else {
        tar = layer.blob.clone();
    }
    tar.len() as u64
}

/// The size containers/storage reports for an image: its layers' tars, its config and its manifest
/// (kept twice: under its digest and as `manifest`).
pub fn cs_size(image: &BuiltImage) -> u64 {
    image.layers.iter().map(tar_len).sum::<u64>() + image.config.len() as u64 + 2 * image.manifest.len() as u64
}

/// containers/image's layer ids for `image`'s layers (what imaged's store names them).
pub fn layer_ids(image: &BuiltImage) -> Vec<String> {
    imaged::bridge::containers_storage::layout::layer_ids(image.layers.iter().map(|l| l.diff_id.parse().unwrap()))
}

pub fn chain_ids(image: &BuiltImage) -> Vec<String> {
    imaged::metadata::chain_ids(image.layers.iter().map(|l| l.diff_id.parse().unwrap()))
        .iter()
        .map(|c| c.hex())
        .collect()
}

pub fn hex(digest: &str) -> String {
    digest.trim_start_matches("sha256:").to_string()
}
