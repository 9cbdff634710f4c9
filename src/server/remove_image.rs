//! `RemoveImage`: the image and all its tags; absent images are success (idempotent).

use tonic::Status;

use super::{Images, image_name, status};
use crate::proto::runtime::v1 as cri;

impl Images {
    pub(super) async fn remove_image(&self, req: cri::RemoveImageRequest) -> Result<cri::RemoveImageResponse, Status> {
        let name = image_name(req.image.as_ref())?;
        self.service
            .remove(name)
            .await
            .map_err(|e| status::to_status(&e, e.name_reason()))?;
        Ok(cri::RemoveImageResponse {})
    }
}
