//! The runtimes that read imaged's stores, and what kubelet makes of imaged's answers.
//!
//! - [`containerd`]: a real containerd (1.6, 1.7, 2.x) with runc in a temp dir, and CRI helpers to run pods
//!   on it and read a container's root filesystem from inside.
//! - [`bridge`]: imaged and containerd wired together as on a node (proxy snapshotter, publishing).
//! - [`snapshots_api`]: containerd's snapshots API called with containerd's Rust client; its mounts mounted.
//!   [`idmapped`]: a user-namespaced snapshot's mounts mounted with idmapped lowers, as containerd 2.1 does.
//! - [`podman`]: a real podman 4.3 with its own storage, reading imaged's containers-storage store;
//!   [`podman_node`]: imaged keeping such a store, podman reading it, one registry.
//! - [`fake_runtime`]: a named fake CRI runtime endpoint, for what GC asks a runtime.
//! - [`kubelet`]: what kubelet makes of a failed pull (its reason, the message it shows).

pub mod bridge;
pub mod containerd;
pub mod fake_runtime;
pub mod idmapped;
pub mod kubelet;
pub mod podman;
pub mod podman_node;
pub mod snapshots_api;
