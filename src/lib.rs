//! imaged: a Kubernetes CRI image service.
//!
//! # Layout
//!
//! Dependencies point one way, from the wire down to the disk, in these layers (a module imports only
//! modules of layers below its own; `tests/architecture.rs` holds the same order as one table and fails the
//! build's tests on an import against it, or on a cycle among the files of a folder):
//!
//! 1. Entry points. [`daemon`]: the composition root (stores, then the bridges the configuration turns on,
//!    then the service), shared by `imaged serve` and `imaged fsck`. [`server`]: the thin gRPC layer, every
//!    inbound skin: one file per CRI RPC, imaged's own `imaged.v1.Images`, and containerd's snapshot API
//!    (imaged as a proxy snapshotter); one span per call, domain errors to gRPC statuses in
//!    [`server::status`]. [`cli`]: the client subcommands (`imaged pull`, `images`, ...) over CRI.
//! 2. [`service`]: the image service in domain types: pull, status, list, remove, filesystem info, GC,
//!    prune, fsck.
//! 3. [`config`]: the daemon's configuration and its embedded defaults; it holds the config types of the
//!    modules below.
//! 4. What the service drives, none importing another: [`ensure`] (kubelet's image manager: pull policy,
//!    KEP-2535 re-verification, back-off, coalescing, limits, the progress watchdog), [`gc`] (disk-threshold
//!    GC and graph pruning: pure policies in `gc::policy` and `gc::prune`, executed by `gc::run`), and
//!    [`bridge`] (outbound adapters to runtimes, each an [`events::Bridge`]: publishing into containerd, a
//!    read-only containers/storage store for CRI-O and podman, the CRI runtime GC asks what is in use).
//! 5. [`pull`]: one image pull (resolve, choose the platform, fetch and verify every blob, apply every
//!    layer, record the image); [`snapshotter`]: containerd's snapshot model (active, view, committed
//!    snapshots with parents and labels) over imaged's layers.
//! 6. [`stores`]: the four stores as one aggregate, and the two operations that change what images exist
//!    (record; remove, with the one removal protocol).
//! 7. [`events`]: what the stores and the service announce to bridges; [`pinned`]: what is never collected
//!    (patterns and the sandbox image).
//! 8. [`metadata`]: image records and who the registry served each image to, in a transactional redb
//!    database; [`layers`]: the layer store, each layer applied once under its chain id.
//! 9. [`content`]: the content-addressed blob store, laid out as an OCI image layout, crash-safe commits.
//! 10. [`lease`]: what operations in flight protect from deletion.
//! 11. [`registry`]: the only module that talks to registries (hosts and mirrors, credentials and helpers,
//!     tokens, manifest and blob fetches); [`unpack`]: applying layer tars safely, overlay-ready.
//! 12. Plumbing: [`metrics`] (Prometheus), [`uds`] (gRPC channels over unix sockets, kubelet's message
//!     size), [`keyed_lock`] (a lock per key), [`memory`] (allocator tuning).
//! 13. The vocabulary: [`reference`](mod@reference), [`digest`], [`manifest`], [`platform`], [`pattern`], [`duration`],
//!     [`clock`], [`error`] (the error kinds every module maps into), [`wire`] (the one message written by
//!     hand), and the generated protobuf types.

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
#[cfg(test)]
mod test_log;
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
