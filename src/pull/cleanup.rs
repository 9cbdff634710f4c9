//! What a pull leaves behind when it fails or its future is dropped: nothing.

use std::sync::Arc;

use crate::lease::Lease;
use crate::stores::Stores;

/// Sets the flag when dropped: a dropped pull tells its layer workers to stop and commit nothing.
pub(super) struct CancelOnDrop(pub(super) Arc<std::sync::atomic::AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// On drop, unless disarmed by taking the lease: ends the lease and removes what the pull committed that
/// no image references. Runs whether the pull failed or its future was dropped (cancelled, timed out).
pub(super) struct Cleanup {
    pub(super) stores: Stores,
    pub(super) lease: Option<Lease>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let Some(lease) = self.lease.take() else { return };
        let named = lease.digests().to_vec();
        drop(lease);
        let stores = self.stores.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn_blocking(move || stores.discard_unreferenced(&named));
            }
            Err(_) => {
                stores.discard_unreferenced(&named);
            }
        }
    }
}
