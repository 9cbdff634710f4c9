//! Why a pull failed.

use crate::content::ContentError;
use crate::digest::Digest;
use crate::error::{Classify, ErrorKind};
use crate::layers::LayerError;
use crate::manifest::ManifestError;
use crate::metadata::MetadataError;
use crate::registry::RegistryError;
use crate::unpack::UnpackError;

/// A failed pull. Nothing of a failed pull becomes visible.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// Talking to the registry failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The manifest, index or config is unusable.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// Writing or verifying content failed.
    #[error(transparent)]
    Content(#[from] ContentError),
    /// Recording the image failed.
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    /// A layer could not be applied (hostile, malformed or over a limit).
    #[error(transparent)]
    Unpack(#[from] UnpackError),
    /// The layer store failed.
    #[error(transparent)]
    Layers(#[from] LayerError),
    /// The uncompressed layer is not what the config says.
    #[error("layer {layer}: uncompressed content has diff id {actual}, but the image config says {expected}")]
    DiffIdMismatch {
        /// The layer blob.
        layer: Digest,
        /// The config's diff id.
        expected: Digest,
        /// What the content hashed to.
        actual: Digest,
    },
    /// No entry of the index runs on this node.
    #[error("image {image} has no manifest for platform {platform} (available: {available:?})")]
    NoMatchingPlatform {
        /// The reference.
        image: String,
        /// The node's platform.
        platform: String,
        /// What the image offers.
        available: Vec<String>,
    },
    /// An index whose chosen entry is itself an index.
    #[error("image {image}: index entry {digest} is itself an index, which imaged does not follow")]
    NestedIndex {
        /// The reference.
        image: String,
        /// The nested index.
        digest: Digest,
    },
    /// A config blob larger than allowed.
    #[error("config {digest} is {size} bytes, more than the limit of {limit} bytes")]
    ConfigTooLarge {
        /// The config blob.
        digest: Digest,
        /// Its (announced or received) size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The blob's stream broke or failed verification.
    #[error("downloading blob {digest} failed: {detail}")]
    Stream {
        /// The blob.
        digest: Digest,
        /// Why.
        detail: String,
        /// Whether the bytes did not match the digest (rather than the transfer breaking).
        mismatch: bool,
    },
    /// Writing a blob to disk failed.
    #[error("writing {path} failed: {source}")]
    Write {
        /// The ingest file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A download ended without being told to commit (the pull was cancelled).
    #[error("the download was interrupted")]
    Interrupted,
    /// A background task died.
    #[error("internal task failed: {0}")]
    Task(String),
}

impl PullError {
    /// Whether this failure is the node's own (a disk or database error, a cancelled pull, a bug) rather than
    /// the registry's or the image's. Local failures do not arm back-off: pulling again may well work.
    pub fn is_local(&self) -> bool {
        match self {
            PullError::Metadata(_) | PullError::Layers(_) | PullError::Write { .. } => true,
            PullError::Interrupted | PullError::Task(_) => true,
            PullError::Content(e) => matches!(e.kind(), ErrorKind::Internal | ErrorKind::NotFound),
            PullError::Unpack(e) => e.kind() == ErrorKind::Internal,
            _ => false,
        }
    }
}

impl Classify for PullError {
    fn kind(&self) -> ErrorKind {
        match self {
            PullError::Registry(e) => e.kind(),
            PullError::Manifest(e) => e.kind(),
            PullError::Content(e) => e.kind(),
            PullError::Metadata(e) => e.kind(),
            PullError::Unpack(e) => e.kind(),
            PullError::Layers(e) => e.kind(),
            PullError::DiffIdMismatch { .. } => ErrorKind::FailedPrecondition,
            PullError::NoMatchingPlatform { .. } => ErrorKind::NotFound,
            PullError::NestedIndex { .. } => ErrorKind::FailedPrecondition,
            PullError::ConfigTooLarge { .. } => ErrorKind::ResourceExhausted,
            PullError::Stream { mismatch: true, .. } => ErrorKind::FailedPrecondition,
            PullError::Stream { .. } => ErrorKind::Unavailable,
            PullError::Write { .. } | PullError::Task(_) => ErrorKind::Internal,
            PullError::Interrupted => ErrorKind::Cancelled,
        }
    }
}
