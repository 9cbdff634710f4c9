//! Fixtures shared by the integration tests; each test file declares `mod common;`. Grouped by concern, each
//! folder's `mod.rs` maps its files:
//!
//! - [`registry`]: the real `docker-registry` (`common::registry::TestRegistry`), pushing to it, TLS for it,
//!   and what stands between it and a daemon: a fault-injecting proxy, a fake registry, a dead port.
//! - [`images`]: layers and images built byte for byte, the runnable busybox images, independent checks
//!   with skopeo and umoci, file trees and root filesystems to compare.
//! - [`runtimes`]: real containerd and podman reading imaged's stores, containerd's snapshots API, a fake
//!   CRI runtime, and what kubelet makes of a failed pull.
//! - [`daemon`]: the real `imaged` binary as a child process (`common::daemon::Daemon`), the usual
//!   registry-plus-daemon [`daemon::setup::Setup`], and set-ups for hostile layers and disk-threshold GC.
//! - [`wait`]: polling for a state with a deadline, instead of sleeping.
//! - `soak/` (not declared here): the soak engine of issue 12, compiled only into `tests/soak.rs` through
//!   `#[path]`, so the other test binaries do not build it.
//!
//! The tools these need are installed by `hack/install-test-deps`; a missing one fails the test with a
//! message saying so, it is never skipped.

// Test code: panicking is the failure report, and not every test binary uses every helper.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code, unused_imports)]

pub mod daemon;
pub mod images;
pub mod registry;
pub mod runtimes;
pub mod wait;
