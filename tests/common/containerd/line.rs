//! The containerd release lines the tests run pods on, each with its own binaries:
//!
//! - [`Line::Bookworm`]: Debian 12's containerd 1.6 and runc 1.1, installed into the system;
//! - [`Line::Trixie`]: Debian 13's containerd 1.7, with Debian 12's runc;
//! - [`Line::Sid`]: Debian unstable's containerd 2.x, with unstable's runc 1.3 (idmapped mounts, so
//!   user-namespaced pods run).
//!
//! The last two are unpacked by `hack/install-test-runtimes` under `$IMAGED_TEST_DEPS`
//! (`/opt/imaged-test-deps` unless set). Their versions are read from the binaries, so the tests name the
//! release they really ran.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use imaged::bridge::containerd::snippet::Version;

/// A containerd release line (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Line {
    /// containerd 1.6 (Debian 12).
    Bookworm,
    /// containerd 1.7 (Debian 13).
    Trixie,
    /// containerd 2.x (Debian unstable).
    Sid,
}

impl Line {
    /// Every line, oldest first.
    pub const ALL: [Line; 3] = [Line::Bookworm, Line::Trixie, Line::Sid];

    fn deps() -> PathBuf {
        std::env::var_os("IMAGED_TEST_DEPS").map_or_else(|| PathBuf::from("/opt/imaged-test-deps"), PathBuf::from)
    }

    /// The directory of `containerd` and its shim.
    pub fn bin_dir(self) -> PathBuf {
        match self {
            Line::Bookworm => PathBuf::from("/usr/bin"),
            Line::Trixie => Line::deps().join("containerd-trixie/usr/bin"),
            Line::Sid => Line::deps().join("containerd-sid/usr/bin"),
        }
    }

    /// The `containerd` binary.
    pub fn containerd(self) -> PathBuf {
        self.bin_dir().join("containerd")
    }

    /// The runc its shim runs.
    pub fn runc(self) -> PathBuf {
        match self {
            Line::Bookworm | Line::Trixie => PathBuf::from("/usr/sbin/runc"),
            Line::Sid => Line::deps().join("runc-sid/usr/sbin/runc"),
        }
    }

    /// The release (`containerd --version`). Panics, saying how to install it, if the binary is missing.
    pub fn version(self) -> Version {
        static VERSIONS: OnceLock<std::sync::Mutex<std::collections::HashMap<Line, Version>>> = OnceLock::new();
        let map = VERSIONS.get_or_init(Default::default);
        if let Some(v) = map.lock().expect("versions").get(&self) {
            return *v;
        }
        let bin = self.containerd();
        let out = Command::new(&bin)
            .arg("--version")
            .output()
            .unwrap_or_else(|e| panic!("run {} --version: {e}; run hack/install-test-deps", bin.display()));
        let text = String::from_utf8_lossy(&out.stdout);
        let v = Version::from_version_output(&text)
            .unwrap_or_else(|| panic!("{} --version printed {text:?}: no version", bin.display()));
        map.lock().expect("versions").insert(self, v);
        v
    }

    /// containerd 2.x: config version 3.
    pub fn is_v2(self) -> bool {
        self.version().major >= 2
    }
}

impl std::fmt::Display for Line {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "containerd {}", self.version())
    }
}
