//! containerd's filter language (`pkg/filters`), as its snapshot API's `List` takes it.
//!
//! ```text
//! selectors := selector ("," selector)*          all must match
//! selector  := fieldpath (operator value)?       without operator: the field is present
//! fieldpath := field ("." field)*
//! field     := quoted | [A-Za-z0-9_]+
//! operator  := "==" | "!=" | "~="                 equal, not equal, regular expression
//! value     := quoted | [^\s,]+
//! quoted    := "…" (Go string syntax); values of ~= may also be quoted with /…/ or |…|
//! ```
//!
//! A request carries several such strings; an object matches when any of them matches (an empty list
//! matches everything). containerd's metadata layer finds a remote snapshot with
//! `labels."containerd.io/snapshot.ref"==sha256:…,parent=="…"`: this module must read that exactly as
//! containerd does, including values with `:` and `.` left unquoted.

use std::fmt;

/// A parsed list of filters: matches when any alternative matches.
#[derive(Debug, Clone, Default)]
pub struct Filters {
    any: Vec<Vec<Selector>>,
}

#[derive(Debug, Clone)]
struct Selector {
    path: Vec<String>,
    op: Op,
}

#[derive(Debug, Clone)]
enum Op {
    Present,
    Equal(String),
    NotEqual(String),
    Matches(regex::Regex),
}

/// A filter that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("filter {input:?}: {message} at byte {pos}")]
pub struct FilterError {
    input: String,
    pos: usize,
    message: String,
}

impl Filters {
    /// Parses each string of a request; an empty string matches everything, as upstream.
    pub fn parse_all<S: AsRef<str>>(filters: &[S]) -> Result<Filters, FilterError> {
        let mut any = Vec::new();
        for f in filters {
            let f = f.as_ref();
            if f.is_empty() {
                any.push(Vec::new());
            } else {
                any.push(Parser::new(f).selectors()?);
            }
        }
        Ok(Filters { any })
    }

    /// Whether the object whose fields `field` looks up matches. `field(path)` returns the field's value,
    /// or `None` when the object has no such field.
    pub fn matches<'a>(&self, field: impl Fn(&[String]) -> Option<&'a str>) -> bool {
        if self.any.is_empty() {
            return true;
        }
        self.any.iter().any(|all| {
            all.iter().all(|s| {
                let value = field(&s.path);
                match &s.op {
                    Op::Present => value.is_some(),
                    Op::Equal(v) => value == Some(v.as_str()),
                    // Upstream compares the (possibly empty) value: an absent field is "not equal".
                    Op::NotEqual(v) => value.unwrap_or("") != v,
                    Op::Matches(re) => re.is_match(value.unwrap_or("")),
                }
            })
        })
    }
}

struct Parser<'a> {
    input: &'a str,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn new(input: &'a str) -> Parser<'a> {
        Parser { input, pos: 0 }
    }

    fn err(&self, pos: usize, message: impl fmt::Display) -> FilterError {
        FilterError {
            input: self.input.to_string(),
            pos,
            message: message.to_string(),
        }
    }

    fn peek(&self) -> Option<char> {
        self.input[self.pos..].chars().next()
    }

    fn skip_space(&mut self) {
        while let Some(c) = self.peek().filter(|c| c.is_whitespace()) {
            self.pos += c.len_utf8();
        }
    }

    fn selectors(&mut self) -> Result<Vec<Selector>, FilterError> {
        let mut all = vec![self.selector()?];
        loop {
            self.skip_space();
            match self.peek() {
                None => return Ok(all),
                Some(',') => {
                    self.pos += 1;
                    all.push(self.selector()?);
                }
                Some(c) => return Err(self.err(self.pos, format!("unexpected input: {c}"))),
            }
        }
    }

    fn selector(&mut self) -> Result<Selector, FilterError> {
        let mut path = vec![self.field()?];
        loop {
            self.skip_space();
            if self.peek() == Some('.') {
                self.pos += 1;
                path.push(self.field()?);
            } else {
                break;
            }
        }
        self.skip_space();
        let op_start = self.pos;
        let op: String = self.input[self.pos..]
            .chars()
            .take_while(|c| matches!(c, '=' | '!' | '~'))
            .collect();
        if op.is_empty() {
            return match self.peek() {
                None | Some(',') => Ok(Selector { path, op: Op::Present }),
                Some(c) => Err(self.err(
                    self.pos,
                    format!("expected an operator (\"==\"|\"!=\"|\"~=\"), found {c}"),
                )),
            };
        }
        self.pos += op.len();
        let regex = op == "~=";
        let value = self.value(regex)?;
        let op = match op.as_str() {
            "==" => Op::Equal(value),
            "!=" => Op::NotEqual(value),
            "~=" => Op::Matches(regex::Regex::new(&value).map_err(|e| self.err(op_start, e))?),
            other => return Err(self.err(op_start, format!("unsupported operator {other:?}"))),
        };
        Ok(Selector { path, op })
    }

    fn field(&mut self) -> Result<String, FilterError> {
        self.skip_space();
        let start = self.pos;
        match self.peek() {
            Some('"') => self.quoted('"'),
            Some(c) if c == '_' || c.is_ascii_alphanumeric() => {
                let len = self.input[start..]
                    .find(|c: char| !(c == '_' || c.is_ascii_alphanumeric()))
                    .unwrap_or(self.input.len() - start);
                self.pos += len;
                Ok(self.input[start..self.pos].to_string())
            }
            _ => Err(self.err(start, "expected field or quoted")),
        }
    }

    fn value(&mut self, alt_quotes: bool) -> Result<String, FilterError> {
        self.skip_space();
        let start = self.pos;
        match self.peek() {
            Some('"') => self.quoted('"'),
            Some(q @ ('/' | '|')) if alt_quotes => self.quoted(q),
            Some(q @ ('/' | '|')) => Err(self.err(start, format!("invalid quote {q} (only for ~=)"))),
            Some(c) if c != ',' && !c.is_whitespace() && !c.is_control() => {
                let len = self.input[start..]
                    .find(|c: char| c == ',' || c.is_whitespace() || c.is_control())
                    .unwrap_or(self.input.len() - start);
                self.pos += len;
                Ok(self.input[start..self.pos].to_string())
            }
            _ => Err(self.err(start, "expected value or quoted")),
        }
    }

    /// A quoted string in Go's syntax (with `quote` as the delimiter), unescaped.
    fn quoted(&mut self, quote: char) -> Result<String, FilterError> {
        let start = self.pos;
        self.pos += 1;
        let mut out = String::new();
        loop {
            let c = self
                .peek()
                .ok_or_else(|| self.err(start, "quoted literal not terminated"))?;
            self.pos += c.len_utf8();
            if c == quote {
                return Ok(out);
            }
            if c == '\n' {
                return Err(self.err(start, "quoted literal not terminated"));
            }
            if c != '\\' {
                out.push(c);
                continue;
            }
            let e = self
                .peek()
                .ok_or_else(|| self.err(start, "quoted literal not terminated"))?;
            self.pos += e.len_utf8();
            let simple = match e {
                'a' => Some('\x07'),
                'b' => Some('\x08'),
                'f' => Some('\x0c'),
                'n' => Some('\n'),
                'r' => Some('\r'),
                't' => Some('\t'),
                'v' => Some('\x0b'),
                '\\' => Some('\\'),
                c if c == quote => Some(c),
                _ => None,
            };
            if let Some(s) = simple {
                out.push(s);
                continue;
            }
            let (digits, radix) = match e {
                '0'..='7' => {
                    self.pos -= 1;
                    (3, 8)
                }
                'x' => (2, 16),
                'u' => (4, 16),
                'U' => (8, 16),
                _ => return Err(self.err(self.pos - 1, "illegal escape sequence")),
            };
            let text = self.input.get(self.pos..self.pos + digits).unwrap_or("");
            let code = u32::from_str_radix(text, radix)
                .ok()
                .filter(|_| text.len() == digits)
                .and_then(char::from_u32)
                .ok_or_else(|| self.err(self.pos, "illegal numeric escape sequence"))?;
            self.pos += digits;
            out.push(code);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn obj<'a>(fields: &'a HashMap<&'a str, &'a str>) -> impl Fn(&[String]) -> Option<&'a str> {
        move |path: &[String]| fields.get(path.join(".").as_str()).copied()
    }

    fn matches(filters: &[&str], fields: &[(&str, &str)]) -> bool {
        let f = Filters::parse_all(filters).unwrap();
        let map: HashMap<&str, &str> = fields.iter().copied().collect();
        f.matches(obj(&map))
    }

    #[test]
    fn reads_containerds_remote_snapshot_lookup() {
        let chain = "sha256:1fb4b9e0b4fd0f79ab3d6c3b0b6b2a7e4b3d9e3e0b1c2d3e4f5a6b7c8d9e0f1a";
        let filter = format!(r#"labels."containerd.io/snapshot.ref"=={chain},parent=="sha256:abc""#);
        let fields = [("labels.containerd.io/snapshot.ref", chain), ("parent", "sha256:abc")];
        assert!(matches(&[&filter], &fields));
        let other = [("labels.containerd.io/snapshot.ref", chain), ("parent", "k8s.io/3/x")];
        assert!(!matches(&[&filter], &other));
        let empty_parent = format!(r#"labels."containerd.io/snapshot.ref"=={chain},parent=="""#);
        assert!(matches(
            &[&empty_parent],
            &[("labels.containerd.io/snapshot.ref", chain), ("parent", "")]
        ));
    }

    #[test]
    fn operators_presence_and_alternatives() {
        let f = [("kind", "committed"), ("name", "a.b"), ("labels.x", "1")];
        assert!(matches(&["kind==committed"], &f));
        assert!(matches(&["kind!=active"], &f));
        assert!(matches(&["labels.x"], &f));
        assert!(!matches(&["labels.y"], &f));
        assert!(matches(&["labels.y!=2"], &f), "absent is not equal");
        assert!(matches(&["name==a.b"], &f), "unquoted values may hold dots");
        assert!(matches(&["name~=^a\\."], &f));
        assert!(matches(&["name~=/^a[.]b$/"], &f));
        assert!(
            matches(&["kind==active", "kind==committed"], &f),
            "alternatives are OR-ed"
        );
        assert!(!matches(&["kind==committed,labels.x==2"], &f), "selectors are AND-ed");
        assert!(
            matches(&[" kind == committed , labels.x == 1 "], &f),
            "spaces are allowed"
        );
        assert!(matches(&[], &f));
        assert!(matches(&[""], &f));
    }

    #[test]
    fn quoted_strings_follow_go() {
        assert!(matches(&[r#"name=="a\"b\x41\u00e9\101""#], &[("name", "a\"bAéA")]));
        assert!(matches(&[r#""name"==x"#], &[("name", "x")]));
    }

    #[test]
    fn bad_filters_are_errors() {
        for bad in [
            "kind==",
            "==x",
            "kind=x",
            "kind==a b",
            r#"name=="x"#,
            "name==/x/",
            "name~=(",
            "a..b",
        ] {
            assert!(Filters::parse_all(&[bad]).is_err(), "{bad:?} should not parse");
        }
    }
}
