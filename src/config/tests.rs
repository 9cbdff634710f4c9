//! Tests of the configuration.

use super::*;

#[test]
fn empty_file_gives_embedded_defaults() {
    let c = Config::resolve(FileConfig::parse("", Path::new("x")).unwrap(), Overrides::default()).unwrap();
    assert_eq!(c.max_concurrent_downloads, 3);
    assert_eq!((c.connect_timeout_secs, c.response_timeout.as_secs()), (10, 20));
    assert_eq!(c.rate_limit_wait, std::time::Duration::from_secs(60));
    assert_eq!(c.platform, Platform::host().normalized());
    assert!(c.hosts_dir.is_none());
    fn none(_: &str) -> Option<std::ffi::OsString> {
        None
    }
    assert_eq!(default_paths(true, none).0, PathBuf::from("/var/lib/imaged"));
    assert_eq!(default_paths(true, none).1, PathBuf::from("/run/imaged/imaged.sock"));
}

#[test]
fn normal_users_get_xdg_paths_with_home_fallbacks() {
    fn xdg(k: &str) -> Option<std::ffi::OsString> {
        match k {
            "XDG_DATA_HOME" => Some("/home/u/.data".into()),
            "XDG_RUNTIME_DIR" => Some("/run/user/1000".into()),
            "HOME" => Some("/home/u".into()),
            _ => None,
        }
    }
    assert_eq!(
        default_paths(false, xdg),
        (
            PathBuf::from("/home/u/.data/imaged"),
            PathBuf::from("/run/user/1000/imaged/imaged.sock")
        )
    );
    fn home_only(k: &str) -> Option<std::ffi::OsString> {
        (k == "HOME").then(|| "/home/u".into())
    }
    assert_eq!(
        default_paths(false, home_only),
        (
            PathBuf::from("/home/u/.local/share/imaged"),
            PathBuf::from("/home/u/.local/share/imaged/imaged.sock")
        )
    );
}

#[test]
fn unknown_keys_are_named() {
    let err = FileConfig::parse("rot = \"/x\"\n", Path::new("/etc/imaged/config.toml")).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("rot") && msg.contains("/etc/imaged/config.toml"), "{msg}");
    let err = FileConfig::parse("[registry]\nhost_dir = \"/x\"\n", Path::new("c")).unwrap_err();
    assert!(err.to_string().contains("host_dir"), "{err}");
}

#[test]
fn overrides_win_over_the_file() {
    let file = FileConfig::parse(
        "root = \"/a\"\nsocket = \"/a.sock\"\nplatform = \"linux/arm64\"\n[registry]\nhosts_dir = \"/h\"\nmax_concurrent_downloads = 5\n",
        Path::new("c"),
    )
    .unwrap();
    let c = Config::resolve(
        file,
        Overrides {
            root: Some("/b".into()),
            auth_files: vec!["/auth.json".into()],
            ..Overrides::default()
        },
    )
    .unwrap();
    assert_eq!(c.root, PathBuf::from("/b"));
    assert_eq!(c.socket, PathBuf::from("/a.sock"));
    assert_eq!(c.platform.to_string(), "linux/arm64/v8");
    assert_eq!(c.hosts_dir, Some(PathBuf::from("/h")));
    assert_eq!(c.auth_files, vec![PathBuf::from("/auth.json")]);
    assert_eq!(c.max_concurrent_downloads, 5);
}

#[test]
fn bad_values_are_rejected() {
    let file = FileConfig::parse("platform = \"linux\"\n", Path::new("c")).unwrap();
    assert!(Config::resolve(file, Overrides::default()).is_err());
    let file = FileConfig::parse("[registry]\nmax_concurrent_downloads = 0\n", Path::new("c")).unwrap();
    assert!(Config::resolve(file, Overrides::default()).is_err());
    let file = FileConfig::parse("[registry]\nresponse_timeout = \"0s\"\n", Path::new("c")).unwrap();
    let err = Config::resolve(file, Overrides::default()).unwrap_err().to_string();
    assert!(err.contains("registry.response_timeout"), "{err}");
    let file = FileConfig::parse("[registry]\nresponse_timeout = \"1m30s\"\n", Path::new("c")).unwrap();
    let c = Config::resolve(file, Overrides::default()).unwrap();
    assert_eq!(c.response_timeout, std::time::Duration::from_secs(90));
    let file = FileConfig::parse("[registry]\ncredential_helper_timeout = \"0s\"\n", Path::new("c")).unwrap();
    let err = Config::resolve(file, Overrides::default()).unwrap_err().to_string();
    assert!(err.contains("registry.credential_helper_timeout"), "{err}");
    let file = FileConfig::parse("[registry]\ncredential_helper_timeout = \"5s\"\n", Path::new("c")).unwrap();
    let c = Config::resolve(file, Overrides::default()).unwrap();
    assert_eq!(c.credential_helper_timeout, std::time::Duration::from_secs(5));
    let file = FileConfig::parse("[registry]\nrate_limit_wait = \"0s\"\n", Path::new("c")).unwrap();
    let c = Config::resolve(file, Overrides::default()).unwrap();
    assert_eq!(c.rate_limit_wait, std::time::Duration::ZERO, "0s: never wait");
}

#[test]
fn containerd_publishing_is_off_by_default_and_its_socket_becomes_the_runtime_endpoint() {
    let c = Config::resolve(FileConfig::default(), Overrides::default()).unwrap();
    assert!(c.containerd.is_none());
    assert!(c.gc.runtime_endpoint.is_none());
    let file = FileConfig::parse(
        "[containerd]\naddress = \"/run/containerd/containerd.sock\"\n",
        Path::new("x"),
    )
    .unwrap();
    let c = Config::resolve(file, Overrides::default()).unwrap();
    let ctr = c.containerd.unwrap();
    assert_eq!(ctr.address, PathBuf::from("/run/containerd/containerd.sock"));
    assert_eq!((ctr.namespace.as_str(), ctr.snapshotter.as_str()), ("k8s.io", "imaged"));
    assert_eq!(
        c.gc.runtime_endpoint.as_deref(),
        Some("unix:///run/containerd/containerd.sock")
    );
    let o = Overrides {
        containerd_address: Some("unix:///x.sock".into()),
        runtime_endpoint: Some("/other.sock".into()),
        ..Overrides::default()
    };
    let c = Config::resolve(FileConfig::default(), o).unwrap();
    assert_eq!(c.containerd.unwrap().address, PathBuf::from("/x.sock"));
    assert_eq!(
        c.gc.runtime_endpoint.as_deref(),
        Some("/other.sock"),
        "an explicit endpoint wins"
    );
    assert!(FileConfig::parse("[containerd]\nadress = \"/x\"\n", Path::new("x")).is_err());
}

#[test]
fn containers_storage_is_off_by_default_and_reads_primary_stores_by_default_when_on() {
    let c = Config::resolve(FileConfig::default(), Overrides::default()).unwrap();
    assert!(c.containers_storage.is_none());
    assert_eq!(c.image_id_format, ImageIdFormat::Digest);
    let file = FileConfig::parse(
        "image_id_format = \"hex\"\n[containers_storage]\nroot = \"/var/lib/imaged-storage\"\n",
        Path::new("c"),
    )
    .unwrap();
    let c = Config::resolve(file.clone(), Overrides::default()).unwrap();
    let cs = c.containers_storage.unwrap();
    assert_eq!(cs.root, PathBuf::from("/var/lib/imaged-storage"));
    assert_eq!(cs.primary_roots, [PathBuf::from(DEFAULT_PRIMARY_ROOT)]);
    assert_eq!(c.image_id_format, ImageIdFormat::Hex);
    let o = Overrides {
        containers_storage_root: Some("/other".into()),
        image_id_format: Some(ImageIdFormat::Digest),
        ..Overrides::default()
    };
    let c = Config::resolve(file, o).unwrap();
    assert_eq!(c.containers_storage.unwrap().root, PathBuf::from("/other"));
    assert_eq!(c.image_id_format, ImageIdFormat::Digest);
    let same = FileConfig::parse(
        "[containers_storage]\nroot = \"/s\"\nprimary_roots = [\"/p\", \"/s\"]\n",
        Path::new("c"),
    )
    .unwrap();
    let err = Config::resolve(same, Overrides::default()).unwrap_err();
    assert!(err.to_string().contains("primary_roots"), "{err}");
    assert!(FileConfig::parse("image_id_format = \"short\"\n", Path::new("c")).is_err());
    let id = crate::digest::Digest::of(b"x");
    assert_eq!(ImageIdFormat::Hex.render(&id), id.hex());
    assert_eq!(ImageIdFormat::Digest.render(&id), id.to_string());
}

#[test]
fn credential_verification_is_kubelets_default_and_reads_kubelets_names() {
    use crate::ensure::verify::VerifyPolicy;
    let path = Path::new("imaged.toml");
    let empty = FileConfig::parse("", path).unwrap();
    assert_eq!(
        empty.pull.verify_rules().unwrap().policy(),
        VerifyPolicy::NeverVerifyPreloadedImages
    );
    let text = "[pull]\ncredentials_verification_policy = \"NeverVerifyAllowlistedImages\"\n\
                preloaded_images_verification_allowlist = [\"registry.example/team/*\"]\n";
    let rules = FileConfig::parse(text, path).unwrap().pull.verify_rules().unwrap();
    assert_eq!(rules.policy(), VerifyPolicy::NeverVerifyAllowlistedImages);
    let unused = "[pull]\npreloaded_images_verification_allowlist = [\"registry.example/team/*\"]\n";
    let err = FileConfig::parse(unused, path)
        .unwrap()
        .pull
        .verify_rules()
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("only read by the policy NeverVerifyAllowlistedImages"),
        "{err}"
    );
    let typo = "[pull]\ncredentials_verification_policy = \"AlwaysVerifyy\"\n";
    let err = FileConfig::parse(typo, path).unwrap_err().to_string();
    assert!(err.contains("AlwaysVerify"), "the valid names are listed: {err}");
}
