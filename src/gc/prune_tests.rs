//! Tests of `prune`.

use super::*;

const MIN: i64 = 60_000_000_000;
const NOW: i64 = 100_000 * MIN;

fn blob(d: &str) -> ResourceId {
    ResourceId::Blob(d.to_string())
}

/// An unused, unpinned image built and pulled `age_min` minutes ago.
fn image(id: &str, age_min: i64, tags: &[&str], blobs: &[&str]) -> PruneImage {
    PruneImage {
        id: id.to_string(),
        created_ns: NOW - age_min * MIN,
        first_seen_ns: NOW - age_min * MIN,
        pinned: false,
        in_use: false,
        tags: tags.iter().map(|t| t.to_string()).collect(),
        resources: blobs.iter().map(|b| blob(b)).collect(),
    }
}

/// Old images `ids`, one blob `b-<id>` each, the first tagged `tag`.
fn images(tag: &str, ids: &[&str]) -> Vec<PruneImage> {
    let mut out: Vec<PruneImage> = ids
        .iter()
        .map(|id| image(id, 5000, &[], &[&format!("b-{id}")]))
        .collect();
    out[0].tags.push(tag.to_string());
    out
}

/// Tag histories, tagged long ago.
fn history(tags: &[(&str, &[&str])]) -> HashMap<String, Vec<TagRevision>> {
    let revision = |(i, id): (usize, &&str)| TagRevision {
        image_id: id.to_string(),
        tagged_at_ns: NOW - (4000 + i as i64) * MIN,
    };
    tags.iter()
        .map(|(tag, ids)| (tag.to_string(), ids.iter().enumerate().map(revision).collect()))
        .collect()
}

/// The store: a 10-byte `b-<id>` blob for each id, plus `extra`.
fn store(ids: &[&str], extra: &[(ResourceId, u64)]) -> HashMap<ResourceId, u64> {
    ids.iter()
        .map(|id| (blob(&format!("b-{id}")), 10))
        .chain(extra.iter().cloned())
        .collect()
}

fn keep(n: usize) -> PruneOptions {
    PruneOptions {
        keep_tag_revisions: Some(n),
        ..PruneOptions::default()
    }
}

fn pruned(p: &PrunePlan) -> Vec<&str> {
    p.images.iter().map(|i| i.id.as_str()).collect()
}

fn old(tag: &str, revision: usize) -> PruneReason {
    PruneReason::OldRevision {
        tag: tag.to_string(),
        revision,
    }
}

const REVS: [&str; 6] = ["r0", "r1", "r2", "r3", "r4", "r5"];

#[test]
fn keeps_the_newest_revisions_of_each_tag() {
    let (imgs, hist, store) = (images("app:v", &REVS), history(&[("app:v", &REVS)]), store(&REVS, &[]));
    let p = plan(&imgs, &hist, &store, &keep(3), NOW);
    assert_eq!(pruned(&p), ["r3", "r4", "r5"]);
    assert_eq!(
        p.images.iter().map(|i| i.reason.clone()).collect::<Vec<_>>(),
        [3, 4, 5].map(|r| old("app:v", r))
    );
    assert_eq!(
        p.resources,
        [(blob("b-r3"), 10), (blob("b-r4"), 10), (blob("b-r5"), 10)]
    );
    assert_eq!((p.freed_bytes, p.kept), (30, 3));
    let default = PruneOptions {
        keep_tag_revisions: None,
        ..keep(3)
    };
    assert_eq!(plan(&imgs, &hist, &store, &default, NOW), p);
    assert_eq!(pruned(&plan(&imgs, &hist, &store, &keep(1), NOW)), &REVS[1..]);
    assert_eq!(pruned(&plan(&imgs, &hist, &store, &keep(0), NOW)), REVS);
    assert_eq!(plan(&imgs, &hist, &store, &keep(6), NOW).kept, 6);
}

#[test]
fn an_image_kept_by_one_tag_is_kept_though_old_in_another() {
    let ids = ["a0", "a1", "a2", "a3", "x", "y"];
    let mut imgs = images("a:1", &ids);
    imgs[4].tags.push("b:1".into());
    let hist = history(&[
        ("a:1", &ids),
        ("b:1", &["x"]),
        ("c:1", &["c0", "c1", "c2", "c3", "c4", "a3"]),
    ]);
    let p = plan(&imgs, &hist, &store(&ids, &[]), &keep(3), NOW);
    assert_eq!(
        p.images,
        [
            PrunedImage {
                id: "a3".into(),
                reason: old("a:1", 3)
            },
            PrunedImage {
                id: "y".into(),
                reason: old("a:1", 5)
            }
        ]
    );
    assert_eq!(p.kept, 4);
}

#[test]
fn young_images_and_young_revisions_are_kept() {
    let mut imgs = images("app:v", &REVS);
    imgs[3].created_ns = NOW - 30 * MIN;
    imgs[4].first_seen_ns = NOW - 59 * MIN;
    imgs[5].created_ns = NOW - 60 * MIN;
    imgs[5].first_seen_ns = NOW - 60 * MIN;
    let (hist, store) = (history(&[("app:v", &REVS)]), store(&REVS, &[]));
    assert_eq!(pruned(&plan(&imgs, &hist, &store, &keep(3), NOW)), ["r5"]);
    let no_age = PruneOptions {
        keep_younger_than: None,
        ..keep(3)
    };
    assert_eq!(pruned(&plan(&imgs, &hist, &store, &no_age, NOW)), ["r3", "r4", "r5"]);

    let mut hist = hist;
    hist.get_mut("app:v").unwrap()[5].tagged_at_ns = NOW - 10 * MIN;
    assert_eq!(
        pruned(&plan(&images("app:v", &REVS), &hist, &store, &keep(3), NOW)),
        ["r3", "r4"]
    );
}

#[test]
fn in_use_and_pinned_images_are_kept() {
    let mut imgs = images("app:v", &REVS);
    imgs[3].in_use = true;
    imgs[4].pinned = true;
    imgs.push(image("untagged-in-use", 5000, &[], &[]));
    imgs[6].in_use = true;
    let all = PruneOptions { all: true, ..keep(3) };
    let p = plan(&imgs, &history(&[("app:v", &REVS)]), &store(&REVS, &[]), &all, NOW);
    assert_eq!((pruned(&p), p.kept), (vec!["r5"], 6));
}

#[test]
fn shared_resources_stay_while_a_kept_image_reaches_them() {
    let snap = ResourceId::Snapshot("chain-base".into());
    let mut imgs = vec![
        image("k", 5000, &["app:v"], &["base", "k"]),
        image("p", 5000, &[], &["base", "p"]),
    ];
    imgs[0].resources.push(snap.clone());
    imgs[1].resources.push(snap.clone());
    let hist = history(&[("app:v", &["k", "p"])]);
    let store: HashMap<ResourceId, u64> = [(blob("base"), 50), (blob("k"), 1), (blob("p"), 2), (snap.clone(), 70)]
        .into_iter()
        .collect();
    let p = plan(&imgs, &hist, &store, &keep(1), NOW);
    assert_eq!(
        (pruned(&p), p.resources.clone(), p.freed_bytes),
        (vec!["p"], vec![(blob("p"), 2)], 2)
    );
    let p = plan(&imgs, &hist, &store, &keep(0), NOW);
    assert_eq!(pruned(&p), ["k", "p"]);
    assert_eq!(
        p.resources,
        [(blob("base"), 50), (blob("k"), 1), (blob("p"), 2), (snap, 70)]
    );
    assert_eq!((p.freed_bytes, p.kept), (123, 0));
}

#[test]
fn orphans_are_removed_and_missing_resources_are_not_listed() {
    let dangling = ResourceId::Snapshot("dangling".into());
    let imgs = vec![
        image("k", 5000, &["app:v"], &["k"]),
        image("p", 5000, &[], &["p", "not-in-store"]),
    ];
    let store: HashMap<ResourceId, u64> = [
        (blob("k"), 1),
        (blob("p"), 2),
        (blob("orphan"), 4),
        (dangling.clone(), 8),
    ]
    .into_iter()
    .collect();
    let p = plan(&imgs, &history(&[("app:v", &["k"])]), &store, &keep(3), NOW);
    assert_eq!(pruned(&p), Vec::<&str>::new());
    assert_eq!(
        (p.resources.clone(), p.freed_bytes),
        (vec![(blob("orphan"), 4), (dangling.clone(), 8)], 12)
    );
    let p = plan(&imgs, &history(&[("app:v", &["k", "p"])]), &store, &keep(1), NOW);
    assert_eq!(p.resources, [(blob("orphan"), 4), (blob("p"), 2), (dangling, 8)]);
}

#[test]
fn untagged_images_are_pruned_only_with_all() {
    let imgs = vec![
        image("t", 5000, &["app:v"], &["b-t"]),
        image("u", 5000, &[], &["b-u"]),
        image("y", 5, &[], &["b-y"]),
    ];
    let (hist, store) = (history(&[]), store(&["t", "u", "y"], &[]));
    let p = plan(&imgs, &hist, &store, &keep(3), NOW);
    assert_eq!((p.images.len(), p.resources.len(), p.kept), (0, 0, 3));
    let p = plan(&imgs, &hist, &store, &PruneOptions { all: true, ..keep(3) }, NOW);
    assert_eq!(
        p.images,
        [PrunedImage {
            id: "u".into(),
            reason: PruneReason::Untagged
        }]
    );
    assert_eq!((p.resources, p.kept), (vec![(blob("b-u"), 10)], 2));
}

#[test]
fn current_tags_are_revision_zero_even_when_history_lags() {
    let ids = ["new", "o0", "o1", "o2"];
    let imgs = images("app:v", &ids);
    let hist = history(&[("app:v", &["o0", "o1", "o2", "gone"])]);
    let p = plan(&imgs, &hist, &store(&ids, &[]), &keep(3), NOW);
    assert_eq!(
        p.images,
        [PrunedImage {
            id: "o2".into(),
            reason: old("app:v", 3)
        }]
    );
    // No history at all: the holder is revision 0.
    let p = plan(&imgs[..1], &HashMap::new(), &store(&ids[..1], &[]), &keep(1), NOW);
    assert_eq!((p.images.len(), p.kept), (0, 1));
}

#[test]
fn repeated_ids_are_merged() {
    let mut second = image("r4", 5000, &[], &["extra"]);
    second.in_use = true;
    let mut imgs = images("app:v", &REVS);
    imgs.push(second);
    let p = plan(
        &imgs,
        &history(&[("app:v", &REVS)]),
        &store(&REVS, &[(blob("extra"), 1)]),
        &keep(3),
        NOW,
    );
    assert_eq!((pruned(&p), p.kept), (vec!["r3", "r5"], 4));
    assert_eq!(p.resources, [(blob("b-r3"), 10), (blob("b-r5"), 10)]);
}

#[test]
fn plan_and_listing_do_not_depend_on_input_order() {
    let extra = [(ResourceId::Snapshot("s".into()), 7), (blob("orphan"), 3)];
    let mut imgs = images("app:v", &REVS);
    imgs.push(image("u", 5000, &[], &["u"]));
    let all = PruneOptions { all: true, ..keep(2) };
    let hist = history(&[("app:v", &REVS), ("other:1", &["r5", "r4"])]);
    let first = plan(&imgs, &hist, &store(&REVS, &extra), &all, NOW);

    imgs.reverse();
    let hist_rev: HashMap<String, Vec<TagRevision>> = hist.into_iter().collect::<Vec<_>>().into_iter().rev().collect();
    let mut extra_rev = extra.to_vec();
    extra_rev.reverse();
    let second = plan(&imgs, &hist_rev, &store(&REVS, &extra_rev), &all, NOW);
    assert_eq!(first, second);
    assert_eq!(render(&first), render(&second));
    assert_eq!(pruned(&first), ["r2", "r3", "u"]);
    assert!(first.resources.windows(2).all(|w| w[0] < w[1]));
}

#[test]
fn render_lists_images_resources_and_total() {
    let p = PrunePlan {
        images: vec![
            PrunedImage {
                id: "sha256:aa".into(),
                reason: old("nginx:1", 3),
            },
            PrunedImage {
                id: "sha256:bb".into(),
                reason: PruneReason::Untagged,
            },
        ],
        resources: vec![
            (blob("sha256:cc"), 1024),
            (ResourceId::Snapshot("sha256:dd".into()), 2048),
        ],
        freed_bytes: 3072,
        kept: 5,
    };
    assert_eq!(
        render(&p),
        "image sha256:aa  revision 3 of tag nginx:1\n\
         image sha256:bb  untagged\n\
         blob sha256:cc  1024 bytes\n\
         snapshot sha256:dd  2048 bytes\n\
         total: 2 images, 2 blobs and snapshots, 3072 bytes; 5 images kept\n"
    );
    assert_eq!(
        render(&PrunePlan::default()),
        "total: 0 images, 0 blobs and snapshots, 0 bytes; 0 images kept\n"
    );
}
