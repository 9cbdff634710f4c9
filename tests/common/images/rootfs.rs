//! Root filesystems of pulled images, made two independent ways: `imaged mount` from the daemon's
//! snapshots, and `umoci unpack` (as root, so owners and devices are kept) of the same image copied from
//! the same registry by `skopeo copy`; [`same_as_umoci`] does both and asserts the trees are equal. Also
//! the daemon-side facts tests check against: the snapshot directories of verbose ImageStatus, and the
//! offline `imaged fsck`.

use std::path::{Path, PathBuf};
use std::process::Command;

use imaged::proto::runtime::v1 as cri;
use imaged::proto::runtime::v1::image_service_client::ImageServiceClient;
use serde_json::{Value, json};
use tempfile::TempDir;
use tonic::transport::Channel;

use crate::common::daemon::setup::Setup;
use crate::common::daemon::{pull, spec};
use crate::common::images::layer::sha256_digest;
use crate::common::images::tools::{docker_ref, run};
use crate::common::images::tree::{self, Node, Tree, walk};
use crate::common::registry::TestRegistry;

/// What a run of the `imaged` binary printed.
#[derive(Debug)]
pub struct Output {
    /// Whether it exited 0.
    pub ok: bool,
    /// Its stdout.
    pub stdout: String,
    /// Its stderr.
    pub stderr: String,
}

/// Runs the `imaged` binary with `args` (blocking; it is short).
pub fn imaged(args: &[&std::ffi::OsStr]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_imaged"))
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("run imaged");
    Output {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `imaged mount IMAGE DIR --socket SOCKET`.
pub fn mount(image: &str, dir: &Path, socket: &Path) -> Output {
    imaged(&[
        "mount".as_ref(),
        image.as_ref(),
        dir.as_os_str(),
        "--socket".as_ref(),
        socket.as_os_str(),
    ])
}

/// `imaged fsck --root ROOT` (the daemon must be stopped).
pub fn fsck(root: &Path) -> Output {
    imaged(&["fsck".as_ref(), "--root".as_ref(), root.as_os_str()])
}

/// The `info` JSON of a verbose ImageStatus of `image` (panics if the image is absent).
pub async fn verbose_info(c: &mut ImageServiceClient<Channel>, image: &str) -> serde_json::Value {
    let resp = c
        .image_status(cri::ImageStatusRequest {
            image: spec(image),
            verbose: true,
        })
        .await
        .expect("verbose ImageStatus")
        .into_inner();
    assert!(resp.image.is_some(), "ImageStatus({image}) found nothing");
    serde_json::from_str(&resp.info["info"]).expect("info is JSON")
}

/// `info.snapshots` of `image`: its snapshot `fs` directories, base first.
pub async fn snapshots(c: &mut ImageServiceClient<Channel>, image: &str) -> Vec<PathBuf> {
    let info = verbose_info(c, image).await;
    info["snapshots"]
        .as_array()
        .unwrap_or_else(|| panic!("no info.snapshots in {info}"))
        .iter()
        .map(|v| PathBuf::from(v.as_str().expect("snapshot path")))
        .collect()
}

/// A rootfs `imaged mount` made, and its tree.
pub struct Mounted {
    _dir: TempDir,
    /// The rootfs directory.
    pub root: PathBuf,
    /// Its tree.
    pub tree: Tree,
}

impl Mounted {
    /// The node at `p`; panics (showing the tree) if absent.
    pub fn node(&self, p: &str) -> &Node {
        self.tree
            .get(Path::new(p))
            .unwrap_or_else(|| panic!("{p} missing from the mounted rootfs:\n{}", tree::render(&self.tree)))
    }

    /// The contents of file `p`.
    pub fn read(&self, p: &str) -> String {
        std::fs::read_to_string(self.root.join(p)).unwrap_or_else(|e| panic!("read {p}: {e}"))
    }

    /// Whether `p` exists (not following a final symlink).
    pub fn has(&self, p: &str) -> bool {
        self.tree.contains_key(Path::new(p))
    }
}

/// Mounts `image` (already pulled) into a fresh directory.
pub fn mount_fresh(s: &Setup, image: &str) -> Mounted {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("rootfs");
    let out = mount(image, &root, &s.daemon.socket);
    assert!(out.ok, "imaged mount {image}: {}", out.stderr);
    assert!(out.stdout.contains(&root.display().to_string()), "{}", out.stdout);
    Mounted {
        tree: walk(&root),
        _dir: dir,
        root,
    }
}

/// Pulls `repo:tag` into imaged, mounts it, unpacks it with umoci and asserts the two trees are equal.
pub async fn same_as_umoci(s: &Setup, repo: &str, tag: &str) -> Mounted {
    let image = s.image(repo, tag);
    let mut c = s.daemon.client().await;
    if let Err(e) = pull(&mut c, &image, None).await {
        panic!("pull {image}: {e}; log:\n{}", s.daemon.log());
    }
    let ours = mount_fresh(s, &image);
    let reference = umoci_unpack(&s.registry, repo, tag).await;
    tree::assert_same(&image, "imaged", &ours.tree, "umoci", &walk(&reference.rootfs()));
    ours
}

/// A rootfs unpacked by `umoci`, with the temp dir holding it.
pub struct Reference {
    dir: TempDir,
}

impl Reference {
    /// The unpacked root filesystem.
    pub fn rootfs(&self) -> PathBuf {
        self.dir.path().join("bundle/rootfs")
    }
}

/// `skopeo copy docker://REG/REPO:TAG oci:…` then `umoci unpack` (not `--rootless`: the tests run as root,
/// so owners, set-id bits and devices are kept). Debian's umoci 0.4 cannot read zstd layers (and skopeo
/// 1.9's `--dest-decompress` leaves them alone), so those are decompressed in the layout first: the same
/// tar, stored as a plain `tar` layer.
pub async fn umoci_unpack(reg: &TestRegistry, repo: &str, tag: &str) -> Reference {
    assert!(
        rustix::process::geteuid().is_root(),
        "the differential tests run as root"
    );
    let dir = TempDir::new().expect("umoci temp dir");
    let layout = format!("{}:image", dir.path().join("layout").display());
    let src = docker_ref(reg, repo, tag);
    let dest = format!("oci:{layout}");
    run(
        "skopeo",
        &["--insecure-policy", "copy", "--src-tls-verify=false", &src, &dest],
    )
    .await;
    decompress_zstd_layers(&dir.path().join("layout"));
    let bundle = dir.path().join("bundle");
    run(
        "umoci",
        &["unpack", "--image", &layout, bundle.to_str().expect("utf-8 path")],
    )
    .await;
    Reference { dir }
}

/// Rewrites the OCI layout's only image so that its zstd layers are stored as plain tars.
fn decompress_zstd_layers(layout: &Path) {
    let blob = |digest: &str| layout.join("blobs/sha256").join(digest.trim_start_matches("sha256:"));
    let put = |data: &[u8]| {
        let digest = sha256_digest(data);
        std::fs::write(blob(&digest), data).expect("write layout blob");
        digest
    };
    let index_path = layout.join("index.json");
    let mut index: Value = serde_json::from_slice(&std::fs::read(&index_path).expect("index.json")).unwrap();
    let desc = &mut index["manifests"][0];
    let mut manifest: Value =
        serde_json::from_slice(&std::fs::read(blob(desc["digest"].as_str().unwrap())).expect("manifest")).unwrap();
    let mut changed = false;
    for layer in manifest["layers"].as_array_mut().expect("layers") {
        if layer["mediaType"] != "application/vnd.oci.image.layer.v1.tar+zstd" {
            continue;
        }
        let compressed = std::fs::read(blob(layer["digest"].as_str().unwrap())).expect("zstd layer");
        let tar = zstd::decode_all(compressed.as_slice()).expect("decompress zstd layer");
        layer["mediaType"] = json!("application/vnd.oci.image.layer.v1.tar");
        layer["size"] = json!(tar.len());
        layer["digest"] = json!(put(&tar));
        changed = true;
    }
    if changed {
        let bytes = serde_json::to_vec(&manifest).unwrap();
        desc["size"] = json!(bytes.len());
        desc["digest"] = json!(put(&bytes));
        std::fs::write(&index_path, serde_json::to_vec(&index).unwrap()).expect("write index.json");
    }
}

use crate::common::runtimes::containerd::pods::Pod;

impl crate::common::runtimes::containerd::Containerd {
    /// Asserts that `image` (an image id or reference containerd can resolve), run in `pod`, shows the same
    /// root filesystem from inside as `umoci unpack` makes of `repo:tag` from `registry`; returns the
    /// comparable inside tree.
    pub async fn assert_rootfs_same_as_umoci(
        &self,
        pod: &Pod,
        image: &str,
        registry: &TestRegistry,
        repo: &str,
        tag: &str,
    ) -> Tree {
        let name = format!("probe-{}", repo.replace('/', "-"));
        let inside = self.probe_rootfs(pod, &name, image).await;
        let reference = umoci_unpack(registry, repo, tag).await;
        let (ours, theirs) =
            crate::common::runtimes::containerd::inside::comparable(&inside, &walk(&reference.rootfs()));
        tree::assert_same(image, "inside", &ours, "umoci", &theirs);
        ours
    }
}
