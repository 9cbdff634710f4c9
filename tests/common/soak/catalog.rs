//! The images the soak drives: tags that share image ids, layers and snapshots in every way a node sees.
//!
//! - `app`: ONE image id in five tags: OCI gzip, Docker schema 2 (same gzip blobs, another manifest), OCI zstd
//!   and OCI uncompressed (other blobs, the same diff ids, so the same snapshots), and the OCI gzip manifest
//!   again in a second repository. Removing any of them removes the id every other tag names.
//! - `b` (OCI) and `c` (Docker schema 2): two more ids on the same base layer as `app`.
//! - `large`: the base plus one big incompressible layer, so GC has something worth collecting.
//!
//! Tags never move during a run, so every tag's image id is known in advance; that is what lets a client
//! tell which image a `RemoveImage` of a tag removes.

use std::collections::{BTreeMap, BTreeSet};

use crate::common::images::image::{BuiltImage, Compression, Entry, ImageBuilder, Layer, MediaStyle, random_bytes};
use crate::common::registry::push;

/// One tag of the catalog.
#[derive(Clone, Debug)]
pub struct Tag {
    /// `repo:tag` in the registry (no host).
    pub path: String,
    /// The image id it names (the config digest).
    pub id: String,
    /// Relative pull frequency (the large image is pulled less often).
    pub weight: u32,
    /// The image as pushed.
    pub image: BuiltImage,
}

/// Every tag, and what each image id is made of.
#[derive(Clone, Debug)]
pub struct Catalog {
    /// The tags, in a fixed order.
    pub tags: Vec<Tag>,
    /// Per image id: its chain ids (the same for every form of the id).
    pub chain_ids: BTreeMap<String, BTreeSet<String>>,
    /// Bytes the registry serves for all distinct blobs (to size the store's filesystem).
    pub distinct_blob_bytes: u64,
    /// Uncompressed bytes of all distinct layers (what the snapshots take).
    pub distinct_tar_bytes: u64,
}

/// A layer's tar entries, to build it in several compressions with the same diff id.
fn layer(entries: &[Entry], compression: Compression, style: MediaStyle) -> Layer {
    Layer::build(entries, compression, style)
}

impl Catalog {
    /// Builds the catalog; `large_bytes` is the size of the large image's big layer.
    pub fn build(large_bytes: usize) -> Catalog {
        let mut base: Vec<Entry> = vec![
            Entry::dir("etc"),
            Entry::file("etc/os-release", "ID=soak\n"),
            Entry::file("base/blob", random_bytes(1, 192 * 1024)),
        ];
        base.extend((0..40).map(|i| Entry::file(&format!("base/small/{i}"), format!("base file {i}\n"))));
        let mut app: Vec<Entry> = vec![Entry::file("app/data", random_bytes(2, 64 * 1024))];
        app.extend((0..60).map(|i| Entry::file(&format!("app/conf/{i}"), format!("setting {i} = {}\n", i * 7))));
        app.push(Entry::whiteout("base/small/3"));
        let own = |seed: u64, name: &str| {
            vec![
                Entry::file(&format!("{name}/bin"), random_bytes(seed, 48 * 1024)),
                Entry::file(&format!("{name}/README"), format!("image {name}\n")),
            ]
        };
        let big = vec![
            Entry::file("large/blob", random_bytes(7, large_bytes)),
            Entry::file("large/text", "soak ".repeat(4096)),
        ];

        let form = |style: MediaStyle, c: Compression, layers: &[&[Entry]]| {
            layers
                .iter()
                .fold(ImageBuilder::new(style), |b, e| b.layer(layer(e, c, style)))
                .build()
        };
        let app_oci = form(MediaStyle::Oci, Compression::Gzip, &[&base, &app]);
        let app_docker = form(MediaStyle::Docker, Compression::Gzip, &[&base, &app]);
        let app_zstd = form(MediaStyle::Oci, Compression::Zstd, &[&base, &app]);
        let app_plain = form(MediaStyle::Oci, Compression::None, &[&base, &app]);
        let b = form(MediaStyle::Oci, Compression::Gzip, &[&base, &own(3, "b")]);
        let c = form(MediaStyle::Docker, Compression::Gzip, &[&base, &own(4, "c")]);
        let large = form(MediaStyle::Oci, Compression::Gzip, &[&base, &big]);

        let tag = |path: &str, weight: u32, image: &BuiltImage| Tag {
            path: path.to_string(),
            id: image.config_digest.clone(),
            weight,
            image: image.clone(),
        };
        let tags = vec![
            tag("soak/app:oci", 4, &app_oci),
            tag("soak/app:v2s2", 4, &app_docker),
            tag("soak/app:zstd", 4, &app_zstd),
            tag("soak/app:plain", 4, &app_plain),
            tag("soak/app-mirror:latest", 3, &app_oci),
            tag("soak/b:1", 3, &b),
            tag("soak/c:1", 3, &c),
            tag("soak/large:1", 1, &large),
        ];
        let ids: BTreeSet<&str> = [&app_oci, &app_docker, &app_zstd, &app_plain]
            .iter()
            .map(|i| i.config_digest.as_str())
            .collect();
        assert_eq!(ids.len(), 1, "the forms of `app` must share one image id");

        let mut chain_ids = BTreeMap::new();
        let mut blobs = BTreeMap::new();
        let mut tars = BTreeMap::new();
        for t in &tags {
            chain_ids.insert(t.id.clone(), t.image.chain_id_set());
            for l in &t.image.layers {
                blobs.insert(l.digest.clone(), l.blob.len() as u64);
                tars.insert(l.diff_id.clone(), tar_len(l));
            }
            blobs.insert(t.image.config_digest.clone(), t.image.config.len() as u64);
            blobs.insert(t.image.manifest_digest.clone(), t.image.manifest.len() as u64);
        }
        Catalog {
            tags,
            chain_ids,
            distinct_blob_bytes: blobs.values().sum(),
            distinct_tar_bytes: tars.values().sum(),
        }
    }

    /// Pushes every tag to the registry at `addr`.
    pub async fn push(&self, addr: &str) {
        for t in &self.tags {
            let (repo, tag) = t.path.split_once(':').expect("repo:tag");
            push::push_image(addr, repo, tag, &t.image, None).await;
        }
    }

    /// The distinct image ids.
    pub fn ids(&self) -> BTreeSet<String> {
        self.tags.iter().map(|t| t.id.clone()).collect()
    }

    /// The tags naming `id`, as `repo:tag` paths.
    pub fn tags_of(&self, id: &str) -> Vec<&Tag> {
        self.tags.iter().filter(|t| t.id == id).collect()
    }

    /// The tag at `i`.
    pub fn tag(&self, i: usize) -> &Tag {
        &self.tags[i]
    }

    /// Picks a tag index with the tags' weights from a uniform `r`.
    pub fn pick(&self, r: u64) -> usize {
        let total: u64 = self.tags.iter().map(|t| u64::from(t.weight)).sum();
        let mut x = r % total;
        for (i, t) in self.tags.iter().enumerate() {
            let w = u64::from(t.weight);
            if x < w {
                return i;
            }
            x -= w;
        }
        unreachable!("x < total")
    }
}

/// The uncompressed size of a layer (its tar), decoded from the blob as built.
fn tar_len(l: &Layer) -> u64 {
    use std::io::Read;
    let mut out = Vec::new();
    if l.media_type.ends_with("gzip") {
        flate2::read::GzDecoder::new(&l.blob[..])
            .read_to_end(&mut out)
            .expect("gunzip layer");
    } else if l.media_type.ends_with("zstd") {
        out = zstd::decode_all(&l.blob[..]).expect("unzstd layer");
    } else {
        return l.blob.len() as u64;
    }
    out.len() as u64
}
