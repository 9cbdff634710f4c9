//! The layering of `src/`, stated once and kept by the build (issue 19, point 5).
//!
//! [`LAYERS`] lists the top-level modules from the top (the wire) to the bottom (the vocabulary). A module
//! may import only modules of lower layers, or members of its own layer where the layer says its members
//! are peers; every folder's files (and subfolders) must import each other without a cycle. The checker
//! (`architecture/check.rs`) reads the real import paths with `syn`, so comments and strings never count;
//! test code and `lib.rs` (which only wires) are not read.
//!
//! A test rather than a workspace of crates, for now: the layering was only just made true (issue 19), and
//! one table is cheap to change while it settles; the test fails with every file, import and rule broken,
//! where a crate split fails one crate at a time. Once the layering has settled, the layers can become crates.
//!
//! To see what is broken: `cargo test --test architecture` (the failure lists every violation).
#![allow(clippy::expect_used)]

#[path = "architecture/check.rs"]
mod check;

use std::path::Path;

use check::{Layer, Report, Violation, check};

/// The layers, top to bottom.
const LAYERS: &[Layer] = &[
    Layer {
        what: "the entry points: the composition root, the gRPC skins (CRI, imaged's own, containerd's snapshot \
               API) and the client",
        modules: &["daemon", "cli", "server"],
        peers: false,
    },
    Layer {
        what: "the image service in domain types",
        modules: &["service"],
        peers: false,
    },
    Layer {
        what: "the daemon's configuration, which holds the config types of the modules below it",
        modules: &["config"],
        peers: false,
    },
    Layer {
        what: "what the service drives: kubelet's image manager, GC, the outbound bridges to runtimes",
        modules: &["ensure", "gc", "bridge"],
        peers: false,
    },
    Layer {
        what: "the models over the stores: one image pull, containerd's snapshot model",
        modules: &["pull", "snapshotter"],
        peers: false,
    },
    Layer {
        what: "the four stores together, and the queries and removal that span them",
        modules: &["stores"],
        peers: false,
    },
    Layer {
        what: "what the stores announce to listeners (bridges), and what is pinned (never collected)",
        modules: &["events", "pinned"],
        peers: false,
    },
    Layer {
        what: "the image database and the layer store",
        modules: &["metadata", "layers"],
        peers: false,
    },
    Layer {
        what: "the content-addressed blob store",
        modules: &["content"],
        peers: false,
    },
    Layer {
        what: "leases: what operations in flight protect",
        modules: &["lease"],
        peers: false,
    },
    Layer {
        what: "the adapters that know only the vocabulary: the registry client, the layer applier",
        modules: &["registry", "unpack"],
        peers: false,
    },
    Layer {
        what: "plumbing that knows no domain type: metrics, unix-socket channels, a lock per key, the allocator",
        modules: &["metrics", "uds", "keyed_lock", "memory"],
        peers: false,
    },
    // Peers: value types are built from each other (a reference holds a digest, a pattern matches references,
    // a manifest names platforms); splitting them into layers would only pin today's choices.
    Layer {
        what: "the vocabulary: value types and parsers, the error kinds, the clock, the protobuf types",
        modules: &[
            "clock",
            "digest",
            "duration",
            "error",
            "manifest",
            "pattern",
            "platform",
            "proto",
            "reference",
            "wire",
        ],
        peers: true,
    },
];

/// Modules the table places before they exist (none now; list one here while a move that creates it lands).
const PLANNED: &[&str] = &[];

#[test]
fn src_keeps_the_layering() {
    let report = check(Path::new(env!("CARGO_MANIFEST_DIR")), LAYERS, PLANNED);
    assert!(report.is_clean(), "\n{report}");
}

/// A small crate in a temporary directory: `files` are (path under the crate root, text).
fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    for (path, text) in files {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    }
    dir
}

/// The layers of the synthetic crates: `top` over `low`, and a folder `f` at the bottom.
const SMALL: &[Layer] = &[
    Layer {
        what: "the top",
        modules: &["top"],
        peers: false,
    },
    Layer {
        what: "the bottom",
        modules: &["low", "f"],
        peers: false,
    },
];

const LIB: &str = "pub mod f;\npub mod low;\npub mod top;\n";
const TOP: &str = "use crate::{f::A, low::{self, Low}};\npub fn top() { low::f(); }\n";
const F_MOD: &str = "mod a;\nmod b;\npub use a::A;\npub struct Shared;\n";
const CLEAN_A: &str = "use super::b::B;\nuse super::Shared;\npub struct A(B, Shared);\n";
const CLEAN_B: &str = "pub struct B;\n";
const CLEAN_LOW: &str = "\
//! Mentions crate::top::Top in a comment, which is no import.
pub struct Low;
pub fn f() -> &'static str {
    \"crate::top::top()\"
}
#[cfg(test)]
mod tests {
    use crate::top::top;
}
";

fn clean() -> Vec<(&'static str, &'static str)> {
    vec![
        ("src/lib.rs", LIB),
        ("src/top.rs", TOP),
        ("src/low.rs", CLEAN_LOW),
        ("src/f/mod.rs", F_MOD),
        ("src/f/a.rs", CLEAN_A),
        ("src/f/b.rs", CLEAN_B),
    ]
}

/// `clean()` with `path`'s text replaced.
fn with(path: &str, text: &'static str) -> tempfile::TempDir {
    let files: Vec<_> = clean()
        .into_iter()
        .map(|(p, t)| if p == path { (p, text) } else { (p, t) })
        .collect();
    tree(&files)
}

fn sites(report: &Report) -> Vec<String> {
    let mut out = Vec::new();
    for v in &report.violations {
        match v {
            Violation::Layering { sites, .. } => out.extend(sites.iter().map(ToString::to_string)),
            Violation::Cycle { edges, .. } => {
                out.extend(edges.iter().flat_map(|(_, _, s)| s.iter().map(ToString::to_string)));
            }
            _ => {}
        }
    }
    out
}

#[test]
fn a_clean_tree_passes_and_comments_strings_and_tests_do_not_count() {
    let dir = tree(&clean());
    let report = check(dir.path(), SMALL, &[]);
    assert!(report.is_clean(), "\n{report}");
}

#[test]
fn an_upward_import_is_reported_with_file_line_and_path() {
    let low = "pub struct Low;\npub fn f() -> usize {\n    crate::top::top();\n    1\n}\n";
    let dir = with("src/low.rs", low);
    let report = check(dir.path(), SMALL, &[]);
    assert_eq!(sites(&report), ["src/low.rs:3  crate::top::top"], "\n{report}");
    let shown = report.to_string();
    assert!(
        shown.contains("`low` imports `top`: `low` is in layer 2 (the bottom); `top` is in layer 1"),
        "{shown}"
    );
    assert!(shown.contains("move the item down"), "{shown}");
}

#[test]
fn a_cycle_between_siblings_is_reported_with_both_imports() {
    let b = "pub struct B;\nimpl B {\n    pub fn a() -> super::a::A { todo!() }\n}\n";
    let dir = with("src/f/b.rs", b);
    let report = check(dir.path(), SMALL, &[]);
    assert_eq!(
        sites(&report),
        ["src/f/a.rs:1  super::b::B", "src/f/b.rs:3  super::a::A"],
        "\n{report}"
    );
    assert!(
        report
            .to_string()
            .contains("cycle among the members of `crate::f`: a, b"),
        "{report}"
    );
}

#[test]
fn peers_may_import_each_other_but_not_in_a_cycle() {
    let peers = &[Layer {
        what: "peers",
        modules: &["top", "low", "f"],
        peers: true,
    }];
    let dir = tree(&clean());
    assert!(check(dir.path(), peers, &[]).is_clean());
    let dir = with("src/low.rs", "use crate::top;\npub struct Low;\npub fn f() {}\n");
    let report = check(dir.path(), peers, &[]);
    let expected = [
        "src/low.rs:1  crate::top",
        "src/top.rs:1  crate::low",
        "src/top.rs:1  crate::low::Low",
    ];
    assert_eq!(sites(&report), expected, "\n{report}");
    assert!(
        report
            .to_string()
            .contains("cycle among the members of `crate`: low, top"),
        "{report}"
    );
}

#[test]
fn a_module_missing_from_the_table_is_named() {
    let dir = tree(&clean());
    let partial = &[Layer {
        what: "the top",
        modules: &["top", "gone"],
        peers: false,
    }];
    let report = check(dir.path(), partial, &[]).to_string();
    assert!(report.contains("place module `f` in LAYERS"), "{report}");
    assert!(report.contains("place module `low` in LAYERS"), "{report}");
    assert!(report.contains("LAYERS places `gone`"), "{report}");
}

#[test]
fn paths_in_macro_and_attribute_arguments_count() {
    let low = "\
pub struct Low;
pub fn f() -> String {
    format!(\"{:?}\", crate::top::top())
}
pub struct Opt {
    #[arg(value_parser = crate::top::parse)]
    x: u8,
}
";
    let dir = with("src/low.rs", low);
    let report = check(dir.path(), SMALL, &[]);
    assert_eq!(
        sites(&report),
        ["src/low.rs:3  crate::top::top", "src/low.rs:6  crate::top::parse"],
        "\n{report}"
    );
}

#[test]
fn super_in_a_path_child_is_resolved_from_that_child() {
    // `b`'s child `extra`, in a file named by #[path]: its `super::super` is the folder `f`.
    let mut files = clean();
    files.retain(|(p, _)| *p != "src/f/b.rs");
    files.push(("src/f/b.rs", "#[path = \"b_extra.rs\"]\nmod extra;\npub struct B;\n"));
    files.push(("src/f/b_extra.rs", "use super::super::a::A;\n"));
    let dir = tree(&files);
    let report = check(dir.path(), SMALL, &[]);
    assert_eq!(
        sites(&report),
        ["src/f/a.rs:1  super::b::B", "src/f/b_extra.rs:1  super::super::a::A"],
        "\n{report}"
    );
}
