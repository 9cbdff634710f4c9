//! `ImageStatus`: the image, or an empty response when it is absent (not an error, per the CRI contract).

use tonic::Status;

use super::{Images, convert, image_name, status};
use crate::error::Reason;
use crate::proto::runtime::v1 as cri;

impl Images {
    pub(super) fn image_status(&self, req: cri::ImageStatusRequest) -> Result<cri::ImageStatusResponse, Status> {
        let name = image_name(req.image.as_ref())?;
        let Some(rec) = self
            .service
            .status(name)
            .map_err(|e| status::to_status(&e, e.name_reason()))?
        else {
            tracing::debug!("ImageStatus: not present");
            return Ok(cri::ImageStatusResponse::default());
        };
        let info = if req.verbose {
            self.service
                .verbose_info(&rec)
                .map_err(|e| status::to_status(&e, Some(Reason::ImageInspectError)))?
        } else {
            Default::default()
        };
        tracing::debug!(id = %rec.id, "ImageStatus");
        Ok(cri::ImageStatusResponse {
            image: Some(convert::image(
                &rec,
                self.service.image_id(&rec),
                self.service.is_pinned(&rec),
            )),
            info,
        })
    }
}
