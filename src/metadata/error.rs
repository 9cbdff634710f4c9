//! What can go wrong with the metadata database.

use std::path::PathBuf;

use crate::digest::Digest;
use crate::error::{Classify, ErrorKind};

/// What went wrong with the metadata database.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    /// The database could not be opened, read or written.
    #[error("metadata database {path}: {source}")]
    Db {
        /// The database file.
        path: PathBuf,
        /// The cause.
        source: Box<redb::Error>,
    },
    /// A stored record does not decode (written by an incompatible version, or damaged).
    #[error("metadata database {path}: record {key} is unreadable: {source}")]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// The record key.
        key: String,
        /// The cause.
        source: serde_json::Error,
    },
    /// A short image id matches more than one image.
    #[error("image id prefix {0:?} is ambiguous: it matches more than one image")]
    Ambiguous(String),
    /// A record just written is not in memory (a bug: writers are serialised).
    #[error("image {0} is missing from memory right after it was recorded")]
    Lost(Digest),
}

impl Classify for MetadataError {
    fn kind(&self) -> ErrorKind {
        match self {
            MetadataError::Ambiguous(_) => ErrorKind::InvalidArgument,
            _ => ErrorKind::Internal,
        }
    }
}
