//! Proves the containerd fixture (`common::runtimes::containerd`) and the runnable test images (`common::images::busybox`)
//! on containerd alone, with its own `overlayfs` snapshotter and its own CRI pulls from the test registry:
//! pods run, containers print the image's files, ExecSync works in a running container, the root
//! filesystem seen from inside equals `umoci unpack`'s for an image of whiteouts, an opaque directory, hard
//! links and symlinks, containers survive containerd being killed and restarted, and dropping the fixture
//! leaves no mount, process, cgroup, shim socket or directory behind.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use common::images::busybox::{
    assert_changes_applied, busybox_image, busybox_layer, changes_layers, is_static_elf, pause_image, push_pause,
};
use common::images::image::{BuiltImage, Compression, Entry, ImageBuilder, Layer, MediaStyle};
use common::images::tree::Kind;
use common::registry::push::push_image;
use common::registry::{RegistryOptions, TestRegistry};
use common::runtimes::containerd::inside::{comparable, parse_probe};
use common::runtimes::containerd::logs::{LogLine, parse_cri_log};
use common::runtimes::containerd::pods::ContainerSpec;
use common::runtimes::containerd::{Containerd, ContainerdOptions};
use imaged::proto::runtime::v1 as cri;
use tempfile::TempDir;

/// A registry serving the pause image and `app:v1` (busybox + `/etc/marker`, cmd `cat /etc/marker`), and a
/// hosts dir pointing containerd at it.
struct World {
    registry: TestRegistry,
    hosts: TempDir,
    pause: String,
    app: BuiltImage,
}

const MARKER: &str = "hello from the test image\n";

async fn world() -> World {
    let registry = TestRegistry::start(RegistryOptions::default()).await;
    let hosts = TempDir::new().unwrap();
    registry.write_hosts_toml(hosts.path());
    let pause = push_pause(&registry).await;
    let marker = Layer::build(
        &[Entry::dir("etc"), Entry::file("etc/marker", MARKER)],
        Compression::Gzip,
        MediaStyle::Oci,
    );
    let app = busybox_image().layer(marker).cmd(&["/bin/cat", "/etc/marker"]).build();
    push_image(&registry.addr(), "app", "v1", &app, None).await;
    World {
        registry,
        hosts,
        pause,
        app,
    }
}

impl World {
    async fn containerd(&self) -> Containerd {
        Containerd::start(ContainerdOptions::new(&self.pause).hosts_dir(self.hosts.path())).await
    }
}

/// containerd's CRI PullImage of `reference`; returns its image ref.
async fn cri_pull(ctd: &Containerd, reference: &str) -> String {
    let req = cri::PullImageRequest {
        image: Some(cri::ImageSpec {
            image: reference.into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    match ctd.images().await.unwrap().pull_image(req).await {
        Ok(r) => r.into_inner().image_ref,
        Err(e) => panic!("containerd PullImage {reference}: {e}; log:\n{}", ctd.log()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_run_exec_works_and_the_rootfs_inside_equals_umoci() {
    let w = world().await;
    let changes = changes_layers()
        .into_iter()
        .fold(ImageBuilder::new(MediaStyle::Oci), |b, l| b.layer(l))
        .build();
    push_image(&w.registry.addr(), "changes", "v1", &changes, None).await;
    let ctd = w.containerd().await;
    let traces = ctd.traces();

    let app_ref = w.registry.image_ref("app", "v1");
    let app_id = cri_pull(&ctd, &app_ref).await;
    assert_eq!(
        app_id, w.app.config_digest,
        "containerd's image id is the config digest"
    );
    let pod = ctd.run_pod("selftest").await;

    // The image's own cmd prints the marker file.
    let marker = ContainerSpec::new("marker", &app_id).user_specified_image(&app_ref);
    let (code, out) = ctd.run_to_exit(&pod, &marker).await;
    assert_eq!((code, out.as_str()), (0, MARKER));
    let (code, out) = ctd
        .run_to_exit(
            &pod,
            &ContainerSpec::new("fails", &app_id).shell("echo out; echo err >&2; exit 3"),
        )
        .await;
    assert_eq!((code, out.as_str()), (3, "out\n"), "exit code and stdout only");

    // ExecSync in a running container, and the probe of its root filesystem.
    let sleeper = ContainerSpec::new("sleeper", &app_id)
        .command(&["/bin/sleep", "inf"])
        .probe();
    let sleeper = ctd.run_container(&pod, &sleeper).await;
    let r = ctd.exec(&sleeper, &["/bin/cat", "/etc/marker"]).await;
    assert_eq!((r.exit_code, r.stdout.as_slice()), (0, MARKER.as_bytes()));
    let r = ctd.exec(&sleeper, &["/bin/sh", "-c", "exit 7"]).await;
    assert_eq!(r.exit_code, 7);
    let inside = ctd.probe_running(&sleeper).await;
    for runtime_mount in [
        "/proc",
        "/sys",
        "/dev",
        "/etc/hosts",
        "/etc/resolv.conf",
        "/.imaged-probe/busybox",
    ] {
        assert!(
            inside.mounts.contains(runtime_mount),
            "{runtime_mount} in {:?}",
            inside.mounts
        );
    }
    let app_ours = common::images::rootfs::umoci_unpack(&w.registry, "app", "v1").await;
    let (ours, theirs) = comparable(&inside, &common::images::tree::walk(&app_ours.rootfs()));
    common::images::tree::assert_same("app (running)", "inside", &ours, "umoci", &theirs);
    assert!(matches!(&ours[Path::new("bin/sh")].kind, Kind::Symlink(t) if t == Path::new("busybox")));

    let listed = ctd.list_containers().await;
    assert_eq!(listed.len(), 3, "{listed:?}");
    assert!(
        listed
            .iter()
            .all(|c| c.pod_sandbox_id == pod.id && c.image_ref == app_id)
    );

    // Every kind of layer change, unpacked by containerd's overlayfs, seen from inside = umoci's unpack.
    let changes_id = cri_pull(&ctd, &w.registry.image_ref("changes", "v1")).await;
    let seen = ctd
        .assert_rootfs_same_as_umoci(&pod, &changes_id, &w.registry, "changes", "v1")
        .await;
    assert_changes_applied(&seen);

    // containerd fetched the layers itself, and the registry's log says who asked.
    let fetched_by_containerd = |digest: &str| {
        w.registry.requests().iter().any(|r| {
            r.method == "GET"
                && r.path.ends_with(&format!("/blobs/{digest}"))
                && r.user_agent.starts_with("containerd/")
        })
    };
    assert!(fetched_by_containerd(&busybox_layer().digest), "{}", w.registry.log());
    assert!(changes.layers.iter().all(|l| fetched_by_containerd(&l.digest)));

    // While it runs, the traces see everything it made; dropped with its containers running, nothing of
    // it may be left.
    let live = traces.remaining().join("\n");
    for kind in ["temp dir", "mount", "process", "cgroup", "shim socket"] {
        assert!(
            live.contains(kind),
            "traces see no {kind} of a running instance:\n{live}"
        );
    }
    drop(ctd);
    traces.assert_none_left();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_outlive_containerd_killed_and_restarted() {
    let w = world().await;
    let mut ctd = w.containerd().await;
    let traces = ctd.traces();
    let app_id = cri_pull(&ctd, &w.registry.image_ref("app", "v1")).await;
    let pod = ctd.run_pod("restarts").await;
    let sleeper = ctd
        .run_container(
            &pod,
            &ContainerSpec::new("sleeper", &app_id).command(&["/bin/sleep", "inf"]),
        )
        .await;

    ctd.kill();
    assert!(ctd.pid().is_none());
    ctd.start_again().await;
    let running = cri::ContainerState::ContainerRunning as i32;
    assert_eq!(
        ctd.container_status(&sleeper).await.state,
        running,
        "survived SIGKILL of containerd"
    );
    assert_eq!(
        ctd.exec(&sleeper, &["/bin/cat", "/etc/marker"]).await.stdout,
        MARKER.as_bytes()
    );

    ctd.restart().await;
    assert_eq!(
        ctd.container_status(&sleeper).await.state,
        running,
        "survived a restart"
    );
    let ready = cri::PodSandboxState::SandboxReady as i32;
    assert_eq!(ctd.pod_status(&pod.id).await.state, ready);
    let after = ContainerSpec::new("after", &app_id).command(&["/bin/cat", "/etc/marker"]);
    let after = ctd.run_container(&pod, &after).await;
    assert_eq!(ctd.wait_exit(&after).await, 0);
    assert_eq!(ctd.output(&after).await, MARKER);
    ctd.remove_container(&after, 0).await;
    let left: Vec<String> = ctd.list_containers().await.into_iter().map(|c| c.id).collect();
    assert_eq!(left, std::slice::from_ref(&sleeper));

    ctd.remove_all_pods().await;
    assert!(ctd.list_containers().await.is_empty());
    assert!(ctd.list_pods().await.is_empty());
    drop(ctd);
    traces.assert_none_left();
}

#[test]
fn cri_log_records_join_partial_lines_per_stream() {
    let log = "2024-01-01T00:00:00.000000001Z stdout P hel\n\
               2024-01-01T00:00:00.000000002Z stderr F oops\n\
               2024-01-01T00:00:00.000000003Z stdout F lo world\n\
               2024-01-01T00:00:00.000000004Z stdout F \n";
    let line = |stream: &str, text: &str| LogLine {
        stream: stream.into(),
        text: text.into(),
    };
    assert_eq!(
        parse_cri_log(log),
        [
            line("stderr", "oops"),
            line("stdout", "hello world"),
            line("stdout", "")
        ]
    );
}

#[test]
fn probe_output_becomes_a_tree_without_runtime_mounts() {
    let out = "@mounts\n\
        1 0 0:1 / / rw - overlay overlay rw\n\
        2 1 0:2 / /proc rw - proc proc rw\n\
        3 1 0:3 /x /etc/hosts rw - ext4 /dev/vda rw\n\
        4 1 0:4 / /.imaged-probe/busybox ro - ext4 /dev/vda ro\n\
        @stat\n\
        /proc|directory|555|0|0|0|1|1|1|0|0\n\
        /etc|directory|755|0|0|4096|1|2|2|0|0\n\
        /etc/hosts|regular file|644|0|0|10|5|3|1|0|0\n\
        /etc/a|regular file|4755|1|2|3|7|4|2|0|0\n\
        /etc/b|regular file|4755|1|2|3|7|4|2|0|0\n\
        /etc/l|symbolic link|777|0|0|1|9|5|1|0|0\n\
        /dev-null|character special file|666|0|0|0|9|6|1|1|3\n\
        /.imaged-probe|directory|755|0|0|4096|1|7|2|0|0\n\
        /.imaged-probe/busybox|regular file|755|0|0|9|1|8|1|0|0\n\
        @sha256\n\
        aa  /etc/hosts\n\
        bb  /etc/a\n\
        bb  /etc/b\n\
        cc  /.imaged-probe/busybox\n\
        @links\n\
        /etc/l|a\n\
        @end\n";
    let inside = parse_probe(out);
    assert_eq!(inside.mounts.len(), 4);
    let a = &inside.tree[Path::new("etc/a")];
    assert_eq!((a.mode, a.uid, a.gid, a.mtime), (0o4755, 1, 2, Some(7)));
    assert_eq!(
        a.kind,
        Kind::File {
            len: 3,
            sha256: "bb".into()
        }
    );
    assert_eq!(a.link_group, Some("etc/a".into()));
    assert_eq!(inside.tree[Path::new("etc/l")].mode, 0, "symlink modes mean nothing");
    assert_eq!(inside.tree[Path::new("dev-null")].kind, Kind::Char(1, 3));
    let mut reference = inside.tree.clone();
    reference.remove(Path::new(".imaged-probe"));
    reference.remove(Path::new(".imaged-probe/busybox"));
    reference.remove(Path::new("etc/hosts"));
    let (ours, theirs) = comparable(&inside, &reference);
    let keys: Vec<&Path> = ours.keys().map(|p| p.as_path()).collect();
    assert_eq!(keys, ["dev-null", "etc", "etc/a", "etc/b", "etc/l"].map(Path::new));
    assert_eq!(ours, theirs);
}

#[test]
fn busybox_is_static_and_the_pause_image_sleeps_forever() {
    assert!(is_static_elf(&std::fs::read("/bin/busybox").unwrap()), "busybox-static");
    assert!(
        !is_static_elf(&std::fs::read("/usr/bin/containerd").unwrap()),
        "containerd is dynamic"
    );
    assert!(!is_static_elf(b"#!/bin/sh\n"));
    let config: serde_json::Value = serde_json::from_slice(&pause_image().config).unwrap();
    assert_eq!(config["config"]["Entrypoint"], serde_json::json!(["/bin/sleep", "inf"]));
    assert_eq!(pause_image().layers, [busybox_layer()]);
}
