//! Raw tar archives for layers the `tar` crate will not write: entry names with `..` or a leading `/`,
//! link targets that climb out, device nodes and FIFOs. Every header is laid out byte by byte as POSIX
//! ustar defines it (name 100 bytes, mode, uid, gid, size, mtime, checksum, typeflag, linkname 100, magic
//! `ustar\0` `00`, devmajor, devminor, prefix 155); a name or link target that does not fit is carried by a
//! GNU `././@LongLink` entry first, as GNU tar and docker write it; [`RawTar::pax`] adds PAX records (e.g.
//! `SCHILY.xattr.*`) to the next entry. Nothing is cleaned or checked: what the caller passes is what the
//! archive says.
//!
//! ```ignore
//! let tar = RawTar::new().symlink("link", "/tmp/sentinel").file("link/pwned", b"x").finish();
//! let layer = Layer::from_tar(tar, Compression::Gzip, MediaStyle::Oci);
//! ```
//!
//! [`zero_bomb`] makes a gzip layer of one huge all-zero file without holding it in memory.

use std::io::Write;

use crate::common::images::layer::{Compression, Layer, MTIME, MediaStyle, sha256_digest};

/// The tar block size.
pub const BLOCK: usize = 512;

/// The ustar typeflag of an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `0`: a regular file.
    File,
    /// `1`: a hard link to an earlier entry (`link`).
    Hardlink,
    /// `2`: a symbolic link to `link`.
    Symlink,
    /// `3`: a character device.
    Char,
    /// `4`: a block device.
    Block,
    /// `5`: a directory.
    Dir,
    /// `6`: a FIFO.
    Fifo,
}

impl Kind {
    fn flag(self) -> u8 {
        match self {
            Kind::File => b'0',
            Kind::Hardlink => b'1',
            Kind::Symlink => b'2',
            Kind::Char => b'3',
            Kind::Block => b'4',
            Kind::Dir => b'5',
            Kind::Fifo => b'6',
        }
    }
}

/// The fields of one header; [`RawHeader::new`] gives root-owned, mtime [`MTIME`], no link, no device.
#[derive(Clone, Debug)]
pub struct RawHeader {
    /// The entry name, exactly as it goes into the archive.
    pub name: Vec<u8>,
    /// The typeflag.
    pub kind: Kind,
    /// Permission bits.
    pub mode: u32,
    /// Owner uid.
    pub uid: u32,
    /// Owner gid.
    pub gid: u32,
    /// Size of the data that follows.
    pub size: u64,
    /// Modification time (seconds).
    pub mtime: u64,
    /// Link target (hard or symbolic), exactly as it goes into the archive.
    pub link: Vec<u8>,
    /// Device major and minor.
    pub dev: (u32, u32),
}

impl RawHeader {
    /// A header for `name` of `kind` with mode `0o644` (`0o755` for directories, `0o777` for symlinks).
    pub fn new(name: impl AsRef<[u8]>, kind: Kind) -> RawHeader {
        let mode = match kind {
            Kind::Dir => 0o755,
            Kind::Symlink => 0o777,
            _ => 0o644,
        };
        RawHeader {
            name: name.as_ref().to_vec(),
            kind,
            mode,
            uid: 0,
            gid: 0,
            size: 0,
            mtime: MTIME,
            link: Vec::new(),
            dev: (0, 0),
        }
    }

    /// The 512-byte ustar header block (without any long-name entry; see [`RawTar::entry`]).
    pub fn block(&self) -> [u8; BLOCK] {
        let mut b = [0u8; BLOCK];
        let (prefix, name) = split_name(&self.name);
        put(&mut b[0..100], name);
        octal(&mut b[100..108], self.mode.into());
        octal(&mut b[108..116], self.uid.into());
        octal(&mut b[116..124], self.gid.into());
        octal(&mut b[124..136], self.size);
        octal(&mut b[136..148], self.mtime);
        b[156] = self.kind.flag();
        put(&mut b[157..257], &self.link);
        b[257..263].copy_from_slice(b"ustar\0");
        b[263..265].copy_from_slice(b"00");
        octal(&mut b[329..337], self.dev.0.into());
        octal(&mut b[337..345], self.dev.1.into());
        put(&mut b[345..500], prefix);
        set_checksum(&mut b);
        b
    }
}

/// Splits a name into ustar's prefix and name fields when it is too long for the name field alone and has
/// a `/` where both parts fit; otherwise the whole name goes into the name field (truncated, a long-name
/// entry carries the real one).
fn split_name(name: &[u8]) -> (&[u8], &[u8]) {
    if name.len() <= 100 {
        return (&[], name);
    }
    (0..name.len())
        .rev()
        .filter(|&i| name[i] == b'/')
        .find(|&i| i <= 155 && name.len() - i - 1 <= 100 && i > 0)
        .map_or((&[], name), |i| (&name[..i], &name[i + 1..]))
}

fn put(field: &mut [u8], value: &[u8]) {
    let n = value.len().min(field.len());
    field[..n].copy_from_slice(&value[..n]);
}

/// Zero-padded octal, NUL-terminated, filling the field.
fn octal(field: &mut [u8], value: u64) {
    let digits = format!("{value:0width$o}", width = field.len() - 1);
    assert!(
        digits.len() < field.len(),
        "{value} does not fit a {}-byte field",
        field.len()
    );
    field[..digits.len()].copy_from_slice(digits.as_bytes());
    field[digits.len()] = 0;
}

/// The header checksum: the byte sum with the checksum field read as spaces, as six octal digits, NUL,
/// space.
fn set_checksum(b: &mut [u8; BLOCK]) {
    b[148..156].fill(b' ');
    let sum: u32 = b.iter().map(|&x| u32::from(x)).sum();
    b[148..154].copy_from_slice(format!("{sum:06o}").as_bytes());
    b[154] = 0;
    b[155] = b' ';
}

fn padding(len: u64) -> usize {
    (BLOCK - (len as usize % BLOCK)) % BLOCK
}

/// An uncompressed tar built entry by entry.
#[derive(Debug, Default)]
pub struct RawTar {
    buf: Vec<u8>,
}

impl RawTar {
    /// An empty archive.
    pub fn new() -> RawTar {
        RawTar::default()
    }

    /// Appends `header` (its size set from `data`) and `data`, preceded by GNU long-name/long-link entries
    /// when the name does not fit ustar or the link target is over 100 bytes.
    pub fn entry(mut self, mut header: RawHeader, data: &[u8]) -> RawTar {
        if split_name(&header.name).1.len() > 100 {
            self.long(b'L', &header.name.clone());
        }
        if header.link.len() > 100 {
            self.long(b'K', &header.link.clone());
        }
        header.size = data.len() as u64;
        self.buf.extend_from_slice(&header.block());
        self.buf.extend_from_slice(data);
        self.buf.resize(self.buf.len() + padding(header.size), 0);
        self
    }

    fn long(&mut self, flag: u8, value: &[u8]) {
        let mut data = value.to_vec();
        data.push(0);
        self.extension(flag, "././@LongLink", &data);
    }

    /// An entry of typeflag `flag` carrying `data` about the next entry.
    fn extension(&mut self, flag: u8, name: &str, data: &[u8]) {
        let mut h = RawHeader::new(name, Kind::File);
        h.size = data.len() as u64;
        let mut block = h.block();
        block[156] = flag;
        set_checksum(&mut block);
        self.buf.extend_from_slice(&block);
        self.buf.extend_from_slice(data);
        self.buf.resize(self.buf.len() + padding(h.size), 0);
    }

    /// A PAX extended header (typeflag `x`) for the next entry, e.g. `("SCHILY.xattr.user.k", b"v")`.
    pub fn pax(mut self, records: &[(&str, &[u8])]) -> RawTar {
        let mut data = Vec::new();
        for (key, value) in records {
            // "<len> <key>=<value>\n", where <len> counts the whole record, its own digits included.
            let rest = key.len() + value.len() + 3;
            let mut len = rest + 1;
            while len != rest + len.to_string().len() {
                len = rest + len.to_string().len();
            }
            data.extend_from_slice(format!("{len} {key}=").as_bytes());
            data.extend_from_slice(value);
            data.push(b'\n');
        }
        self.extension(b'x', "PaxHeaders/entry", &data);
        self
    }

    /// A root-owned `0o644` file.
    pub fn file(self, name: impl AsRef<[u8]>, data: &[u8]) -> RawTar {
        self.entry(RawHeader::new(name, Kind::File), data)
    }

    /// A root-owned `0o755` directory.
    pub fn dir(self, name: impl AsRef<[u8]>) -> RawTar {
        self.entry(RawHeader::new(name, Kind::Dir), &[])
    }

    /// A symlink `name -> target`.
    pub fn symlink(self, name: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> RawTar {
        let mut h = RawHeader::new(name, Kind::Symlink);
        h.link = target.as_ref().to_vec();
        self.entry(h, &[])
    }

    /// A hard link `name` to `target`.
    pub fn hardlink(self, name: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> RawTar {
        let mut h = RawHeader::new(name, Kind::Hardlink);
        h.link = target.as_ref().to_vec();
        self.entry(h, &[])
    }

    /// A device node (`Kind::Char` or `Kind::Block`) `major:minor` with `mode`.
    pub fn device(self, name: impl AsRef<[u8]>, kind: Kind, (major, minor): (u32, u32), mode: u32) -> RawTar {
        let mut h = RawHeader::new(name, kind);
        h.dev = (major, minor);
        h.mode = mode;
        self.entry(h, &[])
    }

    /// A FIFO with `mode`.
    pub fn fifo(self, name: impl AsRef<[u8]>, mode: u32) -> RawTar {
        let mut h = RawHeader::new(name, Kind::Fifo);
        h.mode = mode;
        self.entry(h, &[])
    }

    /// The archive with its end (two zero blocks).
    pub fn finish(mut self) -> Vec<u8> {
        self.buf.resize(self.buf.len() + 2 * BLOCK, 0);
        self.buf
    }
}

/// A gzip layer (`style` media type) of one root-owned file `name` of `len` zero bytes: a decompression
/// bomb of a few hundred KB. It is a multi-member gzip stream (RFC 1952 lets members follow each other; a
/// gzip reader reads them all), so a MiB of zeros is compressed once and its member repeated, and the
/// uncompressed tar is never held in memory. Its diff id is the real one, hashed by `sha256sum` (a debug
/// build's sha2 would take seconds).
pub fn zero_bomb(name: &str, len: u64, style: MediaStyle) -> Layer {
    let gz = |data: &[u8]| {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(data).expect("gzip bomb layer");
        enc.finish().expect("gzip bomb layer")
    };
    let mut h = RawHeader::new(name, Kind::File);
    h.size = len;
    let header = h.block();
    // The file, its padding and the end-of-archive blocks are all zeros.
    let zeros = len + padding(len) as u64 + 2 * BLOCK as u64;
    const CHUNK: u64 = 1 << 20;
    let chunk = vec![0u8; CHUNK as usize];
    let (full, rest) = (zeros / CHUNK, (zeros % CHUNK) as usize);

    let mut blob = gz(&header);
    let member = gz(&chunk);
    for _ in 0..full {
        blob.extend_from_slice(&member);
    }
    blob.extend_from_slice(&gz(&chunk[..rest]));

    let mut sha = std::process::Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run sha256sum");
    {
        let mut stdin = sha.stdin.take().expect("sha256sum stdin");
        stdin.write_all(&header).expect("hash the bomb");
        for _ in 0..full {
            stdin.write_all(&chunk).expect("hash the bomb");
        }
        stdin.write_all(&chunk[..rest]).expect("hash the bomb");
    }
    let out = sha.wait_with_output().expect("sha256sum");
    assert!(out.status.success(), "sha256sum failed");
    let hex = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(
        hex.len(),
        64,
        "sha256sum printed {:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    Layer {
        diff_id: format!("sha256:{hex}"),
        digest: sha256_digest(&blob),
        media_type: Compression::Gzip.media_type(style).to_owned(),
        blob,
    }
}
