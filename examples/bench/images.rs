//! The benchmark images, built deterministically by the test fixtures' image builder.
//!
//! | image | layers |
//! |---|---|
//! | `large` | 4 gzip layers, ~316 MB of tar: 2 of incompressible data, 1 of big text files, 1 of ~5,000 small text files |
//! | `large-zstd` | the same tars, zstd level 3 |
//! | `many-small` | 20 gzip layers of 250 small text files each |
//! | `shared` | `shared-b` timed while `shared-a` is present: both share a 100 MB 2-layer base and add 20 MB each |
//!
//! `--quick` divides the sizes by 8 and the file counts by 4.

use std::thread;

use super::common::images::image::{
    BuiltImage, Compression, Entry, ImageBuilder, Layer, MediaStyle, build_tar, random_bytes,
};
use super::text::{Rng, TextGen};

/// What a layer's files contain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fill {
    /// Incompressible pseudo-random bytes.
    Random,
    /// Text lines (compress ~3–4×).
    Text,
}

/// One layer to generate: `files` files under `dir` holding `bytes` bytes in total.
#[derive(Clone, Debug)]
pub struct LayerSpec {
    /// Seed of the contents.
    pub seed: u64,
    /// Directory the files go in (created with its parents).
    pub dir: String,
    /// Contents.
    pub fill: Fill,
    /// Number of regular files.
    pub files: usize,
    /// Total size of the files.
    pub bytes: usize,
}

/// A built layer with the sizes the report needs.
#[derive(Clone, Debug)]
pub struct BuiltLayer {
    /// The blob and its digests.
    pub layer: Layer,
    /// Size of the uncompressed tar.
    pub tar_bytes: u64,
    /// Regular files in it.
    pub files: u64,
}

/// An image pushed as `repo:tag`.
#[derive(Clone, Debug)]
pub struct Pushed {
    /// Repository, e.g. `bench/large`.
    pub repo: String,
    /// Tag.
    pub tag: String,
    /// The image.
    pub image: BuiltImage,
}

/// One benchmark case: the image whose pull is timed and the image present before it, if any.
#[derive(Clone, Debug)]
pub struct BenchImage {
    /// Name in the report.
    pub name: &'static str,
    /// The image whose pull is timed.
    pub target: Pushed,
    /// Pulled (and kept) before each timed pull of `target`.
    pub prereq: Option<Pushed>,
    /// The layers the timed pull has to fetch and unpack (not in `prereq`), bottom first.
    pub work: Vec<BuiltLayer>,
}

impl BenchImage {
    /// Compressed bytes the timed pull fetches.
    pub fn compressed(&self) -> u64 {
        self.work.iter().map(|l| l.layer.size()).sum()
    }

    /// Uncompressed tar bytes the timed pull unpacks.
    pub fn uncompressed(&self) -> u64 {
        self.work.iter().map(|l| l.tar_bytes).sum()
    }

    /// Files the timed pull writes.
    pub fn files(&self) -> u64 {
        self.work.iter().map(|l| l.files).sum()
    }
}

/// Divisors applied to sizes and file counts (`--quick`: 8 and 4).
#[derive(Clone, Copy, Debug)]
pub struct Scale {
    /// Byte sizes are divided by this.
    pub bytes: usize,
    /// File counts are divided by this.
    pub files: usize,
}

impl LayerSpec {
    fn new(seed: u64, dir: &str, fill: Fill, files: usize, bytes: usize, scale: Scale) -> LayerSpec {
        LayerSpec {
            seed,
            dir: dir.to_owned(),
            fill,
            files: (files / scale.files).max(1),
            bytes: bytes / scale.bytes,
        }
    }
}

/// The specs of `large`'s four layers (also used by `large-zstd` and the floor).
pub fn large_specs(scale: Scale) -> Vec<LayerSpec> {
    vec![
        LayerSpec::new(11, "opt/vendor/blobs", Fill::Random, 4, 80_000_000, scale),
        LayerSpec::new(12, "usr/lib/bench", Fill::Random, 40, 78_000_000, scale),
        LayerSpec::new(13, "usr/share/corpus", Fill::Text, 16, 80_000_000, scale),
        LayerSpec::new(14, "usr/share/doc", Fill::Text, 5000, 78_000_000, scale),
    ]
}

/// Builds every benchmark image (layers in parallel threads).
pub fn build_all(scale: Scale) -> Vec<BenchImage> {
    let large = large_specs(scale);
    let many: Vec<LayerSpec> = (0..20)
        .map(|i| {
            LayerSpec::new(
                100 + i,
                &format!("srv/app/layer{i:02}"),
                Fill::Text,
                250,
                1_500_000,
                scale,
            )
        })
        .collect();
    let base = [
        LayerSpec::new(200, "opt/base", Fill::Random, 5, 50_000_000, scale),
        LayerSpec::new(201, "usr/share/base", Fill::Text, 1000, 50_000_000, scale),
    ];
    let top_a = LayerSpec::new(202, "app/a", Fill::Text, 500, 20_000_000, scale);
    let top_b = LayerSpec::new(203, "app/b", Fill::Text, 500, 20_000_000, scale);

    let mut jobs: Vec<(LayerSpec, Vec<Compression>)> = large
        .iter()
        .map(|s| (s.clone(), vec![Compression::Gzip, Compression::Zstd]))
        .collect();
    jobs.extend(many.iter().map(|s| (s.clone(), vec![Compression::Gzip])));
    jobs.extend(
        base.iter()
            .chain([&top_a, &top_b])
            .map(|s| (s.clone(), vec![Compression::Gzip])),
    );
    let mut built = build_layers(jobs).into_iter();
    let mut take = |n: usize| -> Vec<Vec<BuiltLayer>> { built.by_ref().take(n).collect() };

    let large_built = take(4);
    let gz: Vec<BuiltLayer> = large_built.iter().map(|v| v[0].clone()).collect();
    let zst: Vec<BuiltLayer> = large_built.iter().map(|v| v[1].clone()).collect();
    let many_built: Vec<BuiltLayer> = take(20).into_iter().map(|v| v[0].clone()).collect();
    let shared: Vec<BuiltLayer> = take(4).into_iter().map(|v| v[0].clone()).collect();
    let (base_built, tops) = shared.split_at(2);

    let shared_a = image_of("shared-a", base_built.iter().chain([&tops[0]]));
    let shared_b = image_of("shared-b", base_built.iter().chain([&tops[1]]));
    vec![
        case("large", image_of("large", &gz), None, gz),
        case("large-zstd", image_of("large-zstd", &zst), None, zst),
        case("many-small", image_of("many-small", &many_built), None, many_built),
        case(
            "shared",
            shared_b,
            Some(pushed("shared-a", shared_a)),
            vec![tops[1].clone()],
        ),
    ]
}

fn case(name: &'static str, image: BuiltImage, prereq: Option<Pushed>, work: Vec<BuiltLayer>) -> BenchImage {
    BenchImage {
        name,
        target: pushed(name, image),
        prereq,
        work,
    }
}

fn pushed(name: &str, image: BuiltImage) -> Pushed {
    Pushed {
        repo: format!("bench/{name}"),
        tag: "v1".into(),
        image,
    }
}

/// An OCI image over `layers`, labelled with `name` so that images with the same layers (`large` and
/// `large-zstd` have the same diff ids) still have distinct configs and image ids.
fn image_of<'a>(name: &str, layers: impl IntoIterator<Item = &'a BuiltLayer>) -> BuiltImage {
    layers
        .into_iter()
        .fold(ImageBuilder::new(MediaStyle::Oci), |b, l| b.layer(l.layer.clone()))
        .label("imaged.bench", name)
        .cmd(&["/bin/sh"])
        .build()
}

/// Builds each spec's tar once and compresses it once per requested compression, one thread per spec.
pub fn build_layers(jobs: Vec<(LayerSpec, Vec<Compression>)>) -> Vec<Vec<BuiltLayer>> {
    thread::scope(|s| {
        let handles: Vec<_> = jobs
            .iter()
            .map(|(spec, comps)| {
                s.spawn(move || {
                    let (tar, files) = layer_tar(spec);
                    comps
                        .iter()
                        .map(|c| BuiltLayer {
                            tar_bytes: tar.len() as u64,
                            files,
                            layer: Layer::from_tar(tar.clone(), *c, MediaStyle::Oci),
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}

/// The layer's tar (directories first, then files, ~50 per subdirectory) and its file count.
pub fn layer_tar(spec: &LayerSpec) -> (Vec<u8>, u64) {
    let mut entries = Vec::new();
    let mut prefix = String::new();
    for part in spec.dir.split('/') {
        if !prefix.is_empty() {
            prefix.push('/');
        }
        prefix.push_str(part);
        entries.push(Entry::dir(&prefix));
    }
    let per_dir = 50;
    let subdirs = spec.files > per_dir;
    if subdirs {
        for d in 0..spec.files.div_ceil(per_dir) {
            entries.push(Entry::dir(&format!("{}/d{d:03}", spec.dir)));
        }
    }
    let mut text = TextGen::new(spec.seed);
    for (i, size) in file_sizes(spec).into_iter().enumerate() {
        let (path, data) = match spec.fill {
            Fill::Random => (
                format!("f{i:05}.bin"),
                random_bytes(spec.seed * 100_000 + i as u64, size),
            ),
            Fill::Text => (format!("f{i:05}.txt"), text.bytes(size)),
        };
        let path = match subdirs {
            true => format!("{}/d{:03}/{path}", spec.dir, i / per_dir),
            false => format!("{}/{path}", spec.dir),
        };
        let mode = if i % 7 == 0 { 0o755 } else { 0o644 };
        entries.push(Entry::file_with(&path, data, mode, 0, 0));
    }
    (build_tar(&entries), spec.files as u64)
}

/// File sizes summing to `spec.bytes`: equal for a few big files, log-uniform (many small, some large, as
/// in a real tree) for many.
fn file_sizes(spec: &LayerSpec) -> Vec<usize> {
    let n = spec.files;
    if n <= 64 {
        let mut sizes = vec![spec.bytes / n; n];
        sizes[n - 1] += spec.bytes % n;
        return sizes;
    }
    let mut rng = Rng::new(spec.seed ^ 0xF11E5);
    let raw: Vec<f64> = (0..n).map(|_| rng.log_uniform(200.0, 200_000.0)).collect();
    let factor = spec.bytes as f64 / raw.iter().sum::<f64>();
    let mut sizes: Vec<usize> = raw.iter().map(|r| ((r * factor) as usize).max(1)).collect();
    let total: usize = sizes.iter().sum();
    // Put the rounding difference on the largest file so the total is exact.
    if let Some(big) = (0..n).max_by_key(|&i| sizes[i]) {
        sizes[big] = (sizes[big] + spec.bytes).saturating_sub(total).max(1);
    }
    sizes
}
