//! From a reference to one platform's image manifest: fetch what the reference names and, for an index,
//! choose the image entry for this node's platform (never an attestation or another artifact listed beside
//! the images) and fetch it by digest.

use bytes::Bytes;

use super::PullError;
use crate::manifest::Descriptor;
use crate::manifest::{self, ImageManifest, Manifest};
use crate::platform::Platform;
use crate::reference::ImageRef;
use crate::registry::Session;

/// The resolved manifest, and the index it was chosen from.
pub(super) struct Resolved {
    /// The index or manifest list the reference named, with its bytes.
    pub index: Option<(Descriptor, Bytes)>,
    /// The platform manifest, with its bytes.
    pub manifest: (Descriptor, Bytes),
    /// The parsed platform manifest.
    pub parsed: ImageManifest,
}

pub(super) async fn resolve(session: &Session, image: &ImageRef, platform: &Platform) -> Result<Resolved, PullError> {
    let top = session.fetch_manifest(&image.reference()).await?;
    let (parsed, media_type) = manifest::parse(&top.body, top.content_type.as_deref(), top.digest)?;
    let top_desc = Descriptor {
        media_type,
        digest: top.digest,
        size: top.body.len() as u64,
    };
    let resolved = match parsed {
        Manifest::Image(m) => Resolved {
            index: None,
            manifest: (top_desc, top.body),
            parsed: m,
        },
        Manifest::Index(idx) => {
            // Only images are chosen from: attestations, SOCI indexes and other artifacts may carry a platform
            // (even this node's) but cannot run.
            let images: Vec<Option<&Platform>> = idx
                .manifests
                .iter()
                .map(|d| match d.not_an_image() {
                    Some(why) => {
                        tracing::debug!(image = %image, entry = %d.digest, "index entry skipped: {why}");
                        None
                    }
                    None => d.platform.as_ref(),
                })
                .collect();
            let chosen = platform
                .select(images.iter().copied())
                .ok_or_else(|| PullError::NoMatchingPlatform {
                    image: image.to_string(),
                    platform: platform.to_string(),
                    available: images.iter().flatten().map(|p| p.to_string()).collect(),
                })?;
            let child = session
                .fetch_manifest(&idx.manifests[chosen].digest.to_string())
                .await?;
            let (parsed, media_type) = manifest::parse(&child.body, child.content_type.as_deref(), child.digest)?;
            let Manifest::Image(m) = parsed else {
                return Err(PullError::NestedIndex {
                    image: image.to_string(),
                    digest: child.digest,
                });
            };
            let desc = Descriptor {
                media_type,
                digest: child.digest,
                size: child.body.len() as u64,
            };
            Resolved {
                index: Some((top_desc, top.body)),
                manifest: (desc, child.body),
                parsed: m,
            }
        }
    };
    resolved.parsed.check_media_types(resolved.manifest.0.digest)?;
    Ok(resolved)
}
