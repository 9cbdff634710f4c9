//! `imaged containerd-config`: the configuration containerd needs to build containers on imaged's layers
//! and to find the images imaged publishes, for the containerd release at hand. What changes between
//! releases (read from containerd's `docs/cri/config.md`, `plugins/transfer`, `core/unpack` and its config
//! loader at each version):
//!
//! - **Format**: 1.6 and 1.7 read config `version = 2` (CRI plugin `io.containerd.grpc.v1.cri`), 2.x
//!   `version = 3` (CRI images plugin `io.containerd.cri.v1.images`).
//! - **Drop-in**: 2.x merges an `imports` file into `config.toml` key by key, so imaged's part is a file of
//!   its own. 1.x replaces a whole plugin section with an imported one, so there the lines go into
//!   `config.toml` itself. The drop-in has no `version` line: containerd then reads it in the version of
//!   the `config.toml` importing it.
//! - **Transfer service** (2.1+): containerd's CRI pulls through `io.containerd.transfer.v1.local`, which
//!   unpacks only into the snapshotters its `unpack_config` lists (default: overlayfs alone); without an
//!   entry for imaged every image containerd pulls itself fails (`no unpack platforms defined`). A list
//!   written in a config replaces the default one, so overlayfs is listed again. 2.0 ignores the list (its
//!   CRI unpacks with the client), so it is written for every 2.x: an upgrade keeps working.
//! - **Proxy plugin `capabilities` and `exports`** (1.7.23+, 2.x): the capabilities imaged's snapshotter
//!   implements, and `exports.root`, the directory containerd's CRI names as the filesystem of images and
//!   writable layers (ImageFsInfo, container stats; kubelet stats it). Older releases name
//!   `<containerd root>/io.containerd.snapshotter.v1.<name>` instead, which the bridge creates (see
//!   [`super::fs_path`]). `remap-ids` only for 2.x: imaged's idmapped layers are mount options that only
//!   2.x's mount code turns into idmapped mounts (`core/mount/mount_linux.go`); 1.7 has none.

use std::fmt;
use std::path::Path;

/// A containerd release, as far as its configuration is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    /// Major release (1, 2).
    pub major: u32,
    /// Minor release.
    pub minor: u32,
    /// Patch release.
    pub patch: u32,
}

impl Version {
    /// The newest line this module knows: what is assumed when no containerd can be asked.
    pub const NEWEST: Version = Version::new(2, 3, 0);

    /// `major.minor.patch`.
    pub const fn new(major: u32, minor: u32, patch: u32) -> Version {
        Version { major, minor, patch }
    }

    /// A version as containerd and its packages write it: `1.6.20~ds1`, `v2.1.9`, `2.1.9+unknown`, `2.1`.
    pub fn parse(s: &str) -> Option<Version> {
        let s = s.strip_prefix('v').unwrap_or(s);
        let mut parts = s.splitn(3, '.');
        let number = |p: Option<&str>| -> Option<u32> {
            let digits: String = p?.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        };
        let major = number(parts.next())?;
        let minor = number(parts.next())?;
        let patch = parts.next().map_or(Some(0), |p| number(Some(p)))?;
        (major >= 1).then_some(Version { major, minor, patch })
    }

    /// The version in `containerd --version`'s output
    /// (`containerd github.com/containerd/containerd/v2 2.1.9+unknown <revision>`).
    pub fn from_version_output(text: &str) -> Option<Version> {
        text.split_whitespace().skip(2).find_map(Version::parse)
    }

    /// The version of the `containerd` on `PATH`, if it runs.
    pub fn of_installed_binary() -> Option<Version> {
        let out = std::process::Command::new("containerd")
            .arg("--version")
            .output()
            .ok()?;
        Version::from_version_output(&String::from_utf8_lossy(&out.stdout))
    }

    /// 2.x: config version 3, plugin sections merged key by key from imports.
    fn is_v2(self) -> bool {
        self.major >= 2
    }

    /// Proxy plugins take `capabilities` and `exports` (1.7.23+).
    fn proxy_exports(self) -> bool {
        self >= Version::new(1, 7, 23)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// What the configuration names of imaged.
#[derive(Debug, Clone)]
pub struct Target<'a> {
    /// imaged's socket (the snapshot API is served there).
    pub socket: &'a Path,
    /// imaged's store: the filesystem of its layers and of containers' writable layers.
    pub root: &'a Path,
    /// The proxy plugin's name (`[containerd] snapshotter`).
    pub snapshotter: &'a str,
    /// The platform containerd unpacks for (`os/arch[/variant]`).
    pub platform: &'a str,
    /// The snapshotter capabilities imaged implements ([`crate::snapshotter::CAPABILITIES`]).
    pub capabilities: &'a [&'a str],
}

/// Where containerd 2.x users put the drop-in [`render`] writes.
pub const DROP_IN: &str = "/etc/containerd/conf.d/imaged.toml";

/// The configuration for containerd `version`: for 2.x a whole drop-in file, for 1.x the lines to add to
/// `config.toml`. Both are TOML.
pub fn render(version: Version, t: &Target<'_>) -> String {
    let mut out = String::new();
    let name = t.snapshotter;
    if version.is_v2() {
        out.push_str(&format!(
            "# containerd {version}: save as {DROP_IN} and make sure /etc/containerd/config.toml (version = 3)\n\
             # imports it: imports = [\"/etc/containerd/conf.d/*.toml\"]; then restart containerd.\n\
             # containerd's CRI then builds containers on imaged's layers and finds the images imaged publishes\n\
             # (imaged: [containerd] address = containerd's socket).\n\n"
        ));
    } else {
        out.push_str(&format!(
            "# containerd {version}: add to /etc/containerd/config.toml (version = 2): merge the CRI table into\n\
             # the one the file has (1.x replaces a whole plugin table from an imported file), then restart\n\
             # containerd. Its CRI plugin then builds containers on imaged's layers and finds the images imaged\n\
             # publishes (imaged: [containerd] address = containerd's socket).\n\n"
        ));
    }
    out.push_str(&format!(
        "[proxy_plugins.{name}]\n  type = \"snapshot\"\n  address = {}\n",
        quote(&t.socket.display().to_string())
    ));
    if version.proxy_exports() {
        // containerd 1.7's mount code knows no `uidmap=`/`gidmap=` options (2.0's does): declaring
        // remap-ids there would hand them to the kernel, so 1.7 keeps its chowned copy.
        let caps: Vec<String> = t
            .capabilities
            .iter()
            .filter(|c| version.is_v2() || **c != "remap-ids")
            .map(|c| quote(c))
            .collect();
        if !caps.is_empty() {
            out.push_str(&format!("  capabilities = [{}]\n", caps.join(", ")));
        }
        out.push_str(&format!(
            "  [proxy_plugins.{name}.exports]\n    # The filesystem containerd's CRI reports for images and writable layers.\n    root = {}\n",
            quote(&t.root.display().to_string())
        ));
    }
    if version.is_v2() {
        out.push_str(&format!(
            "\n[plugins.'io.containerd.cri.v1.images']\n  snapshotter = {}\n",
            quote(name)
        ));
        out.push_str(
            "\n# containerd 2.1+ pulls CRI images through the transfer service, which unpacks only into the\n\
             # snapshotters listed here. A list replaces the default (overlayfs), so overlayfs is listed too;\n\
             # entries already in config.toml are kept (lists from imports are appended).\n",
        );
        for sn in [name, "overlayfs"] {
            out.push_str(&format!(
                "[[plugins.'io.containerd.transfer.v1.local'.unpack_config]]\n  platform = {}\n  snapshotter = {}\n",
                quote(t.platform),
                quote(sn)
            ));
        }
    } else {
        out.push_str(&format!(
            "\n[plugins.\"io.containerd.grpc.v1.cri\".containerd]\n  snapshotter = {}\n",
            quote(name)
        ));
    }
    out
}

/// `s` as a TOML basic string.
fn quote(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target<'static> {
        Target {
            socket: Path::new("/run/imaged/imaged.sock"),
            root: Path::new("/var/lib/imaged"),
            snapshotter: "imaged",
            platform: "linux/amd64",
            capabilities: &["remap-ids"],
        }
    }

    fn parsed(v: Version) -> toml::Table {
        render(v, &target())
            .parse::<toml::Table>()
            .expect("the snippet is TOML")
    }

    fn at<'a>(t: &'a toml::Table, path: &[&str]) -> Option<&'a toml::Value> {
        let (last, init) = path.split_last()?;
        let mut table = t;
        for k in init {
            table = table.get(*k)?.as_table()?;
        }
        table.get(*last)
    }

    #[test]
    fn containerd_1_6_gets_a_v2_cri_table_and_no_proxy_exports() {
        let t = parsed(Version::new(1, 6, 20));
        let proxy = at(&t, &["proxy_plugins", "imaged"]).unwrap().as_table().unwrap();
        assert_eq!(proxy["type"].as_str(), Some("snapshot"));
        assert_eq!(proxy["address"].as_str(), Some("/run/imaged/imaged.sock"));
        // 1.6 rejects neither key, but reads neither: the bridge makes the directory it reports instead.
        assert!(!proxy.contains_key("exports") && !proxy.contains_key("capabilities"));
        let cri = at(
            &t,
            &["plugins", "io.containerd.grpc.v1.cri", "containerd", "snapshotter"],
        );
        assert_eq!(cri.and_then(|v| v.as_str()), Some("imaged"));
        assert!(at(&t, &["plugins", "io.containerd.transfer.v1.local"]).is_none());
    }

    #[test]
    fn containerd_1_7_23_and_later_get_capabilities_and_the_root() {
        for v in [Version::new(1, 7, 24), Version::new(2, 1, 9)] {
            let t = parsed(v);
            let exports = at(&t, &["proxy_plugins", "imaged", "exports", "root"]);
            assert_eq!(exports.and_then(|v| v.as_str()), Some("/var/lib/imaged"), "{v}");
        }
        let (v2, v1) = (parsed(Version::new(2, 1, 9)), parsed(Version::new(1, 7, 24)));
        let caps = at(&v2, &["proxy_plugins", "imaged", "capabilities"]).unwrap();
        assert_eq!(caps.as_array().unwrap()[0].as_str(), Some("remap-ids"));
        let caps = at(&v1, &["proxy_plugins", "imaged", "capabilities"]);
        assert!(caps.is_none(), "1.7 cannot mount idmapped layers: {caps:?}");
        assert!(at(&parsed(Version::new(1, 7, 22)), &["proxy_plugins", "imaged", "exports"]).is_none());
    }

    #[test]
    fn containerd_2_gets_a_drop_in_with_the_transfer_services_unpack_list() {
        let text = render(Version::new(2, 1, 9), &target());
        let t = text.parse::<toml::Table>().unwrap();
        assert!(
            !t.contains_key("version"),
            "a drop-in takes config.toml's version:\n{text}"
        );
        let images = at(&t, &["plugins", "io.containerd.cri.v1.images", "snapshotter"]);
        assert_eq!(images.and_then(|v| v.as_str()), Some("imaged"));
        let unpack = at(&t, &["plugins", "io.containerd.transfer.v1.local", "unpack_config"]).unwrap();
        let entries: Vec<(&str, &str)> = unpack
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["platform"].as_str().unwrap(), e["snapshotter"].as_str().unwrap()))
            .collect();
        assert_eq!(entries, [("linux/amd64", "imaged"), ("linux/amd64", "overlayfs")]);
        assert!(at(&t, &["plugins", "io.containerd.grpc.v1.cri"]).is_none());
    }

    #[test]
    fn no_capabilities_no_key_and_paths_are_quoted() {
        let mut t = target();
        t.capabilities = &[];
        let socket = Path::new("/run/a \"b\"/imaged.sock");
        t.socket = socket;
        let table = render(Version::new(2, 0, 0), &t).parse::<toml::Table>().unwrap();
        assert!(at(&table, &["proxy_plugins", "imaged", "capabilities"]).is_none());
        let address = at(&table, &["proxy_plugins", "imaged", "address"]).and_then(|v| v.as_str());
        assert_eq!(address, Some("/run/a \"b\"/imaged.sock"));
    }

    #[test]
    fn versions_parse_as_containerd_and_its_packages_write_them() {
        assert_eq!(Version::parse("1.6.20~ds1"), Some(Version::new(1, 6, 20)));
        assert_eq!(Version::parse("v2.1.9"), Some(Version::new(2, 1, 9)));
        assert_eq!(Version::parse("2.1.9+unknown"), Some(Version::new(2, 1, 9)));
        assert_eq!(Version::parse("2.1"), Some(Version::new(2, 1, 0)));
        assert_eq!(Version::parse("github.com/containerd/containerd"), None);
        assert_eq!(Version::parse("0.1"), None);
        let out = "containerd github.com/containerd/containerd/v2 2.1.9+unknown \n";
        assert_eq!(Version::from_version_output(out), Some(Version::new(2, 1, 9)));
        let out = "containerd github.com/containerd/containerd 1.7.24~ds1 1.7.24~ds1-6+deb13u1";
        assert_eq!(Version::from_version_output(out), Some(Version::new(1, 7, 24)));
        assert!(Version::new(1, 7, 23) < Version::new(2, 0, 0));
    }
}
