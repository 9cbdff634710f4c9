//! Tests of `hosts`.

use super::*;

/// A hosts root with `<root>/<dir>/hosts.toml` holding `toml`.
fn root_with(files: &[(&str, &str)]) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    for (dir, toml) in files {
        std::fs::create_dir_all(root.path().join(dir)).unwrap();
        std::fs::write(root.path().join(dir).join("hosts.toml"), toml).unwrap();
    }
    root
}

fn load(root: &tempfile::TempDir, registry: &str) -> Vec<RegistryHost> {
    load_hosts(Some(root.path()), registry).unwrap()
}

/// `"url capabilities role"` of each host, for order checks.
fn summary(hosts: &[RegistryHost]) -> Vec<String> {
    let summarise = |h: &RegistryHost| {
        let c = h.capabilities;
        let caps: Vec<_> = [(c.pull, "pull"), (c.resolve, "resolve"), (c.push, "push")]
            .into_iter()
            .filter_map(|(on, name)| on.then_some(name))
            .collect();
        let role = if h.is_server { "server" } else { "mirror" };
        format!("{} {} {role}", h.url(), caps.join(","))
    };
    hosts.iter().map(summarise).collect()
}

const HUB: &str = "https://registry-1.docker.io pull,resolve,push server";

#[test]
fn without_configuration_the_upstream_is_used() {
    let docker = load_hosts(None, "docker.io").unwrap();
    assert_eq!(summary(&docker), [HUB]);
    let h = &docker[0];
    assert!(!h.skip_verify && h.ca.is_empty() && h.unsupported.is_empty());
    assert_eq!(h.scheme, Scheme::Https);

    let root = root_with(&[("quay.io", "server = \"https://q.example\"")]);
    let local = load(&root, "localhost:5000");
    assert_eq!(summary(&local), ["https://localhost:5000 pull,resolve,push server"]);
    assert_eq!(local, load_hosts(None, "localhost:5000").unwrap());
    // Not a registry name: no directory is consulted, so nothing outside the root is read.
    let escape = root_with(&[("_default", "server = \"https://mirror\"")]);
    assert_eq!(load(&escape, "../x")[0].host, "../x");
}

#[test]
fn docs_simple_docker_config() {
    let toml = r#"server = "https://docker.io"

[host."https://registry-1.docker.io"]
  capabilities = ["pull", "resolve"]
"#;
    let hosts = load(&root_with(&[("docker.io", toml)]), "docker.io");
    let expected = [
        "https://registry-1.docker.io pull,resolve mirror",
        "https://docker.io pull,resolve,push server",
    ];
    assert_eq!(summary(&hosts), expected);
}

#[test]
fn docs_local_mirror_keeps_file_order_and_resolves_ca_relative_to_the_file() {
    let toml = r#"server = "https://registry-1.docker.io"    # Exclude this to not use upstream

[host."https://public-mirror.example.com"]
  capabilities = ["pull"]                  # Requires less trust, won't resolve tag to digest from this host
[host."https://docker-mirror.internal"]
  capabilities = ["pull", "resolve"]
  ca = "docker-mirror.crt"                 # Or absolute path /etc/containerd/certs.d/docker.io/docker-mirror.crt
"#;
    let root = root_with(&[("docker.io", toml)]);
    let hosts = load(&root, "docker.io");
    let expected = [
        "https://public-mirror.example.com pull mirror",
        "https://docker-mirror.internal pull,resolve mirror",
        HUB,
    ];
    assert_eq!(summary(&hosts), expected);
    assert_eq!(hosts[1].ca, [root.path().join("docker.io/docker-mirror.crt")]);
    assert!(hosts[0].ca.is_empty() && hosts[2].ca.is_empty());
}

#[test]
fn docs_default_mirror_applies_to_registries_without_their_own_directory() {
    let toml = r#"[host."https://registry.example.com"]
  capabilities = ["pull", "resolve"]
"#;
    let root = root_with(&[("_default", toml)]);
    let mirror = "https://registry.example.com pull,resolve mirror";
    let quay = "https://quay.io pull,resolve,push server";
    assert_eq!(summary(&load(&root, "quay.io")), [mirror, quay]);
    assert_eq!(summary(&load(&root, "docker.io")), [mirror, HUB]);

    let server_only = "server = \"https://registry.example.com\"\n";
    let root = root_with(&[("_default", server_only), ("ghcr.io", "")]);
    let only = "https://registry.example.com pull,resolve,push server";
    assert_eq!(summary(&load(&root, "quay.io")), [only]);
    // A registry's own directory (even without hosts.toml) takes precedence over _default.
    assert_eq!(load(&root, "ghcr.io"), load_hosts(None, "ghcr.io").unwrap());
}

#[test]
fn docs_http_mirror_with_skip_verify() {
    let toml = r#"server = "https://registry-1.docker.io"

[host."http://192.168.31.250:5000"]
  capabilities = ["pull", "resolve", "push"]
  skip_verify = true
"#;
    let hosts = load(&root_with(&[("docker.io", toml)]), "docker.io");
    assert_eq!(hosts[0].scheme, Scheme::Http);
    assert_eq!(hosts[0].url(), "http://192.168.31.250:5000");
    assert_eq!(hosts[0].capabilities, HostCapabilities::ALL);
    assert!(hosts[0].skip_verify && !hosts[1].skip_verify);
    assert_eq!(summary(&hosts)[1], HUB);
}

#[test]
fn directories_for_registries_with_ports() {
    let root = root_with(&[
        ("myregistry.io_5000_", "server = \"http://underscore:5000\""),
        ("myregistry.io:5000", "server = \"http://colon:5000\""),
    ]);
    assert_eq!(load(&root, "myregistry.io:5000")[0].url(), "http://underscore:5000");
    let root = root_with(&[("myregistry.io:5000", "server = \"127.0.0.1:5000\"")]);
    let hosts = load(&root, "myregistry.io:5000");
    assert_eq!(summary(&hosts), ["https://127.0.0.1:5000 pull,resolve,push server"]);
}

#[test]
fn top_level_settings_apply_to_the_defaulted_upstream() {
    let toml = r#"skip_verify = true
ca = ["/etc/ca.pem", "rel/ca.pem"]
capabilities = ["pull"]
[header]
  authorization = "Bearer secret"
"#;
    let root = root_with(&[("_default", toml)]);
    let hosts = load(&root, "localhost:5000");
    assert_eq!(summary(&hosts), ["https://localhost:5000 pull,resolve,push server"]);
    assert!(hosts[0].skip_verify);
    let rel = root.path().join("_default/rel/ca.pem");
    assert_eq!(hosts[0].ca, [PathBuf::from("/etc/ca.pem"), rel]);
    assert_eq!(
        hosts[0].header.0,
        [("authorization".to_string(), "Bearer secret".to_string())]
    );
    assert!(hosts[0].unsupported.is_empty());
    assert!(!format!("{hosts:?}").contains("secret"), "header values are not shown");
}

#[test]
fn dial_timeout_is_per_host_and_must_be_a_duration() {
    let toml = "server = \"https://r.test\"\n[host.\"https://m.test\"]\n  dial_timeout = \"1m30s\"\n";
    let hosts = load(&root_with(&[("r.test", toml)]), "r.test");
    let dial: Vec<_> = hosts.iter().map(|h| h.dial_timeout).collect();
    assert_eq!(dial, [Some(std::time::Duration::from_secs(90)), None]);
    let bad = root_with(&[("r.test", "dial_timeout = 30\n")]);
    let err = load_hosts(Some(bad.path()), "r.test").unwrap_err().to_string();
    assert!(err.contains("\"dial_timeout\"") && err.contains("a duration"), "{err}");
}

#[test]
fn every_containerd_key_is_read_and_proxy_is_reported() {
    let toml = r#"dial_timeout = "1s"
[host."https://test-1.registry"]
  capabilities = ["PULL", "referrers"]
  client = [["/etc/certs/client.cert", "/etc/certs/client.key"],["client.pem", ""]]
  proxy = "http://my-proxy:8080"
[host."https://mirror.registry/v2/"]
  capabilities = []
  client = "/etc/certs/client.pem"
  [host."https://mirror.registry/v2/".header]
x-custom-2 = ["value1", "value2"]
X-Dragonfly-Registry = "https://index.docker.io"
[host."https://compliant.registry/v2"]
  override_path = true
  client = ["c1.pem", "/etc/certs/c2.pem"]
"#;
    let root = root_with(&[("docker.io", toml)]);
    let hosts = load(&root, "docker.io");
    let unsupported: Vec<_> = hosts.iter().map(|h| h.unsupported.clone()).collect();
    let expected: [&[&str]; 4] = [&["proxy"], &[], &[], &[]];
    assert_eq!(unsupported, expected);
    let dir = root.path().join("docker.io");
    let pair = |cert: PathBuf, key: Option<PathBuf>| ClientPair { cert, key };
    assert_eq!(
        hosts[0].client,
        [
            pair("/etc/certs/client.cert".into(), Some("/etc/certs/client.key".into())),
            pair(dir.join("client.pem"), None),
        ]
    );
    assert_eq!(hosts[1].client, [pair("/etc/certs/client.pem".into(), None)]);
    assert_eq!(
        hosts[2].client,
        [pair(dir.join("c1.pem"), None), pair("/etc/certs/c2.pem".into(), None)]
    );
    let header = |n: &str, v: &str| (n.to_string(), v.to_string());
    assert_eq!(
        hosts[1].header.0,
        [
            header("x-custom-2", "value1"),
            header("x-custom-2", "value2"),
            header("X-Dragonfly-Registry", "https://index.docker.io"),
        ]
    );
    assert!(hosts[0].header.0.is_empty() && hosts[3].client.is_empty());
    let dial: Vec<_> = hosts.iter().map(|h| h.dial_timeout).collect();
    let second = Some(std::time::Duration::from_secs(1));
    assert_eq!(
        dial,
        [None, None, None, second],
        "the top-level dial_timeout is the server's"
    );
    let expected = [
        "https://test-1.registry pull mirror",
        "https://mirror.registry pull,resolve,push mirror",
        "https://compliant.registry pull,resolve,push mirror",
        HUB,
    ];
    assert_eq!(summary(&hosts), expected);
}

#[test]
fn cert_files_directory_without_hosts_toml() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("registry.test:5443");
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["b.crt", "a.crt", "client.cert", "client.key", "README"] {
        std::fs::write(dir.join(f), "x").unwrap();
    }
    let hosts = load_hosts(Some(root.path()), "registry.test:5443").unwrap();
    assert_eq!(summary(&hosts), ["https://registry.test:5443 pull,resolve,push server"]);
    assert_eq!(hosts[0].ca, [dir.join("a.crt"), dir.join("b.crt")]);
    assert_eq!(
        hosts[0].client,
        [ClientPair {
            cert: dir.join("client.cert"),
            key: Some(dir.join("client.key")),
        }]
    );
    assert!(hosts[0].unsupported.is_empty());
}

#[test]
fn rejects_bad_files_naming_the_file_and_key() {
    let prefix = "path prefixes are not supported";
    let cases: &[(&str, &str)] = &[
        ("server = \"https://a\"\nmirrors = [\"x\"]", "unknown key \"mirrors\""),
        (
            "[host.\"https://m\"]\nskip_tls = true",
            r#"unknown key "host.\"https://m\".skip_tls""#,
        ),
        (
            "[host.\"http://m\".host.\"http://n\"]",
            r#"unknown key "host.\"http://m\".host""#,
        ),
        (
            "[host.\"https://m\"]\ncapabilities = [\"fetch\"]",
            "invalid value for \"host.",
        ),
        ("skip_verify = \"yes\"", "invalid value for \"skip_verify\""),
        ("ca = 5", "invalid value for \"ca\""),
        ("client = 5", "invalid value for \"client\""),
        ("client = [[\"a.cert\"]]", "invalid value for \"client\""),
        ("client = [\"\"]", "invalid value for \"client\""),
        ("[header]\n\"bad name\" = \"x\"", "invalid value for \"header\""),
        ("[header]\nx-a = \"line\\nbreak\"", "invalid value for \"header\""),
        ("[header]\nx-a = 5", "invalid value for \"header\""),
        ("header = \"x\"", "invalid value for \"header\""),
        ("server = 5", "invalid value for \"server\""),
        ("host = 1", "invalid value for \"host\""),
        ("[host.\"ftp://m\"]", "the scheme must be http or https"),
        ("[host.\"https://m/us\"]", prefix),
        ("[host.\"https://m/v2/upstream\"]\noverride_path = true", prefix),
        ("[host.\"https://m\"]\noverride_path = true", prefix),
        ("[host.\"https://user:hunter2@m\"]", "\"https://<redacted>@m\""),
        ("[host.\"https://m:port\"]", "expected host or host:port"),
        ("server = \"https://a\"\n\n[host.\"https://m\"", "invalid toml"),
        ("server = \"https://a\"\nserver = \"https://b\"", "at line 2"),
    ];
    for (toml, expected) in cases {
        let root = root_with(&[("docker.io", toml)]);
        let err = load_hosts(Some(root.path()), "docker.io").unwrap_err().to_string();
        assert!(err.contains(expected), "{toml:?}: {err}");
        let file = root.path().join("docker.io/hosts.toml");
        assert!(err.contains(&file.display().to_string()), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }
}
