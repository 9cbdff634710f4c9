//! Independent checks of what a registry serves: `skopeo` reads manifests back and copies images into an
//! OCI layout, `umoci` unpacks them into a rootfs. Tests use these to prove an image is what they think it
//! is without going through imaged. A missing tool fails with a hint to run `hack/install-test-deps`.

use std::path::{Path, PathBuf};

use serde_json::Value;
use tempfile::TempDir;

use crate::common::images::image::{DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST};
use crate::common::registry::{TestRegistry, require_tool};

/// Runs `tool args…` on a blocking thread; returns its stdout, panics with its stderr unless it succeeds.
pub async fn run(tool: &str, args: &[&str]) -> Vec<u8> {
    require_tool(tool);
    let tool = tool.to_owned();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new(&tool)
            .args(&args)
            .output()
            .unwrap_or_else(|e| panic!("run {tool}: {e}"));
        assert!(
            out.status.success(),
            "{tool} {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    })
    .await
    .expect("join tool thread")
}

/// `docker://127.0.0.1:PORT/<repo>:<reference>` (or `@<digest>`), as skopeo names a registry image.
pub fn docker_ref(reg: &TestRegistry, repo: &str, reference: &str) -> String {
    format!("docker://{}", reg.image_ref(repo, reference))
}

/// `skopeo inspect --raw`: the manifest bytes exactly as the registry serves them.
pub async fn skopeo_raw_manifest(reg: &TestRegistry, repo: &str, reference: &str) -> Vec<u8> {
    let mut args = vec!["inspect", "--tls-verify=false", "--raw"];
    let creds = reg.credentials().map(|(u, p)| format!("--creds={u}:{p}"));
    args.extend(creds.as_deref());
    let src = docker_ref(reg, repo, reference);
    args.push(&src);
    run("skopeo", &args).await
}

/// Asserts that `repo:reference` is served as exactly `manifest` with digest `digest`, as seen by
/// `skopeo inspect --raw`, by `skopeo inspect`'s `Digest` and by the `Docker-Content-Digest` of a GET.
pub async fn assert_served(reg: &TestRegistry, repo: &str, reference: &str, manifest: &[u8], digest: &str) {
    let src = docker_ref(reg, repo, reference);
    let raw = skopeo_raw_manifest(reg, repo, reference).await;
    let (raw, ours) = (String::from_utf8_lossy(&raw), String::from_utf8_lossy(manifest));
    assert_eq!(raw, ours, "raw manifest of {src}");

    let mut args = vec!["inspect", "--tls-verify=false"];
    let creds = reg.credentials().map(|(u, p)| format!("--creds={u}:{p}"));
    args.extend(creds.as_deref());
    args.push(&src);
    let inspect: Value = serde_json::from_slice(&run("skopeo", &args).await).expect("inspect json");
    assert_eq!(inspect["Digest"], digest, "skopeo digest of {src}");

    let url = format!("{}/v2/{repo}/manifests/{reference}", reg.url());
    let accept = [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST].join(", ");
    let mut req = reqwest::Client::new().get(&url).header("accept", accept);
    if let Some((user, password)) = reg.credentials() {
        req = req.basic_auth(user, Some(password));
    }
    let resp = req.send().await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
    assert_eq!(resp.status(), 200, "GET {url}");
    let header = resp.headers().get("docker-content-digest").cloned();
    assert_eq!(
        header.as_ref().and_then(|h| h.to_str().ok()),
        Some(digest),
        "Docker-Content-Digest of {url}"
    );
    let body = resp.bytes().await.expect("manifest body");
    assert!(body.as_ref() == manifest, "GET {url} returns the pushed bytes");
}

/// An image copied into an OCI layout (tag `image`) by skopeo, and maybe unpacked by umoci.
pub struct Copied {
    dir: TempDir,
}

impl Copied {
    /// The OCI layout directory.
    pub fn layout(&self) -> PathBuf {
        self.dir.path().join("layout")
    }

    /// A blob of the layout, by `sha256:<hex>` digest.
    pub fn blob(&self, digest: &str) -> Vec<u8> {
        let path = self
            .layout()
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("read blob {}: {e}", path.display()))
    }

    /// The unpacked rootfs (only after `unpack`).
    pub fn rootfs(&self) -> PathBuf {
        self.dir.path().join("bundle/rootfs")
    }

    /// A file of the unpacked rootfs, as text.
    pub fn read(&self, path: &str) -> String {
        std::fs::read_to_string(self.rootfs().join(path))
            .unwrap_or_else(|e| panic!("read {path} from unpacked rootfs: {e}"))
    }
}

/// `skopeo copy docker://… oci:<tmp>/layout:image` with `global` flags before `copy` (e.g.
/// `--override-arch=arm64`), using the registry's credentials; then `umoci unpack --rootless` into
/// `<tmp>/bundle` when `unpack` is set.
pub async fn skopeo_copy(reg: &TestRegistry, repo: &str, reference: &str, global: &[&str], unpack: bool) -> Copied {
    let dir = TempDir::new().expect("copy temp dir");
    let layout = format!("{}:image", dir.path().join("layout").display());
    let mut args: Vec<String> = vec!["--insecure-policy".into()];
    args.extend(global.iter().map(|s| s.to_string()));
    args.extend(["copy".into(), "--src-tls-verify=false".into()]);
    args.extend(reg.credentials().map(|(u, p)| format!("--src-creds={u}:{p}")));
    args.extend([docker_ref(reg, repo, reference), format!("oci:{layout}")]);
    run("skopeo", &args.iter().map(String::as_str).collect::<Vec<_>>()).await;
    if unpack {
        let bundle = dir.path().join("bundle");
        let bundle = bundle.to_str().expect("utf-8 temp path");
        run("umoci", &["unpack", "--rootless", "--image", &layout, bundle]).await;
    }
    Copied { dir }
}

/// Whether `path` exists in `root` without following a final symlink.
pub fn exists_in(root: &Path, path: &str) -> bool {
    root.join(path).symlink_metadata().is_ok()
}
