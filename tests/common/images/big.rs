//! Images too big for memory (issue 22's "AI-sized" images): one layer holding one file of pseudo-random
//! bytes, streamed from a generator through tar (and gzip or zstd) to a file on disk, hashed on the way,
//! never held whole. [`push_big_image`] uploads the layer from that file.
//!
//! The layer is an uncompressed tar by default ([`Compression::None`]), so that building 768 MiB costs a
//! few seconds; gzip is written at level 2 (the bytes of the blob, not the effort of the encoder, decide
//! what a pull has to inflate; zlib-rs' level 1 uses static Huffman trees only, which inflate random bytes
//! by 5 % instead of storing them).
//!
//! ```ignore
//! let big = big_layer_image(768 << 20, Compression::None);
//! push_big_image(&registry.addr(), "ai/model", "v1", &big, None).await;
//! ```

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use serde_json::Value;
use sha2::{Digest, Sha256};
use tempfile::TempDir;

use crate::common::images::image::{BuiltImage, Compression, ImageBuilder, Layer, MTIME, MediaStyle, sha256_digest};
use crate::common::registry::push::{Auth, push_blob_file, push_config_and_manifest};

/// What the big file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fill {
    /// xorshift64* output: incompressible (gzip stores it, so inflating it is close to a copy).
    Random,
    /// Like bf16 model weights: every other byte is a sign bit, a fixed exponent and 2 random bits, the
    /// others random; gzip compresses it to ~80 %, with real Huffman-coded blocks to inflate.
    Weights,
}

/// A one-layer image whose layer blob is a file on disk.
pub struct BigImage {
    /// Config and manifest; `layers[0]` has the layer's digests and media type but an empty `blob` (the
    /// bytes are in [`BigImage::blob_path`]): push it with [`push_big_image`], not `push_image`.
    pub image: BuiltImage,
    /// The layer blob.
    pub blob_path: PathBuf,
    /// Size of the layer blob.
    pub blob_size: u64,
    /// Size of the uncompressed tar.
    pub tar_size: u64,
    /// Size of the one file in it.
    pub file_size: u64,
    /// The file's path in the image.
    pub file_path: String,
    /// The temp dir holding the blob, when [`big_layer_image`] made one.
    _dir: Option<TempDir>,
}

impl BigImage {
    /// The layer's `sha256:<hex>`.
    pub fn layer_digest(&self) -> &str {
        &self.image.layers[0].digest
    }
}

/// A one-layer image of one `size_bytes` file of [`Fill::Random`] bytes, its blob in a temp dir of its own
/// (under `$TMPDIR`, removed on drop).
pub fn big_layer_image(size_bytes: u64, compression: Compression) -> BigImage {
    let dir = tempfile::Builder::new()
        .prefix("imaged-big-image-")
        .tempdir()
        .expect("temp dir for a big image");
    let mut big = build_big_image(dir.path(), size_bytes, compression, Fill::Random, 1);
    big._dir = Some(dir);
    big
}

/// A one-layer image of one `size_bytes` file of `fill` from `seed`, its blob written as `dir/layer.blob`.
pub fn build_big_image(dir: &Path, size_bytes: u64, compression: Compression, fill: Fill, seed: u64) -> BigImage {
    let blob_path = dir.join("layer.blob");
    let file = File::create(&blob_path).unwrap_or_else(|e| panic!("create {}: {e}", blob_path.display()));
    let blob = Hashing::new(BufWriter::with_capacity(1 << 20, file));
    let file_path = format!("models/weights-{seed}.bin");
    let tar_into = |w: &mut dyn Write| -> Hashing<()> {
        let mut tar_out = Hashing::new(w);
        write_tar(&mut tar_out, &file_path, size_bytes, fill, seed);
        tar_out.done()
    };
    let (tar, blob) = match compression {
        Compression::None => {
            let mut blob = blob;
            let tar = tar_into(&mut blob);
            (tar, blob)
        }
        Compression::Gzip => {
            let mut enc = flate2::write::GzEncoder::new(blob, flate2::Compression::new(2));
            let tar = tar_into(&mut enc);
            (tar, enc.finish().expect("finish gzip"))
        }
        Compression::Zstd => {
            let mut enc = zstd::stream::write::Encoder::new(blob, 1).expect("zstd encoder");
            let tar = tar_into(&mut enc);
            (tar, enc.finish().expect("finish zstd"))
        }
    };
    let (mut out, blob) = blob.split();
    out.flush().expect("flush the big layer");
    let style = MediaStyle::Oci;
    let stub = Layer {
        blob: Vec::new(),
        diff_id: tar.digest(),
        digest: blob.digest(),
        media_type: compression.media_type(style).to_owned(),
    };
    let mut image = ImageBuilder::new(style)
        .layer(stub)
        .label("imaged.test", "big-layer")
        .cmd(&["/bin/sh"])
        .build();
    set_layer_size(&mut image, blob.len);
    BigImage {
        image,
        blob_path,
        blob_size: blob.len,
        tar_size: tar.len,
        file_size: size_bytes,
        file_path,
        _dir: None,
    }
}

/// Pushes `big` as `repo:tag`: the layer streamed from its file, then the config and the manifest.
pub async fn push_big_image(registry_addr: &str, repo: &str, tag: &str, big: &BigImage, auth: Auth<'_>) {
    push_blob_file(registry_addr, repo, &big.blob_path, big.layer_digest(), auth).await;
    push_config_and_manifest(registry_addr, repo, tag, &big.image, auth).await;
}

/// The image builder writes a layer's size from its (here empty) blob: the manifest gets the real one.
fn set_layer_size(image: &mut BuiltImage, size: u64) {
    let mut manifest: Value = serde_json::from_slice(&image.manifest).expect("parse manifest");
    manifest["layers"][0]["size"] = size.into();
    image.manifest = serde_json::to_vec_pretty(&manifest).expect("serialize manifest");
    image.manifest_digest = sha256_digest(&image.manifest);
}

/// A tar of `models/` and one file of `size` bytes at `path`, as the image fixtures write them (GNU headers,
/// fixed mtime, root-owned).
fn write_tar(out: &mut dyn Write, path: &str, size: u64, fill: Fill, seed: u64) {
    let mut tar = tar::Builder::new(out);
    let mut dir = tar::Header::new_gnu();
    dir.set_entry_type(tar::EntryType::Directory);
    dir.set_mode(0o755);
    dir.set_mtime(MTIME);
    dir.set_size(0);
    let parent = path.rsplit_once('/').map_or("", |(p, _)| p);
    tar.append_data(&mut dir, format!("{parent}/"), std::io::empty())
        .expect("tar dir");
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o644);
    h.set_mtime(MTIME);
    h.set_size(size);
    let data = Generator::new(seed, fill).take(size);
    tar.append_data(&mut h, path, data).expect("tar the big file");
    tar.finish().expect("finish the big tar");
}

/// A writer that hashes and counts what passes through it.
struct Hashing<W> {
    inner: W,
    hash: Sha256,
    len: u64,
}

impl<W> Hashing<W> {
    fn new(inner: W) -> Hashing<W> {
        Hashing {
            inner,
            hash: Sha256::new(),
            len: 0,
        }
    }

    fn split(self) -> (W, Hashing<()>) {
        let rest = Hashing {
            inner: (),
            hash: self.hash,
            len: self.len,
        };
        (self.inner, rest)
    }

    fn done(self) -> Hashing<()> {
        self.split().1
    }

    fn digest(&self) -> String {
        format!("sha256:{}", hex::encode(self.hash.clone().finalize()))
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// An endless stream of `fill` bytes: xorshift64* (as [`crate::common::images::layer::random_bytes`]), made in
/// blocks so that the bytes do not depend on how the reader asks for them.
struct Generator {
    state: u64,
    fill: Fill,
    block: Vec<u8>,
    at: usize,
}

impl Generator {
    fn new(seed: u64, fill: Fill) -> Generator {
        let state = seed ^ 0x9E37_79B9_7F4A_7C15;
        Generator {
            state: if state == 0 { 1 } else { state },
            fill,
            block: vec![0; 256 << 10],
            at: 256 << 10,
        }
    }

    fn refill(&mut self) {
        for word in self.block.chunks_exact_mut(8) {
            self.state ^= self.state >> 12;
            self.state ^= self.state << 25;
            self.state ^= self.state >> 27;
            let mut w = self.state.wrapping_mul(0x2545_F491_4F6C_DD1D);
            if self.fill == Fill::Weights {
                // Each little-endian u16: low byte random; high byte sign, exponent 0x3C-ish, 2 random bits.
                w = (w & 0x80FF_80FF_80FF_80FF) | 0x3C00_3C00_3C00_3C00 | ((w >> 1) & 0x0300_0300_0300_0300);
            }
            word.copy_from_slice(&w.to_le_bytes());
        }
        self.at = 0;
    }
}

impl Read for Generator {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.at == self.block.len() {
            self.refill();
        }
        let n = buf.len().min(self.block.len() - self.at);
        buf[..n].copy_from_slice(&self.block[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}
