//! Which images containers use, asked of the container runtime (CRI RuntimeService ListContainers), as
//! kubelet's image GC does: an image referenced by any container, running or exited, is in use.

use std::collections::HashSet;
use std::path::PathBuf;

use crate::proto::runtime::v1 as cri;
use crate::proto::runtime::v1::runtime_service_client::RuntimeServiceClient;

/// Why the runtime could not be asked.
#[derive(Debug, thiserror::Error)]
#[error("cannot list containers of the runtime at {endpoint}: {detail}; no image is collected until it answers")]
pub struct RuntimeError {
    endpoint: String,
    detail: String,
}

/// A CRI runtime endpoint (`unix:///run/containerd/containerd.sock` or a plain path).
#[derive(Debug, Clone)]
pub struct RuntimeEndpoint {
    path: PathBuf,
}

impl RuntimeEndpoint {
    /// Parses `unix:///path` or `/path`.
    pub fn parse(s: &str) -> RuntimeEndpoint {
        RuntimeEndpoint {
            path: PathBuf::from(s.strip_prefix("unix://").unwrap_or(s)),
        }
    }

    /// The names of images the runtime's containers use: `image_id` (newer runtimes), `image_ref` and the
    /// image spec, whichever are set. The caller resolves them to image ids.
    pub async fn images_in_use(&self) -> Result<HashSet<String>, RuntimeError> {
        let err = |detail: String| RuntimeError {
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
}
