//! Keeping the store tidy offline: the sweep `imaged fsck` starts with.

use super::{ImageService, ServiceError};
use crate::pull::{referenced_blobs, referenced_snapshots};

impl ImageService {
    /// Removes blobs and snapshots that no image references (left by a crash between commit and record).
    /// Run offline (`imaged fsck`), when no pull can be in flight. Returns how many of each were removed.
    pub(super) fn sweep(&self) -> Result<(usize, usize), ServiceError> {
        let images = self.stores.metadata.list();
        let (keep_blobs, keep_snaps) = (referenced_blobs(&images), referenced_snapshots(&images));
        let mut blobs = 0;
        for d in self.stores.content.list()? {
            if !keep_blobs.contains(&d) && self.stores.content.delete(&d)? > 0 {
                blobs += 1;
            }
        }
        let mut snaps = 0;
        for c in self.stores.snapshots.list()? {
            if !keep_snaps.contains(&c) && self.stores.snapshots.delete(&c)? > 0 {
                snaps += 1;
            }
        }
        Ok((blobs, snaps))
    }
}
