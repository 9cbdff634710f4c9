//! Image records to CRI `Image` messages.

use crate::metadata::ImageRecord;
use crate::proto::runtime::v1 as cri;

/// The CRI view of an image. `id` is the config digest in the configured form (see
/// [`crate::service::ImageService::image_id`]), equal to the `image_ref` PullImage returned.
pub fn image(rec: &ImageRecord, id: String, pinned: bool) -> cri::Image {
    let (uid, username) = rec.uid_or_username();
    cri::Image {
        id: id.clone(),
        repo_tags: rec.repo_tags.clone(),
        repo_digests: rec.repo_digests.clone(),
        size: rec.size(),
        uid: uid.map(|value| cri::Int64Value { value }),
        username,
        spec: Some(cri::ImageSpec {
            image: id,
            ..Default::default()
        }),
        pinned,
    }
}
