//! Tests of `auth`.

use super::*;

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn basic(u: &str, p: &str) -> Option<Credentials> {
    Some(Credentials::Basic {
        username: u.into(),
        password: p.into(),
    })
}

#[test]
fn cri_auth_config_precedence() {
    let auth = b64("fromauth:authpass");
    // (username, password, auth, identity_token, registry_token) -> expected
    let cases: Vec<([&str; 5], Option<Credentials>)> = vec![
        (["", "", "", "", ""], None),
        (["", "pw", "", "", ""], None),
        (
            ["u", "p", &auth, "idt", "rgt"],
            Some(Credentials::RegistryToken("rgt".into())),
        ),
        (["", "", "", "", "rgt"], Some(Credentials::RegistryToken("rgt".into()))),
        (
            ["u", "p", &auth, "idt", ""],
            Some(Credentials::IdentityToken("idt".into())),
        ),
        (["", "", "", "idt", ""], Some(Credentials::IdentityToken("idt".into()))),
        (["u", "p", &auth, "", ""], basic("u", "p")),
        (["u", "", "", "", ""], basic("u", "")),
        (["", "", &auth, "", ""], basic("fromauth", "authpass")),
        (["", "ignored", &auth, "", ""], basic("fromauth", "authpass")),
    ];
    for ([u, p, a, i, r], expected) in cases {
        assert_eq!(from_cri(u, p, a, i, r).unwrap(), expected, "{:?}", [u, p, a, i, r]);
    }
    assert_eq!(
        from_cri("", "", &b64("u:pa:ss\0\0"), "", "").unwrap(),
        basic("u", "pa:ss")
    );
    assert_eq!(from_cri("", "", &b64(":tok"), "", "").unwrap(), basic("", "tok"));
}

#[test]
fn cri_bad_auth_is_an_error_without_the_secret() {
    for (auth, reason) in [
        ("c3VwZXJzZWNyZXQ@@", "not valid base64"),
        (b64("supersecret").as_str(), "no ':'"),
        (b64("supersecret").trim_end_matches('='), "not valid base64"),
    ] {
        let err = from_cri("", "", auth, "", "").unwrap_err().to_string();
        assert!(err.starts_with("invalid auth in the cri auth config"), "{err}");
        assert!(err.contains(reason), "{err}");
        assert!(!err.contains("supersecret") && !err.contains(auth), "{err}");
    }
}

#[test]
fn debug_redacts_secrets() {
    let shown = [
        format!("{:?}", basic("alice", "hunter2").unwrap()),
        format!("{:?}", Credentials::IdentityToken("hunter2".into())),
        format!("{:?}", Credentials::RegistryToken("hunter2".into())),
        format!(
            "{:?}",
            AuthFile::parse(
                Path::new("c.json"),
                br#"{"auths":{"q.io":{"username":"alice","password":"hunter2"}}}"#
            )
            .unwrap()
        ),
    ];
    for s in &shown {
        assert!(!s.contains("hunter2"), "{s}");
    }
    assert!(
        shown[0].contains("alice") && shown[0].contains("<redacted>"),
        "{}",
        shown[0]
    );
    assert!(shown[3].contains("q.io"), "{}", shown[3]);
}

fn file(json: &str) -> AuthFile {
    AuthFile::parse(Path::new("/etc/test/config.json"), json.as_bytes()).unwrap()
}

#[test]
fn config_json_keys_are_normalised_like_docker() {
    let f = file(&format!(
        r#"{{"auths": {{
            "https://index.docker.io/v1/": {{"auth": "{}", "email": "a@b.c"}},
            "quay.io": {{"username": "q", "password": "qp"}},
            "localhost:5000": {{"auth": "{}"}},
            "http://Registry.Example.com/some/path": {{"identitytoken": "idt"}},
            "ghcr.io": {{"registrytoken": "rgt", "username": "g", "password": "gp"}},
            "empty.io": {{}}
        }}, "psFormat": "table"}}"#,
        b64("hub:hubpass"),
        b64("local:localpass"),
    ));
    for hub in [
        "docker.io",
        "index.docker.io",
        "registry-1.docker.io",
        "https://index.docker.io/v1/",
    ] {
        assert_eq!(f.lookup(hub), basic("hub", "hubpass"), "{hub}");
    }
    assert_eq!(f.lookup("quay.io"), basic("q", "qp"));
    assert_eq!(f.lookup("localhost:5000"), basic("local", "localpass"));
    assert_eq!(f.lookup("localhost"), None, "the port is part of the registry");
    assert_eq!(
        f.lookup("registry.example.com"),
        Some(Credentials::IdentityToken("idt".into()))
    );
    assert_eq!(f.lookup("ghcr.io"), Some(Credentials::RegistryToken("rgt".into())));
    assert_eq!(f.lookup("empty.io"), None);
    assert_eq!(f.lookup("gcr.io"), None);
    assert!(f.cred_helpers.is_empty() && f.creds_store.is_none());
}

#[test]
fn config_json_precedence_within_and_across_entries() {
    let f = file(&format!(
        r#"{{"auths": {{
            "https://index.docker.io/v1/": {{"username": "legacy", "password": "x"}},
            "docker.io": {{"auth": "{}", "username": "ignored", "password": "ignored"}}
        }}}}"#,
        b64("fromauth:p"),
    ));
    assert_eq!(
        f.lookup("docker.io"),
        basic("fromauth", "p"),
        "exact key wins; auth wins over username"
    );
    assert_eq!(f.lookup("https://index.docker.io/v1/"), basic("legacy", "x"));
}

#[test]
fn credential_helpers_are_found_as_docker_finds_them() {
    let f = file(
        r#"{"auths": {"quay.io": {"auth": "dTpw"}, "gcr.io": {}}, "credsStore": "desktop",
            "credHelpers": {"https://gcr.io": "gcloud", "123.dkr.ecr.us-east-1.amazonaws.com": "ecr-login", "x.io": ""}}"#,
    );
    let helper = |h: &str| Some(CredentialSource::Helper(h.to_string()));
    assert_eq!(
        f.source("gcr.io"),
        helper("gcloud"),
        "credHelpers first, keys normalised"
    );
    assert_eq!(f.source("123.dkr.ecr.us-east-1.amazonaws.com"), helper("ecr-login"));
    assert_eq!(
        f.source("quay.io"),
        Some(CredentialSource::Stored(basic("u", "p").unwrap()))
    );
    assert_eq!(f.source("ghcr.io"), helper("desktop"), "then the store");
    assert_eq!(f.source("x.io"), helper("desktop"), "an empty helper name is no helper");
    assert_eq!(f.lookup("gcr.io"), None);
    assert_eq!(file("{}").source("gcr.io"), None);
    assert_eq!(file(r#"{"credsStore": ""}"#).source("gcr.io"), None);
    let debug = format!("{f:?}");
    assert!(debug.contains("ecr-login") && !debug.contains("dTpw"), "{debug}");
}

#[test]
fn malformed_files_are_errors_naming_the_file_without_secrets() {
    let path = Path::new("/etc/test/config.json");
    let parse = |json: &str| AuthFile::parse(path, json.as_bytes()).unwrap_err().to_string();
    let err = parse("{\"auths\": {\n  \"q.io\": \"c3VwZXJzZWNyZXQ=\"}}");
    assert_eq!(
        err,
        "invalid docker config /etc/test/config.json at line 2 column 28: unexpected value type"
    );
    assert!(parse("{\"auths\": ").contains("unexpected end of file"));
    assert!(parse("not json").contains("syntax error"));
    assert!(parse(r#"{"auths": [1]}"#).contains("unexpected value type"));

    let bad = format!(r#"{{"auths": {{"q.io": {{"auth": "{}"}}}}}}"#, b64("supersecret"));
    let err = parse(&bad);
    assert!(
        err.starts_with(r#"invalid auth in /etc/test/config.json entry "q.io": "#),
        "{err}"
    );
    assert!(
        !err.contains("supersecret") && !err.contains(&b64("supersecret")),
        "{err}"
    );
}

#[test]
fn load_reads_files_and_load_first_skips_missing_ones() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.json");
    let present = dir.path().join("config.json");
    std::fs::write(
        &present,
        format!(r#"{{"auths": {{"quay.io": {{"auth": "{}"}}}}}}"#, b64("u:p")),
    )
    .unwrap();

    match AuthFile::load(&missing) {
        Err(AuthError::Read { path, source }) => {
            assert_eq!((path, source.kind()), (missing.clone(), io::ErrorKind::NotFound));
        }
        other => panic!("expected a read error, got {other:?}"),
    }
    assert_eq!(AuthFile::load(&present).unwrap().lookup("quay.io"), basic("u", "p"));
    let (path, f) = AuthFile::load_first(&[missing.clone(), present.clone()])
        .unwrap()
        .unwrap();
    assert_eq!((path, f.lookup("quay.io")), (present, basic("u", "p")));
    assert!(AuthFile::load_first(&[missing]).unwrap().is_none());
    std::fs::write(dir.path().join("bad.json"), "{").unwrap();
    assert!(AuthFile::load_first(&[dir.path().join("bad.json")]).is_err());
}

#[test]
fn default_paths_in_order() {
    let kubelet = PathBuf::from("/var/lib/kubelet/config.json");
    assert_eq!(
        auth_paths(Some("/cfg".into()), Some("/home/u".into())),
        [
            PathBuf::from("/cfg/config.json"),
            PathBuf::from("/home/u/.docker/config.json"),
            kubelet.clone()
        ]
    );
    assert_eq!(auth_paths(Some("".into()), None), std::slice::from_ref(&kubelet));
    assert_eq!(
        auth_paths(None, Some("/root".into())),
        [PathBuf::from("/root/.docker/config.json"), kubelet]
    );
    assert_eq!(
        default_auth_paths().last().map(PathBuf::as_path),
        Some(Path::new("/var/lib/kubelet/config.json"))
    );
}
