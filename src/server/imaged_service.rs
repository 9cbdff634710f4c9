//! `imaged.v1.Images`: pull with progress, garbage collection and pruning, on the CRI socket.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use super::instrument::Rpc;
use super::status;
use crate::gc::policy::ResourceId;
use crate::gc::prune::PruneOptions;
use crate::proto::imaged::v1 as pb;
use crate::proto::imaged::v1::images_server::Images as ImagedImages;
use crate::proto::runtime::v1 as cri;
use crate::pull::{LayerState, ProgressView};
use crate::service::ImageService;

/// How often progress is sent while it changes.
const PROGRESS_EVERY: Duration = Duration::from_millis(200);

/// imaged's own service over the domain [`ImageService`].
pub struct Imaged {
    pub(super) service: Arc<ImageService>,
}

type PullStream = Pin<Box<dyn Stream<Item = Result<pb::PullEvent, Status>> + Send>>;

#[tonic::async_trait]
impl ImagedImages for Imaged {
    type PullStream = PullStream;

    async fn pull(&self, req: Request<cri::PullImageRequest>) -> Result<Response<PullStream>, Status> {
        let req = req.into_inner();
        // The call answers when its stream ends: the exit is logged by the task that feeds the stream.
        let mut exit = Rpc::info("Pull", &req).enter();
        let request = match super::pull_image::to_domain(req) {
            Ok(r) => r,
            Err(s) => {
                exit.done(Some(&s));
                return Err(s);
            }
        };
        let service = self.service.clone();
        let (tx, rx) = mpsc::channel(16);
        let span = exit.span().clone();
        let task = async move {
            let ticket = match service.begin_pull(request) {
                Ok(t) => t,
                Err(e) => {
                    let s = status::to_status(&e, Some(e.pull_reason()));
                    exit.done(Some(&s));
                    let _ = tx.send(Err(s)).await;
                    return;
                }
            };
            let progress = ticket.progress();
            let finish = ticket.finish();
            tokio::pin!(finish);
            let mut tick = tokio::time::interval(PROGRESS_EVERY);
            let mut last = None;
            let result = loop {
                tokio::select! {
                    r = &mut finish => break r,
                    _ = tick.tick() => {
                        let Some(p) = &progress else { continue };
                        let view = p.view();
                        if last.as_ref() != Some(&view) {
                            let event = pb::PullEvent { event: Some(pb::pull_event::Event::Progress(to_proto(&view))) };
                            if tx.send(Ok(event)).await.is_err() {
                                return; // The client went away; the pull goes on for the others.
                            }
                            last = Some(view);
                        }
                    }
                }
            };
            let message = match result {
                Ok(rec) => {
                    if let Some(p) = &progress {
                        let event = pb::PullEvent {
                            event: Some(pb::pull_event::Event::Progress(to_proto(&p.view()))),
                        };
                        let _ = tx.send(Ok(event)).await;
                    }
                    Ok(pb::PullEvent {
                        event: Some(pb::pull_event::Event::ImageRef(service.image_id(&rec))),
                    })
                }
                Err(e) => Err(status::to_status(&e, Some(e.pull_reason()))),
            };
            exit.done(message.as_ref().err());
            let _ = tx.send(message).await;
        };
        tokio::spawn(task.instrument(span));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn garbage_collect(
        &self,
        req: Request<pb::GarbageCollectRequest>,
    ) -> Result<Response<pb::GarbageCollectResponse>, Status> {
        let req = req.into_inner();
        let rpc = Rpc::info("GarbageCollect", &req);
        rpc.run(self.garbage_collect(req)).await.map(Response::new)
    }

    async fn prune(&self, req: Request<pb::PruneRequest>) -> Result<Response<pb::PruneResponse>, Status> {
        let req = req.into_inner();
        let rpc = Rpc::info("Prune", &req);
        rpc.run(self.prune(req)).await.map(Response::new)
    }
}

impl Imaged {
    /// GarbageCollect: a GC run now (or what it would remove).
    async fn garbage_collect(&self, req: pb::GarbageCollectRequest) -> Result<pb::GarbageCollectResponse, Status> {
        let out = self
            .service
            .gc(req.dry_run)
            .await
            .map_err(|e| status::to_status(&e, None))?;
        Ok(pb::GarbageCollectResponse {
            removed: out
                .removed
                .into_iter()
                .map(|r| pb::RemovedImage {
                    id: r.id,
                    repo_tags: r.repo_tags,
                    reason: r.reason,
                    freed_bytes: r.freed_bytes,
                })
                .collect(),
            freed_bytes: out.freed_bytes,
            target_bytes: out.target_bytes,
            capacity_bytes: out.capacity_bytes,
            used_bytes_before: out.used_before,
            used_bytes_after: out.used_after,
            shortfall: out.shortfall.unwrap_or_default(),
        })
    }

    /// Prune: remove the images and resources the options select (or list them).
    async fn prune(&self, r: pb::PruneRequest) -> Result<pb::PruneResponse, Status> {
        let options = PruneOptions {
            keep_younger_than: r.keep_younger_than_seconds.map(Duration::from_secs),
            keep_tag_revisions: r.keep_tag_revisions.map(|n| n as usize),
            all: r.all,
        };
        let out = self
            .service
            .prune(&options, r.dry_run)
            .await
            .map_err(|e| status::to_status(&e, None))?;
        Ok(pb::PruneResponse {
            images: out
                .plan
                .images
                .iter()
                .map(|i| pb::RemovedImage {
                    id: i.id.clone(),
                    repo_tags: Vec::new(),
                    reason: i.reason.to_string(),
                    freed_bytes: 0,
                })
                .collect(),
            resources: out
                .plan
                .resources
                .iter()
                .map(|(r, bytes)| {
                    let (kind, digest) = match r {
                        ResourceId::Blob(d) => ("blob", d),
                        ResourceId::Snapshot(d) => ("snapshot", d),
                    };
                    pb::RemovedResource {
                        kind: kind.into(),
                        digest: digest.clone(),
                        bytes: *bytes,
                    }
                })
                .collect(),
            freed_bytes: out.freed_bytes,
            report: out.report,
        })
    }
}

fn to_proto(v: &ProgressView) -> pb::PullProgress {
    pb::PullProgress {
        phase: v.phase.to_string(),
        layers: v
            .layers
            .iter()
            .map(|l| pb::LayerProgress {
                digest: l.digest.to_string(),
                done_bytes: l.done,
                total_bytes: l.total,
                state: match l.state {
                    LayerState::Waiting => pb::LayerState::Waiting,
                    LayerState::Downloading => pb::LayerState::Downloading,
                    LayerState::Done => pb::LayerState::Done,
                    LayerState::Present => pb::LayerState::Present,
                } as i32,
            })
            .collect(),
    }
}
