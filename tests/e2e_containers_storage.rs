//! Issue 14's acceptance: podman (Debian's 4.3, with its own root, the overlay driver and imaged's
//! containers-storage store as an additional image store) lists, inspects and runs the images imaged
//! pulled, on imaged's own layer directories; removal, GC, concurrency and crashes keep both sides in
//! agreement. CRI-O reads the same store through the same containers/storage code; it is not packaged
//! here, so podman is the reader.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeSet, HashMap};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::images::busybox::{busybox_image, changes_layers};
use common::images::image::BuiltImage;
use common::images::rootfs::umoci_unpack;
use common::images::tree::{self, walk};
use common::runtimes::containerd::inside::{PROBE_SCRIPT, comparable, parse_probe};
use common::runtimes::containerd::pods::PROBE_BUSYBOX;
use common::runtimes::podman::container_args;
use common::runtimes::podman_node::{Node, app_image, chain_ids, cs_size, hex, layer_ids};

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
        format!("{}:{PROBE_BUSYBOX}:ro", common::images::busybox::BUSYBOX),
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removal_keeps_a_podman_container_working_and_gc_frees_its_layers_once_it_is_gone() {
    // Every image unused for a second is collected, unless a container uses it.
    let node = Node::start("[gc]\nmin_age = \"0s\"\nmax_age = \"1s\"\nperiod = \"1h\"\n").await;
    let app = app_image("kept for the container\n");
    let other = app_image("not used by any container\n");
    node.push("app", &app).await;
    node.push("other", &other).await;
    let app_id = node.pull("app").await;
    let other_id = node.pull("other").await;
    let name = node.registry.image_ref("app", "v1");
    node.podman.create("keep", &name, &[]).await;

    // GC: the image the container uses is in use; the other goes, from podman's view too.
    common::daemon::wait_for_gc_victims(&node.imaged.socket, Duration::from_secs(30)).await;
    assert_eq!(node.gc().await, [format!("sha256:{other_id}")]);
    let ids = node.image_ids().await;
    assert_eq!(ids, std::slice::from_ref(&app_id));

    // RemoveImage: gone from podman's images, but the container's layers stay, listed and on disk.
    node.remove(&name).await;
    assert!(node.podman.images().await.is_empty());
    let chains: BTreeSet<String> = chain_ids(&app).into_iter().collect();
    assert_eq!(node.layer_dirs(), chains);
    let app_layers: BTreeSet<String> = layer_ids(&app).into_iter().collect();
    assert_eq!(node.listed_layers(), app_layers);
    assert_eq!(
        node.podman.ok(&["start", "--attach", "keep"]).await,
        "kept for the container\n"
    );
    assert!(node.gc().await.is_empty());
    assert_eq!(node.layer_dirs(), chains, "GC removed layers a container uses");

    // Once the container is gone, GC frees them.
    node.podman.ok(&["rm", "keep"]).await;
    assert!(node.gc().await.is_empty());
    assert_eq!(node.layer_dirs(), BTreeSet::new());
    assert_eq!(node.listed_layers(), BTreeSet::new());
    let overlay = std::fs::read_dir(node.store.path().join("overlay")).unwrap().count();
    assert_eq!(overlay, 1, "only overlay/l/ is left");

    let mut node = node;
    node.imaged.stop();
    node.fsck();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn podman_reads_a_consistent_store_while_imaged_pulls_and_removes() {
    let node = std::sync::Arc::new(Node::start("").await);
    let built: Vec<BuiltImage> = (0..3).map(|i| app_image(&format!("image {i}\n"))).collect();
    let mut expected: HashMap<String, (String, u64)> = HashMap::new();
    for (i, b) in built.iter().enumerate() {
        let repo = format!("img{i}");
        node.push(&repo, b).await;
        expected.insert(
            hex(&b.config_digest),
            (node.registry.image_ref(&repo, "v1"), cs_size(b)),
        );
    }

    // podman lists and inspects in a loop; every listing must be readable and every image in it whole.
    // podman 4.3 reads the store again for each image it listed (size, labels), each time under the lock
    // anew, and fails the whole `podman images` when an image went in between, whoever removed it (a
    // podman `rmi` on its own store as well): podman's own TOCTOU, fixed in podman 4.6
    // (containers/podman#18980, containers/common#1520). That one error, naming an image imaged removed,
    // is counted; any other failure (a layer missing, a torn or unreadable file) fails the test.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (node, done, expected) = (node.clone(), done.clone(), expected.clone());
        tokio::spawn(async move {
            let (mut listings, mut gone_meanwhile) = (0, 0);
            while !done.load(std::sync::atomic::Ordering::Acquire) || listings < 3 {
                let out = node.podman.output(&["images", "--format", "json"]).await;
                let stderr = String::from_utf8_lossy(&out.stderr);
                if !out.status.success() {
                    assert!(
                        removed_after_listing(&stderr, &expected),
                        "podman images failed: {stderr}"
                    );
                    gone_meanwhile += 1;
                    continue;
                }
                let images: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
                listings += 1;
                for img in &images {
                    let id = img["Id"].as_str().unwrap();
                    let (name, size) = expected.get(id).unwrap_or_else(|| panic!("unknown image {img:#?}"));
                    assert_eq!(img["Names"], serde_json::json!([name]), "{img:#?}");
                    assert_eq!(img["Size"], *size, "{img:#?}");
                    let out = node.podman.output(&["image", "inspect", id]).await;
                    let err = String::from_utf8_lossy(&out.stderr);
                    // Removed since the listing is the one acceptable failure.
                    assert!(
                        out.status.success() || removed_after_listing(&err, &expected),
                        "inspect {id}: {err}"
                    );
                }
            }
            (listings, gone_meanwhile)
        })
    };
    for round in 0..20 {
        let (pull, remove) = (round % 3, (round + 1) % 3);
        node.pull(&format!("img{pull}")).await;
        node.remove(&node.registry.image_ref(&format!("img{remove}"), "v1"))
            .await;
    }
    done.store(true, std::sync::atomic::Ordering::Release);
    let (listings, gone_meanwhile) = reader.await.unwrap();
    eprintln!(
        "podman listed the store {listings} times during the 20 rounds; {gone_meanwhile} listings failed \
         because an image went after podman listed it"
    );
    assert!(listings >= 3, "podman listed {listings} times");

    // At the end both agree.
    let mut c = node.imaged.client().await;
    let ours: BTreeSet<String> = common::daemon::list(&mut c).await.into_iter().map(|i| i.id).collect();
    let theirs: BTreeSet<String> = node.image_ids().await.into_iter().collect();
    assert_eq!(ours, theirs);
}

/// Whether podman's error is that an image it had just listed is gone (`… <id>…: image not known`, for one
/// of `images`), and nothing else: no layer missing, no unreadable file.
fn removed_after_listing(stderr: &str, images: &HashMap<String, (String, u64)>) -> bool {
    let gone = stderr.contains("image not known") && images.keys().any(|id| stderr.contains(id.as_str()));
    gone && !stderr.contains("layer not known") && !stderr.contains("JSON") && !stderr.contains("invalid character")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_the_metadata_and_the_store_is_repaired_at_start() {
    let mut node = Node::start("").await;
    let (kept, pulled) = (app_image("kept\n"), app_image("pulled before the crash\n"));
    node.push("kept", &kept).await;
    node.push("pulled", &pulled).await;
    let kept_id = node.pull("kept").await;

    // A pull recorded in imaged's metadata, killed before images.json lists it.
    let lock = node.hold_images_lock();
    let image = node.registry.image_ref("pulled", "v1");
    let socket = node.imaged.socket.clone();
    let pull = tokio::spawn(async move {
        let mut c = imaged::cli::connect(&socket).await.unwrap();
        let _ = common::daemon::pull(&mut c, &image, None).await;
    });
    let pulled_id = hex(&pulled.config_digest);
    node.wait_status(&pulled_id, true).await;
    node.imaged.kill();
    pull.abort();
    drop(lock);
    assert_eq!(node.listed_images(), [kept_id.clone()].into());
    node.imaged.start_again().await;
    assert_eq!(node.listed_images(), [kept_id.clone(), pulled_id.clone()].into());
    assert_eq!(
        node.podman.run(&pulled_id, &["/bin/cat", "/etc/marker"]).await,
        "pulled before the crash\n"
    );

    // A removal from imaged's metadata, killed before images.json forgets the image.
    let lock = node.hold_images_lock();
    let name = node.registry.image_ref("kept", "v1");
    let socket = node.imaged.socket.clone();
    let remove = tokio::spawn(async move {
        let mut c = imaged::cli::connect(&socket).await.unwrap();
        let _ = common::daemon::remove(&mut c, &name).await;
    });
    // The removal is announced to the store once it is durable (ImageStatus stops finding it earlier).
    let announced = format!("image=sha256:{kept_id}");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !node
        .imaged
        .log()
        .lines()
        .any(|l| l.contains("taking it out of the store") && l.contains(&announced))
    {
        assert!(std::time::Instant::now() < deadline, "removal never announced");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    node.imaged.kill();
    remove.abort();
    drop(lock);
    assert!(node.listed_images().contains(&kept_id));
    node.imaged.start_again().await;
    assert_eq!(
        node.listed_images(),
        [pulled_id.clone()].into(),
        "{}",
        node.imaged.log()
    );
    let ids: BTreeSet<String> = node.image_ids().await.into_iter().collect();
    assert_eq!(ids, [pulled_id.clone()].into());
    // The removed image's own layer leaves the store's listing and, with the start's sweep, the disk.
    let top = chain_ids(&kept).pop().unwrap();
    assert!(!node.listed_layers().contains(layer_ids(&kept).last().unwrap()));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while node.layer_dirs().contains(&top) {
        assert!(
            std::time::Instant::now() < deadline,
            "the removed image's layer is still there"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    node.imaged.stop();
    node.fsck();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_podman_pull_of_an_image_imaged_holds_reuses_its_layers_which_stay_while_podman_needs_them() {
    let node = Node::start("").await;
    let app = app_image("pulled by both\n");
    node.push("app", &app).await;
    let id = node.pull("app").await;
    let name = node.registry.image_ref("app", "v1");

    // podman's own pull finds every layer by id in imaged's store: it downloads no layer and makes none.
    let before = node.registry.requests().len();
    node.podman.ok(&["pull", "--tls-verify=false", "--quiet", &name]).await;
    let fetched: Vec<String> = node.registry.requests()[before..]
        .iter()
        .filter(|r| r.path.contains("/blobs/") && r.path.contains(&app.layers.last().unwrap().digest))
        .map(|r| r.path.clone())
        .collect();
    assert_eq!(fetched, Vec::<String>::new(), "podman downloaded layers");
    let own_layers = std::fs::read(node.podman.graph_root().join("overlay-layers/layers.json")).unwrap_or_default();
    let own_layers: Vec<serde_json::Value> = serde_json::from_slice(&own_layers).unwrap_or_default();
    assert!(own_layers.is_empty(), "podman made layers of its own: {own_layers:?}");

    // imaged removes it: podman's image still needs the layers, which stay until podman removes it.
    node.remove(&name).await;
    assert_eq!(node.layer_dirs(), chain_ids(&app).into_iter().collect());
    assert_eq!(
        node.podman.run(&id, &["/bin/cat", "/etc/marker"]).await,
        "pulled by both\n"
    );
    node.podman.ok(&["rmi", &id]).await;
    assert!(node.gc().await.is_empty());
    assert_eq!(node.layer_dirs(), BTreeSet::new());
}
