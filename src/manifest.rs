//! OCI and Docker schema2 manifests, indexes and image configs: just the fields imaged needs.
//!
//! A manifest is identified by its `mediaType` field or, where it has none (the OCI spec allows that), by
//! the `Content-Type` the registry served it with. Schema 1 manifests and non-image artifacts are refused
//! with an error that says so, and so is JSON that is not UTF-8 (RFC 8259 requires it; serde_json would
//! let invalid bytes through in the fields it skips).
//!
//! Indexes list more than images in practice: buildx adds an attestation manifest per image (platform
//! `unknown/unknown`, annotation `vnd.docker.reference.type: attestation-manifest`), SOCI-enabled images list
//! their SOCI index with the image's own platform (`artifactType: application/vnd.amazon.soci.index.v2+json`),
//! and cache exports list layers. [`Desc::not_an_image`] tells them apart, so platform selection only ever
//! considers images.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::{Classify, ErrorKind};
use crate::platform::Platform;

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker schema 2 manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// OCI image config.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Docker image config.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// The index-entry annotation docker buildx uses for manifests that are not images but refer to one
/// (`attestation-manifest`).
pub const REFERENCE_TYPE_ANNOTATION: &str = "vnd.docker.reference.type";

/// Media types imaged asks registries for, best first.
pub const ACCEPTED: &[&str] = &[OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST];

/// The largest manifest or index imaged accepts (the distribution spec's recommended minimum limit).
pub const MAX_MANIFEST_BYTES: u64 = 4 << 20;
/// The largest image config imaged accepts.
pub const MAX_CONFIG_BYTES: u64 = 8 << 20;

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar.
    None,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
}

/// Why a manifest, index or config cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Not UTF-8, so not JSON (RFC 8259 section 8.1).
    #[error("invalid {what} {digest}: not UTF-8 JSON (RFC 8259): invalid byte at offset {offset}")]
    NotUtf8 {
        /// "manifest", "index" or "config".
        what: &'static str,
        /// The blob.
        digest: Digest,
        /// Where the first invalid byte is.
        offset: usize,
    },
    /// Not JSON of the expected shape.
    #[error("invalid {what} {digest}: {source}")]
    Parse {
        /// "manifest", "index" or "config".
        what: &'static str,
        /// The blob.
        digest: Digest,
        /// The cause.
        source: serde_json::Error,
    },
    /// A media type imaged does not handle.
    #[error("unsupported media type {media_type:?} for {what} {digest}: {hint}")]
    Unsupported {
        /// "manifest", "config" or "layer".
        what: &'static str,
        /// The blob.
        digest: Digest,
        /// The media type.
        media_type: String,
        /// What to do about it.
        hint: &'static str,
    },
    /// The manifest and config disagree, or the manifest is empty.
    #[error("image {digest} is inconsistent: {detail}")]
    Inconsistent {
        /// The manifest or config.
        digest: Digest,
        /// What disagrees.
        detail: String,
    },
}

impl Classify for ManifestError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::FailedPrecondition
    }
}

/// A content descriptor: what a manifest says about a blob, and all that imaged keeps of it (in image
/// records, and to fetch the blob from a registry).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    /// The blob's media type.
    pub media_type: String,
    /// The blob's digest.
    pub digest: Digest,
    /// The blob's size in bytes.
    pub size: u64,
}

impl From<&Desc> for Descriptor {
    fn from(d: &Desc) -> Descriptor {
        Descriptor {
            media_type: d.media_type.clone(),
            digest: d.digest,
            size: d.size,
        }
    }
}

/// A descriptor as it appears in manifests and indexes, with what imaged reads of it and does not keep.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Desc {
    /// The media type.
    pub media_type: String,
    /// The digest.
    pub digest: Digest,
    /// The size in bytes.
    pub size: u64,
    /// The platform, in index entries.
    #[serde(default)]
    pub platform: Option<Platform>,
    /// The artifact type, in index entries of artifacts (OCI 1.1).
    #[serde(default)]
    pub artifact_type: Option<String>,
    /// The annotations.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

impl Desc {
    /// For an index entry: why it is not an image to choose by platform (an attestation, an artifact such as
    /// a SOCI index, a blob), or `None` when it is an image manifest or a nested index.
    pub fn not_an_image(&self) -> Option<String> {
        if let Some(kind) = self.annotations.get(REFERENCE_TYPE_ANNOTATION) {
            return Some(format!("a {kind} ({REFERENCE_TYPE_ANNOTATION})"));
        }
        if let Some(kind) = self.artifact_type.as_deref().filter(|a| !a.is_empty()) {
            return Some(format!("an artifact of type {kind}"));
        }
        match self.media_type.as_str() {
            OCI_MANIFEST | DOCKER_MANIFEST | OCI_INDEX | DOCKER_LIST => None,
            other => Some(format!("not a manifest ({other})")),
        }
    }
}

/// What a fetched manifest turned out to be.
#[derive(Debug)]
pub enum Manifest {
    /// A single-platform image manifest.
    Image(ImageManifest),
    /// An index or manifest list.
    Index(ImageIndex),
}

/// A single-platform image manifest.
#[derive(Debug, Deserialize)]
pub struct ImageManifest {
    /// The config blob.
    pub config: Desc,
    /// The layers, base first.
    pub layers: Vec<Desc>,
}

/// An index or manifest list.
#[derive(Debug, Deserialize)]
pub struct ImageIndex {
    /// The entries.
    pub manifests: Vec<Desc>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Versioned {
    schema_version: Option<u32>,
    media_type: Option<String>,
}

/// Parses a manifest body, identifying it by its `mediaType` or else by `content_type`.
/// Returns the manifest and its effective media type.
pub fn parse(body: &[u8], content_type: Option<&str>, digest: Digest) -> Result<(Manifest, String), ManifestError> {
    utf8(body, "manifest", digest)?;
    let perr = |what, source| ManifestError::Parse { what, digest, source };
    let v: Versioned = serde_json::from_slice(body).map_err(|e| perr("manifest", e))?;
    let media_type = match v.media_type.filter(|m| !m.is_empty()) {
        Some(m) => m,
        None => content_type
            .map(|c| c.split(';').next().unwrap_or_default().trim().to_string())
            .unwrap_or_default(),
    };
    let unsupported = |hint| ManifestError::Unsupported {
        what: "manifest",
        digest,
        media_type: media_type.clone(),
        hint,
    };
    if v.schema_version == Some(1) || media_type.starts_with("application/vnd.docker.distribution.manifest.v1") {
        return Err(unsupported(
            "Docker schema 1 images are not supported; rebuild or re-push the image with a current tool",
        ));
    }
    let m = match media_type.as_str() {
        OCI_MANIFEST | DOCKER_MANIFEST => {
            Manifest::Image(serde_json::from_slice(body).map_err(|e| perr("manifest", e))?)
        }
        OCI_INDEX | DOCKER_LIST => Manifest::Index(serde_json::from_slice(body).map_err(|e| perr("index", e))?),
        "" | "application/json" | "text/plain" | "application/octet-stream" => {
            return Err(unsupported(
                "the manifest has no mediaType and the registry sent no manifest Content-Type",
            ));
        }
        _ => {
            return Err(unsupported(
                "expected an OCI or Docker schema 2 image manifest or index",
            ));
        }
    };
    Ok((m, media_type))
}

impl ImageManifest {
    /// Checks that the config and layers are of kinds imaged can run.
    pub fn check_media_types(&self, digest: Digest) -> Result<(), ManifestError> {
        let c = &self.config;
        if c.media_type != OCI_CONFIG && c.media_type != DOCKER_CONFIG {
            return Err(ManifestError::Unsupported {
                what: "config",
                digest: c.digest,
                media_type: c.media_type.clone(),
                hint: "this is not a container image (an artifact such as a Helm chart or a signature?)",
            });
        }
        for l in &self.layers {
            layer_compression(&l.media_type).ok_or_else(|| ManifestError::Unsupported {
                what: "layer",
                digest: l.digest,
                media_type: l.media_type.clone(),
                hint: "supported layers are tar, tar+gzip and tar+zstd (OCI and Docker media types)",
            })?;
        }
        if self.layers.is_empty() {
            return Err(ManifestError::Inconsistent {
                digest,
                detail: "the manifest lists no layers".into(),
            });
        }
        Ok(())
    }
}

/// The compression of a supported layer media type, or `None` if imaged cannot unpack it.
pub fn layer_compression(media_type: &str) -> Option<Compression> {
    // The non-distributable OCI types are deprecated but still served for some images; their blobs are
    // ordinary layers, and containerd accepts them, so we do too.
    match media_type {
        "application/vnd.oci.image.layer.v1.tar"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar"
        | "application/vnd.docker.image.rootfs.diff.tar" => Some(Compression::None),
        "application/vnd.oci.image.layer.v1.tar+gzip"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
        | "application/vnd.docker.image.rootfs.diff.tar.gzip" => Some(Compression::Gzip),
        "application/vnd.oci.image.layer.v1.tar+zstd"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
        | "application/vnd.docker.image.rootfs.diff.tar.zstd" => Some(Compression::Zstd),
        _ => None,
    }
}

/// The parts of an image config imaged uses.
#[derive(Debug, Deserialize)]
pub struct ImageConfig {
    /// Operating system.
    #[serde(default)]
    pub os: String,
    /// CPU architecture.
    #[serde(default)]
    pub architecture: String,
    /// CPU variant.
    #[serde(default)]
    pub variant: Option<String>,
    /// Creation time (RFC 3339).
    #[serde(default)]
    pub created: Option<String>,
    /// The runtime config.
    #[serde(default)]
    pub config: Option<RuntimeConfig>,
    /// The layers' diff ids.
    pub rootfs: RootFs,
}

/// The `config` object of an image config.
#[derive(Debug, Default, Deserialize)]
pub struct RuntimeConfig {
    /// `User`: `uid`, `uid:gid`, `name` or `name:group`.
    #[serde(rename = "User", default)]
    pub user: Option<String>,
}

/// The `rootfs` object of an image config.
#[derive(Debug, Deserialize)]
pub struct RootFs {
    /// The digests of the uncompressed layer tars, base first.
    pub diff_ids: Vec<Digest>,
}

/// Parses an image config and checks it against the manifest's layer count.
pub fn parse_config(body: &[u8], digest: Digest, layers: usize) -> Result<ImageConfig, ManifestError> {
    utf8(body, "config", digest)?;
    let c: ImageConfig = serde_json::from_slice(body).map_err(|source| ManifestError::Parse {
        what: "config",
        digest,
        source,
    })?;
    if c.rootfs.diff_ids.len() != layers {
        return Err(ManifestError::Inconsistent {
            digest,
            detail: format!(
                "the config lists {} diff ids but the manifest has {layers} layers",
                c.rootfs.diff_ids.len()
            ),
        });
    }
    Ok(c)
}

/// Refuses bytes that are not UTF-8 (JSON exchanged between systems must be, RFC 8259 section 8.1).
fn utf8(body: &[u8], what: &'static str, digest: Digest) -> Result<(), ManifestError> {
    std::str::from_utf8(body)
        .map(|_| ())
        .map_err(|e| ManifestError::NotUtf8 {
            what,
            digest,
            offset: e.valid_up_to(),
        })
}

#[cfg(test)]
#[path = "manifest_tests.rs"]
mod tests;
