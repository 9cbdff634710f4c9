//! Issues 10 and 23: a real containerd runs pods from the images imaged pulled, through imaged's proxy
//! snapshotter and the images imaged publishes into its namespace — kubelet's calls made by hand:
//! PullImage on imaged, then RunPodSandbox / CreateContainer (image = PullImage's image_ref) /
//! StartContainer on containerd. The scenarios of `on_every_line!` run on each containerd line
//! (1.6, 1.7, 2.x: `common::runtimes::containerd::Line`), each configured with what `imaged containerd-config`
//! prints for it; the others on Debian 12's 1.6.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::images::busybox::{app_image, busybox_image, busybox_layer, changes_layers};
use common::images::image::{BuiltImage, Compression, Entry, ImageBuilder, Layer, MediaStyle};
use common::registry::push::push_image;
use common::runtimes::bridge::Node;
use common::runtimes::containerd::Line;
use common::runtimes::containerd::pods::ContainerSpec;
use common::runtimes::containerd::{Containerd, ContainerdOptions};
use imaged::proto::runtime::v1 as cri;

const MARKER: &str = "hello from an imaged image\n";

async fn push(node: &Node, repo: &str, image: &BuiltImage) {
    push_image(&node.registry.addr(), repo, "v1", image, None).await;
}

fn sleeper(name: &str, image: &str) -> ContainerSpec {
    ContainerSpec::new(name, image).command(&["/bin/sleep", "inf"])
}

common::runtimes::containerd::line::on_every_line!(
    pods_run_from_images_imaged_pulled_and_containerd_fetches_no_layer,
    removal_keeps_running_containers_frees_layers_after_them_and_survives_containerds_gc,
    containers_survive_imaged_and_containerd_restarts,
);

async fn pods_run_from_images_imaged_pulled_and_containerd_fetches_no_layer(line: Line) {
    let node = Node::start_on(line.clone(), None).await;
    let app = app_image(MARKER);
    push(&node, "app", &app).await;
    let changes = changes_layers()
        .into_iter()
        .fold(busybox_image(), |b, l| b.layer(l))
        .build();
    push(&node, "changes", &changes).await;

    let id = node.pull("app", "v1").await;
    assert_eq!(id, app.config_digest);
    // containerd's CRI knows it at once, by id and by name, with imaged's id.
    let name = node.registry.image_ref("app", "v1");
    assert_eq!(node.ctd_status(&id).await.map(|i| i.id), Some(id.clone()));
    let by_name = node.ctd_status(&name).await.expect("containerd resolves the tag");
    assert_eq!(by_name.id, id);
    assert!(by_name.repo_tags.contains(&name), "{by_name:?}");

    // The sandbox image: containerd pulls and unpacks it itself, through imaged's snapshotter.
    let pod = node.ctd.run_pod("app").await;
    let spec = ContainerSpec::new("marker", &id).user_specified_image(&name);
    assert_eq!(node.ctd.run_to_exit(&pod, &spec).await, (0, MARKER.to_string()));

    // Whiteouts, an opaque directory, hard links, symlinks: the container sees what umoci unpacks.
    let changes_id = node.pull("changes", "v1").await;
    node.ctd
        .assert_rootfs_same_as_umoci(&pod, &changes_id, &node.registry, "changes", "v1")
        .await;

    for repo in ["app", "changes"] {
        assert_eq!(
            node.containerd_blob_fetches(repo),
            [],
            "containerd fetched blobs of {repo}"
        );
    }
    assert!(
        !node
            .containerd_blob_fetches(common::images::busybox::PAUSE_REPO)
            .is_empty(),
        "containerd pulled the sandbox image itself"
    );
    // ... and unpacked it through imaged, never into its own overlayfs.
    assert_eq!(node.ctd_snapshots("overlayfs").await, Vec::<String>::new(), "{line}");

    // An image containerd pulls itself (CRI PullImage on containerd) unpacks through imaged and runs.
    let own = app_image("pulled by containerd\n");
    push(&node, "own", &own).await;
    let own_ref = node.registry.image_ref("own", "v1");
    let own_id = node.ctd_pull(&own_ref).await;
    let spec = ContainerSpec::new("own", &own_id);
    assert_eq!(node.ctd.run_to_exit(&pod, &spec).await.1, "pulled by containerd\n");
    let listed = node
        .ctd
        .images()
        .await
        .unwrap()
        .list_images(cri::ListImagesRequest::default())
        .await;
    let ids: Vec<String> = listed.unwrap().into_inner().images.into_iter().map(|i| i.id).collect();
    for want in [&id, &changes_id, &own_id] {
        assert!(ids.contains(want), "containerd lists {want}: {ids:?}");
    }
    assert_eq!(node.ctd_snapshots("overlayfs").await, Vec::<String>::new(), "{line}");
    assert!(
        !node.ctd.log().contains("Unpack configuration not supported"),
        "{line} skipped unpacking into imaged:\n{}",
        node.ctd.log()
    );
}

async fn removal_keeps_running_containers_frees_layers_after_them_and_survives_containerds_gc(line: Line) {
    let node = Node::start_on(line.clone(), None).await;
    let app = app_image(MARKER);
    push(&node, "app", &app).await;
    let keep = app_image("kept across containerd's GC\n");
    push(&node, "keep", &keep).await;
    let id = node.pull("app", "v1").await;
    let name = node.registry.image_ref("app", "v1");
    let pod = node.ctd.run_pod("rm").await;
    let running = node.ctd.run_container(&pod, &sleeper("running", &id)).await;
    let layers_with_app = node.layer_dirs();

    let mut c = node.imaged.client().await;
    common::daemon::remove(&mut c, &name).await.unwrap();
    assert!(
        node.ctd_status(&name).await.is_none(),
        "containerd still resolves the tag"
    );
    assert!(node.ctd_status(&id).await.is_none(), "containerd still resolves the id");
    assert!(common::daemon::status(&mut c, &id).await.is_none());
    // The container keeps running on the layers, which stay while it exists.
    let r = node.ctd.exec(&running, &["/bin/cat", "/etc/marker"]).await;
    assert_eq!((r.exit_code, r.stdout.as_slice()), (0, MARKER.as_bytes()));
    assert_eq!(node.layer_dirs(), layers_with_app);

    // Once the container is gone (containerd removes its snapshot in its GC), the app's own layer goes.
    // The busybox base stays: the pod's sandbox (pause, busybox too) runs on it.
    node.ctd.remove_container(&running, 0).await;
    let top = imaged::metadata::chain_ids(app.layers.iter().map(|l| l.diff_id.parse().unwrap()));
    let (base, top) = (top[0].hex().to_string(), top[1].hex().to_string());
    wait_until(Duration::from_secs(30), || !node.layer_dirs().contains(&top)).await;
    assert!(
        node.layer_dirs().contains(&base),
        "the sandbox's base layer was removed under it"
    );

    // containerd's own garbage collection (run synchronously here) removes nothing of imaged's.
    let keep_id = node.pull("keep", "v1").await;
    let before = node.layer_dirs();
    node.ctd.collect_garbage().await.expect("containerd GC");
    assert_eq!(node.layer_dirs(), before);
    let out = node.ctd.run_to_exit(&pod, &ContainerSpec::new("keep", &keep_id)).await;
    assert_eq!(out, (0, "kept across containerd's GC\n".to_string()));

    // The store is consistent (fsck runs offline).
    node.ctd.remove_all_pods().await;
    let mut node = node;
    node.imaged.stop();
    let fsck = std::process::Command::new(env!("CARGO_BIN_EXE_imaged"))
        .args(["fsck", "--root"])
        .arg(&node.imaged.root)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&fsck.stdout);
    assert!(
        fsck.status.success() && report.contains("ok"),
        "fsck: {report}{}",
        String::from_utf8_lossy(&fsck.stderr)
    );
}

async fn containers_survive_imaged_and_containerd_restarts(line: Line) {
    let mut node = Node::start_on(line.clone(), None).await;
    push(&node, "app", &app_image(MARKER)).await;
    let id = node.pull("app", "v1").await;
    let pod = node.ctd.run_pod("restarts").await;
    let running = node.ctd.run_container(&pod, &sleeper("running", &id)).await;

    node.imaged.kill();
    let r = node.ctd.exec(&running, &["/bin/cat", "/etc/marker"]).await;
    assert_eq!(r.exit_code, 0, "the container runs on without imaged");
    node.imaged.start_again().await;
    // containerd's gRPC client reconnects to its proxy snapshotter after a back-off of about a second;
    // until then its calls fail Unavailable, and kubelet retries CreateContainer on the pod's next sync.
    let t = std::time::Instant::now();
    loop {
        match node
            .ctd
            .create_container(&pod, &ContainerSpec::new("reconnect", &id))
            .await
        {
            Ok(_) => break,
            Err(e) if e.code() == tonic::Code::Unavailable && t.elapsed() < Duration::from_secs(15) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("CreateContainer after imaged's restart: {e}"),
        }
    }
    let out = node
        .ctd
        .run_to_exit(&pod, &ContainerSpec::new("after-imaged", &id))
        .await;
    assert_eq!(out, (0, MARKER.to_string()));

    node.ctd.restart().await;
    let r = node.ctd.exec(&running, &["/bin/cat", "/etc/marker"]).await;
    assert_eq!(r.exit_code, 0, "the container runs on across containerd's restart");
    node.wait_ctd_status(&id, true, Duration::from_secs(60)).await;
    let out = node
        .ctd
        .run_to_exit(&pod, &ContainerSpec::new("after-containerd", &id))
        .await;
    assert_eq!(out, (0, MARKER.to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_are_published_once_containerd_is_back_and_into_a_fresh_containerd_at_start() {
    let mut node = Node::start(None).await;
    push(&node, "app", &app_image(MARKER)).await;
    node.ctd.stop();
    // containerd down: the pull succeeds, with a warning, and nothing half-published can be seen later.
    let id = node.pull("app", "v1").await;
    assert!(
        node.imaged
            .log()
            .contains("could not publish the image into containerd"),
        "{}",
        node.imaged.log()
    );
    node.ctd.start_again().await;
    node.wait_ctd_status(&id, true, Duration::from_secs(60)).await;
    let name = node.registry.image_ref("app", "v1");
    assert_eq!(node.ctd_status(&name).await.map(|i| i.id), Some(id.clone()));
    let pod = node.ctd.run_pod("back").await;
    let out = node.ctd.run_to_exit(&pod, &ContainerSpec::new("after", &id)).await;
    assert_eq!(out, (0, MARKER.to_string()));

    // imaged restarted against a containerd with a fresh root: its images are there at once.
    let fresh = Containerd::start(
        ContainerdOptions::new(&node.pause)
            .imaged(
                std::path::Path::new(env!("CARGO_BIN_EXE_imaged")),
                &node.socket(),
                &node.imaged.root,
            )
            .hosts_dir(node.hosts.path()),
    )
    .await;
    assert!(status_on(&fresh, &id).await.is_none());
    node.imaged.options_mut().extra_args = vec!["--containerd-address".into(), fresh.socket().display().to_string()];
    node.imaged.restart().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while status_on(&fresh, &id).await.is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "not published at start:\n{}",
            node.imaged.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pod = fresh.run_pod("fresh").await;
    let out = fresh.run_to_exit(&pod, &ContainerSpec::new("fresh", &id)).await;
    assert_eq!(out, (0, MARKER.to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_of_128_layers_runs_and_fs_info_counts_writable_layers() {
    let node = Node::start(None).await;
    let mut b = ImageBuilder::new(MediaStyle::Oci).layer(busybox_layer());
    for i in 1..128 {
        let entries = [
            Entry::dir("layers"),
            Entry::file(&format!("layers/{i}"), format!("{i}\n")),
        ];
        b = b.layer(Layer::build(&entries, Compression::Gzip, MediaStyle::Oci));
    }
    push(&node, "deep", &b.build()).await;
    let id = node.pull("deep", "v1").await;
    let pod = node.ctd.run_pod("deep").await;
    let script = "cat /layers/1 /layers/64 /layers/127; ls /layers | wc -l";
    let (code, out) = node
        .ctd
        .run_to_exit(&pod, &ContainerSpec::new("deep", &id).shell(script))
        .await;
    assert_eq!(
        (code, out.split_whitespace().collect::<Vec<_>>()),
        (0, vec!["1", "64", "127", "127"])
    );

    // A container's writes land in the snapshotter, and ImageFsInfo counts them as containerd's does.
    let used = || async {
        let mut c = node.imaged.client().await;
        let r = c.image_fs_info(cri::ImageFsInfoRequest {}).await.unwrap().into_inner();
        r.image_filesystems[0].used_bytes.as_ref().unwrap().value
    };
    let before = used().await;
    let writer = ContainerSpec::new("writer", &id).shell("head -c 8388608 /dev/zero > /big && sleep inf");
    node.ctd.run_container(&pod, &writer).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    while used().await < before + 8 * 1024 * 1024 {
        assert!(
            std::time::Instant::now() < deadline,
            "ImageFsInfo did not count the container's 8 MiB"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_keeps_what_containerds_containers_use_and_a_failed_publication_shows_nothing() {
    // Every image unused for a second is collected, unless a container uses it; containerd's socket is the
    // runtime endpoint GC asks because [containerd] address is set.
    let config = "[pull]\nbackoff_initial = \"0s\"\n[gc]\nmin_age = \"0s\"\nmax_age = \"1s\"\nperiod = \"1h\"\n";
    let node = Node::start(Some(config)).await;
    push(&node, "used", &app_image("used\n")).await;
    push(&node, "unused", &app_image("unused\n")).await;
    let used = node.pull("used", "v1").await;
    let unused = node.pull("unused", "v1").await;
    let pod = node.ctd.run_pod("gc").await;
    // An exited container counts as using its image, as for kubelet.
    assert_eq!(
        node.ctd.run_to_exit(&pod, &ContainerSpec::new("used", &used)).await.0,
        0
    );
    common::daemon::wait_for_gc_victims(&node.socket(), Duration::from_secs(30)).await;
    let mut gc = imaged::proto::imaged::v1::images_client::ImagesClient::new(
        imaged::uds::channel(&node.socket()).await.unwrap(),
    );
    let out = gc
        .garbage_collect(imaged::proto::imaged::v1::GarbageCollectRequest { dry_run: false })
        .await
        .unwrap()
        .into_inner();
    let removed: Vec<String> = out.removed.iter().map(|r| r.id.clone()).collect();
    assert_eq!(removed, std::slice::from_ref(&unused), "{out:?}");
    assert!(
        node.ctd_status(&unused).await.is_none(),
        "GC's removal reaches containerd"
    );
    assert!(node.ctd_status(&used).await.is_some());

    // A publication that fails half-way (containerd has no snapshotter of that name) leaves no image
    // record in containerd: records are written last.
    drop(gc);
    let bad = "[pull]\nbackoff_initial = \"0s\"\n[containerd]\nsnapshotter = \"not-imaged\"\n";
    let node2 = Node::start(Some(bad)).await;
    push(&node2, "app", &app_image(MARKER)).await;
    let id = node2.pull("app", "v1").await;
    assert!(
        node2
            .imaged
            .log()
            .contains("could not publish the image into containerd")
    );
    assert!(node2.ctd_status(&id).await.is_none());
    let listed = node2
        .ctd
        .images()
        .await
        .unwrap()
        .list_images(cri::ListImagesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .images;
    assert!(listed.iter().all(|i| i.id != id), "half-published: {listed:?}");
}

async fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + timeout;
    while !f() {
        assert!(
            std::time::Instant::now() < deadline,
            "condition not met within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// CRI ImageStatus of `name` on `ctd`.
async fn status_on(ctd: &Containerd, name: &str) -> Option<cri::Image> {
    let mut c = ctd.images().await.expect("connect to containerd");
    common::daemon::status(&mut c, name).await
}
