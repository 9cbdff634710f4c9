//! The module tree of a crate, read from `lib.rs` as the compiler reads it, and the edges its references make
//! between the members of each folder.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use syn::visit::Visit;

use super::collect::{Collector, Reference, is_test, item_attrs};
use super::{Layer, Site, Violation};

/// A module of the tree: its path from the crate root, the file its items are in, its child modules.
struct Module {
    file: Option<PathBuf>,
    children: BTreeSet<String>,
}

/// The crate as read: modules by path, references by the module they are written in.
pub struct Tree {
    root: PathBuf,
    modules: BTreeMap<Vec<String>, Module>,
    references: Vec<Reference>,
    /// The files that could not be read or parsed.
    pub unreadable: Vec<Violation>,
}

impl Tree {
    /// Reads the module tree of `crate_root/src` from `lib.rs`, and the references of every module but the root.
    pub fn read(crate_root: &Path) -> Self {
        let mut tree = Tree {
            root: crate_root.to_path_buf(),
            modules: BTreeMap::new(),
            references: Vec::new(),
            unreadable: Vec::new(),
        };
        let lib = crate_root.join("src/lib.rs");
        tree.modules.insert(
            Vec::new(),
            Module {
                file: Some(lib.clone()),
                children: BTreeSet::new(),
            },
        );
        if let Some(file) = tree.parse(&lib) {
            let dir = crate_root.join("src");
            tree.load(&file.items, &[], &lib, &dir, &dir, true);
        }
        tree
    }

    /// Parses `file`, or records why it cannot be.
    fn parse(&mut self, file: &Path) -> Option<syn::File> {
        let shown = self.shown(file);
        let parsed = std::fs::read_to_string(file)
            .map_err(|e| e.to_string())
            .and_then(|text| syn::parse_file(&text).map_err(|e| format!("line {}: {e}", e.span().start().line)));
        parsed
            .map_err(|error| self.unreadable.push(Violation::Unreadable { file: shown, error }))
            .ok()
    }

    /// `file` relative to the crate root, as messages show it.
    fn shown(&self, file: &Path) -> String {
        file.strip_prefix(&self.root).unwrap_or(file).display().to_string()
    }

    /// Loads the items of module `module`, written in `file`: child modules are registered (and their files
    /// read), other items are searched for references unless `wiring` (lib.rs). `children_dir` is where
    /// `mod x;` looks for `x.rs`; `path_dir` is where `#[path]` is relative to.
    fn load(
        &mut self,
        items: &[syn::Item],
        module: &[String],
        file: &Path,
        children_dir: &Path,
        path_dir: &Path,
        wiring: bool,
    ) {
        for item in items {
            if is_test(item_attrs(item)) {
                continue;
            }
            let syn::Item::Mod(m) = item else {
                if !wiring {
                    let mut collector = Collector {
                        module,
                        file: self.shown(file),
                        found: Vec::new(),
                    };
                    collector.visit_item(item);
                    self.references.extend(collector.found);
                }
                continue;
            };
            let name = m.ident.to_string();
            let mut child: Vec<String> = module.to_vec();
            child.push(name.clone());
            if let Some(parent) = self.modules.get_mut(module) {
                parent.children.insert(name.clone());
            }
            match &m.content {
                Some((_, inner)) => {
                    self.modules.insert(
                        child.clone(),
                        Module {
                            file: Some(file.to_path_buf()),
                            children: BTreeSet::new(),
                        },
                    );
                    let dir = children_dir.join(&name);
                    self.load(inner, &child, file, &dir, &dir, wiring);
                }
                None => {
                    let (found, dir) = match path_attr(&m.attrs) {
                        // A file named by #[path] declares its own children as a mod.rs does.
                        Some(p) => {
                            let f = path_dir.join(p);
                            let d = f.parent().map(Path::to_path_buf).unwrap_or_default();
                            (f, d)
                        }
                        None => {
                            let flat = children_dir.join(format!("{name}.rs"));
                            if flat.exists() {
                                (flat, children_dir.join(&name))
                            } else {
                                (children_dir.join(&name).join("mod.rs"), children_dir.join(&name))
                            }
                        }
                    };
                    self.modules.insert(
                        child.clone(),
                        Module {
                            file: Some(found.clone()),
                            children: BTreeSet::new(),
                        },
                    );
                    if let Some(parsed) = self.parse(&found) {
                        let path_dir = found.parent().map(Path::to_path_buf).unwrap_or_default();
                        self.load(&parsed.items, &child, &found, &dir, &path_dir, false);
                    }
                }
            }
        }
    }

    /// The top-level modules against the table: each placed, each name of the table a module or planned.
    pub fn check_table(&self, layers: &[Layer], planned: &[&str]) -> Vec<Violation> {
        let top: BTreeSet<&str> = self.modules[&Vec::new()].children.iter().map(String::as_str).collect();
        let placed: BTreeSet<&str> = layers.iter().flat_map(|l| l.modules.iter().copied()).collect();
        let mut out: Vec<Violation> = top
            .difference(&placed)
            .map(|m| {
                let file = self.modules[&vec![(*m).to_string()]]
                    .file
                    .as_deref()
                    .map(|f| self.shown(f));
                Violation::Unplaced {
                    module: (*m).to_string(),
                    file: file.unwrap_or_default(),
                }
            })
            .collect();
        out.extend(
            placed
                .difference(&top)
                .filter(|m| !planned.contains(m))
                .map(|m| Violation::Unknown {
                    module: (*m).to_string(),
                }),
        );
        out
    }

    /// The module a path names: its prefix that is a module of the tree, from where it is written.
    fn resolve(&self, from: &[String], segments: &[String]) -> Option<Vec<String>> {
        let mut base: Vec<String> = match segments.first().map(String::as_str) {
            Some("crate") => Vec::new(),
            Some("self" | "super") => from.to_vec(),
            _ => return None,
        };
        let mut rest = &segments[1..];
        if segments[0] == "super" {
            base.pop()?;
        }
        while rest.first().is_some_and(|s| s == "super") {
            base.pop()?;
            rest = &rest[1..];
        }
        for segment in rest {
            match self.modules.get(&base) {
                Some(m) if m.children.contains(segment) => base.push(segment.clone()),
                _ => break,
            }
        }
        Some(base)
    }

    /// Every edge between two members of one folder: (folder, from, to) → the sites that make it.
    pub fn edges(&self) -> BTreeMap<(Vec<String>, String, String), Vec<Site>> {
        let mut edges: BTreeMap<_, Vec<Site>> = BTreeMap::new();
        for r in &self.references {
            let Some(target) = self.resolve(&r.module, &r.segments) else {
                continue;
            };
            let common = r.module.iter().zip(&target).take_while(|(a, b)| a == b).count();
            // An ancestor or a descendant of the importer (or itself): how a folder is wired, no edge.
            if common == r.module.len() || common == target.len() {
                continue;
            }
            let key = (
                r.module[..common].to_vec(),
                r.module[common].clone(),
                target[common].clone(),
            );
            edges.entry(key).or_default().push(r.site.clone());
        }
        edges
    }
}
/// The `#[path = "…"]` of a module declaration.
fn path_attr(attrs: &[syn::Attribute]) -> Option<String> {
    attrs
        .iter()
        .find(|a| a.path().is_ident("path"))
        .and_then(|a| match &a.meta {
            syn::Meta::NameValue(nv) => match &nv.value {
                syn::Expr::Lit(syn::ExprLit {
                    lit: syn::Lit::Str(s), ..
                }) => Some(s.value()),
                _ => None,
            },
            _ => None,
        })
}
