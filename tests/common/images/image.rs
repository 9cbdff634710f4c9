//! Deterministic test images: image configs and manifests in OCI or Docker schema2 style over
//! [`Layer`]s, and multi-platform indexes. Building the same inputs twice gives the same bytes
//! and digests (fixed mtimes, no user or group names, gzip without a timestamp), so tests can hard-code
//! expectations and compare what a client pulled with what was pushed.
//!
//! ```ignore
//! let layer = Layer::build(&[Entry::file("etc/hello", b"hi")], Compression::Gzip, MediaStyle::Oci);
//! let image = ImageBuilder::new(MediaStyle::Oci).layer(layer).user("1002").build();
//! push::push_image(&registry.addr(), "app", "v1", &image, None).await;
//! ```

use std::collections::BTreeMap;

use serde_json::{Value, json};

pub use crate::common::images::layer::{
    Compression, Entry, GROUP, Layer, MTIME, MediaStyle, PASSWD, build_tar, passwd_entries, random_bytes, sha256_digest,
};

/// The default `created` time of images, the same instant as [`MTIME`].
pub const CREATED: &str = "2023-11-14T22:13:20Z";

/// OCI image manifest media type.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index media type.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image config media type.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Docker schema2 manifest media type.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list media type.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker image config media type.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// An image's platform.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Platform {
    /// e.g. `linux`.
    pub os: String,
    /// e.g. `amd64`, `arm64`.
    pub architecture: String,
    /// e.g. `v8`.
    pub variant: Option<String>,
}

impl Platform {
    /// The platform as OCI descriptor JSON.
    fn to_json(&self) -> Value {
        let mut p = json!({ "os": self.os, "architecture": self.architecture });
        if let Some(v) = &self.variant {
            p["variant"] = json!(v);
        }
        p
    }
}

/// Builds an image config and manifest over some layers. Defaults: linux/amd64, created [`CREATED`].
#[derive(Clone, Debug)]
pub struct ImageBuilder {
    style: MediaStyle,
    layers: Vec<Layer>,
    platform: Platform,
    user: Option<String>,
    env: Vec<String>,
    entrypoint: Vec<String>,
    cmd: Vec<String>,
    labels: BTreeMap<String, String>,
    created: String,
    omit_media_type: bool,
}

/// A built image: the exact bytes to push and their digests.
#[derive(Clone, Debug)]
pub struct BuiltImage {
    /// The config JSON.
    pub config: Vec<u8>,
    /// `sha256:<hex>` of `config`.
    pub config_digest: String,
    /// The manifest JSON.
    pub manifest: Vec<u8>,
    /// `sha256:<hex>` of `manifest`.
    pub manifest_digest: String,
    /// The manifest's media type (the Content-Type to push it with, even when the field is omitted).
    pub manifest_media_type: String,
    /// The layers, bottom first.
    pub layers: Vec<Layer>,
    /// The platform written into the config.
    pub platform: Platform,
}

impl ImageBuilder {
    /// A builder with no layers for `style`.
    pub fn new(style: MediaStyle) -> Self {
        ImageBuilder {
            style,
            layers: Vec::new(),
            platform: Platform {
                os: "linux".into(),
                architecture: "amd64".into(),
                variant: None,
            },
            user: None,
            env: vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()],
            entrypoint: Vec::new(),
            cmd: Vec::new(),
            labels: BTreeMap::new(),
            created: CREATED.into(),
            omit_media_type: false,
        }
    }

    /// Appends a layer on top.
    pub fn layer(mut self, layer: Layer) -> Self {
        self.layers.push(layer);
        self
    }

    /// Sets `config.User`, e.g. `1002`, `1002:1002`, `nobody`, `nobody:nogroup`.
    pub fn user(mut self, user: &str) -> Self {
        self.user = Some(user.into());
        self
    }

    /// Sets os, architecture and optional variant, e.g. `("linux", "arm64", Some("v8"))`.
    pub fn platform(mut self, os: &str, architecture: &str, variant: Option<&str>) -> Self {
        self.platform = Platform {
            os: os.into(),
            architecture: architecture.into(),
            variant: variant.map(Into::into),
        };
        self
    }

    /// Appends a `KEY=value` to `config.Env`.
    pub fn env(mut self, kv: &str) -> Self {
        self.env.push(kv.into());
        self
    }

    /// Sets `config.Entrypoint` (left out of the config when empty, so images built without it keep their
    /// digests).
    pub fn entrypoint(mut self, entrypoint: &[&str]) -> Self {
        self.entrypoint = entrypoint.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Sets `config.Cmd`.
    pub fn cmd(mut self, cmd: &[&str]) -> Self {
        self.cmd = cmd.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Adds a `config.Labels` entry.
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// Sets the `created` timestamp (RFC 3339).
    pub fn created(mut self, created: &str) -> Self {
        self.created = created.into();
        self
    }

    /// Leaves the `mediaType` field out of the manifest (allowed by the OCI spec; the push still sends the
    /// media type as Content-Type).
    pub fn omit_media_type(mut self) -> Self {
        self.omit_media_type = true;
        self
    }

    /// Serializes config and manifest.
    pub fn build(&self) -> BuiltImage {
        let (manifest_type, config_type) = match self.style {
            MediaStyle::Oci => (OCI_MANIFEST, OCI_CONFIG),
            MediaStyle::Docker => (DOCKER_MANIFEST, DOCKER_CONFIG),
        };
        let mut inner = json!({ "Env": self.env, "Cmd": self.cmd, "Labels": self.labels });
        if let Some(user) = &self.user {
            inner["User"] = json!(user);
        }
        if !self.entrypoint.is_empty() {
            inner["Entrypoint"] = json!(self.entrypoint);
        }
        let history: Vec<Value> = (0..self.layers.len())
            .map(|i| json!({ "created": self.created, "created_by": format!("imaged test fixture layer {i}") }))
            .collect();
        let mut config = json!({
            "created": self.created,
            "config": inner,
            "rootfs": { "type": "layers", "diff_ids": self.layers.iter().map(|l| &l.diff_id).collect::<Vec<_>>() },
            "history": history,
        });
        merge(&mut config, self.platform.to_json());
        let config = serde_json::to_vec(&config).expect("serialize config");
        let config_digest = sha256_digest(&config);
        let layers: Vec<Value> = self
            .layers
            .iter()
            .map(|l| json!({ "mediaType": l.media_type, "digest": l.digest, "size": l.size() }))
            .collect();
        let mut manifest = json!({
            "schemaVersion": 2,
            "config": { "mediaType": config_type, "digest": config_digest, "size": config.len() },
            "layers": layers,
        });
        if !self.omit_media_type {
            manifest["mediaType"] = json!(manifest_type);
        }
        let manifest = serde_json::to_vec_pretty(&manifest).expect("serialize manifest");
        BuiltImage {
            manifest_digest: sha256_digest(&manifest),
            manifest,
            manifest_media_type: manifest_type.into(),
            config,
            config_digest,
            layers: self.layers.clone(),
            platform: self.platform.clone(),
        }
    }
}

/// A built OCI image index or Docker manifest list, with the images it lists.
#[derive(Clone, Debug)]
pub struct BuiltIndex {
    /// The index JSON.
    pub manifest: Vec<u8>,
    /// `sha256:<hex>` of `manifest`.
    pub digest: String,
    /// Its media type.
    pub media_type: String,
    /// The listed images, in order.
    pub images: Vec<BuiltImage>,
}

impl BuiltIndex {
    /// An OCI image index (`MediaStyle::Oci`) or Docker manifest list over `images`, each listed with the
    /// platform from its config.
    pub fn build(style: MediaStyle, images: Vec<BuiltImage>) -> BuiltIndex {
        let media_type = match style {
            MediaStyle::Oci => OCI_INDEX,
            MediaStyle::Docker => DOCKER_MANIFEST_LIST,
        };
        let manifests: Vec<Value> = images
            .iter()
            .map(|i| {
                json!({
                    "mediaType": i.manifest_media_type,
                    "digest": i.manifest_digest,
                    "size": i.manifest.len(),
                    "platform": i.platform.to_json(),
                })
            })
            .collect();
        let index = json!({ "schemaVersion": 2, "mediaType": media_type, "manifests": manifests });
        let manifest = serde_json::to_vec_pretty(&index).expect("serialize index");
        BuiltIndex {
            digest: sha256_digest(&manifest),
            manifest,
            media_type: media_type.into(),
            images,
        }
    }
}

fn merge(into: &mut Value, from: Value) {
    if let (Value::Object(into), Value::Object(from)) = (into, from) {
        into.extend(from);
    }
}

/// A gzip layer holding one file of `len` pseudo-random bytes from `seed` (incompressible, so its size on
/// disk is predictable).
pub fn random_layer(seed: u64, len: usize) -> Layer {
    let entries = [Entry::file(&format!("data/{seed}"), random_bytes(seed, len))];
    Layer::build(&entries, Compression::Gzip, MediaStyle::Oci)
}

/// An OCI image over `layers`.
pub fn image_over(layers: &[&Layer]) -> BuiltImage {
    layers
        .iter()
        .fold(ImageBuilder::new(MediaStyle::Oci), |b, l| b.layer((*l).clone()))
        .build()
}

impl BuiltImage {
    /// The blobs the image consists of: manifest, config, layers.
    pub fn blob_set(&self) -> std::collections::BTreeSet<String> {
        let mut out: std::collections::BTreeSet<String> = self.layers.iter().map(|l| l.digest.clone()).collect();
        out.extend([self.manifest_digest.clone(), self.config_digest.clone()]);
        out
    }

    /// The snapshots the image is unpacked into: its chain ids, computed from the diff ids (OCI image spec).
    pub fn chain_id_set(&self) -> std::collections::BTreeSet<String> {
        let mut chain: Option<String> = None;
        let mut out = std::collections::BTreeSet::new();
        for l in &self.layers {
            let next = match &chain {
                None => l.diff_id.clone(),
                Some(prev) => sha256_digest(format!("{prev} {}", l.diff_id).as_bytes()),
            };
            out.insert(next.clone());
            chain = Some(next);
        }
        out
    }
}
