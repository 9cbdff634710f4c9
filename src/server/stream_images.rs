//! `StreamImages` (Kubernetes 1.36, KEP-5825): ListImages' answer as a stream of messages, so that a node
//! with more images than fit in one 16 MiB message can still be listed.
//!
//! It answers exactly what ListImages answers, honouring the filter the same way. The unfiltered list is
//! the very buffer ListImages caches (built once per metadata generation, shared by both RPCs); the
//! stream sends it in slices cut at image boundaries ([`crate::wire::batches`]), so streaming costs no
//! second copy of the list: only the slice being written is copied, into tonic's send buffer, as the
//! client reads.

use std::pin::Pin;

use futures_util::Stream;
use tonic::Status;

use super::Images;
use super::list_images::filter_of;
use crate::proto::runtime::v1 as cri;
use crate::wire;

/// The most bytes of images in one StreamImages message (an image larger than this travels alone).
/// About 800 images of the size kubelet typically sees: a few messages for thousands of images, and a
/// small slice in flight at a time.
pub const STREAM_BATCH_BYTES: usize = 256 << 10;

/// The stream of StreamImages responses.
pub type ImageStream = Pin<Box<dyn Stream<Item = Result<cri::StreamImagesResponse, Status>> + Send>>;

impl Images {
    pub(super) fn stream_images(&self, req: cri::StreamImagesRequest) -> Result<ImageStream, Status> {
        let encoded = match filter_of(req.filter.as_ref()) {
            None => self.all_images_encoded(),
            Some(filter) => cri::ListImagesResponse::encode_images(&self.filtered(filter)?),
        };
        tracing::debug!(bytes = encoded.len(), "StreamImages");
        let messages =
            wire::batches(encoded, STREAM_BATCH_BYTES).map(|b| Ok(cri::StreamImagesResponse::pre_encoded(b)));
        Ok(Box::pin(futures_util::stream::iter(messages)))
    }
}
