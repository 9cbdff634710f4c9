//! Tests of `manifest`.

use super::*;

fn d() -> Digest {
    Digest::of(b"m")
}

const IMAGE: &str = r#"{"schemaVersion":2,"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","size":0},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+zstd","digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","size":0}]}"#;

#[test]
fn media_type_field_wins_over_content_type() {
    let body = IMAGE.replace(
        "{\"schemaVersion\":2,",
        "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",",
    );
    let (m, mt) = parse(body.as_bytes(), Some("application/json"), d()).unwrap();
    assert!(matches!(m, Manifest::Image(_)));
    assert_eq!(mt, OCI_MANIFEST);
}

#[test]
fn content_type_identifies_a_manifest_without_media_type() {
    let (m, mt) = parse(
        IMAGE.as_bytes(),
        Some("application/vnd.oci.image.manifest.v1+json; charset=utf-8"),
        d(),
    )
    .unwrap();
    assert_eq!(mt, OCI_MANIFEST);
    let Manifest::Image(m) = m else { panic!("not an image") };
    m.check_media_types(d()).unwrap();
    let err = parse(IMAGE.as_bytes(), None, d()).unwrap_err();
    assert!(err.to_string().contains("no mediaType"), "{err}");
}

#[test]
fn index_and_schema1_and_artifacts() {
    let idx = r#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","manifests":[{"mediaType":"application/vnd.docker.distribution.manifest.v2+json","digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","size":1,"platform":{"architecture":"arm64","os":"linux","variant":"v8"}}]}"#;
    let (m, _) = parse(idx.as_bytes(), None, d()).unwrap();
    let Manifest::Index(i) = m else { panic!("not an index") };
    assert_eq!(i.manifests[0].platform.as_ref().unwrap().variant.as_deref(), Some("v8"));

    let s1 = r#"{"schemaVersion":1,"name":"x","fsLayers":[]}"#;
    assert!(
        parse(s1.as_bytes(), None, d())
            .unwrap_err()
            .to_string()
            .contains("schema 1")
    );

    let helm = IMAGE.replace(
        "application/vnd.oci.image.config.v1+json",
        "application/vnd.cncf.helm.config.v1+json",
    );
    let (Manifest::Image(m), _) = parse(helm.as_bytes(), Some(OCI_MANIFEST), d()).unwrap() else {
        panic!()
    };
    assert!(
        m.check_media_types(d())
            .unwrap_err()
            .to_string()
            .contains("not a container image")
    );

    let foreign = IMAGE.replace(
        "application/vnd.oci.image.layer.v1.tar+zstd",
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    );
    let (Manifest::Image(m), _) = parse(foreign.as_bytes(), Some(OCI_MANIFEST), d()).unwrap() else {
        panic!()
    };
    assert!(matches!(
        m.check_media_types(d()),
        Err(ManifestError::Unsupported { what: "layer", .. })
    ));
}

#[test]
fn config_diff_ids_must_match_layer_count() {
    let cfg = r#"{"architecture":"amd64","os":"linux","config":{"User":"1002:1002"},"rootfs":{"type":"layers","diff_ids":["sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"]}}"#;
    let c = parse_config(cfg.as_bytes(), d(), 1).unwrap();
    assert_eq!(c.config.unwrap().user.as_deref(), Some("1002:1002"));
    assert!(parse_config(cfg.as_bytes(), d(), 2).is_err());
}

#[test]
fn json_that_is_not_utf8_is_refused_even_in_skipped_fields() {
    // An invalid byte inside an annotation, a field the parser would skip without looking.
    let mut body = IMAGE
        .replace("\"layers\"", "\"annotations\":{\"a\":\"x\u{e9}y\"},\"layers\"")
        .into_bytes();
    let at = body.iter().position(|&b| b == 0xc3).unwrap();
    body.remove(at + 1); // A lone 0xc3 lead byte.
    let err = parse(&body, Some(OCI_MANIFEST), d()).unwrap_err();
    assert!(
        matches!(err, ManifestError::NotUtf8 { offset, .. } if offset == at),
        "{err}"
    );
    assert!(err.to_string().contains("RFC 8259"), "{err}");
    let cfg = b"{\"os\":\"linux\",\"architecture\":\"amd64\",\"x\":\"\xff\",\"rootfs\":{\"diff_ids\":[]}}";
    assert!(matches!(parse_config(cfg, d(), 0), Err(ManifestError::NotUtf8 { .. })));
}

#[test]
fn index_entries_that_are_not_images() {
    let entry = |extra: &str, media_type: &str| -> Desc {
        let json = format!(
            r#"{{"mediaType":"{media_type}","digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","size":1{extra}}}"#
        );
        serde_json::from_str(&json).unwrap()
    };
    let image = entry(r#","platform":{"os":"linux","architecture":"amd64"}"#, OCI_MANIFEST);
    assert_eq!(image.not_an_image(), None);
    assert_eq!(
        entry("", OCI_INDEX).not_an_image(),
        None,
        "a nested index is not skipped here"
    );
    let attestation = entry(
        r#","platform":{"os":"unknown","architecture":"unknown"},"annotations":{"vnd.docker.reference.digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","vnd.docker.reference.type":"attestation-manifest"}"#,
        OCI_MANIFEST,
    );
    assert!(attestation.not_an_image().unwrap().contains("attestation-manifest"));
    let soci = entry(
        r#","artifactType":"application/vnd.amazon.soci.index.v2+json","platform":{"os":"linux","architecture":"amd64"}"#,
        OCI_MANIFEST,
    );
    assert!(soci.not_an_image().unwrap().contains("soci.index.v2"));
    let cache_layer = entry("", "application/vnd.oci.image.layer.v1.tar+gzip");
    assert!(cache_layer.not_an_image().unwrap().contains("not a manifest"));
}
