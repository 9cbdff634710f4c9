//! Fixtures shared by the integration tests; each test file declares `mod common;`.
//!
//! - [`registry`]: a real `docker-registry` process on a free loopback port, optionally with htpasswd
//!   auth, and containerd-style `hosts.toml` files pointing at it.
//! - [`registry_log`]: which user the registry's own log says made each request (htpasswd auth).
//! - [`layer`]: deterministic layer tars (files, dirs, links, whiteouts), plain, gzip or zstd.
//! - [`image`]: images (OCI or Docker schema2) and multi-platform indexes over those layers; re-exports
//!   [`layer`]'s items so `use common::image::*` is enough to build images.
//! - [`push`]: pushes blobs, images and indexes to a registry over the distribution API.
//! - [`tools`]: independent checks with `skopeo` and `umoci`.
//! - [`many_images`]: thousands of image records written straight into a stopped daemon's store.
//! - [`busybox`]: images that run: a static busybox layer, the pause image, an image of every layer change.
//! - [`containerd`]: a real containerd 1.6 with runc in a temp dir, and CRI helpers to run pods on it and
//!   read a container's root filesystem from inside.
//! - [`snapshots_api`]: containerd's snapshots API called with containerd's Rust client; its mounts mounted.
//!   [`idmapped`]: a user-namespaced snapshot's mounts mounted with idmapped lowers, as containerd 2.1 does.
//! - [`kubelet`]: what kubelet makes of a failed pull (its reason, the message it shows).
//! - [`bridge`]: imaged and containerd wired together as on a node (proxy snapshotter, publishing).
//! - [`podman`]: a real podman 4.3 with its own storage, reading imaged's containers-storage store.
//!   [`podman_node`]: imaged keeping such a store, podman reading it, one registry.
//! - [`gc_env`]: a daemon whose store is on a tmpfs of fixed size, and the kernel's figures GC tests check.
//! - [`pki`]: a CA, server and client certificates made with openssl, for HTTPS and mutual-TLS registries;
//!   [`registry`] serves HTTPS with them, or runs as a pull-through cache (`proxy.remoteurl`).
//! - [`blackhole`]: a loopback port that swallows connection attempts (a dead peer).
//! - [`fault_proxy`]: a proxy in front of the real registry that refuses, answers 500, never answers,
//!   stalls or drips on demand, can require a header (a P2P mirror routing by it), and logs every request
//!   (its headers, when it started and ended); [`proxied`]: a
//!   registry, that proxy and a daemon pulling through it.
//! - `soak/` (not declared here): the soak engine of issue 12, compiled only into `tests/soak.rs` through
//!   `#[path]`, so the other test binaries do not build it.
//!
//! The tools these need are installed by `hack/install-test-deps`; a missing one fails the test with a
//! message saying so, it is never skipped.

// Test code: panicking is the failure report, and not every test binary uses every helper.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code, unused_imports)]

pub mod blackhole;
pub mod bridge;
pub mod busybox;
pub mod containerd;
pub mod daemon;
pub mod fake_registry;
pub mod fake_runtime;
pub mod fault_proxy;
pub mod gc_env;
pub mod hostile;
pub mod idmapped;
pub mod image;
pub mod kubelet;
pub mod layer;
pub mod many_images;
pub mod pki;
pub mod podman;
pub mod podman_node;
pub mod proxied;
pub mod push;
pub mod rawtar;
pub mod registry;
pub mod registry_log;
pub mod rootfs;
pub mod setup;
pub mod snapshots_api;
pub mod tmpfs;
pub mod tools;
pub mod tree;
pub mod wait;
