//! Tests of `reference`.

use super::*;

const HEX: &str = "7cc4b5aefd1d0cadf8d97d4350462ba51c694ebca145b08d7d41b41acc8db5aa";

/// `(input, "registry|repository|tag|digest")`; `D` stands for `sha256:{HEX}`, `-` for none.
const VALID: &[(&str, &str)] = &[
    ("busybox", "docker.io|library/busybox|latest|-"),
    ("busybox:1.36", "docker.io|library/busybox|1.36|-"),
    ("library/busybox", "docker.io|library/busybox|latest|-"),
    ("docker.io/busybox", "docker.io|library/busybox|latest|-"),
    ("docker.io/library/busybox", "docker.io|library/busybox|latest|-"),
    ("index.docker.io/busybox", "docker.io|library/busybox|latest|-"),
    ("index.docker.io/user/app:v1", "docker.io|user/app|v1|-"),
    ("user/app", "docker.io|user/app|latest|-"),
    ("user/team/app", "docker.io|user/team/app|latest|-"),
    ("localhost/foo", "localhost|foo|latest|-"),
    ("localhost:5000/foo", "localhost:5000|foo|latest|-"),
    ("127.0.0.1:5000/ns/name:tag", "127.0.0.1:5000|ns/name|tag|-"),
    ("[::1]:5000/foo", "[::1]:5000|foo|latest|-"),
    ("[2001:db8::1]/foo:1", "[2001:db8::1]|foo|1|-"),
    ("quay.io/coreos/etcd:v3.5.0", "quay.io|coreos/etcd|v3.5.0|-"),
    ("registry:5000/a/b", "registry:5000|a/b|latest|-"),
    // An upper-case first component is a registry, as in distribution.
    ("Example.COM/foo", "Example.COM|foo|latest|-"),
    ("a.b-c.d/x__y/z--w.v_u:T_a.g-1", "a.b-c.d|x__y/z--w.v_u|T_a.g-1|-"),
    ("busybox@D", "docker.io|library/busybox|-|D"),
    ("busybox:1.36@D", "docker.io|library/busybox|1.36|D"),
    ("host:5000/ns/name:tag@D", "host:5000|ns/name|tag|D"),
    ("host:5000/a/b@D", "host:5000|a/b|-|D"),
];

#[test]
fn parses_and_normalises_valid_references() {
    let d = format!("sha256:{HEX}");
    for (input, expected) in VALID {
        let input = input.replace('D', &d);
        let r = ImageRef::parse(&input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
        let got = format!(
            "{}|{}|{}|{}",
            r.registry(),
            r.repository(),
            r.tag().unwrap_or("-"),
            r.digest().map_or("-".to_string(), |g| g.to_string())
        );
        assert_eq!(got, expected.replace('D', &d), "{input}");
        // The normalised form is a fixed point.
        assert_eq!(ImageRef::parse(&r.to_string()), Ok(r.clone()), "{input}");
    }
    let longest = format!("example.com/{}", "a".repeat(243));
    assert!(ImageRef::parse(&longest).is_ok(), "255 characters");
    assert!(
        ImageRef::parse(&"a".repeat(237)).is_ok(),
        "docker.io/library/ + 237 = 255"
    );
}

#[test]
fn rejects_invalid_references() {
    let cases: Vec<(String, &str)> = vec![
        ("".into(), "Empty"),
        (HEX.into(), "LooksLikeId"),
        (format!("sha256:{HEX}"), "LooksLikeId"),
        ("Busybox".into(), "Uppercase"),
        ("docker.io/Library/busybox".into(), "Uppercase"),
        ("localhost:5000/Foo:tag".into(), "Uppercase"),
        ("busy box".into(), "InvalidName"),
        (" busybox".into(), "InvalidName"),
        ("busybox\n".into(), "InvalidName"),
        ("foo/bar!".into(), "InvalidName"),
        ("/busybox".into(), "InvalidName"),
        ("busybox/".into(), "InvalidName"),
        ("foo//bar".into(), "InvalidName"),
        ("-foo/bar".into(), "InvalidName"),
        ("foo/bar-".into(), "InvalidName"),
        ("foo/.bar".into(), "InvalidName"),
        ("foo/a..b".into(), "InvalidName"),
        ("foo/a___b".into(), "InvalidName"),
        ("foo/a._b".into(), "InvalidName"),
        ("a".repeat(256), "NameTooLong"),
        (format!("example.com/{}", "a".repeat(244)), "NameTooLong"),
        ("foo:bar/baz".into(), "InvalidHost"),
        ("-bad.com/foo".into(), "InvalidHost"),
        ("a_b.com/foo".into(), "InvalidHost"),
        ("[::1/foo".into(), "InvalidHost"),
        ("[zz]:5000/foo".into(), "InvalidHost"),
        ("busybox:".into(), "InvalidTag"),
        ("busybox:.tag".into(), "InvalidTag"),
        ("busybox:ta+g".into(), "InvalidTag"),
        ("busybox:a:b".into(), "InvalidTag"),
        (format!("busybox:{}", "t".repeat(129)), "InvalidTag"),
        ("busybox@".into(), "MissingDigest"),
        ("busybox:1@".into(), "MissingDigest"),
        ("busybox@sha256:abc".into(), "InvalidDigest"),
        (format!("busybox@{HEX}"), "InvalidDigest"),
        (format!("busybox@sha256:{}", HEX.to_uppercase()), "InvalidDigest"),
        (format!("busybox@sha256:{HEX}00"), "InvalidDigest"),
        (format!("busybox@x@sha256:{HEX}"), "InvalidDigest"),
        (format!("busybox@sha512:{HEX}{HEX}"), "UnsupportedDigest"),
    ];
    for (input, expected) in cases {
        match ImageRef::parse(&input) {
            Ok(r) => panic!("{input:?} parsed as {r}"),
            // The variant name, from the derived Debug.
            Err(e) => assert!(format!("{e:?}").starts_with(expected), "{input:?}: {e:?}"),
        }
    }
}

#[test]
fn error_messages_quote_the_input_and_say_what_is_wrong() {
    let msg = |s: &str| ImageRef::parse(s).err().map(|e| e.to_string()).unwrap_or_default();
    assert_eq!(
        msg("Busybox"),
        r#"invalid image reference "Busybox": repository name must be lowercase"#
    );
    assert_eq!(msg(""), r#"invalid image reference "": reference is empty"#);
    assert_eq!(
        msg("busybox@"),
        r#"invalid image reference "busybox@": '@' must be followed by a digest"#
    );
    assert!(msg("busy box").contains("invalid character ' '"), "{}", msg("busy box"));
    assert!(msg("foo//bar").contains("empty path component"));
    assert!(msg(&format!("a@sha512:{HEX}{HEX}")).contains(r#"unsupported digest algorithm "sha512""#));
    assert!(msg("a:-x").starts_with(r#"invalid image reference "a:-x": invalid tag "-x""#));
}

#[test]
fn formats_names_and_references() {
    let d: Digest = format!("sha256:{HEX}").parse().unwrap();
    let plain = ImageRef::parse("busybox").unwrap();
    assert_eq!(plain.name(), "docker.io/library/busybox");
    assert_eq!(plain.to_string(), "docker.io/library/busybox:latest");
    assert_eq!(plain.tagged().as_deref(), Some("docker.io/library/busybox:latest"));
    assert_eq!(plain.reference(), "latest");
    assert_eq!(plain.with_digest(&d), format!("docker.io/library/busybox@sha256:{HEX}"));

    let pinned = ImageRef::parse(&format!("host:5000/a/b@sha256:{HEX}")).unwrap();
    assert_eq!(pinned.to_string(), format!("host:5000/a/b@sha256:{HEX}"));
    assert_eq!(pinned.tagged(), None);
    assert_eq!(pinned.reference(), format!("sha256:{HEX}"));
    assert_eq!(pinned.digest(), Some(&d));

    let both: ImageRef = format!("user/app:v2@sha256:{HEX}").parse().unwrap();
    assert_eq!(both.to_string(), format!("docker.io/user/app:v2@sha256:{HEX}"));
    assert_eq!(both.tagged().as_deref(), Some("docker.io/user/app:v2"));
    assert_eq!(
        both.reference(),
        format!("sha256:{HEX}"),
        "the digest wins over the tag"
    );
}
