//! A connection to containerd: its content, images, leases and snapshots services (containerd's own API
//! crate) and its CRI image and runtime services, with the namespace (and lease) headers containerd reads.

use std::path::{Path, PathBuf};
use std::time::Duration;

use containerd_client::services::v1 as ctd;
use containerd_client::services::v1::snapshots as ctd_snapshots;
use tonic::Request;
use tonic::transport::Channel;

use super::BridgeError;
use crate::proto::runtime::v1 as cri;

/// How long connecting to containerd may take: it is local, so a slow connect means it is not there.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// One connection to containerd, in one namespace.
#[derive(Clone)]
pub struct Conn {
    channel: Channel,
    namespace: String,
    address: PathBuf,
}

impl Conn {
    /// Connects to containerd's socket at `address`, to work in `namespace`.
    pub async fn connect(address: &Path, namespace: &str) -> Result<Conn, BridgeError> {
        let channel = tokio::time::timeout(CONNECT_TIMEOUT, crate::uds::channel(address))
            .await
            .map_err(|_| BridgeError::unavailable(address, "connect", "no answer within 5 s"))?
            .map_err(|e| BridgeError::unavailable(address, "connect", &source_chain(&e)))?;
        Ok(Conn {
            channel,
            namespace: namespace.to_string(),
            address: address.to_path_buf(),
        })
    }

    /// containerd's socket.
    pub fn address(&self) -> &Path {
        &self.address
    }

    /// `msg` with the namespace header, and the lease header when given.
    pub fn req<T>(&self, msg: T, lease: Option<&str>) -> Request<T> {
        let mut req = Request::new(msg);
        let md = req.metadata_mut();
        // Namespaces and lease ids are plain ASCII names; a bad one fails the call with containerd's answer.
        if let Ok(v) = self.namespace.parse() {
            md.insert("containerd-namespace", v);
        }
        if let Some(v) = lease.and_then(|l| l.parse().ok()) {
            md.insert("containerd-lease", v);
        }
        req
    }

    /// The content service.
    pub fn content(&self) -> ctd::content_client::ContentClient<Channel> {
        ctd::content_client::ContentClient::new(self.channel.clone())
    }

    /// The images service.
    pub fn images(&self) -> ctd::images_client::ImagesClient<Channel> {
        ctd::images_client::ImagesClient::new(self.channel.clone())
    }

    /// The leases service.
    pub fn leases(&self) -> ctd::leases_client::LeasesClient<Channel> {
        ctd::leases_client::LeasesClient::new(self.channel.clone())
    }

    /// The snapshots service (containerd's metadata layer over its snapshotters).
    pub fn snapshots(&self) -> ctd_snapshots::snapshots_client::SnapshotsClient<Channel> {
        ctd_snapshots::snapshots_client::SnapshotsClient::new(self.channel.clone())
    }

    /// containerd's CRI runtime service (its `Status` names the sandbox image).
    pub fn cri_runtime(&self) -> cri::runtime_service_client::RuntimeServiceClient<Channel> {
        cri::runtime_service_client::RuntimeServiceClient::new(self.channel.clone())
            .max_decoding_message_size(crate::uds::MAX_MESSAGE_BYTES)
    }

    /// containerd's CRI image service (served on the same socket by its CRI plugin).
    pub fn cri_images(&self) -> cri::image_service_client::ImageServiceClient<Channel> {
        cri::image_service_client::ImageServiceClient::new(self.channel.clone())
            .max_decoding_message_size(crate::uds::MAX_MESSAGE_BYTES)
    }
}

impl Conn {
    /// containerd's version (its Version service), e.g. `2.1.9+unknown` or `v1.7.24`.
    pub async fn version(&self) -> Result<String, BridgeError> {
        let mut c = ctd::version_client::VersionClient::new(self.channel.clone());
        let v = c
            .version(())
            .await
            .map_err(|e| BridgeError::unavailable(&self.address, "ask for containerd's version", e.message()))?;
        Ok(v.into_inner().version)
    }

    /// The introspection service (containerd's plugins and what they export).
    pub fn introspection(&self) -> ctd::introspection_client::IntrospectionClient<Channel> {
        ctd::introspection_client::IntrospectionClient::new(self.channel.clone())
    }
}

/// An error with its causes, which tonic's transport errors keep in their sources.
fn source_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
