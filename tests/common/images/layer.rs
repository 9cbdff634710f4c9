//! Deterministic layer blobs: a list of [`Entry`]s becomes a tar with fixed metadata (mtime [`MTIME`],
//! numeric owners only, GNU headers as docker writes them), optionally gzip- or zstd-compressed, with its
//! `diff_id` and digest. Building the same entries twice gives the same bytes.

use std::io::Write;

use sha2::{Digest, Sha256};

/// The mtime of every tar entry (2023-11-14T22:13:20Z).
pub const MTIME: u64 = 1_700_000_000;

/// `sha256:<hex>` of `data`.
pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// `len` deterministic pseudo-random (xorshift64*) bytes for incompressible layers; same seed, same bytes.
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed ^ 0x9E37_79B9_7F4A_7C15;
    if state == 0 {
        state = 1;
    }
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Whether manifests and media types follow the OCI image spec or Docker schema2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MediaStyle {
    /// OCI image manifest, index and config media types.
    Oci,
    /// Docker schema2 manifest, manifest list and config media types.
    Docker,
}

/// How a layer's tar is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// Plain tar.
    None,
    /// gzip (flate2's default level, no timestamp in the header).
    Gzip,
    /// zstd level 3.
    Zstd,
}

impl Compression {
    /// The layer media type for this compression in `style`.
    pub fn media_type(self, style: MediaStyle) -> &'static str {
        match (style, self) {
            (MediaStyle::Oci, Compression::None) => "application/vnd.oci.image.layer.v1.tar",
            (MediaStyle::Oci, Compression::Gzip) => "application/vnd.oci.image.layer.v1.tar+gzip",
            (MediaStyle::Oci, Compression::Zstd) => "application/vnd.oci.image.layer.v1.tar+zstd",
            (MediaStyle::Docker, Compression::None) => "application/vnd.docker.image.rootfs.diff.tar",
            (MediaStyle::Docker, Compression::Gzip) => "application/vnd.docker.image.rootfs.diff.tar.gzip",
            (MediaStyle::Docker, Compression::Zstd) => "application/vnd.docker.image.rootfs.diff.tar.zstd",
        }
    }

    /// Compresses `tar` deterministically.
    pub fn compress(self, tar: &[u8]) -> Vec<u8> {
        match self {
            Compression::None => tar.to_vec(),
            Compression::Gzip => {
                let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                enc.write_all(tar).expect("gzip layer");
                enc.finish().expect("gzip layer")
            }
            Compression::Zstd => zstd::encode_all(tar, 3).expect("zstd layer"),
        }
    }
}

/// One entry of a layer tar. Paths are relative (no leading `/`); directories need no trailing `/`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    /// A regular file.
    File {
        /// Path in the rootfs.
        path: String,
        /// Contents.
        data: Vec<u8>,
        /// Permission bits, e.g. `0o644`.
        mode: u32,
        /// Owner uid.
        uid: u64,
        /// Owner gid.
        gid: u64,
    },
    /// A directory.
    Dir {
        /// Path in the rootfs.
        path: String,
        /// Permission bits, e.g. `0o755`.
        mode: u32,
        /// Owner uid.
        uid: u64,
        /// Owner gid.
        gid: u64,
    },
    /// A symbolic link at `path` pointing to `target` (stored as given).
    Symlink {
        /// Path in the rootfs.
        path: String,
        /// Link target.
        target: String,
    },
    /// A hard link at `path` to the earlier entry `target` (a rootfs path).
    Hardlink {
        /// Path in the rootfs.
        path: String,
        /// Path of the linked entry.
        target: String,
    },
    /// Deletes `path` from lower layers: written as `<parent>/.wh.<name>`.
    Whiteout {
        /// Path in the rootfs to delete.
        path: String,
    },
    /// Hides everything lower layers put in `dir`: written as `<dir>/.wh..wh..opq`.
    Opaque {
        /// Directory to make opaque.
        dir: String,
    },
}

impl Entry {
    /// A root-owned `0o644` file.
    pub fn file(path: &str, data: impl AsRef<[u8]>) -> Entry {
        Entry::file_with(path, data, 0o644, 0, 0)
    }

    /// A file with the given mode and owner.
    pub fn file_with(path: &str, data: impl AsRef<[u8]>, mode: u32, uid: u64, gid: u64) -> Entry {
        let data = data.as_ref().to_vec();
        Entry::File {
            path: path.to_owned(),
            data,
            mode,
            uid,
            gid,
        }
    }

    /// A root-owned `0o755` directory.
    pub fn dir(path: &str) -> Entry {
        Entry::Dir {
            path: path.to_owned(),
            mode: 0o755,
            uid: 0,
            gid: 0,
        }
    }

    /// A directory with the given mode and owner.
    pub fn dir_with(path: &str, mode: u32, uid: u64, gid: u64) -> Entry {
        Entry::Dir {
            path: path.to_owned(),
            mode,
            uid,
            gid,
        }
    }

    /// A symlink `path -> target`.
    pub fn symlink(path: &str, target: &str) -> Entry {
        Entry::Symlink {
            path: path.to_owned(),
            target: target.to_owned(),
        }
    }

    /// A hard link `path` to `target`.
    pub fn hardlink(path: &str, target: &str) -> Entry {
        Entry::Hardlink {
            path: path.to_owned(),
            target: target.to_owned(),
        }
    }

    /// A whiteout deleting `path`.
    pub fn whiteout(path: &str) -> Entry {
        Entry::Whiteout { path: path.to_owned() }
    }

    /// An opaque marker for `dir`.
    pub fn opaque(dir: &str) -> Entry {
        Entry::Opaque { dir: dir.to_owned() }
    }
}

/// Builds an uncompressed tar of `entries`, in order, with GNU headers and fixed metadata.
///
/// A hard link's header carries the mode and owner of the file it links to (when that file is an earlier
/// entry), as tar writers fill it from the file's `stat`: extractors differ on what they do with a link
/// header's metadata (containerd's applies it to the shared inode, umoci's ignores it), so only realistic
/// headers make them agree.
pub fn build_tar(entries: &[Entry]) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    let mut files: std::collections::HashMap<&str, (u32, u64, u64)> = std::collections::HashMap::new();
    for entry in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mtime(MTIME);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mode(0o644);
        h.set_size(0);
        let res = match entry {
            Entry::File {
                path,
                data,
                mode,
                uid,
                gid,
            } => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                h.set_uid(*uid);
                h.set_gid(*gid);
                h.set_size(data.len() as u64);
                files.insert(clean(path), (*mode, *uid, *gid));
                tar.append_data(&mut h, clean(path), data.as_slice())
            }
            Entry::Dir { path, mode, uid, gid } => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(*mode);
                h.set_uid(*uid);
                h.set_gid(*gid);
                tar.append_data(&mut h, format!("{}/", clean(path)), std::io::empty())
            }
            Entry::Symlink { path, target } => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                tar.append_link(&mut h, clean(path), target)
            }
            Entry::Hardlink { path, target } => {
                h.set_entry_type(tar::EntryType::Link);
                if let Some((mode, uid, gid)) = files.get(clean(target)) {
                    h.set_mode(*mode);
                    h.set_uid(*uid);
                    h.set_gid(*gid);
                }
                tar.append_link(&mut h, clean(path), clean(target))
            }
            Entry::Whiteout { path } => {
                let path = clean(path);
                let marker = match path.rsplit_once('/') {
                    Some((parent, name)) => format!("{parent}/.wh.{name}"),
                    None => format!(".wh.{path}"),
                };
                tar.append_data(&mut h, marker, std::io::empty())
            }
            Entry::Opaque { dir } => tar.append_data(&mut h, format!("{}/.wh..wh..opq", clean(dir)), std::io::empty()),
        };
        res.unwrap_or_else(|e| panic!("append {entry:?} to layer tar: {e}"));
    }
    tar.into_inner().expect("finish layer tar")
}

fn clean(path: &str) -> &str {
    path.trim_start_matches('/').trim_end_matches('/')
}

/// A layer blob with its digests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layer {
    /// The blob as pushed (compressed per its media type).
    pub blob: Vec<u8>,
    /// `sha256:<hex>` of the uncompressed tar (goes into the config's `rootfs.diff_ids`).
    pub diff_id: String,
    /// `sha256:<hex>` of `blob`.
    pub digest: String,
    /// The layer media type in the manifest.
    pub media_type: String,
}

impl Layer {
    /// Builds a layer from `entries`.
    pub fn build(entries: &[Entry], compression: Compression, style: MediaStyle) -> Layer {
        Layer::from_tar(build_tar(entries), compression, style)
    }

    /// Wraps an uncompressed tar the caller made (e.g. a deliberately odd one).
    pub fn from_tar(tar: Vec<u8>, compression: Compression, style: MediaStyle) -> Layer {
        let blob = compression.compress(&tar);
        Layer {
            diff_id: sha256_digest(&tar),
            digest: sha256_digest(&blob),
            media_type: compression.media_type(style).to_owned(),
            blob,
        }
    }

    /// The blob size in bytes.
    pub fn size(&self) -> u64 {
        self.blob.len() as u64
    }
}

/// `/etc/passwd` of [`passwd_entries`]: root (0), app (1002) and nobody (65534).
pub const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
    app:x:1002:1002:app:/home/app:/bin/sh\n\
    nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n";
/// `/etc/group` of [`passwd_entries`]: root (0), app (1002) and nogroup (65534).
pub const GROUP: &str = "root:x:0:\napp:x:1002:\nnogroup:x:65534:\n";

/// `etc/`, `etc/passwd` ([`PASSWD`]) and `etc/group` ([`GROUP`]), for images whose `User` is a name.
pub fn passwd_entries() -> Vec<Entry> {
    vec![
        Entry::dir("etc"),
        Entry::file("etc/passwd", PASSWD),
        Entry::file("etc/group", GROUP),
    ]
}
