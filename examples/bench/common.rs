//! The test fixtures of `tests/common/` that a benchmark can use: the deterministic image builder (and the
//! big one-layer images), the pusher, the real `docker-registry`, the fault proxy as a rate-capping front,
//! the busybox and pause images, and the real containerd with its CRI pod helpers (`--runtime`).
//!
//! `tests/common/mod.rs` itself cannot be included: its `daemon` module names the imaged binary through
//! `CARGO_BIN_EXE_imaged`, which Cargo sets for integration tests only, not for examples. So the modules
//! needed here are declared one by one inside a module whose path is `tests/common/`, in the same folders
//! (`images/`, `registry/`, `runtimes/`), and re-exported here as `common::images` and so on: the fixtures
//! refer to each other as `crate::common::…`, which resolves to this module, and `runtimes/containerd.rs` finds
//! its submodules in `tests/common/runtimes/containerd/` as it does in the tests (a file included with `#[path]`
//! would look for them next to itself). (`containerd/inside.rs` reads a container's rootfs into a `tree`;
//! comparing it with umoci's, in `images/rootfs.rs`, needs `daemon` and is left out.) The attributes are the
//! ones `tests/common/mod.rs` puts on them (test code: panics are the error report, and not every helper is
//! used).

#[allow(clippy::unwrap_used, clippy::expect_used, dead_code, unused_imports)]
#[path = "../../tests/common"]
pub mod fixtures {
    pub mod images {
        pub mod big;
        pub mod busybox;
        pub mod image;
        pub mod layer;
        pub mod tree;
    }
    pub mod registry {
        pub mod docker_registry;
        pub mod fault_proxy;
        pub mod push;
        pub use docker_registry::*;
    }
    pub mod runtimes {
        pub mod containerd;
    }
    pub mod wait;
}

pub use fixtures::{images, registry, runtimes, wait};
