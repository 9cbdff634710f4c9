//! The checker behind `tests/architecture.rs`: reads a crate's `src/` with `syn`, collects every path that
//! names a module of the crate (`crate::…`, `super::…`, `self::…`, in `use` trees, expressions, types,
//! attributes and macro arguments), and holds the edges between modules against a table of layers.
//!
//! The module tree is read from `lib.rs` the way the compiler reads it (`mod x;` → `x.rs` or `x/mod.rs`,
//! `#[path]` children, inline modules), so `super::` means what it means to the compiler. Test code is not
//! read: `#[cfg(test)]` items (and with them the `*_tests.rs` and `tests.rs` files they declare) are
//! skipped. `lib.rs` only wires and is not read for imports either.
//!
//! An import from module `a` of folder `f` to module `b` of the same folder is an edge `a → b` of `f`
//! (an import reaching into a child of `b` is still an edge to `b`). A module using its own parent
//! (`super::Item` from a child of `mod.rs`) or its own children is no edge: that is how a folder is built.
//! Edges between top-level modules are checked against the layers; the edges of every folder must have no
//! cycle.

mod collect;
mod tree;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

use tree::Tree;

/// One layer of the table: its members and whether they may import each other.
pub struct Layer {
    /// What the layer is, shown in the messages.
    pub what: &'static str,
    /// The top-level modules in it.
    pub modules: &'static [&'static str],
    /// Whether members may import each other (cycles among them are still rejected).
    pub peers: bool,
}

/// Where one path was written.
#[derive(Clone, Debug)]
pub struct Site {
    /// The file, relative to the crate root (`src/ensure/mod.rs`).
    pub file: String,
    /// The line of the path's first segment.
    pub line: usize,
    /// The path as written, with `::` between segments (`crate::service::now_ns`).
    pub path: String,
}

impl fmt::Display for Site {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}  {}", self.file, self.line, self.path)
    }
}

/// A rule broken.
#[derive(Debug)]
pub enum Violation {
    /// A file could not be read or parsed.
    Unreadable { file: String, error: String },
    /// A top-level module that the table does not place, and the file that declares it.
    Unplaced { module: String, file: String },
    /// A name in the table that is no top-level module and not planned.
    Unknown { module: String },
    /// Imports from `from` to `to` that the layers forbid, with the rule.
    Layering {
        from: String,
        to: String,
        rule: String,
        sites: Vec<Site>,
    },
    /// A cycle among the members of one folder (`crate` for the top level), with the imports that close it.
    Cycle {
        folder: String,
        members: Vec<String>,
        edges: Vec<(String, String, Vec<Site>)>,
    },
}

/// Everything the checker found.
#[derive(Debug, Default)]
pub struct Report {
    /// The violations, in a stable order.
    pub violations: Vec<Violation>,
}

/// Reads `crate_root/src` (from `lib.rs`) and checks it against `layers`; `planned` names modules the table
/// may place before they exist.
pub fn check(crate_root: &Path, layers: &[Layer], planned: &[&str]) -> Report {
    let mut tree = Tree::read(crate_root);
    let mut report = Report {
        violations: std::mem::take(&mut tree.unreadable),
    };
    report.violations.extend(tree.check_table(layers, planned));
    let edges = tree.edges();
    report.violations.extend(check_layering(&edges, layers));
    report.violations.extend(check_cycles(&edges, layers));
    report
}

/// The layer index of each module of the table (0 is the top).
fn layer_of(layers: &[Layer]) -> BTreeMap<&str, usize> {
    layers
        .iter()
        .enumerate()
        .flat_map(|(i, l)| l.modules.iter().map(move |m| (*m, i)))
        .collect()
}

/// The rule a top-level edge breaks, if any.
fn broken(from: &str, to: &str, layers: &[Layer]) -> Option<String> {
    let of = layer_of(layers);
    let (&a, &b) = (of.get(from)?, of.get(to)?);
    let show = |i: usize| format!("layer {} ({})", i + 1, layers[i].what);
    if b > a || (a == b && layers[a].peers) {
        None
    } else if a == b {
        Some(format!(
            "`{from}` and `{to}` share {}, whose members may not import each other",
            show(a)
        ))
    } else {
        Some(format!(
            "`{from}` is in {}; `{to}` is in {}, above it",
            show(a),
            show(b)
        ))
    }
}

fn check_layering(edges: &BTreeMap<(Vec<String>, String, String), Vec<Site>>, layers: &[Layer]) -> Vec<Violation> {
    edges
        .iter()
        .filter(|((folder, _, _), _)| folder.is_empty())
        .filter_map(|((_, from, to), sites)| {
            broken(from, to, layers).map(|rule| Violation::Layering {
                from: from.clone(),
                to: to.clone(),
                rule,
                sites: sites.clone(),
            })
        })
        .collect()
}

/// Cycles among the members of each folder. At the top level only the edges the layers allow are taken
/// (a cycle through a forbidden edge is already reported as that edge), which leaves the cycles among peers.
fn check_cycles(edges: &BTreeMap<(Vec<String>, String, String), Vec<Site>>, layers: &[Layer]) -> Vec<Violation> {
    let mut folders: BTreeMap<&Vec<String>, BTreeMap<&str, BTreeSet<&str>>> = BTreeMap::new();
    for (folder, from, to) in edges.keys() {
        if folder.is_empty() && broken(from, to, layers).is_some() {
            continue;
        }
        folders.entry(folder).or_default().entry(from).or_default().insert(to);
    }
    let mut out = Vec::new();
    for (folder, graph) in folders {
        for members in components(&graph) {
            let inside = |m: &&str| members.iter().any(|x| x == m);
            let cycle_edges = graph
                .iter()
                .filter(|(from, _)| inside(from))
                .flat_map(|(from, tos)| tos.iter().filter(|t| inside(t)).map(move |to| (*from, *to)))
                .map(|(from, to)| {
                    let sites = edges[&(folder.clone(), from.to_string(), to.to_string())].clone();
                    (from.to_string(), to.to_string(), sites)
                })
                .collect();
            let shown = if folder.is_empty() {
                "crate".to_string()
            } else {
                format!("crate::{}", folder.join("::"))
            };
            out.push(Violation::Cycle {
                folder: shown,
                members,
                edges: cycle_edges,
            });
        }
    }
    out
}

/// The strongly connected components of more than one member (Tarjan's algorithm, recursive: graphs are small).
fn components(graph: &BTreeMap<&str, BTreeSet<&str>>) -> Vec<Vec<String>> {
    struct State<'g> {
        graph: &'g BTreeMap<&'g str, BTreeSet<&'g str>>,
        index: BTreeMap<&'g str, (usize, usize)>,
        stack: Vec<&'g str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'g>(s: &mut State<'g>, v: &'g str) {
        let n = s.index.len();
        s.index.insert(v, (n, n));
        s.stack.push(v);
        for &w in s.graph.get(v).into_iter().flatten() {
            if !s.index.contains_key(w) {
                visit(s, w);
                let low = s.index[w].1.min(s.index[v].1);
                s.index.entry(v).and_modify(|e| e.1 = low);
            } else if s.stack.contains(&w) {
                let low = s.index[w].0.min(s.index[v].1);
                s.index.entry(v).and_modify(|e| e.1 = low);
            }
        }
        if s.index[v].0 == s.index[v].1 {
            let mut members = Vec::new();
            while let Some(w) = s.stack.pop() {
                members.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if members.len() > 1 {
                members.sort();
                s.out.push(members);
            }
        }
    }
    let mut s = State {
        graph,
        index: BTreeMap::new(),
        stack: Vec::new(),
        out: Vec::new(),
    };
    for &v in graph.keys() {
        if !s.index.contains_key(v) {
            visit(&mut s, v);
        }
    }
    s.out
}

impl Report {
    /// Whether nothing is broken.
    pub fn is_clean(&self) -> bool {
        self.violations.is_empty()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} violation(s) of the module layering (the table LAYERS in tests/architecture.rs):",
            self.violations.len()
        )?;
        for v in &self.violations {
            writeln!(f)?;
            match v {
                Violation::Unreadable { file, error } => writeln!(f, "{file}: cannot be read: {error}")?,
                Violation::Unplaced { module, file } => {
                    writeln!(
                        f,
                        "module `{module}` ({file}) is not in the table: place module `{module}` in LAYERS"
                    )?;
                }
                Violation::Unknown { module } => writeln!(
                    f,
                    "LAYERS places `{module}`, which src/lib.rs does not declare: remove it, or list it in PLANNED"
                )?,
                Violation::Layering { from, to, rule, sites } => {
                    writeln!(f, "`{from}` imports `{to}`: {rule}")?;
                    for s in sites {
                        writeln!(f, "    {s}")?;
                    }
                }
                Violation::Cycle { folder, members, edges } => {
                    writeln!(f, "cycle among the members of `{folder}`: {}", members.join(", "))?;
                    for (from, to, sites) in edges {
                        writeln!(f, "  {from} -> {to}:")?;
                        for s in sites {
                            writeln!(f, "    {s}")?;
                        }
                    }
                }
            }
        }
        writeln!(f)?;
        writeln!(
            f,
            "What to do: move the item down, into the importer's layer or below (or, inside a folder, into a \
             file both use), so the import points down (a shared helper or type usually belongs in a lower \
             module than its users). If the layering itself is what should change, change LAYERS in tests/architecture.rs and say why in the \
             commit."
        )
    }
}
