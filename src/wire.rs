//! `runtime.v1.ListImagesResponse` and `StreamImagesResponse`, written by hand so that the server can answer
//! from a pre-encoded copy.
//!
//! kubelet lists images every few seconds, and with thousands of images building and encoding the
//! answer (5,000 `Image` messages: digests to hex, strings cloned, pin patterns matched, ~1.6 MB encoded)
//! was most of ListImages' time, though the list changes only when an image is pulled or removed. The
//! server keeps the encoded `images` field of the last answer and sends those bytes again while the
//! metadata has not changed. On the wire this is exactly the generated message (field 1, repeated
//! `Image`); `build.rs` maps the message here with `extern_path`, and clients decode into `images`.
//!
//! `StreamImagesResponse` (Kubernetes 1.36) has the same single field, so it is the same type: StreamImages
//! sends the same cached bytes cut at image boundaries by [`batches`], each slice a complete response,
//! without copying them or building the list a second time.

use bytes::{Buf, BufMut, Bytes};
use prost::DecodeError;
use prost::encoding::{self, DecodeContext, WireType};

use crate::proto::runtime::v1::Image;

/// `ListImagesResponse { repeated Image images = 1; }`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ListImagesResponse {
    /// The images (what a client decodes; what is encoded unless `encoded` is set).
    pub images: Vec<Image>,
    /// Field 1, already encoded: sent instead of `images` when present (server side only).
    pub encoded: Option<Bytes>,
}

/// `StreamImagesResponse { repeated Image images = 1; }`: one message of a StreamImages stream. Identical to
/// [`ListImagesResponse`] on the wire, and sent pre-encoded the same way (a slice from [`batches`]).
pub type StreamImagesResponse = ListImagesResponse;

impl ListImagesResponse {
    /// A response whose body is `encoded`, the output of [`ListImagesResponse::encode_images`].
    pub fn pre_encoded(encoded: Bytes) -> ListImagesResponse {
        ListImagesResponse {
            images: Vec::new(),
            encoded: Some(encoded),
        }
    }

    /// Encodes `images` as the response body.
    pub fn encode_images(images: &[Image]) -> Bytes {
        let mut buf = Vec::with_capacity(encoding::message::encoded_len_repeated(1, images));
        for image in images {
            encoding::message::encode(1, image, &mut buf);
        }
        Bytes::from(buf)
    }
}

/// Cuts `encoded` (the output of [`ListImagesResponse::encode_images`]) into slices of whole images, each
/// at most `max_bytes` long unless one image alone is longer (it then travels alone): every slice is the
/// body of a valid response, and every image is in exactly one. The slices share `encoded`'s memory.
pub fn batches(encoded: Bytes, max_bytes: usize) -> Batches {
    Batches {
        rest: encoded,
        max_bytes,
    }
}

/// The iterator [`batches`] returns.
#[derive(Debug, Clone)]
pub struct Batches {
    rest: Bytes,
    max_bytes: usize,
}

impl Iterator for Batches {
    type Item = Bytes;

    fn next(&mut self) -> Option<Bytes> {
        if self.rest.is_empty() {
            return None;
        }
        let mut end = 0;
        while end < self.rest.len() {
            let Some(len) = entry_len(&self.rest[end..]) else {
                // Not what encode_images writes: send the rest whole rather than cut it somewhere wrong.
                end = self.rest.len();
                break;
            };
            if end > 0 && end + len > self.max_bytes {
                break;
            }
            end += len;
        }
        Some(self.rest.split_to(end))
    }
}

/// The length of the field entry (key, length, payload) at the start of `buf`, if it is a whole
/// length-delimited field 1.
fn entry_len(buf: &[u8]) -> Option<usize> {
    let mut cursor = buf;
    let key = encoding::decode_varint(&mut cursor).ok()?;
    if key != (1 << 3 | WireType::LengthDelimited as u64) {
        return None;
    }
    let payload = usize::try_from(encoding::decode_varint(&mut cursor).ok()?).ok()?;
    let header = buf.len() - cursor.len();
    (payload <= cursor.len()).then_some(header + payload)
}

impl prost::Message for ListImagesResponse {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        match &self.encoded {
            Some(bytes) => buf.put_slice(bytes),
            None => {
                for image in &self.images {
                    encoding::message::encode(1, image, buf);
                }
            }
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        match tag {
            1 => encoding::message::merge_repeated(wire_type, &mut self.images, buf, ctx).map_err(|mut e| {
                e.push("ListImagesResponse", "images");
                e
            }),
            _ => encoding::skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        match &self.encoded {
            Some(bytes) => bytes.len(),
            None => encoding::message::encoded_len_repeated(1, &self.images),
        }
    }

    fn clear(&mut self) {
        self.images.clear();
        self.encoded = None;
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::proto::runtime::v1::{ImageSpec, Int64Value};

    fn images() -> Vec<Image> {
        (0..3)
            .map(|i| Image {
                id: format!("sha256:{i:064x}"),
                repo_tags: vec![format!("docker.io/library/x:{i}")],
                repo_digests: vec![format!("docker.io/library/x@sha256:{i:064x}")],
                size: 1000 + i,
                uid: (i == 1).then_some(Int64Value { value: 1002 }),
                username: if i == 2 { "nobody".into() } else { String::new() },
                spec: Some(ImageSpec {
                    image: format!("sha256:{i:064x}"),
                    ..Default::default()
                }),
                pinned: i == 0,
            })
            .collect()
    }

    /// What the generated code would have encoded: each image as field 1, length-delimited.
    fn reference_encoding(images: &[Image]) -> Vec<u8> {
        let mut out = Vec::new();
        for image in images {
            out.push(0x0a); // field 1, wire type 2
            image.encode_length_delimited(&mut out).unwrap();
        }
        out
    }

    #[test]
    fn pre_encoded_and_plain_responses_are_the_same_bytes() {
        let images = images();
        let plain = ListImagesResponse {
            images: images.clone(),
            encoded: None,
        };
        let cached = ListImagesResponse::pre_encoded(ListImagesResponse::encode_images(&images));
        assert_eq!(plain.encode_to_vec(), reference_encoding(&images));
        assert_eq!(cached.encode_to_vec(), reference_encoding(&images));
        assert_eq!(cached.encoded_len(), plain.encoded_len());
    }

    #[test]
    fn batches_cut_at_image_boundaries_and_cover_every_image_once() {
        let images: Vec<Image> = (0..50)
            .map(|i| Image {
                id: format!("sha256:{i:064x}"),
                // Sizes vary, so boundaries fall at different offsets.
                repo_tags: (0..i % 4).map(|t| format!("docker.io/library/x:{i}-{t}")).collect(),
                size: 1 + i,
                ..Default::default()
            })
            .collect();
        let encoded = ListImagesResponse::encode_images(&images);
        let one = reference_encoding(&images[..1]).len();
        for max in [1, one, one + 1, 1000, 4096, encoded.len(), usize::MAX] {
            let mut seen = Vec::new();
            for batch in batches(encoded.clone(), max) {
                let response = StreamImagesResponse::decode(batch.clone()).unwrap();
                assert!(!response.images.is_empty(), "max {max}: an empty message");
                assert!(
                    batch.len() <= max || response.images.len() == 1,
                    "max {max}: {} bytes for {} images",
                    batch.len(),
                    response.images.len()
                );
                seen.extend(response.images);
            }
            assert_eq!(seen, images, "max {max}");
        }
        assert_eq!(batches(Bytes::new(), 10).count(), 0, "no images, no message");
    }

    #[test]
    fn a_malformed_buffer_is_sent_whole_not_cut() {
        let bytes = Bytes::from_static(&[0x12, 0x01, 0x00, 0x0a, 0x05]); // field 2, then a truncated field 1
        assert_eq!(batches(bytes.clone(), 1).collect::<Vec<_>>(), [bytes]);
    }

    #[test]
    fn decodes_images_and_skips_unknown_fields() {
        let images = images();
        let mut bytes = reference_encoding(&images);
        bytes.extend([0x10, 0x07]); // an unknown field 2 (varint 7) from a newer peer
        let decoded = ListImagesResponse::decode(bytes.as_slice()).unwrap();
        assert_eq!(decoded.images, images);
        assert!(decoded.encoded.is_none());
    }
}
