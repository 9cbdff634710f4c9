//! `imaged containerd-config`: the lines containerd's config needs to use imaged's snapshotter and
//! images, for the running configuration (imaged's socket, the snapshotter's name) and containerd's
//! config format (version 2 for containerd 1.6/1.7, version 3 for 2.x).

use std::path::Path;

/// containerd's config formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// containerd 1.6 and 1.7 (`version = 2`, CRI plugin `io.containerd.grpc.v1.cri`).
    V2,
    /// containerd 2.x (`version = 3`, CRI images plugin `io.containerd.cri.v1.images`).
    V3,
}

impl Format {
    /// The format of a containerd version (`1.6.20`, `v2.0.1`), if it is one containerd uses.
    pub fn for_version(version: &str) -> Option<Format> {
        match version.trim_start_matches('v').split('.').next()? {
            "1" => Some(Format::V2),
            "2" => Some(Format::V3),
            _ => None,
        }
    }

    /// The format of the containerd on this machine (`containerd --version`), if it runs.
    pub fn detect() -> Option<Format> {
        let out = std::process::Command::new("containerd")
            .arg("--version")
            .output()
            .ok()?;
        // "containerd github.com/containerd/containerd 1.6.20~ds1 <revision>"
        let text = String::from_utf8_lossy(&out.stdout);
        text.split_whitespace().find_map(Format::for_version)
    }
}

/// The snippet for containerd's `config.toml`.
pub fn render(format: Format, imaged_socket: &Path, snapshotter: &str) -> String {
    let (version, header, cri) = match format {
        Format::V2 => (
            2,
            "containerd 1.6 / 1.7",
            format!("[plugins.\"io.containerd.grpc.v1.cri\".containerd]\n  snapshotter = \"{snapshotter}\"\n"),
        ),
        Format::V3 => (
            3,
            "containerd 2.x",
            format!("[plugins.'io.containerd.cri.v1.images']\n  snapshotter = \"{snapshotter}\"\n"),
        ),
    };
    format!(
        "# {header}: add to /etc/containerd/config.toml (keep its `version = {version}` line), then restart\n\
         # containerd. Its CRI plugin then builds containers on imaged's layers, and finds the images imaged\n\
         # publishes (imaged: [containerd] address = containerd's socket).\n\
         [proxy_plugins.{snapshotter}]\n  type = \"snapshot\"\n  address = \"{socket}\"\n\n{cri}",
        socket = imaged_socket.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_formats_name_the_socket_and_snapshotter() {
        let v2 = render(Format::V2, Path::new("/run/imaged/imaged.sock"), "imaged");
        assert!(v2.contains("[proxy_plugins.imaged]\n  type = \"snapshot\"\n  address = \"/run/imaged/imaged.sock\""));
        assert!(v2.contains("[plugins.\"io.containerd.grpc.v1.cri\".containerd]\n  snapshotter = \"imaged\""));
        let v3 = render(Format::V3, Path::new("/s.sock"), "img");
        assert!(v3.contains("[proxy_plugins.img]"));
        assert!(v3.contains("[plugins.'io.containerd.cri.v1.images']\n  snapshotter = \"img\""));
        // Both parse as TOML.
        for s in [v2, v3] {
            s.parse::<toml::Table>().unwrap();
        }
    }

    #[test]
    fn versions_map_to_formats() {
        assert_eq!(Format::for_version("1.6.20~ds1"), Some(Format::V2));
        assert_eq!(Format::for_version("v2.0.1"), Some(Format::V3));
        assert_eq!(Format::for_version("github.com/containerd/containerd"), None);
    }
}
