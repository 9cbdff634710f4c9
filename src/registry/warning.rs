//! A registry's `Warning` headers (RFC 7234 section 5.5: `299 - "text"`), as distribution and Harbor send
//! them for deprecations and coming rate limits, so an operator sees them before they become failures.
//!
//! Every warning is counted (`imaged_registry_warnings_total`); each distinct text from a host is logged at
//! warn level once per [`LOG_EVERY`]. A registry sends its warning with every response of a kind (Harbor
//! with every manifest and blob), so logging each would write a line per layer of every pull and bury the
//! pull's own log; once an hour per host and text keeps it visible without that, and the counter says how
//! often it came.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often the same warning of the same host is logged again.
pub const LOG_EVERY: Duration = Duration::from_secs(3600);
/// The most (host, text) pairs remembered; past it the memory starts over (a registry inventing texts
/// gets a line per text, never unbounded memory).
const REMEMBERED: usize = 1024;
/// The most characters of a warning's text logged.
const MAX_TEXT: usize = 500;

/// One warning of a `Warning` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// The three-digit code (299: a persistent warning, what registries send).
    pub code: u16,
    /// The agent that added it (`-` when unnamed).
    pub agent: String,
    /// The text, unquoted.
    pub text: String,
}

/// The warnings of one `Warning` header value: `code agent "text" ["date"]`, comma-separated. A value that
/// does not follow the grammar is one warning with the whole value as its text (code 0), so it is still
/// shown.
pub fn parse_warnings(value: &str) -> Vec<Warning> {
    let mut out = Vec::new();
    let mut rest = value.trim();
    while !rest.is_empty() {
        match parse_one(rest) {
            Some((w, tail)) => {
                out.push(w);
                rest = tail.trim_start();
                match rest.strip_prefix(',') {
                    Some(t) => rest = t.trim_start(),
                    None if rest.is_empty() => {}
                    None => return malformed(value),
                }
            }
            None => return malformed(value),
        }
    }
    out
}

fn malformed(value: &str) -> Vec<Warning> {
    vec![Warning {
        code: 0,
        agent: "-".into(),
        text: value.trim().to_string(),
    }]
}

/// One `code SP agent SP quoted-text [SP quoted-date]` at the start of `s`, and what follows it.
fn parse_one(s: &str) -> Option<(Warning, &str)> {
    let (code, s) = s.split_once(' ')?;
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (agent, s) = s.trim_start().split_once(' ')?;
    let (text, mut s) = quoted(s.trim_start())?;
    // An optional warn-date, quoted.
    if let Some(after) = s.strip_prefix(' ')
        && after.trim_start().starts_with('"')
    {
        s = quoted(after.trim_start())?.1;
    }
    Some((
        Warning {
            code: code.parse().ok()?,
            agent: agent.to_string(),
            text,
        },
        s,
    ))
}

/// A quoted-string at the start of `s` (backslash escapes undone), and what follows it.
fn quoted(s: &str) -> Option<(String, &str)> {
    let mut chars = s.strip_prefix('"')?.char_indices();
    let mut text = String::new();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((text, &s[i + 2..])),
            '\\' => text.push(chars.next()?.1),
            c => text.push(c),
        }
    }
    None
}

/// Which warnings were logged, and when: the once-per-[`LOG_EVERY`] memory.
#[derive(Debug, Default)]
pub(super) struct Warnings {
    logged: Mutex<HashMap<(String, String), Instant>>,
}

impl Warnings {
    /// Whether `text` from `host` should be logged now (not logged within [`LOG_EVERY`]); notes it if so.
    pub(super) fn should_log(&self, host: &str, text: &str, now: Instant) -> bool {
        let mut logged = self.logged.lock().unwrap_or_else(|p| p.into_inner());
        let key = (host.to_string(), text.to_string());
        if logged
            .get(&key)
            .is_some_and(|at| now.saturating_duration_since(*at) < LOG_EVERY)
        {
            return false;
        }
        if logged.len() >= REMEMBERED {
            logged.clear();
        }
        logged.insert(key, now);
        true
    }

    /// Logs (as [`Warnings::should_log`] says) the warnings of `headers`, a response of `host` to a request
    /// for `what`; returns how many there were.
    pub(super) fn note(&self, host: &str, what: &str, headers: &reqwest::header::HeaderMap) -> u64 {
        let mut count = 0;
        let values = headers.get_all(reqwest::header::WARNING);
        for w in values
            .iter()
            .flat_map(|v| parse_warnings(&String::from_utf8_lossy(v.as_bytes())))
        {
            count += 1;
            let text: String = w.text.chars().take(MAX_TEXT).collect();
            if self.should_log(host, &text, Instant::now()) {
                tracing::warn!(
                    host,
                    code = w.code,
                    agent = %w.agent,
                    request = what,
                    "the registry warns: {text} (logged once an hour per host and text)"
                );
            }
        }
        count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(code: u16, agent: &str, text: &str) -> Warning {
        Warning {
            code,
            agent: agent.into(),
            text: text.into(),
        }
    }

    #[test]
    fn warnings_follow_rfc_7234() {
        assert_eq!(
            parse_warnings(r#"299 - "this registry is deprecated""#),
            [w(299, "-", "this registry is deprecated")]
        );
        assert_eq!(
            parse_warnings(r#"299 harbor "a \"quoted\" word", 199 - "b" "Wed, 21 Oct 2015 07:28:00 GMT""#),
            [w(299, "harbor", r#"a "quoted" word"#), w(199, "-", "b")]
        );
        assert_eq!(
            parse_warnings(r#"299 - "with, a comma", 299 - "x""#),
            [w(299, "-", "with, a comma"), w(299, "-", "x")]
        );
        assert!(parse_warnings("  ").is_empty());
        for bad in [
            "deprecated",
            r#"29 - "x""#,
            r#"299 - "unterminated"#,
            r#"299 - "x" junk"#,
        ] {
            assert_eq!(parse_warnings(bad), [w(0, "-", bad)], "{bad:?} is shown as it came");
        }
    }

    #[test]
    fn a_warning_is_logged_once_per_period_per_host_and_text() {
        let warnings = Warnings::default();
        let t0 = Instant::now();
        assert!(warnings.should_log("http://a", "x", t0));
        assert!(!warnings.should_log("http://a", "x", t0 + Duration::from_secs(60)));
        assert!(warnings.should_log("http://a", "y", t0), "another text");
        assert!(warnings.should_log("http://b", "x", t0), "another host");
        assert!(warnings.should_log("http://a", "x", t0 + LOG_EVERY));
    }

    #[test]
    fn every_warning_of_a_response_is_counted() {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.append(reqwest::header::WARNING, r#"299 - "one", 299 - "two""#.parse().unwrap());
        headers.append(reqwest::header::WARNING, r#"299 - "one""#.parse().unwrap());
        let warnings = Warnings::default();
        assert_eq!(warnings.note("http://a", "manifest a:1", &headers), 3);
        assert_eq!(
            warnings.note("http://a", "manifest a:1", &reqwest::header::HeaderMap::new()),
            0
        );
    }
}
