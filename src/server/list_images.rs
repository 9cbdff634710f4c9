//! `ListImages`: every image, or the one the filter names.
//!
//! The unfiltered answer is kept encoded (see [`crate::wire`]) and sent again until the metadata
//! generation changes: kubelet asks every few seconds, images change rarely. StreamImages
//! (`stream_images.rs`) sends the same bytes in slices.

use bytes::Bytes;
use tonic::Status;

use super::{Images, convert, status};
use crate::proto::runtime::v1 as cri;

/// The last unfiltered answer and the metadata generation it was built from.
#[derive(Default)]
pub(super) struct ListCache(std::sync::Mutex<Option<(u64, Bytes)>>);

/// The image a filter names, if it names one (an empty filter lists everything).
pub(super) fn filter_of(filter: Option<&cri::ImageFilter>) -> Option<&str> {
    filter
        .and_then(|f| f.image.as_ref())
        .map(|s| s.image.as_str())
        .filter(|f| !f.is_empty())
}

impl Images {
    pub(super) fn list_images(&self, req: cri::ListImagesRequest) -> Result<cri::ListImagesResponse, Status> {
        match filter_of(req.filter.as_ref()) {
            None => Ok(cri::ListImagesResponse::pre_encoded(self.all_images_encoded())),
            Some(filter) => Ok(cri::ListImagesResponse {
                images: self.filtered(filter)?,
                encoded: None,
            }),
        }
    }

    /// The images `filter` names (none or one), as ListImages and StreamImages answer them.
    pub(super) fn filtered(&self, filter: &str) -> Result<Vec<cri::Image>, Status> {
        let images = self
            .service
            .list(Some(filter))
            .map_err(|e| status::to_status(&e, e.name_reason()))?;
        tracing::debug!(filter, count = images.len(), "ListImages");
        Ok(images
            .iter()
            .map(|r| convert::image(r, self.service.image_id(r), self.service.is_pinned(r)))
            .collect())
    }

    /// Every image, encoded: from the cache while the metadata generation is unchanged.
    pub(super) fn all_images_encoded(&self) -> Bytes {
        let mut cache = self.list_cache.0.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.service.list_generation();
        if let Some((generation, bytes)) = cache.as_ref()
            && *generation == current
        {
            tracing::debug!(generation, bytes = bytes.len(), "ListImages (cached)");
            return bytes.clone();
        }
        let (generation, records) = self.service.list_all();
        let images: Vec<cri::Image> = records
            .iter()
            .map(|r| convert::image(r, self.service.image_id(r), self.service.is_pinned(r)))
            .collect();
        let bytes = cri::ListImagesResponse::encode_images(&images);
        tracing::debug!(generation, count = images.len(), bytes = bytes.len(), "ListImages");
        *cache = Some((generation, bytes.clone()));
        bytes
    }
}
