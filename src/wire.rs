//! `runtime.v1.ListImagesResponse`, written by hand so that the server can answer from a pre-encoded copy.
//!
//! kubelet lists images every few seconds, and with thousands of images building and encoding the
//! answer (5,000 `Image` messages: digests to hex, strings cloned, pin patterns matched, ~1.6 MB encoded)
//! was most of ListImages' time, though the list changes only when an image is pulled or removed. The
//! server keeps the encoded `images` field of the last answer and sends those bytes again while the
//! metadata has not changed. On the wire this is exactly the generated message (field 1, repeated
//! `Image`); `build.rs` maps the message here with `extern_path`, and clients decode into `images`.

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
    fn decodes_images_and_skips_unknown_fields() {
        let images = images();
        let mut bytes = reference_encoding(&images);
        bytes.extend([0x10, 0x07]); // an unknown field 2 (varint 7) from a newer peer
        let decoded = ListImagesResponse::decode(bytes.as_slice()).unwrap();
        assert_eq!(decoded.images, images);
        assert!(decoded.encoded.is_none());
    }
}
