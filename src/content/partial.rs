//! What survives of an interrupted download: which byte ranges of a blob were written to its ingest file.
//!
//! A resumable ingest is `ingest/<hex>.partial` (the blob's bytes at their offsets, holes where nothing came
//! yet) beside `ingest/<hex>.ranges`, this module's record of the ranges written:
//!
//! ```text
//! imaged-partial 1 <blob size>
//! <start> <end>          one line per written range, end exclusive, sorted, not overlapping
//! ```
//!
//! The record is replaced atomically (write a temporary file, rename) and only after the bytes it lists
//! were written, so after a crash of the daemon it never claims bytes the file lacks. It is not synced: a
//! power loss may leave it claiming bytes the disk lost, which the digest check at commit catches (the
//! download then starts over). Nothing in a partial is trusted: every byte is hashed again on the way to
//! the commit.

use std::fs;
use std::io;
use std::path::Path;

/// A set of byte ranges `[start, end)`, kept sorted and merged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeSet {
    ranges: Vec<(u64, u64)>,
}

impl RangeSet {
    /// The empty set.
    pub fn new() -> RangeSet {
        RangeSet::default()
    }

    /// Adds `[start, end)`, merging it with the ranges it touches.
    pub fn insert(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        let (mut s, mut e) = (start, end);
        let mut out = Vec::with_capacity(self.ranges.len() + 1);
        let mut placed = false;
        for &(a, b) in &self.ranges {
            if b < s {
                out.push((a, b));
            } else if a > e {
                if !placed {
                    out.push((s, e));
                    placed = true;
                }
                out.push((a, b));
            } else {
                s = s.min(a);
                e = e.max(b);
            }
        }
        if !placed {
            out.push((s, e));
        }
        self.ranges = out;
    }

    /// The length of the range that starts at 0 (0 if none does).
    pub fn prefix(&self) -> u64 {
        match self.ranges.first() {
            Some(&(0, end)) => end,
            _ => 0,
        }
    }

    /// Whether every byte of `[start, end)` is in the set.
    pub fn covers(&self, start: u64, end: u64) -> bool {
        start >= end || self.ranges.iter().any(|&(a, b)| a <= start && end <= b)
    }

    /// The first byte at or after `from` that is not in the set.
    pub fn next_missing(&self, from: u64) -> u64 {
        let mut at = from;
        for &(a, b) in &self.ranges {
            if a <= at && at < b {
                at = b;
            }
        }
        at
    }

    /// Bytes in the set.
    pub fn total(&self) -> u64 {
        self.ranges.iter().map(|(a, b)| b - a).sum()
    }

    /// The ranges, sorted.
    pub fn ranges(&self) -> &[(u64, u64)] {
        &self.ranges
    }
}

/// The first line of a ranges record.
const MAGIC: &str = "imaged-partial 1";

/// Writes the record of `written` for a blob of `size` bytes to `path`, atomically.
pub(super) fn save(path: &Path, size: u64, written: &RangeSet) -> io::Result<()> {
    let mut text = format!("{MAGIC} {size}\n");
    for (a, b) in written.ranges() {
        text.push_str(&format!("{a} {b}\n"));
    }
    let tmp = path.with_extension("ranges-tmp");
    fs::write(&tmp, text)?;
    fs::rename(&tmp, path)
}

/// Reads the record at `path` for a blob of `size` bytes; `None` if it is missing, malformed, for another
/// size, or claims bytes past the end.
pub(super) fn load(path: &Path, size: u64) -> Option<RangeSet> {
    read(path).filter(|(s, _)| *s == size).map(|(_, set)| set)
}

/// Reads the record at `path`: the blob's size and the ranges written; `None` if it is missing,
/// malformed, or claims bytes past the end.
pub fn read(path: &Path) -> Option<(u64, RangeSet)> {
    let text = fs::read_to_string(path).ok()?;
    let mut lines = text.lines();
    let head = lines.next()?;
    let size = head.strip_prefix(MAGIC)?.trim().parse::<u64>().ok()?;
    let mut set = RangeSet::new();
    for line in lines {
        let (a, b) = line.split_once(' ')?;
        let (a, b): (u64, u64) = (a.parse().ok()?, b.parse().ok()?);
        if a >= b || b > size {
            return None;
        }
        set.insert(a, b);
    }
    Some((size, set))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_merge_and_report_the_prefix_and_the_gaps() {
        let mut s = RangeSet::new();
        s.insert(10, 20);
        s.insert(30, 40);
        assert_eq!(s.prefix(), 0);
        assert_eq!(s.next_missing(0), 0);
        assert_eq!(s.next_missing(12), 20);
        s.insert(0, 10);
        assert_eq!(s.prefix(), 20);
        s.insert(20, 30);
        assert_eq!(s.ranges(), &[(0, 40)]);
        s.insert(45, 50);
        s.insert(38, 46);
        assert_eq!(s.ranges(), &[(0, 50)]);
        assert!(s.covers(5, 50) && !s.covers(5, 51));
        assert_eq!(s.total(), 50);
    }

    #[test]
    fn a_record_round_trips_and_a_bad_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.ranges");
        let mut s = RangeSet::new();
        s.insert(0, 8);
        s.insert(16, 24);
        save(&path, 100, &s).unwrap();
        assert_eq!(load(&path, 100), Some(s));
        assert_eq!(load(&path, 99), None, "another size");
        fs::write(&path, format!("{MAGIC} 10\n0 11\n")).unwrap();
        assert_eq!(load(&path, 10), None, "past the end");
        fs::write(&path, "something else\n").unwrap();
        assert_eq!(load(&path, 10), None);
    }
}
