//! `ImageSpec.image_ref` on PullImage (Kubernetes 1.36, KEP-5365): the pull is pinned to that digest.
//!
//! KEP-5365 has runtimes report, for each image volume, "the digest of the image used", a value "similar to
//! the pod's `status.containerStatuses[i].imageID`": a repo digest `name@sha256:…` (what containerd and
//! CRI-O report as imageID) or an image id `sha256:…` (what imaged answers PullImage with). A client that
//! sends it back on PullImage (say, to get on another node exactly the image a pod used, as KubeVirt's live
//! migration must) asks for that image and no other, whatever its tag names today. So:
//!
//! - an image the store holds under the requested repository whose id, manifest or index digest is the
//!   pinned digest is requested by its repo digest (content that cannot change: no tag resolution, and
//!   credential verification as for any present image);
//! - otherwise a repo digest pins the pull itself: `name@digest` is pulled instead of the tag (the tag is
//!   not moved by it), and an image id, which no registry serves by, leaves the requested reference as is;
//! - whatever was pulled, the answer must be the pinned image (id, manifest or index digest equal to the
//!   pin), else the request fails with `FailedPrecondition` (`ErrImagePull`) naming both. What the pull
//!   stored stays: it is what the reference names.

use std::sync::Arc;

use super::{ImageService, ServiceError};
use crate::digest::Digest;
use crate::ensure::Ticket;
use crate::metadata::{ImageRecord, MetadataStore};
use crate::pull::Progress;
use crate::reference::ImageRef;

/// A parsed `image_ref`: the digest, and whether it came as a repo digest (`name@sha256:…`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ImagePin {
    /// What `image_ref` said, for messages.
    written: String,
    digest: Digest,
    named: bool,
}

impl ImagePin {
    /// Parses `image_ref` for a request of `image`; `None` when it is empty.
    pub fn parse(image: &ImageRef, image_ref: &str) -> Result<Option<ImagePin>, ServiceError> {
        let image_ref = image_ref.trim();
        if image_ref.is_empty() {
            return Ok(None);
        }
        let invalid = |reason: String| ServiceError::InvalidImageRef {
            image_ref: image_ref.to_string(),
            reason,
        };
        let (digest, named) = match image_ref.parse::<Digest>() {
            Ok(d) => (d, false),
            Err(e) if image_ref.starts_with("sha256:") => return Err(invalid(e.to_string())),
            Err(_) => {
                let r = ImageRef::parse(image_ref).map_err(|e| invalid(e.to_string()))?;
                let Some(d) = r.digest() else {
                    return Err(invalid("it names no digest (write name@sha256:… or sha256:…)".into()));
                };
                if r.name() != image.name() {
                    return Err(invalid(format!(
                        "it names {}, not the requested {}",
                        r.name(),
                        image.name()
                    )));
                }
                (*d, true)
            }
        };
        if let Some(requested) = image.digest()
            && named
            && *requested != digest
        {
            return Err(invalid(format!("the requested image {image} names another digest")));
        }
        Ok(Some(ImagePin {
            written: image_ref.to_string(),
            digest,
            named,
        }))
    }

    /// The reference to ensure instead of `image`: see the module documentation.
    pub fn reference(&self, image: &ImageRef, metadata: &MetadataStore) -> Result<ImageRef, ServiceError> {
        let by = |d: &Digest| ImageRef::parse(&image.with_digest(d)).map_err(ServiceError::from);
        if let Some(top) = self.held(image, metadata) {
            return by(&top);
        }
        if self.named {
            by(&self.digest)
        } else {
            Ok(image.clone())
        }
    }

    /// The repo digest, in `image`'s repository, of a held image this pin names.
    fn held(&self, image: &ImageRef, metadata: &MetadataStore) -> Option<Digest> {
        let repo = format!("{}@", image.name());
        let rec = metadata
            .by_repo_digest(&image.with_digest(&self.digest))
            .or_else(|| metadata.get(&self.digest))
            .or_else(|| metadata.list().into_iter().find(|r| self.names(r)))?;
        rec.repo_digests
            .iter()
            .find_map(|d| d.strip_prefix(&repo)?.parse().ok())
    }

    /// Whether `rec` is the pinned image.
    fn names(&self, rec: &ImageRecord) -> bool {
        rec.id == self.digest
            || rec.manifest.digest == self.digest
            || rec.index.as_ref().is_some_and(|i| i.digest == self.digest)
    }

    /// Refuses an answer that is not the pinned image.
    pub fn check(&self, image: &str, rec: &ImageRecord) -> Result<(), ServiceError> {
        if self.names(rec) {
            return Ok(());
        }
        Err(ServiceError::PinMismatch {
            image: image.to_string(),
            image_ref: self.written.clone(),
            id: rec.id,
            manifest: rec.index.as_ref().unwrap_or(&rec.manifest).digest,
        })
    }
}

/// A pull on its way ([`ImageService::begin_pull`]): its progress while it runs, then its result, checked
/// against the request's `image_ref`.
pub struct PullTicket<'a> {
    pub(super) ticket: Ticket<'a>,
    pub(super) image: String,
    pub(super) pin: Option<ImagePin>,
}

impl PullTicket<'_> {
    /// The pull's live progress, when a pull is in flight for this request.
    pub fn progress(&self) -> Option<Arc<Progress>> {
        self.ticket.progress()
    }

    /// Waits for the result (see [`Ticket::finish`]).
    pub async fn finish(self) -> Result<Arc<ImageRecord>, ServiceError> {
        let rec = self.ticket.finish().await.map_err(|source| ServiceError::Ensure {
            image: self.image.clone(),
            source,
        })?;
        if let Some(pin) = &self.pin {
            pin.check(&self.image, &rec)?;
        }
        Ok(rec)
    }
}

impl ImageService {
    /// The reference to pull for `image` with `image_ref`, and the pin to check the answer against.
    pub(super) fn pinned(
        &self,
        image: ImageRef,
        image_ref: &str,
    ) -> Result<(ImageRef, Option<ImagePin>), ServiceError> {
        match ImagePin::parse(&image, image_ref)? {
            None => Ok((image, None)),
            Some(pin) => {
                let pinned = pin.reference(&image, &self.stores.metadata)?;
                if pinned != image {
                    tracing::debug!(image = %image, pinned = %pinned, image_ref = %pin.written, "pull pinned by image_ref");
                }
                Ok((pinned, Some(pin)))
            }
        }
    }
}

#[cfg(test)]
#[path = "pin_tests.rs"]
mod tests;
