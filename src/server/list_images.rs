//! `ListImages`: every image, or the one the filter names.

use tonic::Status;

use super::{Images, convert, status};
use crate::proto::runtime::v1 as cri;

impl Images {
    pub(super) fn list_images(&self, req: cri::ListImagesRequest) -> Result<cri::ListImagesResponse, Status> {
        let filter = req
            .filter
            .as_ref()
            .and_then(|f| f.image.as_ref())
            .map(|s| s.image.as_str());
        let images = self.service.list(filter).map_err(|e| status::to_status(&e, None))?;
        tracing::debug!(filter = ?filter, count = images.len(), "ListImages");
        Ok(cri::ListImagesResponse {
            images: images
                .iter()
                .map(|r| convert::image(r, self.service.is_pinned(r)))
                .collect(),
        })
    }
}
