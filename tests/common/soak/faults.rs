//! The registry as the daemon reaches it during a soak: the real registry behind the fault proxy
//! ([`crate::common::registry::fault_proxy`]), which the run makes slow once and unavailable once.
//!
//! The daemon's `hosts.toml` names the proxy as the registry's only server (not as a mirror, which the
//! daemon would skip for the upstream when it fails), so an outage of the proxy is an outage of the registry.

use std::time::Duration;

use crate::common::registry::fault_proxy::{Fault, FaultProxy};

/// How a slow registry sends bodies: 16 KiB every 5 ms (about 3 MB/s per connection), so a layer of a few
/// MiB takes seconds instead of milliseconds, while bytes keep moving (no progress timeout fires).
const SLOW: Fault = Fault::Drip {
    chunk: 16 * 1024,
    pause: Duration::from_millis(5),
};

/// The fault proxy in front of the registry.
pub struct Front {
    proxy: FaultProxy,
}

impl Front {
    /// Starts a proxy to the registry at `registry_addr`, passing everything.
    pub async fn start(registry_addr: &str) -> Front {
        Front {
            proxy: FaultProxy::start(registry_addr).await,
        }
    }

    /// The URL the daemon's hosts.toml names as the registry's server.
    pub fn url(&self) -> String {
        self.proxy.url()
    }

    /// Slow registry: every body drips.
    pub fn slow(&self) {
        self.proxy.set(SLOW);
    }

    /// Registry down: connections are refused.
    pub fn down(&self) {
        self.proxy.set(Fault::Refuse);
    }

    /// Back to normal.
    pub fn heal(&self) {
        self.proxy.set(Fault::Pass);
    }

    /// Forgets the proxy's request log (it grows by one entry per request; long runs clear it).
    pub fn forget_requests(&self) {
        self.proxy.clear_log();
    }
}
