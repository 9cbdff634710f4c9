//! Platforms (`os/architecture/variant`) and choosing one entry of an index, as containerd's platform
//! matcher does: the variant counts (an `arm64/v8` node takes `arm64/v8` or `arm64` with no variant; an
//! `arm/v7` node can run `arm/v6` and `arm/v5` when nothing better is there).

use std::fmt;

use serde::Deserialize;

/// A platform as written in an index entry or config.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Platform {
    /// Operating system, e.g. `linux`.
    pub os: String,
    /// CPU architecture in Go's spelling, e.g. `amd64`, `arm64`.
    pub architecture: String,
    /// CPU variant, e.g. `v8` for arm64, `v7` for arm.
    #[serde(default)]
    pub variant: Option<String>,
}

impl Platform {
    /// The platform imaged runs on.
    pub fn host() -> Platform {
        let (arch, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "x86" => ("386", None),
            "aarch64" => ("arm64", Some("v8")),
            "arm" => ("arm", Some("v7")),
            "powerpc64" => ("ppc64le", None),
            "riscv64" => ("riscv64", None),
            "s390x" => ("s390x", None),
            other => (other, None),
        };
        Platform {
            os: std::env::consts::OS.to_string(),
            architecture: arch.to_string(),
            variant: variant.map(str::to_string),
        }
    }

    /// Parses `os/arch` or `os/arch/variant`.
    pub fn parse(s: &str) -> Option<Platform> {
        let mut parts = s.split('/');
        let os = parts.next().filter(|p| !p.is_empty())?;
        let arch = parts.next().filter(|p| !p.is_empty())?;
        let variant = parts.next().map(str::to_string);
        if parts.next().is_some() {
            return None;
        }
        Some(
            Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant,
            }
            .normalized(),
        )
    }

    /// containerd's normalisation: `aarch64` is `arm64`, `x86_64` is `amd64`, `arm64` defaults to `v8`,
    /// `arm` defaults to `v7`.
    pub fn normalized(mut self) -> Platform {
        self.os = self.os.to_lowercase();
        self.architecture = match self.architecture.to_lowercase().as_str() {
            "aarch64" => "arm64".into(),
            "x86_64" | "x86-64" => "amd64".into(),
            "i386" => "386".into(),
            a => a.into(),
        };
        let v = self.variant.take().filter(|v| !v.is_empty());
        self.variant = match (self.architecture.as_str(), v.as_deref()) {
            ("arm64", None | Some("8") | Some("v8")) => Some("v8".into()),
            ("arm", None | Some("7")) => Some("v7".into()),
            ("arm", Some("5")) => Some("v5".into()),
            ("arm", Some("6")) => Some("v6".into()),
            ("amd64", Some("v1")) => None,
            _ => v,
        };
        self
    }

    /// How well an image of platform `image` suits a node of this platform: `None` if it cannot run,
    /// higher is better.
    fn score(&self, image: &Platform) -> Option<u32> {
        let want = self.clone().normalized();
        let have = image.clone().normalized();
        if want.os != have.os || want.architecture != have.architecture {
            return None;
        }
        if want.variant == have.variant {
            return Some(100);
        }
        // Older arm variants run on newer arm CPUs.
        let num = |v: &Option<String>| v.as_deref().and_then(|v| v.trim_start_matches('v').parse::<u32>().ok());
        match (want.architecture.as_str(), num(&want.variant), num(&have.variant)) {
            ("arm", Some(w), Some(h)) if h < w => Some(h),
            _ => None,
        }
    }

    /// The index of the best entry for this platform among `candidates`, or `None` if none can run here.
    pub fn select<'a>(&self, candidates: impl IntoIterator<Item = Option<&'a Platform>>) -> Option<usize> {
        candidates
            .into_iter()
            .enumerate()
            .filter_map(|(i, p)| Some((i, self.score(p?)?)))
            // Highest score; the first entry among equals, as the index orders them.
            .fold(None, |best: Option<(usize, u32)>, (i, s)| match best {
                Some((_, b)) if b >= s => best,
                _ => Some((i, s)),
            })
            .map(|(i, _)| i)
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Platform {
        let mut it = s.split('/');
        Platform {
            os: it.next().unwrap().into(),
            architecture: it.next().unwrap().into(),
            variant: it.next().map(Into::into),
        }
    }

    fn pick(node: &str, entries: &[&str]) -> Option<usize> {
        let ps: Vec<Platform> = entries.iter().map(|e| p(e)).collect();
        Platform::parse(node).unwrap().select(ps.iter().map(Some))
    }

    #[test]
    fn selects_by_os_arch_and_variant() {
        assert_eq!(pick("linux/amd64", &["linux/arm64/v8", "linux/amd64"]), Some(1));
        assert_eq!(pick("linux/arm64/v8", &["linux/amd64", "linux/arm64/v8"]), Some(1));
        assert_eq!(
            pick("linux/arm64", &["linux/amd64", "linux/arm64"]),
            Some(1),
            "arm64 means v8"
        );
        assert_eq!(pick("linux/arm64/v8", &["linux/arm64/v9"]), None);
        assert_eq!(
            pick("linux/arm/v7", &["linux/arm/v5", "linux/arm/v6", "linux/arm/v8"]),
            Some(1)
        );
        assert_eq!(pick("linux/arm/v7", &["linux/arm/v6", "linux/arm/v7"]), Some(1));
        assert_eq!(pick("linux/amd64", &["windows/amd64", "linux/s390x"]), None);
        assert_eq!(pick("linux/amd64", &["linux/amd64", "linux/amd64"]), Some(0));
        assert_eq!(pick("linux/amd64", &["linux/amd64/v1"]), Some(0));
    }

    #[test]
    fn entries_without_platform_are_skipped() {
        let ps = [p("linux/amd64")];
        assert_eq!(
            Platform::parse("linux/amd64").unwrap().select([None, Some(&ps[0])]),
            Some(1)
        );
    }

    #[test]
    fn parse_and_display() {
        assert_eq!(Platform::parse("linux/aarch64").unwrap().to_string(), "linux/arm64/v8");
        assert_eq!(Platform::parse("linux/amd64").unwrap().to_string(), "linux/amd64");
        assert!(Platform::parse("linux").is_none());
        assert!(Platform::parse("a/b/c/d").is_none());
        assert_eq!(Platform::host().os, "linux");
    }
}
