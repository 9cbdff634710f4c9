//! imaged: a Kubernetes CRI image service.
//!
//! # Layout
//!
//! Dependencies point one way, from the wire down to the disk:
//!
//! - [`bridge`]: adapters for container runtimes (containerd's snapshot API and image publishing; a
//!   read-only containers/storage store for CRI-O and podman), beside `server` as the CRI is: they translate
//!   a foreign API onto the stores and hold no policy.
//! - [`server`]: the thin gRPC layer. One file per CRI RPC; it turns protobuf messages into domain calls
//!   on [`service::ImageService`] and domain errors into gRPC statuses (in [`server::status`]); [`wire`]
//!   holds the one message written by hand (a ListImages answer that can be sent pre-encoded).
//! - [`service`]: the image service in domain types: pull, status, list, remove, filesystem info, GC, prune.
//! - [`ensure`]: kubelet's image manager inside the server: pull policy, credential re-verification
//!   (KEP-2535), back-off, coalescing, limits, the progress watchdog, events.
//! - [`gc`]: disk-threshold GC and graph pruning (pure policies in `gc::policy` and `gc::prune`, executed on
//!   the stores by `gc::run`); [`pinned`]: what is never collected (patterns and the sandbox image).
//! - [`pull`]: one image pull: resolve the reference, choose the platform, fetch and verify every blob,
//!   apply every layer, commit them and record the image.
//! - [`unpack`] and [`snapshot`]: applying layer tars safely into overlay-ready snapshot directories keyed by
//!   chain id, and flattening them into a rootfs.
//! - [`snapshotter`]: containerd's snapshot model (active, view, committed snapshots with parents and
//!   labels) over those layers, for the runtimes that build containers' root filesystems on them.
//! - [`registry`]: the only module that talks to registries: hosts and mirrors (`hosts.toml`, with their TLS
//!   and headers), credentials (and docker credential helpers), the token flow, manifest and blob fetches.
//! - [`metadata`]: image records (tags, digests, size, user, pins, times), and who the registry served each
//!   image to, in a transactional redb database.
//! - [`content`]: the content-addressed blob store, laid out as an OCI image layout, with crash-safe commits;
//!   [`lease`] protects what operations in flight are about to reference.
//! - [`metrics`]: Prometheus metrics and their endpoint.
//! - [`reference`], [`digest`], [`manifest`], [`platform`], [`pattern`], [`duration`]: value types and parsers;
//!   [`keyed_lock`]: a lock per key; [`uds`]: gRPC channels over unix sockets; [`clock`]: now and RFC 3339.
//! - [`config`]: the daemon's configuration and its embedded defaults; [`memory`]: allocator tuning.
//! - [`cli`]: the client subcommands (`imaged pull`, `images`, ...), which speak CRI over a unix socket.
//! - [`error`]: the error kinds every module maps into; [`events`]: what the service announces to bridges.

pub mod bridge;
pub mod cli;
pub mod clock;
pub mod config;
pub mod content;
pub mod daemon;
pub mod digest;
pub mod duration;
pub mod ensure;
pub mod error;
pub mod events;
pub mod gc;
pub mod keyed_lock;
pub mod layers;
pub mod lease;
pub mod manifest;
pub mod memory;
pub mod metadata;
pub mod metrics;
pub mod pattern;
pub mod pinned;
pub mod platform;
pub mod pull;
pub mod reference;
pub mod registry;
pub mod server;
pub mod service;
pub mod snapshotter;
pub mod stores;
pub mod uds;
pub mod unpack;
pub mod wire;

/// Generated protobuf and gRPC code.
#[allow(missing_docs, clippy::all)]
pub mod proto {
    /// imaged's own service (`imaged.v1.Images`): pull progress, GC, prune.
    pub mod imaged {
        /// `imaged.v1`.
        pub mod v1 {
            tonic::include_proto!("imaged.v1");
        }
    }

    /// containerd's API, as far as imaged serves it (the snapshot service, for the proxy snapshotter).
    pub mod containerd {
        /// `containerd.types`.
        pub mod types {
            tonic::include_proto!("containerd.types");
        }
        /// `containerd.services.*`.
        pub mod services {
            /// `containerd.services.snapshots`.
            pub mod snapshots {
                /// `containerd.services.snapshots.v1`.
                pub mod v1 {
                    tonic::include_proto!("containerd.services.snapshots.v1");
                }
            }
        }
    }

    /// The CRI API, package `runtime.v1`, as far as the image service needs it.
    pub mod runtime {
        /// `runtime.v1`.
        pub mod v1 {
            tonic::include_proto!("runtime.v1");

            pub use crate::wire::{ListImagesResponse, StreamImagesResponse};

            impl std::fmt::Debug for AuthConfig {
                fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    let redacted = |s: &str| if s.is_empty() { "" } else { "<redacted>" };
                    f.debug_struct("AuthConfig")
                        .field("username", &self.username)
                        .field("password", &redacted(&self.password))
                        .field("auth", &redacted(&self.auth))
                        .field("server_address", &self.server_address)
                        .field("identity_token", &redacted(&self.identity_token))
                        .field("registry_token", &redacted(&self.registry_token))
                        .finish()
                }
            }
        }
    }
}
