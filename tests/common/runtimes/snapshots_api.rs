//! containerd's snapshots API as containerd's proxy snapshotter calls it, through containerd's own Rust
//! client (`containerd-client`), on the snapshotter named `imaged`; and the mounts it answers mounted as
//! containerd mounts them.

use std::collections::HashMap;
use std::path::Path;

use containerd_client::services::v1::snapshots as api;
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::types::Mount;
use tonic::transport::Channel;

use crate::common::daemon::DaemonOptions;
use crate::common::daemon::setup::Setup;
use crate::common::images::image::BuiltImage;
use crate::common::registry::push::push_image;
use crate::common::registry::{RegistryOptions, TestRegistry, plain_hosts_toml};

/// A registry and an imaged pulling from it, to call imaged's snapshot API on the layers it pulled.
pub struct World {
    /// The registry images are pushed to (`setup.registry`) and the imaged serving the snapshot API
    /// (`setup.daemon`).
    pub setup: Setup,
}

/// A registry and an imaged using it.
pub async fn world() -> World {
    let registry = TestRegistry::start(RegistryOptions::default()).await;
    let hosts = plain_hosts_toml(&registry.url());
    World {
        setup: Setup::with_hosts(registry, &hosts, DaemonOptions::default()).await,
    }
}

impl World {
    /// A snapshots client on imaged's socket.
    pub async fn client(&self) -> SnapshotsClient<Channel> {
        SnapshotsClient::new(imaged::uds::channel(&self.setup.daemon.socket).await.unwrap())
    }

    /// Pushes and pulls (through imaged) `image`; returns its chain ids, base first.
    pub async fn pulled(&self, repo: &str, image: &BuiltImage) -> Vec<String> {
        let s = &self.setup;
        push_image(&s.registry.addr(), repo, "v1", image, None).await;
        let mut c = s.daemon.client().await;
        crate::common::daemon::pull(&mut c, &s.registry.image_ref(repo, "v1"), None)
            .await
            .unwrap();
        imaged::metadata::chain_ids(image.layers.iter().map(|l| l.diff_id.parse().unwrap()))
            .iter()
            .map(|c| c.to_string())
            .collect()
    }
}

/// Prepare: an active snapshot `key` over `parent` ("" for none); its mounts.
pub async fn prepare(c: &mut SnapshotsClient<Channel>, key: &str, parent: &str) -> Result<Vec<Mount>, tonic::Status> {
    let req = api::PrepareSnapshotRequest {
        snapshotter: "imaged".into(),
        key: key.into(),
        parent: parent.into(),
        labels: HashMap::new(),
    };
    Ok(c.prepare(req).await?.into_inner().mounts)
}

/// Commit: the active snapshot `key` becomes the committed `name`.
pub async fn commit(c: &mut SnapshotsClient<Channel>, name: &str, key: &str) -> Result<(), tonic::Status> {
    let req = api::CommitSnapshotRequest {
        snapshotter: "imaged".into(),
        name: name.into(),
        key: key.into(),
        ..Default::default()
    };
    c.commit(req).await.map(|_| ())
}

/// Stat: the snapshot `key`'s info.
pub async fn stat(c: &mut SnapshotsClient<Channel>, key: &str) -> Result<api::Info, tonic::Status> {
    let req = api::StatSnapshotRequest {
        snapshotter: "imaged".into(),
        key: key.into(),
    };
    Ok(c.stat(req).await?.into_inner().info.unwrap())
}

/// Remove: the snapshot `key`.
pub async fn remove(c: &mut SnapshotsClient<Channel>, key: &str) -> Result<(), tonic::Status> {
    let req = api::RemoveSnapshotRequest {
        snapshotter: "imaged".into(),
        key: key.into(),
    };
    c.remove(req).await.map(|_| ())
}

/// List (a stream, collected) with containerd's `filters`.
pub async fn list(c: &mut SnapshotsClient<Channel>, filters: &[&str]) -> Result<Vec<api::Info>, tonic::Status> {
    let req = api::ListSnapshotsRequest {
        snapshotter: "imaged".into(),
        filters: filters.iter().map(|s| s.to_string()).collect(),
    };
    let mut stream = c.list(req).await?.into_inner();
    let mut out = Vec::new();
    while let Some(m) = stream.message().await? {
        out.extend(m.info);
    }
    Ok(out)
}

/// Mounts `mounts` (one mount, as imaged answers) on `target` as containerd does, shortening a long
/// overlay option string by changing into the lower directories' common parent (containerd's
/// `compactLowerdirOption`) — which imaged's short layer links make effective.
pub fn mount(mounts: &[Mount], target: &Path) {
    assert_eq!(mounts.len(), 1, "{mounts:?}");
    let m = &mounts[0];
    let (dir, options) = compact(&m.options);
    let options = options.join(",");
    assert!(
        options.len() < 4096 - 512,
        "overlay options still over a page: {} bytes",
        options.len()
    );
    let mut cmd = std::process::Command::new("mount");
    if m.r#type == "bind" {
        cmd.arg("--bind");
        if m.options.iter().any(|o| o == "ro") {
            cmd.args(["-o", "ro"]);
        }
    } else {
        cmd.args(["-t", &m.r#type, "-o", &options]);
    }
    cmd.arg(&m.source).arg(target);
    if let Some(d) = dir {
        cmd.current_dir(d);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "mount {m:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Unmounts `target`.
pub fn umount(target: &Path) {
    let out = std::process::Command::new("umount").arg(target).output().unwrap();
    assert!(out.status.success(), "umount: {}", String::from_utf8_lossy(&out.stderr));
}

/// containerd's `compactLowerdirOption`: lowerdirs relative to the parent of their longest common prefix.
pub fn compact(options: &[String]) -> (Option<String>, Vec<String>) {
    let Some(i) = options.iter().position(|o| o.starts_with("lowerdir=")) else {
        return (None, options.to_vec());
    };
    let dirs: Vec<&str> = options[i]["lowerdir=".len()..].split(':').collect();
    if dirs.len() < 2 {
        return (None, options.to_vec());
    }
    let mut common = dirs[0].to_string();
    for d in &dirs[1..] {
        let n = common.bytes().zip(d.bytes()).take_while(|(a, b)| a == b).count();
        common.truncate(n);
    }
    let parent = match common.rfind('/') {
        Some(0) | None => return (None, options.to_vec()),
        Some(p) => common[..p].to_string(),
    };
    let rel: Vec<&str> = dirs.iter().map(|d| &d[parent.len() + 1..]).collect();
    let mut out = options.to_vec();
    out[i] = format!("lowerdir={}", rel.join(":"));
    (Some(parent), out)
}
