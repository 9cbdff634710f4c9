//! Issue 14's acceptance: podman (Debian's 4.3, with its own root, the overlay driver and imaged's
//! containers-storage store as an additional image store) lists, inspects and runs the images imaged
//! pulled, on imaged's own layer directories; removal, GC, concurrency and crashes keep both sides in
//! agreement. CRI-O reads the same store through the same containers/storage code; it is not packaged
//! here, so podman is the reader.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeSet, HashMap};
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::busybox::{busybox_image, changes_layers};
use common::containerd::inside::{PROBE_SCRIPT, comparable, parse_probe};
use common::containerd::pods::PROBE_BUSYBOX;
use common::daemon::{Daemon, DaemonOptions};
use common::image::{BuiltImage, Compression, Entry, Layer, MediaStyle};
use common::podman::{Podman, container_args};
use common::push::push_image;
use common::registry::{RegistryOptions, TestRegistry, write_hosts_toml};
use common::rootfs::umoci_unpack;
use common::tree::{self, walk};
use tempfile::TempDir;

/// imaged with a containers-storage store, podman reading it, one registry.
struct Node {
    /// Dropped first: its containers sit on imaged's layers.
    podman: Podman,
    imaged: Daemon,
    registry: TestRegistry,
    /// The containers-storage store.
    store: TempDir,
    _hosts: TempDir,
}

impl Node {
    /// Starts the registry and imaged (CRI-O's image id form, `extra` appended to its config).
    async fn start(extra: &str) -> Node {
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

    async fn push(&self, repo: &str, image: &BuiltImage) {
        push_image(&self.registry.addr(), repo, "v1", image, None).await;
    }

    /// PullImage of `repo:v1` through imaged; returns the image ref.
    async fn pull(&self, repo: &str) -> String {
        let image = self.registry.image_ref(repo, "v1");
        let mut c = self.imaged.client().await;
        common::daemon::pull(&mut c, &image, None)
            .await
            .unwrap_or_else(|e| panic!("PullImage {image}: {e}; imaged log:\n{}", self.imaged.log()))
    }

    async fn remove(&self, name: &str) {
        let mut c = self.imaged.client().await;
        common::daemon::remove(&mut c, name).await.unwrap();
    }

    /// Runs imaged's garbage collection now; returns the ids it removed.
    async fn gc(&self) -> Vec<String> {
        let channel = imaged::uds::channel(&self.imaged.socket).await.unwrap();
        let mut gc = imaged::proto::imaged::v1::images_client::ImagesClient::new(channel);
        let out = gc
            .garbage_collect(imaged::proto::imaged::v1::GarbageCollectRequest { dry_run: false })
            .await
            .unwrap()
            .into_inner();
        out.removed.into_iter().map(|r| r.id).collect()
    }

    /// The chain-id directories of imaged's layer store.
    fn layer_dirs(&self) -> BTreeSet<String> {
        std::fs::read_dir(self.imaged.root.join("snapshots"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.len() == 64)
            .collect()
    }

    /// The layer ids `layers.json` lists.
    fn listed_layers(&self) -> BTreeSet<String> {
        let data = std::fs::read(self.store.path().join("overlay-layers/layers.json")).unwrap();
        let layers: Vec<serde_json::Value> = serde_json::from_slice(&data).unwrap();
        layers.iter().map(|l| l["id"].as_str().unwrap().to_string()).collect()
    }

    /// `imaged fsck` with this node's config (the daemon must be stopped).
    fn fsck(&self) -> String {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_imaged"))
            .args(["fsck", "--root"])
            .arg(&self.imaged.root)
            .arg("--config")
            .arg(self.imaged.dir().join("config.toml"))
            .output()
            .unwrap();
        let report = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success() && report.contains("\nok"), "fsck: {report}");
        report
    }
}

/// busybox + `/etc/marker`, cmd `cat /etc/marker`.
fn app_image(marker: &str) -> BuiltImage {
    let layer = Layer::build(
        &[Entry::dir("etc"), Entry::file("etc/marker", marker)],
        Compression::Gzip,
        MediaStyle::Oci,
    );
    busybox_image().layer(layer).cmd(&["/bin/cat", "/etc/marker"]).build()
}

/// The size of a layer's uncompressed tar.
fn tar_len(layer: &Layer) -> u64 {
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
fn cs_size(image: &BuiltImage) -> u64 {
    image.layers.iter().map(tar_len).sum::<u64>() + image.config.len() as u64 + 2 * image.manifest.len() as u64
}

/// containers/image's layer ids for `image`'s layers (what imaged's store names them).
fn layer_ids(image: &BuiltImage) -> Vec<String> {
    imaged::bridge::containers_storage::layout::layer_ids(image.layers.iter().map(|l| l.diff_id.parse().unwrap()))
}

fn chain_ids(image: &BuiltImage) -> Vec<String> {
    imaged::metadata::chain_ids(image.layers.iter().map(|l| l.diff_id.parse().unwrap()))
        .iter()
        .map(|c| c.hex())
        .collect()
}

fn hex(digest: &str) -> String {
    digest.trim_start_matches("sha256:").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn podman_lists_inspects_and_runs_imaged_images_on_imaged_layers_and_downloads_nothing() {
    let node = Node::start("").await;
    let app = app_image("hello from an imaged image\n");
    let changes = changes_layers()
        .into_iter()
        .fold(busybox_image(), |b, l| b.layer(l))
        .build();
    node.push("app", &app).await;
    node.push("changes", &changes).await;
    let app_id = node.pull("app").await;
    let changes_id = node.pull("changes").await;

    // CRI-O's image id form: bare hex, in PullImage, ImageStatus and ListImages alike.
    assert_eq!(app_id, hex(&app.config_digest));
    let mut c = node.imaged.client().await;
    assert_eq!(common::daemon::status(&mut c, &app_id).await.unwrap().id, app_id);
    let listed: BTreeSet<String> = common::daemon::list(&mut c).await.into_iter().map(|i| i.id).collect();
    assert_eq!(listed, [app_id.clone(), changes_id.clone()].into());
    let requests = node.registry.requests().len();

    // podman lists both, with names, id and size.
    let images = node.podman.images().await;
    assert_eq!(images.len(), 2, "{images:#?}");
    for (repo, built, id) in [("app", &app, &app_id), ("changes", &changes, &changes_id)] {
        let name = node.registry.image_ref(repo, "v1");
        let img = images
            .iter()
            .find(|i| i["Id"] == **id)
            .unwrap_or_else(|| panic!("{id} in {images:#?}"));
        assert_eq!(img["Names"], serde_json::json!([name]), "{img:#?}");
        assert_eq!(img["Size"], cs_size(built), "{img:#?}");
        assert_eq!(img["Digest"], built.manifest_digest, "{img:#?}");
        assert_eq!(img["ReadOnly"], true);
        // inspect shows the config imaged pulled.
        let inspect = node.podman.inspect(&name).await;
        let config: serde_json::Value = serde_json::from_slice(&built.config).unwrap();
        assert_eq!(inspect["Id"], **id);
        let cmd = |v: &serde_json::Value| v.as_array().cloned().unwrap_or_default();
        assert_eq!(
            cmd(&inspect["Config"]["Cmd"]),
            cmd(&config["config"]["Cmd"]),
            "{inspect:#?}"
        );
        assert_eq!(inspect["Architecture"], config["architecture"]);
        let diff_ids: Vec<String> = built.layers.iter().map(|l| l.diff_id.clone()).collect();
        assert_eq!(inspect["RootFS"]["Layers"], serde_json::json!(diff_ids));
    }

    // podman runs them by name and by id.
    let marker = "hello from an imaged image\n";
    assert_eq!(
        node.podman.run(&node.registry.image_ref("app", "v1"), &[]).await,
        marker
    );
    assert_eq!(node.podman.run(&app_id, &["/bin/cat", "/etc/marker"]).await, marker);

    // Whiteouts, an opaque directory, hard links, symlinks: the container sees what umoci unpacks.
    let mut args = vec!["run".to_string(), "--rm".into()];
    args.extend(container_args());
    args.extend([
        "-v".into(),
        format!("{}:{PROBE_BUSYBOX}:ro", common::busybox::BUSYBOX),
        changes_id.clone(),
        PROBE_BUSYBOX.into(),
        "sh".into(),
        "-c".into(),
        PROBE_SCRIPT.into(),
    ]);
    let out = node
        .podman
        .ok(&args.iter().map(String::as_str).collect::<Vec<_>>())
        .await;
    let inside = parse_probe(&out);

    // Nothing was downloaded by podman: the registry saw no request since imaged's pulls.
    let after = node.registry.requests();
    assert_eq!(
        after.len(),
        requests,
        "podman reached the registry: {:#?}",
        &after[requests..]
    );

    let reference = umoci_unpack(&node.registry, "changes", "v1").await;
    let (mut ours, theirs) = comparable(&inside, &walk(&reference.rootfs()));
    // What podman adds to every container's writable layer when the image lacks it (libpod links
    // /etc/mtab to /proc/mounts), as runc's mount points are left out of the comparison.
    let mtab = Path::new("etc/mtab");
    if !theirs.contains_key(mtab) {
        let added = ours.remove(mtab).expect("podman adds /etc/mtab");
        assert_eq!(added.kind, tree::Kind::Symlink(PathBuf::from("/proc/mounts")));
    }
    tree::assert_same(&changes_id, "inside podman", &ours, "umoci", &theirs);

    // No layer data is copied: each listed layer's diff is imaged's layer directory (same inode).
    for built in [&app, &changes] {
        for (id, chain) in layer_ids(built).iter().zip(chain_ids(built)) {
            let diff = node.store.path().join("overlay").join(id).join("diff");
            assert!(std::fs::symlink_metadata(&diff).unwrap().file_type().is_symlink());
            let (ours, snapshot) = (
                std::fs::metadata(&diff).unwrap(),
                std::fs::metadata(node.imaged.root.join("snapshots").join(&chain).join("fs")).unwrap(),
            );
            assert_eq!((ours.dev(), ours.ino()), (snapshot.dev(), snapshot.ino()), "layer {id}");
        }
    }
}
