//! gRPC channels over unix sockets: the CLI talks to imaged, GC asks the runtime which images are in use,
//! and the containerd bridge calls containerd, all through [`channel`].

use std::path::Path;

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};

/// kubelet's gRPC message size limit, which every channel end in imaged uses too (server, CLI, containerd
/// client): a ListImages answer with thousands of images must fit.
pub const MAX_MESSAGE_BYTES: usize = 16 << 20;

/// A gRPC channel to the unix socket at `socket`, for any service served there; connects now (failing at
/// once when nothing listens).
pub async fn channel(socket: &Path) -> Result<Channel, tonic::transport::Error> {
    let socket = socket.to_path_buf();
    // The URI is a placeholder: tonic requires one, the connector below ignores it.
    Endpoint::from_static("http://[::]:0")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(socket).await?)) }
        }))
        .await
}
