//! Finding an image by any name a CRI client may use: full id (with or without `sha256:`), a unique id
//! prefix (as `crictl images` prints them), a tag in any normalisable form, or a repo digest.

use std::sync::Arc;

use super::{ImageService, ServiceError};
use crate::digest::Digest;
use crate::metadata::ImageRecord;
use crate::reference::{ImageRef, ReferenceError};

/// Shortest id prefix accepted (containerd's truncated-id lookup has the same spirit; shorter prefixes
/// would too easily be mistaken for image names).
const MIN_ID_PREFIX: usize = 6;

impl ImageService {
    pub(super) fn lookup(&self, name: &str) -> Result<Option<Arc<ImageRecord>>, ServiceError> {
        let name = name.trim();
        if name.is_empty() {
            return Err(ServiceError::InvalidReference(ReferenceError::Empty));
        }
        let bare = name.strip_prefix("sha256:").unwrap_or(name);
        if let Ok(id) = Digest::from_hex(bare) {
            return Ok(self.stores.metadata.get(&id));
        }
        let parsed = ImageRef::parse(name);
        if let Ok(r) = &parsed {
            let found = match r.digest() {
                Some(d) => self.stores.metadata.by_repo_digest(&r.with_digest(d)),
                None => r.tagged().and_then(|t| self.stores.metadata.by_tag(&t)),
            };
            if found.is_some() {
                return Ok(found);
            }
        }
        let is_hex =
            bare.len() >= MIN_ID_PREFIX && bare.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if is_hex {
            return Ok(self.stores.metadata.by_id_prefix(bare)?);
        }
        match parsed {
            Ok(_) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}
