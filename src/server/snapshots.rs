//! containerd's snapshot API (`containerd.services.snapshots.v1.Snapshots`) on imaged's socket: the thin
//! gRPC skin over [`Snapshotter`], as containerd's `services/snapshots` is over its `Snapshotter` interface.
//! containerd loads it as a proxy plugin (`[proxy_plugins.imaged] type = "snapshot"`); the `snapshotter` field
//! of each request (the plugin's name in containerd's config) is ignored: there is one snapshotter.

use std::collections::BTreeMap;
use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::error::Classify;
use crate::proto::containerd::services::snapshots::v1 as api;
use crate::proto::containerd::types as ctypes;
use crate::server::instrument::Rpc;
use crate::server::status::to_status;
use crate::snapshotter::{Info, Kind, Mount, Snapshotter, SnapshotterError};

/// Infos per List message (containerd's own service sends 100 at a time).
const LIST_BATCH: usize = 100;

/// The snapshot service over the snapshotter.
pub struct SnapshotsService {
    snapshotter: Arc<Snapshotter>,
}

impl SnapshotsService {
    /// The gRPC server to add to imaged's socket.
    pub fn server(snapshotter: Arc<Snapshotter>) -> api::snapshots_server::SnapshotsServer<SnapshotsService> {
        api::snapshots_server::SnapshotsServer::new(SnapshotsService { snapshotter })
    }

    /// Runs `f` on the snapshotter off the async threads (it creates, measures and removes directories),
    /// in the call's span: containerd calls these all the time, so they log at debug.
    async fn run<T: Send + 'static>(
        &self,
        op: &'static str,
        f: impl FnOnce(&Snapshotter) -> Result<T, SnapshotterError> + Send + 'static,
    ) -> Result<T, Status> {
        let sn = self.snapshotter.clone();
        Rpc::debug(op, &())
            .run(async move {
                let result = tokio::task::spawn_blocking(move || f(&sn))
                    .await
                    .map_err(|e| Status::internal(format!("{op}: task failed: {e}")))?;
                result.map_err(|e| {
                    // AlreadyExists on Prepare and FailedPrecondition on Remove are answers containerd expects.
                    if e.kind() == crate::error::ErrorKind::Internal {
                        tracing::warn!(op, error = %e, "snapshot request failed");
                    }
                    to_status(&e, None)
                })
            })
            .await
    }
}

#[tonic::async_trait]
impl api::snapshots_server::Snapshots for SnapshotsService {
    async fn prepare(
        &self,
        req: Request<api::PrepareSnapshotRequest>,
    ) -> Result<Response<api::PrepareSnapshotResponse>, Status> {
        let r = req.into_inner();
        let labels = BTreeMap::from_iter(r.labels);
        let mounts = self
            .run("snapshots.Prepare", move |s| s.prepare(&r.key, &r.parent, labels))
            .await?;
        Ok(Response::new(api::PrepareSnapshotResponse {
            mounts: mounts.into_iter().map(mount).collect(),
        }))
    }

    async fn view(
        &self,
        req: Request<api::ViewSnapshotRequest>,
    ) -> Result<Response<api::ViewSnapshotResponse>, Status> {
        let r = req.into_inner();
        let labels = BTreeMap::from_iter(r.labels);
        let mounts = self
            .run("snapshots.View", move |s| s.view(&r.key, &r.parent, labels))
            .await?;
        Ok(Response::new(api::ViewSnapshotResponse {
            mounts: mounts.into_iter().map(mount).collect(),
        }))
    }

    async fn mounts(&self, req: Request<api::MountsRequest>) -> Result<Response<api::MountsResponse>, Status> {
        let key = req.into_inner().key;
        let mounts = self.run("snapshots.Mounts", move |s| s.mounts(&key)).await?;
        Ok(Response::new(api::MountsResponse {
            mounts: mounts.into_iter().map(mount).collect(),
        }))
    }

    async fn commit(&self, req: Request<api::CommitSnapshotRequest>) -> Result<Response<()>, Status> {
        let r = req.into_inner();
        let labels = BTreeMap::from_iter(r.labels);
        self.run("snapshots.Commit", move |s| {
            s.commit(&r.name, &r.key, labels, &r.parent)
        })
        .await?;
        Ok(Response::new(()))
    }

    async fn remove(&self, req: Request<api::RemoveSnapshotRequest>) -> Result<Response<()>, Status> {
        let key = req.into_inner().key;
        // The snapshotter also frees the layers only this snapshot still held.
        self.run("snapshots.Remove", move |s| s.remove(&key)).await?;
        Ok(Response::new(()))
    }

    async fn stat(
        &self,
        req: Request<api::StatSnapshotRequest>,
    ) -> Result<Response<api::StatSnapshotResponse>, Status> {
        let key = req.into_inner().key;
        let info = self.run("snapshots.Stat", move |s| s.stat(&key)).await?;
        Ok(Response::new(api::StatSnapshotResponse {
            info: Some(to_info(info)),
        }))
    }

    async fn update(
        &self,
        req: Request<api::UpdateSnapshotRequest>,
    ) -> Result<Response<api::UpdateSnapshotResponse>, Status> {
        let r = req.into_inner();
        let info = r
            .info
            .ok_or_else(|| Status::invalid_argument("snapshot update: the request has no info"))?;
        let paths = r.update_mask.map(|m| m.paths).unwrap_or_default();
        let labels = BTreeMap::from_iter(info.labels);
        let name = info.name;
        let info = self
            .run("snapshots.Update", move |s| s.update(&name, labels, &paths))
            .await?;
        Ok(Response::new(api::UpdateSnapshotResponse {
            info: Some(to_info(info)),
        }))
    }

    type ListStream = tokio_stream::Iter<std::vec::IntoIter<Result<api::ListSnapshotsResponse, Status>>>;

    async fn list(&self, req: Request<api::ListSnapshotsRequest>) -> Result<Response<Self::ListStream>, Status> {
        let filters = req.into_inner().filters;
        let infos = self.run("snapshots.List", move |s| s.list(&filters)).await?;
        let batches: Vec<Result<api::ListSnapshotsResponse, Status>> = infos
            .chunks(LIST_BATCH)
            .map(|c| {
                Ok(api::ListSnapshotsResponse {
                    info: c.iter().cloned().map(to_info).collect(),
                })
            })
            .collect();
        Ok(Response::new(tokio_stream::iter(batches)))
    }

    async fn usage(&self, req: Request<api::UsageRequest>) -> Result<Response<api::UsageResponse>, Status> {
        let key = req.into_inner().key;
        let u = self.run("snapshots.Usage", move |s| s.usage(&key)).await?;
        Ok(Response::new(api::UsageResponse {
            size: i64::try_from(u.bytes).unwrap_or(i64::MAX),
            inodes: i64::try_from(u.inodes).unwrap_or(i64::MAX),
        }))
    }

    async fn cleanup(&self, _req: Request<api::CleanupRequest>) -> Result<Response<()>, Status> {
        let removed = self.run("snapshots.Cleanup", |s| s.cleanup()).await?;
        if removed > 0 {
            tracing::info!(
                directories = removed,
                "snapshotter cleanup removed directories no snapshot owns"
            );
        }
        Ok(Response::new(()))
    }
}

fn mount(m: Mount) -> ctypes::Mount {
    ctypes::Mount {
        r#type: m.kind,
        source: m.source,
        target: String::new(),
        options: m.options,
    }
}

fn to_info(i: Info) -> api::Info {
    let kind = match i.kind {
        Kind::View => api::Kind::View,
        Kind::Active => api::Kind::Active,
        Kind::Committed => api::Kind::Committed,
    };
    api::Info {
        name: i.name,
        parent: i.parent,
        kind: kind as i32,
        created_at: Some(timestamp(i.created_ns)),
        updated_at: Some(timestamp(i.updated_ns)),
        labels: i.labels.into_iter().collect(),
    }
}

fn timestamp(ns: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ns.div_euclid(1_000_000_000),
        nanos: ns.rem_euclid(1_000_000_000) as i32,
    }
}
