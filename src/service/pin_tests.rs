use super::*;
use crate::error::{Classify, ErrorKind};
use crate::metadata::Descriptor;

fn desc(s: &str) -> Descriptor {
    Descriptor {
        media_type: "m".into(),
        digest: Digest::of(s.as_bytes()),
        size: 1,
    }
}

/// An image of `r.example/a:1` pulled through an index: id `config`, manifest `manifest`, index `index`.
fn held() -> ImageRecord {
    ImageRecord::sample("config")
        .with_manifest(desc("manifest"))
        .with_index(desc("index"))
        .tagged(&["r.example/a:1"])
        .digested(&[&format!("r.example/a@{}", Digest::of(b"index"))])
}

fn image(s: &str) -> ImageRef {
    ImageRef::parse(s).unwrap()
}

fn pin(image_ref: &str) -> ImagePin {
    ImagePin::parse(&image("r.example/a:2"), image_ref).unwrap().unwrap()
}

#[test]
fn parses_image_ids_and_repo_digests_of_the_requested_repository() {
    let a = image("r.example/a:2");
    let d = Digest::of(b"x");
    assert_eq!(ImagePin::parse(&a, "").unwrap(), None);
    assert_eq!(ImagePin::parse(&a, "  ").unwrap(), None);
    let bare = ImagePin::parse(&a, &d.to_string()).unwrap().unwrap();
    assert_eq!((bare.digest, bare.named), (d, false));
    let named = ImagePin::parse(&a, &format!("r.example/a@{d}")).unwrap().unwrap();
    assert_eq!((named.digest, named.named), (d, true));
    let tagged = ImagePin::parse(&a, &format!("r.example/a:1@{d}")).unwrap().unwrap();
    assert!(tagged.named);

    let bad = [
        (
            a.clone(),
            format!("r.example/b@{d}"),
            "names r.example/b, not the requested r.example/a",
        ),
        (a.clone(), "r.example/a:1".to_string(), "names no digest"),
        (a.clone(), "sha256:abc".to_string(), "abc"),
        (
            image(&format!("r.example/a@{}", Digest::of(b"y"))),
            format!("r.example/a@{d}"),
            "names another digest",
        ),
    ];
    for (img, image_ref, want) in bad {
        let err = ImagePin::parse(&img, &image_ref).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        let msg = err.to_string();
        assert!(
            msg.starts_with(&format!("invalid image_ref {image_ref:?}: ")) && msg.contains(want),
            "{msg}"
        );
    }
}

#[test]
fn a_held_image_is_requested_by_its_repo_digest_else_the_pin_or_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    let m = MetadataStore::open(&dir.path().join("m.redb")).unwrap();
    m.record(held()).unwrap();
    let a2 = image("r.example/a:2");
    let by_index = image(&format!("r.example/a@{}", Digest::of(b"index")));
    for what in ["config", "manifest", "index"] {
        let d = Digest::of(what.as_bytes());
        for written in [d.to_string(), format!("r.example/a@{d}")] {
            assert_eq!(pin(&written).reference(&a2, &m).unwrap(), by_index, "{written}");
        }
    }
    let other = Digest::of(b"other");
    assert_eq!(
        pin(&other.to_string()).reference(&a2, &m).unwrap(),
        a2,
        "an unknown image id: as requested"
    );
    assert_eq!(
        pin(&format!("r.example/a@{other}")).reference(&a2, &m).unwrap(),
        image(&format!("r.example/a@{other}")),
        "an unknown repo digest: pulled by digest"
    );
    // The same image held under another repository only: not this repository's image.
    let b = image("r.example/b:1");
    let id = Digest::of(b"config");
    let pinned = ImagePin::parse(&b, &id.to_string()).unwrap().unwrap();
    assert_eq!(pinned.reference(&b, &m).unwrap(), b);
}

#[test]
fn the_answer_must_be_the_pinned_image() {
    let rec = held();
    for what in ["config", "manifest", "index"] {
        pin(&Digest::of(what.as_bytes()).to_string())
            .check("r.example/a:2", &rec)
            .unwrap();
    }
    let other = Digest::of(b"other").to_string();
    let err = pin(&other).check("r.example/a:2", &rec).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("image_ref {other:?} pins the pull to another image"))
            && msg.contains(&rec.id.to_string())
            && msg.contains(&Digest::of(b"index").to_string()),
        "{msg}"
    );
}
