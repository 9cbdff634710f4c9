//! Images: built byte for byte, checked independently, and the trees they unpack to.
//!
//! - [`layer`]: deterministic layer tars (files, dirs, links, whiteouts), plain, gzip or zstd; [`rawtar`]:
//!   tars written by hand, for entries the `tar` crate will not write (hostile paths, huge headers).
//! - [`image`]: images (OCI or Docker schema2) and multi-platform indexes over those layers; re-exports
//!   [`layer`]'s items so `use common::images::image::*` is enough to build images.
//! - [`big`]: one-layer images of one huge pseudo-random file, streamed to disk and pushed from it.
//! - [`busybox`]: images that run: a static busybox layer, the pause image, an image of every layer change
//!   (and the tree it unpacks to).
//! - [`many_images`]: thousands of image records written straight into a stopped daemon's store.
//! - [`tools`]: independent checks with `skopeo` and `umoci`.
//! - [`tree`]: a file tree as data, to compare two root filesystems; [`rootfs`]: an image's root
//!   filesystem made by imaged and by umoci, compared.

pub mod big;
pub mod busybox;
pub mod image;
pub mod layer;
pub mod many_images;
pub mod rawtar;
pub mod rootfs;
pub mod tools;
pub mod tree;
