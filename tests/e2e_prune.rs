//! Graph pruning (issue 5, OpenShift's `oc adm prune images` on a node) end to end: a real registry, the real
//! daemon over its unix socket, `imaged.v1.Images/Prune`, and the store on disk checked by the test itself:
//! which images remain, which files are gone from `<root>/content/blobs/sha256` and `<root>/snapshots`.
//!
//! Every test compares sets: what a dry run lists, what the real run then lists, and what actually left the
//! disk. Expected blobs and snapshots (chain ids) are computed here from the pushed images, not asked of
//! imaged. The one fake is the container runtime (`common::runtimes::fake_runtime`), which only answers `ListContainers`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use common::daemon::setup::Setup;
use common::daemon::{Daemon, DaemonOptions, blobs, list, pull, status};
use common::images::image::{BuiltImage, image_over, random_bytes, random_layer, sha256_digest};
use common::registry::{RegistryOptions, TestRegistry, write_hosts_toml};
use common::runtimes::fake_runtime::{FakeRuntime, container_by_spec};
use imaged::proto::imaged::v1 as pb;
use imaged::proto::imaged::v1::images_client::ImagesClient;
use imaged::proto::runtime::v1 as cri;
use imaged::proto::runtime::v1::image_service_client::ImageServiceClient;
use tonic::transport::Channel;

/// Starts a registry, then the daemon with `[pull] backoff_initial = "0s"`, no background GC for an hour, and
/// `top` (top-level keys) and `gc` (lines of the `[gc]` section) built from the registry's address.
async fn start(top: impl FnOnce(&str) -> String, gc: &str) -> Setup {
    let registry = TestRegistry::start(RegistryOptions::default()).await;
    let hosts = tempfile::tempdir().unwrap();
    write_hosts_toml(hosts.path(), &registry.addr(), &registry.url());
    let config = format!(
        "{}\n[pull]\nbackoff_initial = \"0s\"\n\n[gc]\nperiod = \"1h\"\n{gc}\n",
        top(&registry.addr())
    );
    let opts = DaemonOptions {
        hosts_dir: Some(hosts.path().to_path_buf()),
        config: Some(config),
        ..Default::default()
    };
    let daemon = Daemon::start(opts).await;
    Setup {
        registry,
        daemon,
        hosts,
    }
}

/// `(kind, digest)` of everything `images` reference that `kept` do not.
fn unique_to(images: &[&BuiltImage], kept: &[&BuiltImage]) -> BTreeSet<(String, String)> {
    let refs = |imgs: &[&BuiltImage]| -> BTreeSet<(String, String)> {
        imgs.iter()
            .flat_map(|i| {
                let b = i.blob_set().into_iter().map(|d| ("blob".to_string(), d));
                b.chain(i.chain_id_set().into_iter().map(|c| ("snapshot".to_string(), c)))
            })
            .collect()
    };
    refs(images).difference(&refs(kept)).cloned().collect()
}

/// Every blob and snapshot directory in the store, as `(kind, sha256:<hex>)`.
fn on_disk(root: &Path) -> BTreeSet<(String, String)> {
    let snaps = std::fs::read_dir(root.join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.len() == 64)
        .map(|n| ("snapshot".to_string(), format!("sha256:{n}")));
    blobs(root)
        .into_iter()
        .map(|d| ("blob".to_string(), d))
        .chain(snaps)
        .collect()
}

fn resources(r: &pb::PruneResponse) -> BTreeSet<(String, String)> {
    r.resources.iter().map(|x| (x.kind.clone(), x.digest.clone())).collect()
}

fn image_ids(r: &pb::PruneResponse) -> BTreeSet<String> {
    r.images.iter().map(|i| i.id.clone()).collect()
}

async fn ids(c: &mut ImageServiceClient<Channel>) -> BTreeSet<String> {
    list(c).await.into_iter().map(|i| i.id).collect()
}

fn set(images: &[&BuiltImage]) -> BTreeSet<String> {
    images.iter().map(|i| i.config_digest.clone()).collect()
}

async fn prune(s: &Setup, younger: u64, revisions: Option<u32>, all: bool, dry_run: bool) -> pb::PruneResponse {
    let mut c = ImagesClient::new(imaged::cli::channel(&s.daemon.socket).await.unwrap());
    let req = pb::PruneRequest {
        keep_younger_than_seconds: Some(younger),
        keep_tag_revisions: revisions,
        all,
        dry_run,
    };
    c.prune(req).await.expect("Prune").into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_keeps_the_newest_tag_revisions_and_its_dry_run_lists_exactly_what_goes() {
    let s = start(|_| String::new(), "").await;
    let root = s.daemon.root.clone();
    let mut c = s.daemon.client().await;
    let base = random_layer(1, 64 * 1024);
    let revs: Vec<BuiltImage> = (0..4u64)
        .map(|i| image_over(&[&base, &random_layer(10 + i, 32 * 1024)]))
        .collect();
    let [a, b, cc, d] = [&revs[0], &revs[1], &revs[2], &revs[3]];
    let tag = s.image("app", "latest");
    // The tag moves four times: A, B, C, then D; A to C stay in the store as older revisions.
    for img in &revs {
        s.push("app", "latest", img).await;
        assert_eq!(pull(&mut c, &tag, None).await.unwrap(), img.config_digest);
    }
    let e = image_over(&[&base, &random_layer(20, 32 * 1024)]);
    s.push("other", "v1", &e).await;
    let by_digest = format!("{}@{}", s.name("other"), e.manifest_digest);
    assert_eq!(
        pull(&mut c, &by_digest, None).await.unwrap(),
        e.config_digest,
        "pulled only by digest"
    );
    assert_eq!(status(&mut c, &tag).await.unwrap().id, d.config_digest);
    let (disk_before, ids_before) = (on_disk(&root), ids(&mut c).await);
    assert_eq!(ids_before, set(&[a, b, cc, d, &e]));

    let dry = prune(&s, 0, Some(2), false, true).await;
    println!("dry run:\n{}", dry.report);
    let expected = unique_to(&[a, b], &[cc, d, &e]);
    assert_eq!(
        image_ids(&dry),
        set(&[a, b]),
        "revisions 2 and 3 of the tag go: {dry:#?}"
    );
    let reasons: BTreeSet<(String, String)> = dry.images.iter().map(|i| (i.id.clone(), i.reason.clone())).collect();
    assert_eq!(
        reasons,
        BTreeSet::from([
            (a.config_digest.clone(), format!("revision 3 of tag {tag}")),
            (b.config_digest.clone(), format!("revision 2 of tag {tag}")),
        ])
    );
    assert_eq!(
        resources(&dry),
        expected,
        "A's and B's own blobs and snapshots, not the shared base"
    );
    assert!(dry.resources.iter().all(|r| r.bytes > 0), "{dry:#?}");
    assert_eq!(dry.freed_bytes, dry.resources.iter().map(|r| r.bytes).sum::<u64>());
    for line in dry
        .images
        .iter()
        .map(|i| &i.id)
        .chain(dry.resources.iter().map(|r| &r.digest))
    {
        assert!(
            dry.report.contains(line.as_str()),
            "the report lists {line}:\n{}",
            dry.report
        );
    }
    assert_eq!(on_disk(&root), disk_before, "a dry run removes nothing");
    assert_eq!(ids(&mut c).await, ids_before, "a dry run removes no image");

    let real = prune(&s, 0, Some(2), false, false).await;
    assert_eq!(
        real.images, dry.images,
        "the real run removes the images the dry run listed"
    );
    assert_eq!(real.resources, dry.resources);
    assert_eq!(real.report, dry.report, "the same listing");
    assert_eq!(real.freed_bytes, dry.freed_bytes, "the bytes the dry run announced");
    let gone: BTreeSet<(String, String)> = disk_before.difference(&on_disk(&root)).cloned().collect();
    assert_eq!(gone, expected, "exactly the listed blobs and snapshots left the disk");
    assert_eq!(
        ids(&mut c).await,
        set(&[cc, d, &e]),
        "C and D (kept revisions) and E (untagged) remain"
    );
    assert!(
        unique_to(&[cc, d, &e], &[]).is_subset(&on_disk(&root)),
        "kept images are whole"
    );

    let again = prune(&s, 0, Some(2), false, false).await;
    assert!(
        again.images.is_empty() && again.resources.is_empty(),
        "nothing more to prune: {again:#?}"
    );
    let all = prune(&s, 0, Some(2), true, false).await;
    assert_eq!(
        image_ids(&all),
        set(&[&e]),
        "with all, the image pulled only by digest goes: {all:#?}"
    );
    assert_eq!(all.images[0].reason, "untagged");
    assert_eq!(resources(&all), unique_to(&[&e], &[cc, d]));
    assert_eq!(ids(&mut c).await, set(&[cc, d]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_keeps_young_images_and_never_removes_pinned_or_in_use_ones() {
    let rt = FakeRuntime::start().await;
    let gc = format!("runtime_endpoint = \"{}\"", rt.endpoint());
    let s = start(|addr| format!("pinned_images = [\"{addr}/prune/pause:*\"]"), &gc).await;
    let root = s.daemon.root.clone();
    let mut c = s.daemon.client().await;
    let [p, u, x1, x2] = [1u64, 2, 3, 4].map(|seed| image_over(&[&random_layer(seed, 48 * 1024)]));
    s.push("prune/pause", "3.9", &p).await;
    s.push("prune/inuse", "v1", &u).await;
    let (pause, inuse, app) = (
        s.image("prune/pause", "3.9"),
        s.image("prune/inuse", "v1"),
        s.image("prune/app", "v1"),
    );
    pull(&mut c, &pause, None).await.unwrap();
    pull(&mut c, &inuse, None).await.unwrap();
    for x in [&x1, &x2] {
        s.push("prune/app", "v1", x).await;
        assert_eq!(pull(&mut c, &app, None).await.unwrap(), x.config_digest);
    }
    // The runtime names the in-use image only by tag, in the container's ImageSpec.
    rt.set_containers(vec![container_by_spec(
        "running-1",
        &inuse,
        cri::ContainerState::ContainerRunning,
    )]);
    assert!(
        status(&mut c, &pause).await.unwrap().pinned,
        "the pause image is pinned by the config"
    );
    let (disk, all_ids) = (on_disk(&root), ids(&mut c).await);

    // Everything was pulled a moment ago: with a large keep_younger_than nothing goes, whatever else is asked.
    for dry_run in [true, false] {
        let young = prune(&s, 3600, Some(0), true, dry_run).await;
        assert!(
            young.images.is_empty() && young.resources.is_empty(),
            "young images are kept: {young:#?}"
        );
    }
    assert_eq!((on_disk(&root), ids(&mut c).await), (disk.clone(), all_ids));

    // Keep no revision, no age, untagged too: only what is pinned or in use survives.
    let dry = prune(&s, 0, Some(0), true, true).await;
    let real = prune(&s, 0, Some(0), true, false).await;
    assert_eq!(image_ids(&real), set(&[&x1, &x2]), "{real:#?}");
    assert_eq!((&real.images, &real.resources), (&dry.images, &dry.resources));
    assert_eq!(resources(&real), unique_to(&[&x1, &x2], &[&p, &u]));
    assert_eq!(ids(&mut c).await, set(&[&p, &u]), "pinned and in-use images survive");
    assert!(
        unique_to(&[&p, &u], &[]).is_subset(&on_disk(&root)),
        "and keep all their blobs and snapshots"
    );
    assert!(rt.calls() > 0, "imaged asked the runtime");

    // The container is gone: the in-use image is now prunable, the pinned one still is not.
    rt.set_containers(Vec::new());
    let after = prune(&s, 0, Some(0), true, false).await;
    assert_eq!(image_ids(&after), set(&[&u]), "{after:#?}");
    assert_eq!(ids(&mut c).await, set(&[&p]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_removes_an_orphan_blob_and_lists_it_in_its_dry_run() {
    let s = start(|_| String::new(), "").await;
    let root = s.daemon.root.clone();
    let mut c = s.daemon.client().await;
    let img = image_over(&[&random_layer(1, 48 * 1024)]);
    s.push("keep", "v1", &img).await;
    pull(&mut c, &s.image("keep", "v1"), None).await.unwrap();
    let disk = on_disk(&root);

    // A well-formed blob that no image references, dropped in while the daemon runs.
    let data = random_bytes(99, 100_000);
    let digest = sha256_digest(&data);
    let path = root
        .join("content/blobs/sha256")
        .join(digest.strip_prefix("sha256:").unwrap());
    std::fs::write(&path, &data).unwrap();
    std::fs::File::open(&path).unwrap().sync_all().unwrap();
    let bytes = std::fs::metadata(&path).unwrap().blocks() * 512;

    let dry = prune(&s, 3600, None, false, true).await;
    println!("dry run:\n{}", dry.report);
    assert!(dry.images.is_empty(), "the young image stays: {dry:#?}");
    let listed: Vec<(String, String, u64)> = dry
        .resources
        .iter()
        .map(|r| (r.kind.clone(), r.digest.clone(), r.bytes))
        .collect();
    assert_eq!(
        listed,
        vec![("blob".to_string(), digest.clone(), bytes)],
        "the orphan, and only it"
    );
    assert!(
        dry.report.contains(&format!("blob {digest}  {bytes} bytes")),
        "{}",
        dry.report
    );
    assert!(path.exists(), "a dry run leaves it");

    let real = prune(&s, 3600, None, false, false).await;
    assert_eq!(real.resources, dry.resources);
    assert_eq!(real.freed_bytes, bytes);
    assert!(!path.exists(), "the orphan is gone");
    assert_eq!(on_disk(&root), disk, "and nothing else");
    assert_eq!(ids(&mut c).await, set(&[&img]));
}
