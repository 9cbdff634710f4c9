//! containerd 2.x (Debian unstable's, with runc 1.3, which has idmapped mounts; configured as
//! `imaged containerd-config` prints) running a pod with a user namespace on imaged's layers, as kubelet
//! asks for `hostUsers: false`: imaged's config declares `remap-ids`, so containerd
//! labels the pod's snapshots with its mappings instead of copying and chowning the image into a
//! `<id>-remap` snapshot; the files show the mapped owners through idmapped lowers. The same pod on
//! containerd's own overlayfs gives the figure to compare create+start with.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use common::images::busybox::{busybox_image, pause_image};
use common::images::image::{BuiltImage, Compression, Entry, Layer, MediaStyle, random_layer};
use common::registry::push::push_image;
use common::runtimes::bridge::{Node, SNAPSHOTTER};
use common::runtimes::containerd::pods::ContainerSpec;
use common::runtimes::containerd::{Containerd, ContainerdOptions, Line, in_namespace};
use containerd_client::services::v1::snapshots as api;
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use imaged::proto::runtime::v1 as cri;

/// The pod's host ids start here; 65536 of them, as kubelet allocates.
const HOST_BASE: u32 = 100_000;

/// What the container prints: the owners of an image file of root's and one of uid 1000, then its own
/// uid; then it makes a file at its root and waits.
const SCRIPT: &str = "stat -c %u:%g /bin/busybox /data/owned-by-1000; id -u; touch /made-inside; sleep 3600";

fn image() -> BuiltImage {
    let owned = Layer::build(
        &[
            Entry::dir("data"),
            Entry::file_with("data/owned-by-1000", "x", 0o644, 1000, 1000),
        ],
        Compression::Gzip,
        MediaStyle::Oci,
    );
    busybox_image().layer(owned).layer(random_layer(23, 48 << 20)).build()
}

/// A pod user namespace of 65536 ids from host id `base`, mode POD, as kubelet sends for `hostUsers: false`.
fn userns(base: u32) -> cri::UserNamespace {
    let map = cri::IdMapping {
        host_id: base,
        container_id: 0,
        length: 65536,
    };
    cri::UserNamespace {
        mode: cri::NamespaceMode::Pod as i32,
        uids: vec![map],
        gids: vec![map],
    }
}

/// How many pods [`run`] starts, each with its own ids as kubelet gives them (the median of their first
/// container's create+start is the figure: two cores are shared here).
const PODS: u32 = 3;

/// Starts [`PODS`] user-namespaced pods (ids from [`HOST_BASE`], 65536 more for each next one), each with
/// one container of `image`: [`SCRIPT`] in the first, `sleep` in the others. Returns the first one's id
/// and the median time of CreateContainer + StartContainer.
async fn run(ctd: &Containerd, image: &str) -> (String, Duration) {
    let mut first = String::new();
    let mut times = Vec::new();
    for k in 0..PODS {
        let pod = ctd
            .run_pod_with(&format!("userns-{k}"), Some(userns(HOST_BASE + k * 65536)))
            .await;
        let spec = match k {
            0 => ContainerSpec::new("main", image).shell(SCRIPT),
            _ => ContainerSpec::new("main", image).command(&["/bin/sleep", "3600"]),
        };
        let started = Instant::now();
        let id = ctd.run_container(&pod, &spec).await;
        times.push(started.elapsed());
        if k == 0 {
            first = id;
        }
    }
    times.sort();
    let deadline = Instant::now() + Duration::from_secs(30);
    while ctd.output(&first).await.lines().count() < 3 {
        assert!(Instant::now() < deadline, "no output: {:?}", ctd.output(&first).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (first, times[PODS as usize / 2])
}

/// The snapshots `client` lists (containerd's own, or imaged's), with their labels.
async fn snapshots(mut client: SnapshotsClient<tonic::transport::Channel>, ns: bool) -> Vec<api::Info> {
    let msg = api::ListSnapshotsRequest {
        snapshotter: SNAPSHOTTER.into(),
        filters: Vec::new(),
    };
    let req = if ns {
        in_namespace(msg)
    } else {
        tonic::Request::new(msg)
    };
    let mut stream = client.list(req).await.unwrap().into_inner();
    let mut out = Vec::new();
    while let Some(m) = stream.message().await.unwrap() {
        out.extend(m.info);
    }
    out
}

fn du(path: &std::path::Path) -> u64 {
    let out = std::process::Command::new("du")
        .args(["-sxb"])
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_namespaced_pod_runs_on_imageds_layers_through_idmapped_mounts_without_a_copy() {
    let node = Node::start_with(Line::sid(), None, ContainerdOptions::pod_network).await;
    let image = image();
    push_image(&node.registry.addr(), "big", "v1", &image, None).await;
    let id = node.pull("big", "v1").await;
    node.wait_ctd_status(&id, true, Duration::from_secs(10)).await;
    let layers = node.layer_dirs();
    let records = node.imaged.root.join("snapshotter");
    let before = du(&records);

    let (ctr, took) = run(&node.ctd, &id).await;
    eprintln!(
        "imaged: first CreateContainer+StartContainer of a pod, median {:.3} s",
        took.as_secs_f64()
    );
    let out = node.ctd.output(&ctr).await;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[..3],
        ["0:0", "1000:1000", "0"],
        "inside the pod the image's own owners: {out}"
    );

    // On the host the pod's snapshots (its sandbox's and its container's) belong to the mapped root, and
    // what the container made in its upper dir to the mapped ids.
    let imaged_client = SnapshotsClient::new(imaged::uds::channel(&node.socket()).await.unwrap());
    let ours = snapshots(imaged_client.clone(), false).await;
    let mapped: Vec<&api::Info> = ours
        .iter()
        .filter(|i| i.labels.contains_key("containerd.io/snapshot/uidmapping"))
        .collect();
    assert_eq!(mapped.len(), 2 * PODS as usize, "sandboxes and containers: {ours:#?}");
    let mut made = 0;
    for info in mapped {
        let label = &info.labels["containerd.io/snapshot/uidmapping"];
        let base: u32 = label.split(':').nth(1).unwrap().parse().unwrap();
        let req = api::MountsRequest {
            snapshotter: SNAPSHOTTER.into(),
            key: info.name.clone(),
        };
        let m = imaged_client.clone().mounts(req).await.unwrap().into_inner().mounts;
        let upper = m[0].options.iter().find_map(|o| o.strip_prefix("upperdir=")).unwrap();
        let meta = std::fs::metadata(upper).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (base, base), "{upper}");
        if let Ok(f) = std::fs::metadata(std::path::Path::new(upper).join("made-inside")) {
            assert_eq!((f.uid(), f.gid()), (base, base));
            made += 1;
        }
    }
    assert_eq!(made, 1, "the container's file is in its upper dir");

    // No copy: the only committed snapshots either side knows are the images' layers (containerd's copy
    // would be one more, committed under a digest of its mapping), no new layer, imaged's records stay small.
    let theirs = snapshots(SnapshotsClient::new(node.ctd.channel().await.unwrap()), true).await;
    let mut known = image.chain_id_set();
    known.extend(pause_image().chain_id_set());
    for i in theirs.iter().chain(&ours) {
        let copied = i.kind == api::Kind::Committed as i32 && !known.contains(&i.name);
        assert!(
            !copied && !i.name.contains("-remap"),
            "containerd copied the image for a pod: {i:?}"
        );
    }
    assert_eq!(node.layer_dirs(), layers, "no layer was added to imaged's store");
    let grown = du(&records).saturating_sub(before);
    assert!(
        grown < 1 << 20,
        "imaged's snapshot records grew by {grown} bytes for one pod"
    );

    // The same pod on containerd's own overlayfs, for the figure.
    let hosts = node.hosts.path();
    let overlay = Containerd::start(
        ContainerdOptions::new(&node.pause)
            .line(Line::sid())
            .hosts_dir(hosts)
            .pod_network(),
    )
    .await;
    let image_ref = node.registry.image_ref("big", "v1");
    common::daemon::pull(&mut overlay.images().await.unwrap(), &image_ref, None)
        .await
        .unwrap();
    let (ctr, took_overlay) = run(&overlay, &image_ref).await;
    let out = overlay.output(&ctr).await;
    assert_eq!(
        out.lines().take(3).collect::<Vec<_>>(),
        ["0:0", "1000:1000", "0"],
        "{out}"
    );
    eprintln!(
        "user-namespaced pod, first CreateContainer+StartContainer (median of {PODS} pods): imaged {:.3} s, containerd \
         overlayfs {:.3} s ({:.2}x)",
        took.as_secs_f64(),
        took_overlay.as_secs_f64(),
        took.as_secs_f64() / took_overlay.as_secs_f64()
    );
    node.ctd.remove_all_pods().await;
    overlay.remove_all_pods().await;
}
