//! Bridges to container runtimes: adapters that let a runtime run the images imaged pulled, without a
//! second copy of any layer. Each bridge translates one foreign API onto imaged's stores and holds no policy
//! of its own, as [`crate::server`] does for the CRI.
//!
//! - [`containerd`]: containerd's snapshot API served on imaged's socket (a proxy snapshotter), and the
//!   publisher that records imaged's images in containerd's namespace.
//! - [`containers_storage`]: a read-only containers/storage image store over imaged's layers, for CRI-O,
//!   podman and buildah (`additionalimagestores`).

pub mod containerd;
pub mod containers_storage;
