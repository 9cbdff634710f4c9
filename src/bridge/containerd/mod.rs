//! The containerd bridge: imaged serves containerd's snapshot API ([`snapshots`]) so containerd can use
//! imaged's layers as a proxy snapshotter, and publishes its images into containerd's namespace.

pub mod snapshots;
