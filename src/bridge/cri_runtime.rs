//! The CRI runtime at `[gc] runtime_endpoint`, asked which images its containers use (CRI RuntimeService
//! ListContainers), as kubelet's image GC does: an image referenced by any container, running or exited, is
//! in use. It is a bridge that only answers [`ImageEvents::in_use`]: it has nothing to publish and no
//! background work, and it keeps the one gRPC client GC needs out of `gc`.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

use futures_util::future::BoxFuture;

use crate::digest::Digest;
use crate::events::{Bridge, ImageEvents, InUseError};
use crate::metadata::{ImageRecord, MetadataStore};
use crate::proto::runtime::v1 as cri;
use crate::proto::runtime::v1::runtime_service_client::RuntimeServiceClient;
use crate::reference::ImageRef;

/// A CRI runtime endpoint (`unix:///run/containerd/containerd.sock` or a plain path), and the image
/// records its containers' image names resolve against.
pub struct CriRuntime {
    path: PathBuf,
    metadata: Arc<MetadataStore>,
}

impl CriRuntime {
    /// The runtime at `endpoint`: `unix:///path` or `/path`.
    pub fn new(endpoint: &str, metadata: Arc<MetadataStore>) -> CriRuntime {
        CriRuntime {
            path: PathBuf::from(endpoint.strip_prefix("unix://").unwrap_or(endpoint)),
            metadata,
        }
    }

    /// The names of images the runtime's containers use: `image_id` (newer runtimes), `image_ref` and the
    /// image spec, whichever are set.
    async fn names_in_use(&self) -> Result<HashSet<String>, InUseError> {
        let err = |detail: String| InUseError {
            endpoint: self.path.display().to_string(),
            detail,
        };
        let channel = crate::uds::channel(&self.path).await.map_err(|e| err(e.to_string()))?;
        let mut client = RuntimeServiceClient::new(channel);
        let resp = client
            .list_containers(cri::ListContainersRequest { filter: None })
            .await
            .map_err(|s| err(format!("{} ({:?})", s.message(), s.code())))?
            .into_inner();
        let mut names = HashSet::new();
        for c in resp.containers {
            for n in [c.image_id, c.image_ref, c.image.map(|i| i.image).unwrap_or_default()] {
                if !n.is_empty() {
                    names.insert(n);
                }
            }
        }
        Ok(names)
    }

    /// The id of the image `name` means: an id (with or without `sha256:`), a repo digest or a tag.
    fn resolve(&self, name: &str) -> Option<Digest> {
        let m = &self.metadata;
        if let Ok(d) = name.parse::<Digest>().or_else(|_| Digest::from_hex(name))
            && m.get(&d).is_some()
        {
            return Some(d);
        }
        let r = ImageRef::parse(name).ok()?;
        let rec = match r.digest() {
            Some(d) => m.by_repo_digest(&r.with_digest(d)),
            None => r.tagged().and_then(|t| m.by_tag(&t)),
        };
        rec.map(|r| r.id)
    }
}

impl ImageEvents for CriRuntime {
    fn recorded<'a>(&'a self, _rec: &'a Arc<ImageRecord>) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }

    fn removed<'a>(&'a self, _rec: &'a ImageRecord) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }

    fn in_use(&self) -> BoxFuture<'_, Result<HashSet<Digest>, InUseError>> {
        Box::pin(async move {
            let names = self.names_in_use().await?;
            Ok(names.iter().filter_map(|n| self.resolve(n)).collect())
        })
    }
}

impl Bridge for CriRuntime {}
