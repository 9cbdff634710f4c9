//! Errors of the image service, each with its kind and, for pulls, kubelet's reason.

use crate::content::ContentError;
use crate::ensure::EnsureError;
use crate::error::{Classify, ErrorKind, Reason};
use crate::gc::run::GcError;
use crate::layers::LayerError;
use crate::metadata::MetadataError;
use crate::reference::ReferenceError;
use crate::registry::auth::AuthError;

/// What went wrong in an image service operation.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The image name does not parse.
    #[error(transparent)]
    InvalidReference(#[from] ReferenceError),
    /// The pull request failed (policy, back-off, limits, or the pull itself).
    #[error("{}", ensure_message(image, source))]
    Ensure {
        /// The reference as the caller gave it.
        image: String,
        /// Why.
        source: EnsureError,
    },
    /// Garbage collection or pruning failed.
    #[error(transparent)]
    Gc(#[from] GcError),
    /// The credentials in the request are malformed.
    #[error("pulling image {image:?}: {source}")]
    Auth {
        /// The reference as the caller gave it.
        image: String,
        /// Why.
        source: AuthError,
    },
    /// `ImageSpec.image_ref` is not a digest of the requested image's repository.
    #[error("invalid image_ref {image_ref:?}: {reason}")]
    InvalidImageRef {
        /// The value as given.
        image_ref: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The image a pull answered is not the one `ImageSpec.image_ref` pins.
    #[error(
        "pulling image {image:?}: image_ref {image_ref:?} pins the pull to another image than the one the registry \
         serves for it now (image {id}, manifest {manifest}); pull by a digest of the pinned image"
    )]
    PinMismatch {
        /// The reference as the caller gave it.
        image: String,
        /// The pin as given.
        image_ref: String,
        /// The id of the image the pull found.
        id: crate::digest::Digest,
        /// Its manifest (or index) digest.
        manifest: crate::digest::Digest,
    },
    /// The request names a runtime handler imaged does not serve.
    #[error("unknown runtime handler {0:?}: configure it in runtime_handlers or omit it")]
    UnknownRuntimeHandler(String),
    /// The metadata store failed.
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    /// Removing an image from the stores failed.
    #[error(transparent)]
    Stores(#[from] crate::stores::StoresError),
    /// The content store failed.
    #[error(transparent)]
    Content(#[from] ContentError),
    /// The layer store failed.
    #[error(transparent)]
    Layers(#[from] LayerError),
    /// The snapshotter failed to open.
    #[error(transparent)]
    Snapshotter(#[from] crate::snapshotter::SnapshotterError),
    /// Opening the store failed.
    #[error("cannot open the image store at {path}: {detail}")]
    Open {
        /// The root.
        path: String,
        /// Why.
        detail: String,
    },
}

impl Classify for ServiceError {
    fn kind(&self) -> ErrorKind {
        match self {
            ServiceError::InvalidReference(_) | ServiceError::UnknownRuntimeHandler(_) => ErrorKind::InvalidArgument,
            ServiceError::InvalidImageRef { .. } => ErrorKind::InvalidArgument,
            ServiceError::PinMismatch { .. } => ErrorKind::FailedPrecondition,
            ServiceError::Ensure { source, .. } => source.kind(),
            ServiceError::Gc(e) => e.kind(),
            ServiceError::Auth { .. } => ErrorKind::InvalidArgument,
            ServiceError::Metadata(e) => e.kind(),
            ServiceError::Content(e) => e.kind(),
            ServiceError::Stores(e) => e.kind(),
            ServiceError::Layers(e) => e.kind(),
            ServiceError::Snapshotter(e) => e.kind(),
            ServiceError::Open { .. } => ErrorKind::Internal,
        }
    }
}

impl ServiceError {
    /// kubelet's reason for a failure of an RPC that only names an image (ImageStatus, ListImages,
    /// RemoveImage): an image name that does not parse is `InvalidImageName`, as for PullImage; other failures
    /// have none. (Neither is written on the wire: see `server::status`.)
    pub fn name_reason(&self) -> Option<Reason> {
        matches!(self, ServiceError::InvalidReference(_)).then_some(Reason::InvalidImageName)
    }

    /// kubelet's reason for this failure of a pull (on the wire only when kubelet reads it from the message:
    /// see `server::status`).
    pub fn pull_reason(&self) -> Reason {
        match self {
            ServiceError::InvalidReference(_) => Reason::InvalidImageName,
            ServiceError::Ensure { source, .. } => source.reason(),
            other => Reason::for_pull(other.kind()),
        }
    }
}

/// kubelet's wording: back-off and never-pull messages already name the image; others get the image first.
fn ensure_message(image: &str, source: &EnsureError) -> String {
    match source {
        EnsureError::BackOff { .. } | EnsureError::NeverPull(_) => source.to_string(),
        other => format!("pulling image {image:?}: {other}"),
    }
}
