//! The paths of one item that name modules of the crate: `crate::…`, `self::…` and `super::…` in `use`
//! trees (grouped ones included), expressions, types, visibilities, attribute and macro arguments.

use proc_macro2::{Span, TokenStream, TokenTree};
use syn::visit::Visit;

use super::Site;

/// A path naming something of the crate, before resolution.
pub struct Reference {
    /// The module it is written in.
    pub module: Vec<String>,
    /// Its segments, from `crate`, `self` or `super`.
    pub segments: Vec<String>,
    /// Where it is written.
    pub site: Site,
}

/// Whether attributes hold `#[cfg(test)]` (or a `cfg` naming `test` at all: test-only code).
pub fn is_test(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("cfg")
            && matches!(&a.meta, syn::Meta::List(l) if l.tokens.clone().into_iter().any(|t| matches!(t, TokenTree::Ident(i) if i == "test")))
    })
}

/// The outer attributes of an item, to find `#[cfg(test)]`.
pub fn item_attrs(item: &syn::Item) -> &[syn::Attribute] {
    use syn::Item;
    match item {
        Item::Const(i) => &i.attrs,
        Item::Enum(i) => &i.attrs,
        Item::ExternCrate(i) => &i.attrs,
        Item::Fn(i) => &i.attrs,
        Item::ForeignMod(i) => &i.attrs,
        Item::Impl(i) => &i.attrs,
        Item::Macro(i) => &i.attrs,
        Item::Mod(i) => &i.attrs,
        Item::Static(i) => &i.attrs,
        Item::Struct(i) => &i.attrs,
        Item::Trait(i) => &i.attrs,
        Item::TraitAlias(i) => &i.attrs,
        Item::Type(i) => &i.attrs,
        Item::Union(i) => &i.attrs,
        Item::Use(i) => &i.attrs,
        _ => &[],
    }
}

/// Collects the crate paths of one item.
pub struct Collector<'a> {
    /// The module the item is in.
    pub module: &'a [String],
    /// Its file, as messages show it.
    pub file: String,
    /// What was found.
    pub found: Vec<Reference>,
}

impl Collector<'_> {
    fn add(&mut self, segments: Vec<String>, span: Span) {
        let relative = matches!(segments.first().map(String::as_str), Some("crate" | "self" | "super"));
        if relative && segments.len() > 1 {
            let site = Site {
                file: self.file.clone(),
                line: span.start().line,
                path: segments.join("::"),
            };
            self.found.push(Reference {
                module: self.module.to_vec(),
                segments,
                site,
            });
        }
    }

    /// Every path of a `use` tree, below `prefix` (`{self, X}` adds the prefix itself).
    fn use_tree(&mut self, tree: &syn::UseTree, prefix: &mut Vec<String>, span: Option<Span>) {
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.use_tree(&p.tree, prefix, span.or(Some(p.ident.span())));
                prefix.pop();
            }
            syn::UseTree::Name(n) => self.use_leaf(prefix, &n.ident, span),
            syn::UseTree::Rename(r) => self.use_leaf(prefix, &r.ident, span),
            syn::UseTree::Glob(g) => self.add(prefix.clone(), span.unwrap_or(g.star_token.span)),
            syn::UseTree::Group(g) => {
                for t in &g.items {
                    self.use_tree(t, prefix, span);
                }
            }
        }
    }

    fn use_leaf(&mut self, prefix: &[String], ident: &syn::Ident, span: Option<Span>) {
        let mut segments = prefix.to_vec();
        if ident != "self" {
            segments.push(ident.to_string());
        }
        self.add(segments, span.unwrap_or(ident.span()));
    }

    /// Paths in tokens the parser does not read as code (macro arguments, attribute arguments): a run of
    /// `crate`/`self`/`super` and identifiers joined by `::`. Literals are single tokens, so strings never count.
    fn tokens(&mut self, tokens: TokenStream) {
        let tokens: Vec<TokenTree> = tokens.into_iter().collect();
        let mut i = 0;
        while i < tokens.len() {
            match &tokens[i] {
                TokenTree::Group(g) => self.tokens(g.stream()),
                TokenTree::Ident(id) if id == "crate" || id == "self" || id == "super" => {
                    let mut segments = vec![id.to_string()];
                    while let (Some(TokenTree::Punct(a)), Some(TokenTree::Punct(b)), Some(TokenTree::Ident(next))) =
                        (tokens.get(i + 1), tokens.get(i + 2), tokens.get(i + 3))
                    {
                        if a.as_char() != ':' || b.as_char() != ':' {
                            break;
                        }
                        segments.push(next.to_string());
                        i += 3;
                    }
                    self.add(segments, id.span());
                }
                _ => {}
            }
            i += 1;
        }
    }
}

impl<'ast> Visit<'ast> for Collector<'_> {
    fn visit_item(&mut self, i: &'ast syn::Item) {
        if !is_test(item_attrs(i)) {
            syn::visit::visit_item(self, i);
        }
    }

    fn visit_impl_item(&mut self, i: &'ast syn::ImplItem) {
        let attrs: &[syn::Attribute] = match i {
            syn::ImplItem::Const(c) => &c.attrs,
            syn::ImplItem::Fn(f) => &f.attrs,
            syn::ImplItem::Type(t) => &t.attrs,
            _ => &[],
        };
        if !is_test(attrs) {
            syn::visit::visit_impl_item(self, i);
        }
    }

    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        self.use_tree(&u.tree, &mut Vec::new(), None);
    }

    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        // Inline modules are loaded as modules of their own (Tree::load); only their attributes are here.
        for a in &m.attrs {
            self.visit_attribute(a);
        }
    }

    fn visit_path(&mut self, p: &'ast syn::Path) {
        if let Some(first) = p.segments.first() {
            let segments = p.segments.iter().map(|s| s.ident.to_string()).collect();
            self.add(segments, first.ident.span());
        }
        syn::visit::visit_path(self, p);
    }

    fn visit_macro(&mut self, m: &'ast syn::Macro) {
        self.tokens(m.tokens.clone());
        syn::visit::visit_macro(self, m);
    }

    fn visit_attribute(&mut self, a: &'ast syn::Attribute) {
        match &a.meta {
            syn::Meta::List(l) if !l.path.is_ident("cfg") => self.tokens(l.tokens.clone()),
            syn::Meta::NameValue(nv) => self.visit_expr(&nv.value),
            _ => {}
        }
    }
}
