//! The thin gRPC layer: every service imaged serves on its unix socket. CRI `runtime.v1.ImageService`,
//! imaged's own `imaged.v1.Images` (`imaged_service`), and containerd's snapshot API (`snapshots`), which
//! containerd loads as a proxy snapshotter.
//!
//! Each CRI RPC lives in its own file and only converts between protobuf and domain types (StreamImages sends
//! slices of ListImages' cached answer); errors become gRPC statuses in one place ([`status`]), and a caller's
//! expired deadline DEADLINE_EXCEEDED ([`deadline`]). Every call runs in its span, with its entry and exit
//! logged, through one helper ([`instrument`]).

mod convert;
mod deadline;
mod image_fs_info;
mod image_status;
mod imaged_service;
mod instrument;
mod list_images;
pub mod listener;
mod pull_image;
mod remove_image;
mod snapshots;
pub mod status;
mod stream_images;

pub use stream_images::STREAM_BATCH_BYTES;

use std::future::Future;
use std::sync::Arc;

use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::{Request, Response, Status};

use crate::proto::runtime::v1 as cri;
use crate::proto::runtime::v1::image_service_server::{ImageService as CriImageService, ImageServiceServer};
use crate::service::ImageService;
use crate::uds::MAX_MESSAGE_BYTES;
use instrument::Rpc;

/// Serves CRI on `listener` until `shutdown` completes, then stops accepting and returns once in-flight
/// calls are done.
pub async fn serve(
    listener: UnixListener,
    service: Arc<ImageService>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    let imaged = crate::proto::imaged::v1::images_server::ImagesServer::new(imaged_service::Imaged {
        service: service.clone(),
    });
    let snapshots = snapshots::SnapshotsService::server(service.snapshotter().clone());
    let images = ImageServiceServer::new(Images {
        service,
        list_cache: Default::default(),
    })
    .max_decoding_message_size(MAX_MESSAGE_BYTES)
    .max_encoding_message_size(MAX_MESSAGE_BYTES);
    tonic::transport::Server::builder()
        .layer(deadline::DeadlineLayer)
        .add_service(images)
        .add_service(imaged)
        .add_service(snapshots)
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
        .await
}

/// The CRI image service over the domain [`ImageService`].
pub struct Images {
    service: Arc<ImageService>,
    list_cache: list_images::ListCache,
}

#[tonic::async_trait]
impl CriImageService for Images {
    async fn list_images(
        &self,
        req: Request<cri::ListImagesRequest>,
    ) -> Result<Response<cri::ListImagesResponse>, Status> {
        let req = req.into_inner();
        let rpc = Rpc::trace("ListImages", &req);
        rpc.run(async { self.list_images(req) }).await.map(Response::new)
    }

    type StreamImagesStream = stream_images::ImageStream;

    async fn stream_images(
        &self,
        req: Request<cri::StreamImagesRequest>,
    ) -> Result<Response<Self::StreamImagesStream>, Status> {
        let req = req.into_inner();
        let rpc = Rpc::trace("StreamImages", &req);
        rpc.run(async { self.stream_images(req) }).await.map(Response::new)
    }

    async fn image_status(
        &self,
        req: Request<cri::ImageStatusRequest>,
    ) -> Result<Response<cri::ImageStatusResponse>, Status> {
        let req = req.into_inner();
        let rpc = Rpc::debug("ImageStatus", &req);
        rpc.run(async { self.image_status(req) }).await.map(Response::new)
    }

    async fn pull_image(
        &self,
        req: Request<cri::PullImageRequest>,
    ) -> Result<Response<cri::PullImageResponse>, Status> {
        let req = req.into_inner();
        let rpc = Rpc::info("PullImage", &req);
        rpc.run(self.pull_image(req)).await.map(Response::new)
    }

    async fn remove_image(
        &self,
        req: Request<cri::RemoveImageRequest>,
    ) -> Result<Response<cri::RemoveImageResponse>, Status> {
        let req = req.into_inner();
        let rpc = Rpc::info("RemoveImage", &req);
        rpc.run(self.remove_image(req)).await.map(Response::new)
    }

    async fn image_fs_info(
        &self,
        req: Request<cri::ImageFsInfoRequest>,
    ) -> Result<Response<cri::ImageFsInfoResponse>, Status> {
        let req = req.into_inner();
        let rpc = Rpc::trace("ImageFsInfo", &req);
        rpc.run(async { Ok(self.image_fs_info(req)) }).await.map(Response::new)
    }
}

/// The image name of a request's `ImageSpec`, which every image RPC but ImageFsInfo requires.
fn image_name(spec: Option<&cri::ImageSpec>) -> Result<&str, Status> {
    match spec.map(|s| s.image.as_str()) {
        Some(s) if !s.trim().is_empty() => Ok(s),
        _ => Err(Status::invalid_argument(
            "the request has no image (ImageSpec.image is empty): name the image",
        )),
    }
}
