//! Durations as written in configuration files and flags: `90s`, `2m`, `1h30m`, `500ms`, `0`.
//!
//! The syntax is the subset of Go's `time.ParseDuration` that kubelet-style settings use: one or more decimal
//! numbers, each with an optional fraction and a unit (`h`, `m`, `s` or `ms`), such as `1h30m` or `1.5s`. A bare
//! `0` needs no unit. Signs are rejected: a negative age or timeout means nothing here. [`format`] writes the
//! shortest such form (`90s` becomes `1m30s`), which [`parse`] reads back to the same value.
//!
//! In config structs, use [`ConfigDuration`] or [`serde_opt`]:
//!
//! ```
//! use std::time::Duration;
//! use imaged::duration::{ConfigDuration, serde_opt};
//!
//! #[derive(serde::Deserialize)]
//! #[serde(deny_unknown_fields)]
//! struct Gc {
//!     min_age: Option<ConfigDuration>,
//!     #[serde(default, with = "serde_opt")]
//!     max_age: Option<Duration>,
//! }
//!
//! let gc: Gc = toml::from_str("min_age = \"2m\"\nmax_age = \"1h30m\"").unwrap();
//! assert_eq!(gc.min_age, Some(ConfigDuration(Duration::from_secs(120))));
//! assert_eq!(gc.max_age, Some(Duration::from_secs(5400)));
//! ```

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Classify, ErrorKind};

const NS_PER_MS: u128 = 1_000_000;
const NS_PER_S: u128 = 1_000 * NS_PER_MS;
const NS_PER_M: u128 = 60 * NS_PER_S;
const NS_PER_H: u128 = 60 * NS_PER_M;

/// Why a string is not a duration; every message names the input.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DurationError {
    /// The string is empty.
    #[error("invalid duration \"\": empty (write e.g. \"90s\", \"2m\" or \"1h30m\")")]
    Empty,
    /// The string starts with a sign.
    #[error("invalid duration {0:?}: negative durations are not allowed")]
    Negative(String),
    /// Something other than a number stands where a number must.
    #[error("invalid duration {input:?}: expected a number at {rest:?}")]
    ExpectedNumber {
        /// The whole input.
        input: String,
        /// The part of the input from where the number was expected.
        rest: String,
    },
    /// A number has no unit after it (only a bare `0` may omit it).
    #[error("invalid duration {0:?}: missing unit (use ms, s, m or h)")]
    MissingUnit(String),
    /// A unit other than `ms`, `s`, `m` or `h`.
    #[error("invalid duration {input:?}: unknown unit {unit:?} (use ms, s, m or h)")]
    UnknownUnit {
        /// The whole input.
        input: String,
        /// The unit as written.
        unit: String,
    },
    /// The duration exceeds 2^64 nanoseconds (about 584 years).
    #[error("invalid duration {0:?}: too large")]
    TooLarge(String),
}

impl Classify for DurationError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::InvalidArgument
    }
}

/// Parses a duration such as `90s`, `2m`, `1h30m`, `1.5s`, `500ms`, `0` or `0s`.
pub fn parse(s: &str) -> Result<Duration, DurationError> {
    if s.is_empty() {
        return Err(DurationError::Empty);
    }
    if s.starts_with('-') {
        return Err(DurationError::Negative(s.to_string()));
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let too_large = || DurationError::TooLarge(s.to_string());
    let mut total: u128 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let (int_digits, after) = split_digits(rest);
        let (frac_digits, after) = match after.strip_prefix('.') {
            Some(after_dot) => split_digits(after_dot),
            None => ("", after),
        };
        if int_digits.is_empty() && frac_digits.is_empty() {
            return Err(DurationError::ExpectedNumber {
                input: s.to_string(),
                rest: rest.to_string(),
            });
        }
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let unit_ns = match unit {
            "h" => NS_PER_H,
            "m" => NS_PER_M,
            "s" => NS_PER_S,
            "ms" => NS_PER_MS,
            "" => return Err(DurationError::MissingUnit(s.to_string())),
            _ => {
                return Err(DurationError::UnknownUnit {
                    input: s.to_string(),
                    unit: unit.to_string(),
                });
            }
        };
        // 25 digits times the largest unit still fits in a u128; anything longer is too large anyway.
        if int_digits.len() > 25 {
            return Err(too_large());
        }
        let int: u128 = if int_digits.is_empty() {
            0
        } else {
            int_digits.parse().map_err(|_| too_large())?
        };
        // Digits past the 18th are below a nanosecond for every unit: ignore them, as Go does.
        let frac_digits = &frac_digits[..frac_digits.len().min(18)];
        let frac_ns = if frac_digits.is_empty() {
            0
        } else {
            let frac: u128 = frac_digits.parse().map_err(|_| too_large())?;
            frac * unit_ns / 10u128.pow(frac_digits.len() as u32)
        };
        total = total.saturating_add(int * unit_ns + frac_ns);
        rest = after;
    }
    let nanos = u64::try_from(total).map_err(|_| too_large())?;
    Ok(Duration::from_nanos(nanos))
}

/// Splits `s` after its leading ASCII digits.
fn split_digits(s: &str) -> (&str, &str) {
    s.split_at(s.bytes().take_while(u8::is_ascii_digit).count())
}

/// Writes `d` in the shortest form [`parse`] reads back: `2m`, `1h30m`, `1m30s`, `1s500ms`, `0s`; parts of a
/// millisecond become a fraction of the last unit (`1.5ms`).
pub fn format(d: Duration) -> String {
    if d.is_zero() {
        return "0s".to_string();
    }
    let mut ns = d.as_nanos();
    let mut out = String::new();
    for (unit, unit_ns) in [("h", NS_PER_H), ("m", NS_PER_M), ("s", NS_PER_S)] {
        if ns >= unit_ns {
            out.push_str(&(ns / unit_ns).to_string());
            out.push_str(unit);
            ns %= unit_ns;
        }
    }
    if ns > 0 {
        let (ms, sub_ms) = (ns / NS_PER_MS, ns % NS_PER_MS);
        out.push_str(&ms.to_string());
        if sub_ms > 0 {
            let frac = std::format!("{sub_ms:06}");
            out.push('.');
            out.push_str(frac.trim_end_matches('0'));
        }
        out.push_str("ms");
    }
    out
}

/// A duration in a config file, read from and written as its string form (`"2m"`, `"1h30m"`).
///
/// Use `Option<ConfigDuration>` for an optional setting; [`Duration`] is in field `.0`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConfigDuration(pub Duration);

impl From<ConfigDuration> for Duration {
    fn from(d: ConfigDuration) -> Duration {
        d.0
    }
}

impl From<Duration> for ConfigDuration {
    fn from(d: Duration) -> ConfigDuration {
        ConfigDuration(d)
    }
}

impl FromStr for ConfigDuration {
    type Err = DurationError;

    fn from_str(s: &str) -> Result<ConfigDuration, DurationError> {
        parse(s).map(ConfigDuration)
    }
}

impl fmt::Display for ConfigDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format(self.0))
    }
}

impl<'de> Deserialize<'de> for ConfigDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ConfigDuration, D::Error> {
        struct Visitor;

        impl serde::de::Visitor<'_> for Visitor {
            type Value = ConfigDuration;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration string such as \"90s\", \"2m\" or \"1h30m\"")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ConfigDuration, E> {
                parse(v).map(ConfigDuration).map_err(E::custom)
            }
        }

        d.deserialize_str(Visitor)
    }
}

impl Serialize for ConfigDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(self.0))
    }
}

/// `#[serde(default, with = "crate::duration::serde_opt")]` for an `Option<Duration>` field (`default` makes an
/// absent key `None`).
pub mod serde_opt {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    use super::ConfigDuration;

    /// Reads an optional duration string.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<ConfigDuration>::deserialize(d)?.map(|c| c.0))
    }

    /// Writes an optional duration as its string form.
    pub fn serialize<S: Serializer>(value: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(d) => s.serialize_some(&ConfigDuration(*d)),
            None => s.serialize_none(),
        }
    }
}

#[cfg(test)]
#[path = "duration_tests.rs"]
mod tests;
