//! Test images that containers can run: a layer holding the machine's static busybox (`/bin/busybox` and
//! symlinks for the applets tests use), images built on it, the pause image a pod sandbox runs, and an
//! image whose layers exercise every kind of change (whiteouts, an opaque directory, hard links,
//! symlinks, type changes) for comparing root filesystems.
//!
//! busybox comes from Debian's `busybox-static` (installed by `hack/install-test-deps`): statically linked,
//! so it runs in an image that has no libc. The layers are built once per test process and reused.

use std::path::Path;
use std::sync::OnceLock;

use crate::common::images::image::{BuiltImage, Compression, Entry, ImageBuilder, Layer, MediaStyle};
use crate::common::images::tree::{Kind, Tree};
use crate::common::registry::TestRegistry;
use crate::common::registry::push;

/// Where Debian's `busybox-static` installs busybox (and where the images carry it).
pub const BUSYBOX: &str = "/bin/busybox";

/// The applets linked into `/bin` of [`busybox_layer`] (busybox picks the applet from the name it is run by).
pub const APPLETS: &[&str] = &[
    "sh",
    "cat",
    "echo",
    "ls",
    "find",
    "stat",
    "md5sum",
    "sha256sum",
    "readlink",
    "sleep",
    "true",
    "false",
    "env",
    "id",
    "mkdir",
    "rm",
    "touch",
    "wc",
    "head",
    "tail",
    "grep",
    "test",
    "printf",
    "ps",
    "kill",
];

/// The repository and tag the pause image is served under in a test registry.
pub const PAUSE_REPO: &str = "imaged-test/pause";
/// See [`PAUSE_REPO`].
pub const PAUSE_TAG: &str = "3.6";

/// The bytes of the machine's `/bin/busybox`; panics unless it is there and statically linked.
pub fn busybox_binary() -> &'static [u8] {
    static BINARY: OnceLock<Vec<u8>> = OnceLock::new();
    BINARY.get_or_init(|| {
        let bytes = std::fs::read(BUSYBOX)
            .unwrap_or_else(|e| panic!("read {BUSYBOX}: {e}; run hack/install-test-deps (busybox-static)"));
        assert!(
            is_static_elf(&bytes),
            "{BUSYBOX} is dynamically linked and would not run in a test image: install busybox-static \
             (hack/install-test-deps)"
        );
        bytes
    })
}

/// Whether `elf` is a 64-bit ELF executable without a program interpreter (`PT_INTERP`), i.e. static.
pub fn is_static_elf(elf: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    let u16_at = |o: usize| elf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]) as usize);
    let u32_at = |o: usize| elf.get(o..o + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    let u64_at = |o: usize| {
        elf.get(o..o + 8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")) as usize)
    };
    // ELF magic, ELFCLASS64, little-endian.
    if elf.get(..6) != Some(&[0x7f, b'E', b'L', b'F', 2, 1][..]) {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38)) else {
        return false;
    };
    (0..phnum).all(|i| matches!(u32_at(phoff + i * phentsize), Some(t) if t != PT_INTERP))
}

/// The entries of [`busybox_layer`]: `bin/`, `bin/busybox` (0755) and `bin/<applet> -> busybox`.
pub fn busybox_entries() -> Vec<Entry> {
    let mut entries = vec![
        Entry::dir("bin"),
        Entry::file_with("bin/busybox", busybox_binary(), 0o755, 0, 0),
    ];
    entries.extend(APPLETS.iter().map(|a| Entry::symlink(&format!("bin/{a}"), "busybox")));
    entries
}

/// A gzip OCI layer with the static busybox and its applet links (about 1 MB; built once per process).
pub fn busybox_layer() -> Layer {
    static LAYER: OnceLock<Layer> = OnceLock::new();
    LAYER
        .get_or_init(|| Layer::build(&busybox_entries(), Compression::Gzip, MediaStyle::Oci))
        .clone()
}

/// An OCI image builder whose bottom layer is [`busybox_layer`]; add layers and a command on top.
pub fn busybox_image() -> ImageBuilder {
    ImageBuilder::new(MediaStyle::Oci).layer(busybox_layer())
}

/// busybox + `/etc/marker`, cmd `cat /etc/marker`.
pub fn app_image(marker: &str) -> BuiltImage {
    let layer = Layer::build(
        &[Entry::dir("etc"), Entry::file("etc/marker", marker)],
        Compression::Gzip,
        MediaStyle::Oci,
    );
    busybox_image().layer(layer).cmd(&["/bin/cat", "/etc/marker"]).build()
}

/// The pod sandbox image: busybox whose entrypoint sleeps forever. As PID 1 of its PID namespace it
/// ignores signals it has no handler for, so it only ends on SIGKILL, which is how containerd stops a
/// sandbox.
pub fn pause_image() -> BuiltImage {
    busybox_image().entrypoint(&["/bin/sleep", "inf"]).build()
}

/// Pushes [`pause_image`] to `registry` as [`PAUSE_REPO`]:[`PAUSE_TAG`]; returns its reference
/// (`127.0.0.1:PORT/imaged-test/pause:3.6`), the `sandbox_image` to configure.
pub async fn push_pause(registry: &TestRegistry) -> String {
    let image = pause_image();
    push::push_image(&registry.addr(), PAUSE_REPO, PAUSE_TAG, &image, registry.credentials()).await;
    registry.image_ref(PAUSE_REPO, PAUSE_TAG)
}

/// The layers of an image exercising every kind of change across layers, bottom first: a whiteout, an
/// opaque directory (hiding a file and a subdirectory), hard links (one of three names whited out, a
/// pair kept), relative and absolute symlinks (one replaced by a file, one dangling), a file turned into
/// a directory and back, a directory turned into a file, and a file whose content, mode and owner a later
/// layer replaces. gzip, zstd and plain layers, one each. Add [`busybox_layer`] below to run commands.
pub fn changes_layers() -> Vec<Layer> {
    let style = MediaStyle::Oci;
    let base = [
        Entry::dir("etc"),
        Entry::file("etc/old", "whited out by layer 1\n"),
        Entry::file("etc/keep", "replaced by layer 2\n"),
        Entry::symlink("etc/alias", "keep"),
        Entry::symlink("etc/abs", "/etc/keep"),
        Entry::symlink("etc/replaced", "keep"),
        Entry::dir("opt"),
        Entry::dir("opt/data"),
        Entry::file("opt/data/old1", "hidden by the opaque dir"),
        Entry::dir("opt/data/sub"),
        Entry::file("opt/data/sub/old2", "hidden by the opaque dir"),
        Entry::dir("hl"),
        Entry::file_with("hl/orig", "one inode, three names\n", 0o640, 1002, 1002),
        Entry::hardlink("hl/link1", "hl/orig"),
        Entry::hardlink("hl/link2", "hl/orig"),
        Entry::file_with("hl/pair-a", "two names", 0o4755, 0, 0),
        Entry::hardlink("hl/pair-b", "hl/pair-a"),
        Entry::file("swap", "a file first"),
        Entry::dir("swap2"),
        Entry::file("swap2/inner", "a directory first"),
    ];
    let middle = [
        Entry::dir("etc"),
        Entry::whiteout("etc/old"),
        Entry::file("etc/added", "layer 1"),
        Entry::file("etc/replaced", "a file where a symlink was"),
        Entry::symlink("etc/dangling", "../nowhere"),
        Entry::dir("opt"),
        Entry::dir("opt/data"),
        Entry::opaque("opt/data"),
        Entry::file("opt/data/new", "new in the opaque dir"),
        Entry::dir("opt/data/sub"),
        Entry::file("opt/data/sub/new2", "also new"),
        Entry::dir("hl"),
        Entry::whiteout("hl/link1"),
        Entry::dir("swap"),
        Entry::file("swap/inner", "now a directory"),
        Entry::file("swap2", "now a file"),
    ];
    let top = [
        Entry::file("swap", "a file again"),
        Entry::dir("etc"),
        Entry::file_with("etc/keep", "replaced in layer 2\n", 0o600, 65534, 65534),
    ];
    vec![
        Layer::build(&base, Compression::Gzip, style),
        Layer::build(&middle, Compression::Zstd, style),
        Layer::build(&top, Compression::None, style),
    ]
}

/// What [`changes_layers`] must unpack to, whoever unpacked it (so two tools cannot agree on a wrong
/// answer): the tree of its root filesystem. File contents are the caller's to read.
pub fn assert_changes_applied(t: &Tree) {
    let has = |p: &str| t.contains_key(Path::new(p));
    for gone in [
        "etc/old",
        "opt/data/old1",
        "opt/data/sub/old2",
        "hl/link1",
        "swap/inner",
        "swap2/inner",
    ] {
        assert!(!has(gone), "{gone} was deleted by a later layer");
    }
    for kept in [
        "etc/added",
        "opt/data/new",
        "opt/data/sub/new2",
        "hl/orig",
        "hl/link2",
        "etc/dangling",
    ] {
        assert!(has(kept), "{kept} is there");
    }
    let node = |p: &str| &t[Path::new(p)];
    assert_eq!(node("etc/keep").uid, 65534);
    assert_eq!(node("etc/keep").mode, 0o600);
    assert!(matches!(node("etc/replaced").kind, Kind::File { .. }));
    assert!(matches!(&node("etc/abs").kind, Kind::Symlink(p) if p == Path::new("/etc/keep")));
    assert_eq!(
        node("etc/dangling").kind,
        Kind::Symlink("../nowhere".into()),
        "a dangling symlink is kept"
    );
    assert!(matches!(node("swap").kind, Kind::File { len: 12, .. }));
    assert!(matches!(node("swap2").kind, Kind::File { .. }));
    assert_eq!(
        node("hl/orig").link_group,
        Some("hl/link2".into()),
        "hl/orig and hl/link2 still share an inode"
    );
    assert_eq!(node("hl/link2").mode, 0o640);
    assert_eq!(node("hl/pair-b").link_group, Some("hl/pair-a".into()));
    assert_eq!(node("hl/pair-a").mode, 0o4755, "set-uid kept");
}
