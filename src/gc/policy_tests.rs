//! Tests of `policy`.

use super::*;

const MB: u64 = 1_000_000;
const MIN: i64 = 60_000_000_000;
const NOW: i64 = 10_000 * MIN;

fn blob(d: &str) -> ResourceId {
    ResourceId::Blob(d.to_string())
}

/// An unused, unpinned image first seen and last used the given minutes ago.
fn img(id: &str, seen_min_ago: i64, used_min_ago: i64, blobs: &[&str]) -> GcImage {
    GcImage {
        id: id.to_string(),
        first_seen_ns: NOW - seen_min_ago * MIN,
        last_used_ns: NOW - used_min_ago * MIN,
        pinned: false,
        in_use: false,
        resources: blobs.iter().map(|b| blob(b)).collect(),
    }
}

fn sizes(entries: &[(&str, u64)]) -> HashMap<ResourceId, u64> {
    entries.iter().map(|(b, n)| (blob(b), *n)).collect()
}

/// 1000 MB capacity with `used_mb` used.
fn disk(used_mb: u64) -> Usage {
    Usage {
        capacity_bytes: 1000 * MB,
        used_bytes: used_mb * MB,
    }
}

fn run(images: &[GcImage], sizes: &HashMap<ResourceId, u64>, usage: Usage, policy: &GcPolicy) -> GcPlan {
    plan(images, sizes, usage, policy, NOW).unwrap()
}

fn ids(p: &GcPlan) -> Vec<&str> {
    p.victims.iter().map(|v| v.id.as_str()).collect()
}

/// Ten 10 MB images, one blob each, `i0` least recently used.
fn ten_images() -> (Vec<GcImage>, HashMap<ResourceId, u64>) {
    let images: Vec<GcImage> = (0..10)
        .map(|i| img(&format!("i{i}"), 100, 50 - i, &[&format!("b{i}")]))
        .collect();
    let sizes = (0..10).map(|i| (blob(&format!("b{i}")), 10 * MB)).collect();
    (images, sizes)
}

#[test]
fn below_high_threshold_removes_nothing() {
    let (images, sizes) = ten_images();
    let p = run(&images, &sizes, disk(840), &GcPolicy::default());
    assert_eq!(p, GcPlan::default());
}

#[test]
fn exactly_at_high_threshold_frees_down_to_low() {
    let (images, sizes) = ten_images();
    let p = run(&images, &sizes, disk(850), &GcPolicy::default());
    assert_eq!(p.target_bytes, 50 * MB);
    assert_eq!(ids(&p), ["i0", "i1", "i2", "i3", "i4"]);
    assert!(
        p.victims
            .iter()
            .all(|v| v.reason == VictimReason::DiskPressure && v.frees_bytes == 10 * MB)
    );
    assert_eq!((p.planned_free_bytes, p.shortfall), (50 * MB, None));
}

#[test]
fn usage_percent_rounds_up_as_in_kubelet() {
    let (images, sizes) = ten_images();
    // 84.1 % used: available 15.9 % truncates to 15, so usage is 85 %; the target is exact.
    let p = run(&images, &sizes, disk(841), &GcPolicy::default());
    assert_eq!(p.target_bytes, 41 * MB);
    assert_eq!(ids(&p), ["i0", "i1", "i2", "i3", "i4"]);
    // With low == high the rounded amount to free is negative: nothing is removed.
    let same = GcPolicy {
        low_threshold_percent: 85,
        ..GcPolicy::default()
    };
    assert_eq!(run(&images, &sizes, disk(841), &same), GcPlan::default());
    // Used above capacity counts as full.
    assert_eq!(
        run(
            &images,
            &sizes,
            Usage {
                capacity_bytes: 100,
                used_bytes: 500
            },
            &same
        )
        .target_bytes,
        15
    );
}

#[test]
fn lru_order_with_ties_broken_by_first_seen_then_id() {
    let mut never_used = img("never", 30, 0, &["n"]);
    never_used.last_used_ns = 0;
    let images = vec![
        img("recent", 100, 5, &["r"]),
        img("tie-new", 50, 20, &["t1"]),
        never_used,
        img("tie-old", 90, 20, &["t2"]),
    ];
    let mut twins = vec![img("twin-b", 60, 20, &["w1"]), img("twin-a", 60, 20, &["w2"])];
    twins.extend(images);
    let sizes = sizes(&[("r", MB), ("t1", MB), ("t2", MB), ("n", MB), ("w1", MB), ("w2", MB)]);
    let everything = GcPolicy {
        high_threshold_percent: 0,
        low_threshold_percent: 0,
        ..GcPolicy::default()
    };
    let p = run(&twins, &sizes, disk(6), &everything);
    assert_eq!(ids(&p), ["never", "tie-old", "twin-a", "twin-b", "tie-new", "recent"]);
    assert_eq!(
        (p.target_bytes, p.planned_free_bytes, p.shortfall),
        (6 * MB, 6 * MB, None)
    );
}

#[test]
fn pinned_in_use_and_young_images_are_never_chosen() {
    let mut pinned = img("pinned", 100, 90, &["p"]);
    pinned.pinned = true;
    let mut in_use = img("in-use", 100, 90, &["u"]);
    in_use.in_use = true;
    let mut used_now = img("used-now", 100, 0, &["n"]);
    used_now.last_used_ns = NOW + 1;
    let young = img("young", 1, 1, &["y"]);
    let images = vec![pinned, in_use, used_now, young, img("old", 100, 80, &["o"])];
    let sizes = sizes(&[
        ("p", 100 * MB),
        ("u", 100 * MB),
        ("n", 100 * MB),
        ("y", 100 * MB),
        ("o", 20 * MB),
    ]);
    let p = run(&images, &sizes, disk(950), &GcPolicy::default());
    assert_eq!(ids(&p), ["old"]);
    let shortfall = p.shortfall.unwrap();
    assert_eq!((shortfall.freed, shortfall.target), (20 * MB, 150 * MB));
    assert_eq!(
        shortfall.why,
        "failed to garbage collect required amount of images. Attempted to free 150000000 bytes, but only \
         found 20000000 bytes eligible to free; images not eligible: 2 in use, 1 pinned, 1 younger than the \
         min age of 2m"
    );
}

#[test]
fn min_age_boundary_follows_kubelet() {
    let sizes = sizes(&[("a", MB), ("b", MB)]);
    let mut exactly = img("exactly", 0, 0, &["a"]);
    exactly.first_seen_ns = NOW - 2 * MIN;
    exactly.last_used_ns = 0;
    let mut almost = img("almost", 0, 0, &["b"]);
    almost.first_seen_ns = NOW - 2 * MIN + 1;
    almost.last_used_ns = 0;
    let p = run(&[exactly, almost], &sizes, disk(1000), &GcPolicy::default());
    assert_eq!(ids(&p), ["exactly"]);
    assert!(
        p.shortfall
            .unwrap()
            .why
            .ends_with("; images not eligible: 1 younger than the min age of 2m")
    );
}

#[test]
fn shared_layers_are_counted_once() {
    let sizes = sizes(&[("base", 50 * MB), ("a", 10 * MB), ("b", 20 * MB)]);
    let images = vec![img("A", 100, 60, &["base", "a"]), img("B", 100, 30, &["base", "b"])];
    // 15 MB to free: A alone frees only its own 10 MB, so B goes too and releases the base.
    let policy = GcPolicy {
        high_threshold_percent: 90,
        low_threshold_percent: 89,
        ..GcPolicy::default()
    };
    let p = run(&images, &sizes, disk(905), &policy);
    assert_eq!(p.target_bytes, 15 * MB);
    let frees: Vec<(&str, u64)> = p.victims.iter().map(|v| (v.id.as_str(), v.frees_bytes)).collect();
    assert_eq!(frees, [("A", 10 * MB), ("B", 70 * MB)]);
    assert_eq!((p.planned_free_bytes, p.shortfall), (80 * MB, None));

    // With B in use, removing A frees 10 MB and no more (kubelet would claim 60 MB).
    let mut images = images;
    images[1].in_use = true;
    let p = run(&images, &sizes, disk(905), &policy);
    assert_eq!(
        p.victims,
        [Victim {
            id: "A".into(),
            reason: VictimReason::DiskPressure,
            frees_bytes: 10 * MB
        }]
    );
    assert_eq!(p.shortfall.map(|s| (s.freed, s.target)), Some((10 * MB, 15 * MB)));
}

#[test]
fn image_freeing_nothing_is_still_removed_and_duplicates_count_once() {
    let sizes = sizes(&[("base", 50 * MB), ("own", 5 * MB)]);
    let images = vec![
        img("shell", 100, 90, &["base", "base"]),
        img("full", 100, 80, &["base", "own", "own"]),
    ];
    let p = run(&images, &sizes, disk(1000), &GcPolicy::default());
    let frees: Vec<(&str, u64)> = p.victims.iter().map(|v| (v.id.as_str(), v.frees_bytes)).collect();
    assert_eq!(frees, [("shell", 0), ("full", 55 * MB)]);
    // Resources without a known size count as 0.
    let p = run(&images, &HashMap::new(), disk(1000), &GcPolicy::default());
    assert_eq!((ids(&p), p.planned_free_bytes), (vec!["shell", "full"], 0));
}

#[test]
fn unreachable_target_reports_kubelet_event_text() {
    let (images, sizes) = ten_images();
    let p = run(&images, &sizes, disk(1000), &GcPolicy::default());
    assert_eq!(p.victims.len(), 10);
    let s = p.shortfall.unwrap();
    assert_eq!(
        s.why,
        "failed to garbage collect required amount of images. Attempted to free 200000000 bytes, but only \
         found 100000000 bytes eligible to free"
    );
    // Nothing at all to remove.
    let p = run(&[], &sizes, disk(1000), &GcPolicy::default());
    assert_eq!(p.shortfall.map(|s| (s.freed, s.target)), Some((0, 200 * MB)));
}

#[test]
fn max_age_removes_unused_images_regardless_of_usage() {
    let policy = GcPolicy {
        max_age: Some(Duration::from_secs(3600)),
        ..GcPolicy::default()
    };
    let mut pinned = img("pinned", 200, 120, &["p"]);
    pinned.pinned = true;
    let mut in_use = img("in-use", 200, 120, &["u"]);
    in_use.in_use = true;
    let mut pulled_never_used = img("fresh", 10, 0, &["f"]);
    pulled_never_used.last_used_ns = 0;
    let mut old_never_used = img("stale", 61, 0, &["s"]);
    old_never_used.last_used_ns = 0;
    let images = vec![
        img("old", 200, 61, &["o"]),
        img("boundary", 200, 60, &["b"]),
        pinned,
        in_use,
        pulled_never_used,
        old_never_used,
    ];
    let sizes = sizes(&[("o", MB), ("b", MB), ("p", MB), ("u", MB), ("f", MB), ("s", MB)]);
    let p = run(&images, &sizes, disk(10), &policy);
    assert_eq!(ids(&p), ["stale", "old"]);
    assert!(
        p.victims
            .iter()
            .all(|v| v.reason == VictimReason::MaxAge && v.frees_bytes == MB)
    );
    assert_eq!((p.target_bytes, p.planned_free_bytes, p.shortfall), (0, 2 * MB, None));
}

#[test]
fn max_age_victims_count_before_the_threshold_check() {
    let policy = GcPolicy {
        max_age: Some(Duration::from_secs(3600)),
        ..GcPolicy::default()
    };
    let sizes = sizes(&[("old", 20 * MB), ("a", 10 * MB), ("b", 10 * MB)]);
    let images = vec![
        img("old", 200, 120, &["old"]),
        img("a", 100, 50, &["a"]),
        img("b", 100, 40, &["b"]),
    ];
    // 860 MB used; max age frees 20 MB, leaving 84 %: no disk pressure.
    let p = run(&images, &sizes, disk(860), &policy);
    assert_eq!((ids(&p), p.target_bytes), (vec!["old"], 0));
    // 870 MB used; 850 MB after max age: 50 MB to free, only 20 MB eligible.
    let p = run(&images, &sizes, disk(870), &policy);
    assert_eq!(ids(&p), ["old", "a", "b"]);
    assert_eq!(p.victims[1].reason, VictimReason::DiskPressure);
    assert_eq!((p.target_bytes, p.planned_free_bytes), (50 * MB, 40 * MB));
    assert_eq!(p.shortfall.map(|s| (s.freed, s.target)), Some((20 * MB, 50 * MB)));
}

#[test]
fn high_threshold_100_disables_disk_pressure_gc() {
    let (images, sizes) = ten_images();
    let off = GcPolicy {
        high_threshold_percent: 100,
        low_threshold_percent: 100,
        ..GcPolicy::default()
    };
    assert_eq!(run(&images, &sizes, disk(1000), &off), GcPlan::default());
    let off_but_max_age = GcPolicy {
        max_age: Some(Duration::from_secs(45 * 60)),
        ..off
    };
    assert_eq!(
        ids(&run(&images, &sizes, disk(1000), &off_but_max_age)),
        ["i0", "i1", "i2", "i3", "i4"]
    );
}

#[test]
fn invalid_policies_and_capacity_are_rejected() {
    let base = GcPolicy::default();
    let cases = [
        (
            GcPolicy {
                high_threshold_percent: 101,
                ..base.clone()
            },
            "invalid image GC high threshold 101%: must be in range 0-100",
        ),
        (
            GcPolicy {
                high_threshold_percent: 100,
                low_threshold_percent: 101,
                ..base.clone()
            },
            "invalid image GC low threshold 101%: must be in range 0-100",
        ),
        (
            GcPolicy {
                low_threshold_percent: 90,
                ..base.clone()
            },
            "image GC low threshold 90% can not be higher than high threshold 85%",
        ),
        (
            GcPolicy {
                max_age: Some(Duration::from_secs(120)),
                ..base.clone()
            },
            "image GC max age 2m must be greater than min age 2m",
        ),
    ];
    for (policy, want) in cases {
        let err = plan(&[], &HashMap::new(), disk(0), &policy, NOW).unwrap_err();
        assert_eq!(
            (err.to_string().as_str(), err.kind()),
            (want, ErrorKind::InvalidArgument)
        );
    }
    let err = plan(
        &[],
        &HashMap::new(),
        Usage {
            capacity_bytes: 0,
            used_bytes: 0,
        },
        &base,
        NOW,
    )
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Internal);
    assert_eq!(err, PolicyError::InvalidCapacity);
    assert_eq!(
        PolicyError::InvalidCapacity.to_string(),
        "invalid capacity 0 on image filesystem"
    );
    let edges = [(0, 0, None), (100, 0, None), (85, 80, Some(Duration::from_secs(121)))];
    for (high, low, max_age) in edges {
        let p = GcPolicy {
            high_threshold_percent: high,
            low_threshold_percent: low,
            max_age,
            ..base.clone()
        };
        assert_eq!(p.validate(), Ok(()));
    }
    assert_eq!(
        (VictimReason::MaxAge.as_str(), VictimReason::DiskPressure.as_str()),
        ("age", "space")
    );
}
