//! Bridges to container runtimes: adapters that let a runtime run the images imaged pulled, without a
//! second copy of any layer. Each bridge translates one foreign API onto imaged's stores and holds no policy
//! of its own, as [`crate::server`] does for the CRI.
//!
//! - [`containerd`]: the publisher that records imaged's images in containerd's namespace (containerd's
//!   snapshot API, through which it uses imaged's layers, is served by `server/`).
//! - [`containers_storage`]: a read-only containers/storage image store over imaged's layers, for CRI-O,
//!   podman and buildah (`additionalimagestores`).
//! - [`cri_runtime`]: the CRI runtime GC asks which images its containers use.
//!
//! Each is a [`crate::events::Bridge`]; the composition root (`daemon`) builds those the configuration turns
//! on, and the service holds them as a list.

pub mod containerd;
pub mod containers_storage;
pub mod cri_runtime;
