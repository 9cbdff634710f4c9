//! The containerd release lines the tests run pods on, each with its own binaries:
//!
//! - [`Line::bookworm`]: Debian 12's containerd 1.6 and runc 1.1, installed into the system;
//! - [`Line::trixie`]: Debian 13's containerd 1.7, with Debian 12's runc;
//! - [`Line::sid`]: Debian unstable's containerd 2.x, with unstable's runc 1.3 (idmapped mounts, so
//!   user-namespaced pods run).
//!
//! The last two are unpacked by `hack/install-test-runtimes` under `$IMAGED_TEST_DEPS`
//! (`/opt/imaged-test-deps` unless set). Their versions are read from the binaries, so the tests name the
//! release they really ran.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use imaged::bridge::containerd::snippet::Version;

/// A containerd release line (see the module doc): where its binaries are.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Line {
    /// The directory of `containerd` and its shim.
    bin_dir: PathBuf,
    /// The runc its shim runs.
    runc: PathBuf,
}

impl Line {
    fn deps() -> PathBuf {
        std::env::var_os("IMAGED_TEST_DEPS").map_or_else(|| PathBuf::from("/opt/imaged-test-deps"), PathBuf::from)
    }

    /// containerd 1.6 and runc 1.1 (Debian 12, installed into the system).
    pub fn bookworm() -> Line {
        Line {
            bin_dir: PathBuf::from("/usr/bin"),
            runc: PathBuf::from("/usr/sbin/runc"),
        }
    }

    /// containerd 1.7 (Debian 13), with Debian 12's runc.
    pub fn trixie() -> Line {
        Line {
            bin_dir: Line::deps().join("containerd-trixie/usr/bin"),
            runc: PathBuf::from("/usr/sbin/runc"),
        }
    }

    /// containerd 2.x and runc 1.3 (Debian unstable).
    pub fn sid() -> Line {
        Line {
            bin_dir: Line::deps().join("containerd-sid/usr/bin"),
            runc: Line::deps().join("runc-sid/usr/sbin/runc"),
        }
    }

    /// The containerd binary at `containerd` (its shim beside it), with unstable's runc 1.3 for 2.x and
    /// Debian 12's runc for 1.x.
    pub fn at(containerd: &Path) -> Line {
        let bin_dir = containerd
            .parent()
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        let line = Line {
            bin_dir,
            runc: PathBuf::from("/usr/sbin/runc"),
        };
        if line.is_v2() {
            Line {
                runc: Line::sid().runc,
                ..line
            }
        } else {
            line
        }
    }

    /// The directory of `containerd` and its shim.
    pub fn bin_dir(&self) -> PathBuf {
        self.bin_dir.clone()
    }

    /// The `containerd` binary.
    pub fn containerd(&self) -> PathBuf {
        self.bin_dir.join("containerd")
    }

    /// The runc its shim runs.
    pub fn runc(&self) -> PathBuf {
        self.runc.clone()
    }

    /// The release (`containerd --version`). Panics, saying how to install it, if the binary is missing.
    pub fn version(&self) -> Version {
        static VERSIONS: OnceLock<Mutex<HashMap<PathBuf, Version>>> = OnceLock::new();
        let map = VERSIONS.get_or_init(Default::default);
        if let Some(v) = map.lock().expect("versions").get(&self.bin_dir) {
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
        map.lock().expect("versions").insert(self.bin_dir.clone(), v);
        v
    }

    /// containerd 2.x: config version 3.
    pub fn is_v2(&self) -> bool {
        self.version().major >= 2
    }
}

impl std::fmt::Display for Line {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "containerd {}", self.version())
    }
}

/// Each scenario (`async fn NAME(line: Line)` in the invoking file) as a test per containerd line:
/// `containerd_1_6::NAME`, `containerd_1_7::NAME`, `containerd_2::NAME`.
#[allow(unused_macros)] // Only the files whose scenarios run on every line use it.
macro_rules! on_every_line {
    ($($scenario:ident),* $(,)?) => {
        $crate::common::runtimes::containerd::line::on_every_line!(@line containerd_1_6, bookworm, $($scenario),*);
        $crate::common::runtimes::containerd::line::on_every_line!(@line containerd_1_7, trixie, $($scenario),*);
        $crate::common::runtimes::containerd::line::on_every_line!(@line containerd_2, sid, $($scenario),*);
    };
    (@line $module:ident, $line:ident, $($scenario:ident),*) => {
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario(super::Line::$line()).await
                }
            )*
        }
    };
}

pub(crate) use on_every_line;
