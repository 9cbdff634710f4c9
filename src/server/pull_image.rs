//! `PullImage`: pull, record, answer with the image id as `image_ref`.

use tonic::Status;

use super::{Images, image_name, status};
use crate::proto::runtime::v1 as cri;
use crate::registry::auth;
use crate::service::{PodInfo, PullRequest, ServiceError};

impl Images {
    pub(super) async fn pull_image(&self, req: cri::PullImageRequest) -> Result<cri::PullImageResponse, Status> {
        let request = to_domain(req)?;
        let rec = self
            .service
            .pull(request)
            .await
            .map_err(|e| status::to_status(&e, Some(e.pull_reason())))?;
        Ok(cri::PullImageResponse {
            image_ref: self.service.image_id(&rec),
        })
    }
}

/// A CRI pull request in domain terms: image, credentials (parsed), pod, runtime handler.
pub(super) fn to_domain(req: cri::PullImageRequest) -> Result<PullRequest, Status> {
    let spec = req.image.as_ref();
    let image = image_name(spec)?.to_string();
    let creds = match &req.auth {
        None => None,
        Some(a) => auth::from_cri(&a.username, &a.password, &a.auth, &a.identity_token, &a.registry_token).map_err(
            |source| {
                let e = ServiceError::Auth {
                    image: image.clone(),
                    source,
                };
                status::to_status(&e, Some(e.pull_reason()))
            },
        )?,
    };
    let pod = req
        .sandbox_config
        .as_ref()
        .and_then(|c| c.metadata.as_ref())
        .map(|m| PodInfo {
            name: m.name.clone(),
            namespace: m.namespace.clone(),
            uid: m.uid.clone(),
        });
    Ok(PullRequest {
        image,
        creds,
        pod,
        runtime_handler: spec.map(|s| s.runtime_handler.clone()).unwrap_or_default(),
        image_ref: spec.map(|s| s.image_ref.clone()).unwrap_or_default(),
    })
}
