//! From a reference to one platform's image manifest: fetch what the reference names and, for an index,
//! choose the image entry for this node's platform (never an attestation or another artifact listed beside
//! the images) and fetch it by digest.
//!
//! A tag the store already holds an image for is revalidated (pull policy `always`) with a manifest HEAD,
//! which Docker Hub does not count against its pull limit: when the digest it tells names a manifest in the
//! content store, those bytes are used (hashed again as they are read) and no GET is made. A manifest asked
//! for by digest (an index's entry) is read from the store too when it is there. Only a HEAD that tells no
//! digest, or one the store lacks, leads to a GET.

use bytes::Bytes;

use super::PullError;
use crate::content::ContentStore;
use crate::digest::Digest;
use crate::manifest::Descriptor;
use crate::manifest::{self, ImageManifest, MAX_MANIFEST_BYTES, Manifest};
use crate::metadata::ImageRecord;
use crate::platform::Platform;
use crate::reference::ImageRef;
use crate::registry::{FetchedManifest, Session};

/// What the store has that a resolution may use instead of the registry's bytes.
pub(super) struct Local<'a> {
    /// The content store, whose manifests are read by digest.
    pub content: &'a ContentStore,
    /// The image the store holds under the requested tag: its tag is revalidated with a HEAD.
    pub recorded: Option<&'a ImageRecord>,
}

/// The resolved manifest, and the index it was chosen from.
pub(super) struct Resolved {
    /// The index or manifest list the reference named, with its bytes.
    pub index: Option<(Descriptor, Bytes)>,
    /// The platform manifest, with its bytes.
    pub manifest: (Descriptor, Bytes),
    /// The parsed platform manifest.
    pub parsed: ImageManifest,
    /// The manifests that came from the registry (not the store), with their sizes.
    pub fetched: Vec<(Digest, u64)>,
}

pub(super) async fn resolve(
    session: &Session,
    image: &ImageRef,
    platform: &Platform,
    local: Local<'_>,
) -> Result<Resolved, PullError> {
    let mut fetched = Vec::new();
    let top = top_manifest(session, image, &local, &mut fetched).await?;
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
            fetched,
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
            let entry = &idx.manifests[chosen];
            let child = match stored(local.content, &entry.digest, Some(&entry.media_type)) {
                Some(m) => m,
                None => {
                    let m = session.fetch_manifest(&entry.digest.to_string()).await?;
                    fetched.push((m.digest, m.body.len() as u64));
                    m
                }
            };
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
                fetched,
            }
        }
    };
    resolved.parsed.check_media_types(resolved.manifest.0.digest)?;
    Ok(resolved)
}

/// The manifest the reference names: for a tag the store holds, from the store when a HEAD tells a digest
/// it has; else fetched (and noted in `fetched`).
async fn top_manifest(
    session: &Session,
    image: &ImageRef,
    local: &Local<'_>,
    fetched: &mut Vec<(Digest, u64)>,
) -> Result<FetchedManifest, PullError> {
    let reference = image.reference();
    if let Some(rec) = local.recorded
        && image.digest().is_none()
    {
        match session.head_manifest(&reference).await? {
            Some(head) => {
                // The media type the image was recorded with, for a HEAD without Content-Type.
                let recorded = [Some(&rec.manifest), rec.index.as_ref()]
                    .into_iter()
                    .flatten()
                    .find(|d| d.digest == head.digest)
                    .map(|d| d.media_type.clone());
                let media_type = head.content_type.clone().or(recorded);
                if let Some(m) = stored(local.content, &head.digest, media_type.as_deref()) {
                    tracing::debug!(image = %image, digest = %head.digest, "the tag still names a manifest in the store: no GET");
                    return Ok(m);
                }
                tracing::debug!(image = %image, digest = %head.digest, "the tag names a manifest the store lacks");
            }
            None => tracing::debug!(image = %image, "the registry told no digest for the tag; asking with a GET"),
        }
    }
    let m = session.fetch_manifest(&reference).await?;
    fetched.push((m.digest, m.body.len() as u64));
    Ok(m)
}

/// The manifest `digest` from the content store, verified against its digest, if it is there.
fn stored(content: &ContentStore, digest: &Digest, media_type: Option<&str>) -> Option<FetchedManifest> {
    let body = content.read(digest, MAX_MANIFEST_BYTES).ok()?;
    let actual = Digest::of(&body);
    if actual != *digest {
        tracing::warn!(%digest, %actual, "a stored manifest does not match its digest; fetching it instead");
        return None;
    }
    Some(FetchedManifest {
        body: Bytes::from(body),
        content_type: media_type.map(str::to_string),
        digest: actual,
    })
}
