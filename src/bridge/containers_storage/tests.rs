//! The bridge over real stores in a temp dir, without a runtime: what the files say after each event, the
//! lock token readers reload on, layers kept for a (simulated) primary store's container, and repair at
//! open. podman reads these files for real in tests/e2e_containers_storage.rs.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::layout::{ImageJson, LayerJson, layer_ids};
use super::lockfile::tests::hold_lock_elsewhere;
use super::*;
use crate::content::ContentStore;
use crate::events::ImageEvents;
use crate::layers::LayerStore;
use crate::lease::LeaseTable;
use crate::metadata::{Descriptor, LayerRecord, MetadataStore};

struct Fixture {
    dir: tempfile::TempDir,
    stores: Stores,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let leases = LeaseTable::new();
        let stores = Stores {
            content: ContentStore::open(&dir.path().join("content"), leases.clone()).unwrap(),
            layers: LayerStore::open(&dir.path().join("snapshots"), leases.clone()).unwrap(),
            metadata: Arc::new(MetadataStore::open(&dir.path().join("metadata.redb")).unwrap()),
            leases,
        };
        Fixture { dir, stores }
    }

    fn config(&self) -> ContainersStorageConfig {
        ContainersStorageConfig {
            root: self.store(),
            primary_roots: vec![self.primary()],
        }
    }

    fn store(&self) -> PathBuf {
        self.dir.path().join("cs")
    }

    fn primary(&self) -> PathBuf {
        self.dir.path().join("primary")
    }

    fn blob(&self, media_type: &str, data: &[u8]) -> Descriptor {
        let digest = crate::digest::Digest::of(data);
        self.stores.content.write_blob(data, digest).unwrap();
        Descriptor {
            media_type: media_type.into(),
            digest,
            size: data.len() as u64,
        }
    }

    /// Records an image `name` whose layers hold the files `layers` (each layer a plain tar of one file).
    fn image(&self, name: &str, layers: &[&str]) -> Arc<ImageRecord> {
        let mut records = Vec::new();
        let mut parent = None;
        for file in layers {
            let blob = self.blob("application/vnd.oci.image.layer.v1.tar", file.as_bytes());
            let diff_id = blob.digest;
            records.push(LayerRecord { blob, diff_id });
            let chain = *crate::metadata::chain_ids(records.iter().map(|l| l.diff_id))
                .last()
                .unwrap();
            if !self.stores.layers.exists(&chain) {
                let p = self.stores.layers.prepare().unwrap();
                std::fs::write(p.fs().join(file), file).unwrap();
                self.stores
                    .layers
                    .commit(p, &chain, parent.as_ref(), true, Vec::new(), Some(file.len() as u64))
                    .unwrap();
            }
            parent = Some(chain);
        }
        let config = self.blob(
            "application/vnd.oci.image.config.v1+json",
            format!("config {name}").as_bytes(),
        );
        let manifest = self.blob(
            "application/vnd.oci.image.manifest.v1+json",
            format!("manifest {name}").as_bytes(),
        );
        let rec = ImageRecord::sample(name)
            .with_config(config)
            .with_manifest(manifest)
            .with_layers(records)
            .tagged(&[&format!("example.com/{name}:v1")]);
        self.stores.metadata.record(rec.clone()).unwrap();
        self.stores.metadata.get(&rec.id).unwrap()
    }

    fn layers(&self) -> Vec<LayerJson> {
        serde_json::from_slice(&std::fs::read(self.store().join("overlay-layers/layers.json")).unwrap()).unwrap()
    }

    fn images(&self) -> Vec<ImageJson> {
        serde_json::from_slice(&std::fs::read(self.store().join("overlay-images/images.json")).unwrap()).unwrap()
    }

    fn token(&self, file: &str) -> Vec<u8> {
        std::fs::read(self.store().join(file)).unwrap()
    }

    /// A primary store with one container layer whose lower chain lists `links`.
    fn container_on(&self, links: &[String]) {
        let p = self.primary();
        std::fs::create_dir_all(p.join("overlay-layers")).unwrap();
        std::fs::write(p.join("overlay-layers/layers.lock"), b"").unwrap();
        let dir = p.join("overlay/c0ffee");
        std::fs::create_dir_all(&dir).unwrap();
        let lower: Vec<String> = links.iter().map(|l| format!("l/{l}")).collect();
        std::fs::write(dir.join("lower"), lower.join(":")).unwrap();
    }

    fn remove_container(&self) {
        std::fs::remove_dir_all(self.primary().join("overlay/c0ffee")).unwrap();
    }
}

fn link_of(store: &Path, id: &str) -> String {
    std::fs::read_to_string(store.join("overlay").join(id).join("link")).unwrap()
}

#[tokio::test]
async fn the_store_lists_what_imaged_records_on_its_layer_directories_and_readers_see_each_change() {
    let f = Fixture::new();
    let base = f.image("base", &["a"]);
    let bridge = ContainersStorageBridge::open(&f.config(), f.stores.clone()).unwrap();
    assert_eq!(f.images().len(), 1);
    let token = (
        f.token("overlay-layers/layers.lock"),
        f.token("overlay-images/images.lock"),
    );
    assert_eq!(token.0.len(), lockfile::TOKEN_LEN);

    let app = f.image("app", &["a", "b"]);
    bridge.recorded(&app).await;
    let ids = layer_ids(app.layers.iter().map(|l| l.diff_id));
    let listed: Vec<String> = f.layers().into_iter().map(|l| l.id).collect();
    assert_eq!(listed, {
        let mut v = ids.clone();
        v.sort();
        v
    });
    assert_ne!(
        f.token("overlay-layers/layers.lock"),
        token.0,
        "readers must reload layers.json"
    );
    assert_ne!(
        f.token("overlay-images/images.lock"),
        token.1,
        "readers must reload images.json"
    );
    let top = f.store().join("overlay").join(&ids[1]);
    assert_eq!(
        std::fs::read_link(top.join("diff")).unwrap(),
        f.stores.layers.fs_dir(&app.chain_ids()[1])
    );
    assert_eq!(
        std::fs::read_to_string(top.join("lower")).unwrap(),
        format!("l/{}", link_of(&f.store(), &ids[0]))
    );
    assert_eq!(std::fs::read_to_string(top.join("diff/b")).unwrap(), "b");
    let big = f.store().join("overlay-images").join(app.id.hex());
    assert_eq!(
        std::fs::read_dir(&big).unwrap().count(),
        3,
        "config, manifest-<digest>, manifest"
    );
    assert!(bridge.check().is_empty(), "{:?}", bridge.check());

    // Unchanged: nothing is written, readers keep their cache.
    let token = f.token("overlay-images/images.lock");
    bridge.recorded(&app).await;
    assert_eq!(f.token("overlay-images/images.lock"), token);

    // Removed: the image and its own layer go, the shared base stays for the other image.
    f.stores.metadata.remove(&app.id).unwrap();
    bridge.removed(&app).await;
    assert_eq!(
        f.images().iter().map(|i| i.id.clone()).collect::<Vec<_>>(),
        [base.id.hex()]
    );
    assert_eq!(
        f.layers().iter().map(|l| l.id.clone()).collect::<Vec<_>>(),
        [ids[0].clone()]
    );
    assert!(!top.exists() && !big.exists());
    assert_eq!(std::fs::read_dir(f.store().join("overlay/l")).unwrap().count(), 1);
}

#[tokio::test]
async fn a_listed_layer_survives_a_deletion_between_its_records_removal_and_the_bridges_event() {
    let f = Fixture::new();
    let app = f.image("app", &["a", "b"]);
    let bridge = ContainersStorageBridge::open(&f.config(), f.stores.clone()).unwrap();
    let ids = layer_ids(app.layers.iter().map(|l| l.diff_id));
    let chains = app.chain_ids();
    f.container_on(&[link_of(&f.store(), &ids[1]), link_of(&f.store(), &ids[0])]);
    assert_eq!(bridge.in_use().await.unwrap(), [app.id].into());

    // A removal has taken the record out, and has not told the bridge yet; meanwhile another removal (of
    // an image sharing these layers, GC, the start's sweep) deletes what nothing protects.
    f.stores.metadata.remove(&app.id).unwrap();
    f.stores.discard_unreferenced(&chains);
    assert!(
        chains.iter().all(|c| f.stores.layers.exists(c)),
        "listed layers a container sits on were deleted in the window"
    );
    bridge.removed(&app).await;
    assert_eq!(f.layers().len(), 2, "the container's layers stay listed");
    assert!(chains.iter().all(|c| f.stores.layers.exists(c)));
}

#[tokio::test]
async fn a_layer_a_primary_container_sits_on_stays_leased_until_the_container_is_gone() {
    let f = Fixture::new();
    let app = f.image("app", &["a", "b"]);
    let bridge = ContainersStorageBridge::open(&f.config(), f.stores.clone()).unwrap();
    let ids = layer_ids(app.layers.iter().map(|l| l.diff_id));
    let chains = app.chain_ids();
    // A container on the top layer lists the whole chain, top first.
    f.container_on(&[link_of(&f.store(), &ids[1]), link_of(&f.store(), &ids[0])]);
    assert_eq!(bridge.in_use().await.unwrap(), [app.id].into());

    f.stores.metadata.remove(&app.id).unwrap();
    bridge.removed(&app).await;
    assert!(f.images().is_empty());
    assert_eq!(f.layers().len(), 2, "the container's layers stay listed");
    // What the service does next: discard what nothing protects. The leased layers stay.
    f.stores.discard_unreferenced(&chains);
    assert!(
        chains
            .iter()
            .all(|c| f.stores.layers.exists(c) && f.stores.leases.is_leased(&Item::Snapshot(*c)))
    );

    // Reopened (a restart), the hold is found again before anything else could delete the layers.
    drop(bridge);
    let bridge = ContainersStorageBridge::open(&f.config(), f.stores.clone()).unwrap();
    assert!(chains.iter().all(|c| f.stores.leases.is_leased(&Item::Snapshot(*c))));

    // The container is gone: GC's question lets go of the layers, which are deleted.
    f.remove_container();
    assert!(bridge.in_use().await.unwrap().is_empty());
    assert!(f.layers().is_empty());
    assert!(
        chains
            .iter()
            .all(|c| !f.stores.layers.exists(c) && !f.stores.leases.is_leased(&Item::Snapshot(*c)))
    );
}

#[tokio::test]
async fn open_repairs_what_a_crash_or_a_hand_left_and_refuses_a_second_owner() {
    let f = Fixture::new();
    let app = f.image("app", &["a", "b"]);
    let bridge = ContainersStorageBridge::open(&f.config(), f.stores.clone()).unwrap();
    let err = ContainersStorageBridge::open(&f.config(), f.stores.clone())
        .err()
        .unwrap();
    assert!(err.to_string().contains("another imaged"), "{err}");
    drop(bridge);

    let ids = layer_ids(app.layers.iter().map(|l| l.diff_id));
    let store = f.store();
    std::fs::remove_file(store.join("overlay-images/images.json")).unwrap();
    std::fs::remove_dir_all(store.join("overlay").join(&ids[1])).unwrap();
    std::fs::remove_file(store.join("overlay").join(&ids[0]).join("diff")).unwrap();
    std::os::unix::fs::symlink("/nowhere", store.join("overlay").join(&ids[0]).join("diff")).unwrap();
    std::fs::create_dir_all(store.join("overlay/.tmp-stray")).unwrap();
    std::fs::create_dir_all(store.join("overlay/0123stray")).unwrap();
    std::fs::create_dir_all(store.join("overlay-images/0123stray")).unwrap();
    std::os::unix::fs::symlink("../0123stray/diff", store.join("overlay/l/strayname")).unwrap();

    let bridge = ContainersStorageBridge::open(&f.config(), f.stores.clone()).unwrap();
    assert!(bridge.check().is_empty(), "{:?}", bridge.check());
    assert_eq!(f.images().len(), 1);
    let mut overlay: Vec<String> = files::Files::entries(&store.join("overlay")).unwrap();
    overlay.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(overlay, want);
    assert_eq!(
        files::Files::entries(&store.join("overlay-images")).unwrap(),
        [app.id.hex()]
    );
    assert_eq!(std::fs::read_dir(store.join("overlay/l")).unwrap().count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removal_the_store_cannot_follow_yet_keeps_its_layers_until_it_has() {
    let f = Fixture::new();
    let app = f.image("app", &["a", "b"]);
    let chains = app.chain_ids();
    let bridge = ContainersStorageBridge::open_with(
        &f.config(),
        f.stores.clone(),
        Duration::from_secs(20),
        Duration::from_millis(200),
    )
    .unwrap();
    // A runtime holds images.lock: the removal cannot reach images.json, and answers anyway.
    let mut holder = hold_lock_elsewhere(&f.store().join("overlay-images/images.lock"), 1);
    f.stores.metadata.remove(&app.id).unwrap();
    bridge.removed(&app).await;
    // What RemoveImage does next: it deletes what nothing protects. The store still lists the image.
    f.stores.discard_unreferenced(&chains);
    assert_eq!(f.images().len(), 1);
    assert!(
        chains.iter().all(|c| f.stores.layers.exists(c)),
        "a listed image's layers were deleted"
    );

    // Once the lock is free, the sync finishes the removal and deletes the layers (on its thread, after it
    // let go of the store; GC's question waits for the sync).
    assert!(holder.wait().unwrap().success());
    assert!(bridge.in_use().await.unwrap().is_empty());
    assert!(f.images().is_empty() && f.layers().is_empty());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while chains.iter().any(|c| f.stores.layers.exists(c)) {
        assert!(std::time::Instant::now() < deadline, "the removed image's layers stay");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn records_changed_while_imaged_was_down_are_followed_at_open() {
    let f = Fixture::new();
    let gone = f.image("gone", &["a", "b"]);
    let bridge = ContainersStorageBridge::open(&f.config(), f.stores.clone()).unwrap();
    drop(bridge);
    // A crash after the metadata changed and before the store did: one image removed, one recorded.
    f.stores.metadata.remove(&gone.id).unwrap();
    let new = f.image("new", &["c"]);
    let bridge = ContainersStorageBridge::open(&f.config(), f.stores.clone()).unwrap();
    assert!(bridge.check().is_empty(), "{:?}", bridge.check());
    let ids: Vec<String> = f.images().into_iter().map(|i| i.id).collect();
    assert_eq!(ids, [new.id.hex()]);
    let layers: Vec<String> = f.layers().into_iter().map(|l| l.id).collect();
    assert_eq!(layers, layer_ids(new.layers.iter().map(|l| l.diff_id)));
    // Unlisted and unleased: the start's sweep may remove the old layers.
    assert!(
        gone.chain_ids()
            .iter()
            .all(|c| !f.stores.leases.is_leased(&Item::Snapshot(*c)))
    );
}
