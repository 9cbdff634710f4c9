//! Pure formatting shared by the client subcommands: sizes, ids, tables, and the protobuf-style JSON
//! (camelCase keys, 64-bit integers as strings, default values included) that `crictl -o json` prints.

use std::io::Write;

use serde_json::{Value, json};

use crate::proto::runtime::v1 as cri;

/// What `crictl` shows where a tag or repository is missing.
pub const NONE: &str = "<none>";

/// Hex characters of an image id shown in tables, as `crictl` and `docker` do.
const SHORT_ID_LEN: usize = 13;
/// Minimum column width and the gap after each column: `crictl`'s tabwriter settings.
const MIN_COLUMN_WIDTH: usize = 20;
const COLUMN_GAP: usize = 3;

/// `bytes` in decimal units with three significant digits, like `crictl`'s
/// `units.HumanSizeWithPrecision(size, 3)`: `1.24MB`, `999B`, `12kB`. Where Go would print `1e+03kB`
/// (a value that rounds up to 1000), this moves to the next unit: `1MB`.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    let mut unit = 0;
    #[allow(clippy::cast_precision_loss)] // three significant digits are shown
    let mut value = bytes as f64;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    let mut text = three_significant_digits(value);
    if text == "1000" && unit < UNITS.len() - 1 {
        text = "1".to_string();
        unit += 1;
    }
    format!("{text}{}", UNITS[unit])
}

/// `value` (in `[0, 1000)`) like Go's `%.3g`: at most three significant digits, no trailing zeros.
fn three_significant_digits(value: f64) -> String {
    let decimals = if value < 10.0 {
        2
    } else if value < 100.0 {
        1
    } else {
        0
    };
    let text = format!("{value:.decimals$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

/// The first 13 hex characters of an image id, without its `sha256:` (or other algorithm) prefix.
pub fn short_id(id: &str) -> String {
    let hex = id.split_once(':').map_or(id, |(_, hex)| hex);
    hex.chars().take(SHORT_ID_LEN).collect()
}

/// `repo:tag` split at the tag's colon (not a registry port's); no tag gives [`NONE`].
pub fn split_repo_tag(repo_tag: &str) -> (&str, &str) {
    let name_start = repo_tag.rfind('/').map_or(0, |i| i + 1);
    match repo_tag[name_start..].rfind(':') {
        Some(i) => (&repo_tag[..name_start + i], &repo_tag[name_start + i + 1..]),
        None => (repo_tag, NONE),
    }
}

/// The table rows of one image, `[IMAGE, TAG, IMAGE ID, SIZE]`: one per tag; an untagged image gets
/// one row with tag [`NONE`] and the repository of its first repo digest.
pub fn image_rows(image: &cri::Image) -> Vec<Vec<String>> {
    let id = short_id(&image.id);
    let size = human_size(image.size);
    let row = |repo: &str, tag: &str| vec![repo.to_string(), tag.to_string(), id.clone(), size.clone()];
    if image.repo_tags.is_empty() {
        let repo = image
            .repo_digests
            .first()
            .and_then(|d| d.split_once('@'))
            .map_or(NONE, |(repo, _)| repo);
        return vec![row(repo, NONE)];
    }
    image
        .repo_tags
        .iter()
        .map(|t| {
            let (repo, tag) = split_repo_tag(t);
            row(repo, tag)
        })
        .collect()
}

/// Sorts images as `crictl images` does, by first tag, then first digest, then id; tagged images come
/// first. (crictl's comparison is not a total order; this one is, as Rust's sort requires.)
pub fn sort_images(images: &mut [cri::Image]) {
    images.sort_by(|a, b| {
        let key = |i: &cri::Image| {
            (
                i.repo_tags.is_empty(),
                i.repo_tags.first().cloned(),
                i.repo_digests.is_empty(),
                i.repo_digests.first().cloned(),
            )
        };
        key(a).cmp(&key(b)).then_with(|| a.id.cmp(&b.id))
    });
}

/// A table with a header row, printed with aligned columns.
#[derive(Debug)]
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with just the header row.
    pub fn new(header: &[&str]) -> Self {
        Self {
            rows: vec![header.iter().map(|h| h.to_string()).collect()],
        }
    }

    /// Appends a row (as many cells as the header).
    pub fn push(&mut self, row: Vec<String>) {
        self.rows.push(row);
    }

    /// The table as text: each column but the last padded to its widest cell plus a gap, and to at least
    /// `crictl`'s 20 characters; no trailing spaces.
    pub fn render(&self) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|c| {
                let widest = self
                    .rows
                    .iter()
                    .filter_map(|r| r.get(c))
                    .map(|s| s.chars().count())
                    .max();
                (widest.unwrap_or(0) + COLUMN_GAP).max(MIN_COLUMN_WIDTH)
            })
            .collect();
        let mut text = String::new();
        for row in &self.rows {
            let mut line = String::new();
            for (cell, width) in row.iter().zip(&widths) {
                line.push_str(cell);
                line.extend(std::iter::repeat_n(' ', width.saturating_sub(cell.chars().count())));
            }
            text.push_str(line.trim_end());
            text.push('\n');
        }
        text
    }
}

/// An `Image` as protobuf JSON, the way `crictl` prints it.
pub fn image_json(image: &cri::Image) -> Value {
    let mut value = json!({
        "id": image.id,
        "repoTags": image.repo_tags,
        "repoDigests": image.repo_digests,
        "size": image.size.to_string(),
        "username": image.username,
        "pinned": image.pinned,
    });
    if let Some(uid) = &image.uid {
        value["uid"] = json!({ "value": uid.value.to_string() });
    }
    if let Some(spec) = &image.spec {
        value["spec"] = json!({
            "image": spec.image,
            "annotations": spec.annotations,
            "userSpecifiedImage": spec.user_specified_image,
            "runtimeHandler": spec.runtime_handler,
            "imageRef": spec.image_ref,
        });
    }
    value
}

/// Nanoseconds since the Unix epoch as an RFC 3339 UTC time to the second, e.g. `2023-11-14T22:13:20Z`.
pub fn timestamp(nanos: i64) -> String {
    let secs = nanos.div_euclid(1_000_000_000);
    let (days, second_of_day) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    let (h, m, s) = (second_of_day / 3600, second_of_day / 60 % 60, second_of_day % 60);
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}Z")
}

/// The proleptic Gregorian date of `days` since 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Writes `value` pretty-printed (two-space indent, as `crictl`) with a final newline.
pub fn write_json(out: &mut (dyn Write + Send), value: &Value) -> std::io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, value)?;
    writeln!(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_size_matches_crictl() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(1000), "1kB");
        assert_eq!(human_size(1500), "1.5kB");
        assert_eq!(human_size(1_240_000), "1.24MB");
        assert_eq!(human_size(12_345_678), "12.3MB");
        assert_eq!(human_size(123_456_789), "123MB");
        assert_eq!(human_size(5_000_000_000), "5GB");
        assert_eq!(human_size(u64::MAX), "18.4EB");
    }

    #[test]
    fn human_size_carries_rounding_into_the_next_digit_or_unit() {
        assert_eq!(human_size(9_996), "10kB");
        assert_eq!(human_size(99_960), "100kB");
        assert_eq!(human_size(999_999), "1MB");
    }

    #[test]
    fn short_id_drops_the_algorithm_and_keeps_13_hex_chars() {
        assert_eq!(short_id("sha256:0123456789abcdef0123"), "0123456789abc");
        assert_eq!(short_id("0123456789abcdef"), "0123456789abc");
        assert_eq!(short_id("sha256:abc"), "abc");
    }

    #[test]
    fn repo_tag_split_ignores_the_registry_port() {
        assert_eq!(
            split_repo_tag("docker.io/library/busybox:1.36"),
            ("docker.io/library/busybox", "1.36")
        );
        assert_eq!(split_repo_tag("localhost:5000/app:v1"), ("localhost:5000/app", "v1"));
        assert_eq!(split_repo_tag("localhost:5000/app"), ("localhost:5000/app", NONE));
    }

    fn image(tags: &[&str], digests: &[&str]) -> cri::Image {
        cri::Image {
            id: "sha256:aaaaaaaaaaaaaaaaaaaaaaaa".into(),
            repo_tags: tags.iter().map(|s| s.to_string()).collect(),
            repo_digests: digests.iter().map(|s| s.to_string()).collect(),
            size: 1_240_000,
            ..Default::default()
        }
    }

    #[test]
    fn one_row_per_tag() {
        let rows = image_rows(&image(&["a/b:1", "a/b:2"], &["a/b@sha256:cc"]));
        assert_eq!(
            rows,
            vec![
                vec!["a/b", "1", "aaaaaaaaaaaaa", "1.24MB"],
                vec!["a/b", "2", "aaaaaaaaaaaaa", "1.24MB"]
            ]
        );
    }

    #[test]
    fn untagged_image_shows_none_and_the_digest_repository() {
        let rows = image_rows(&image(&[], &["docker.io/library/busybox@sha256:cc"]));
        assert_eq!(
            rows,
            vec![vec!["docker.io/library/busybox", NONE, "aaaaaaaaaaaaa", "1.24MB"]]
        );
        let rows = image_rows(&image(&[], &[]));
        assert_eq!(rows[0][..2], [NONE, NONE]);
    }

    #[test]
    fn sort_puts_tagged_images_first_by_tag() {
        let mut images = vec![image(&[], &["z@sha256:1"]), image(&["b:1"], &[]), image(&["a:1"], &[])];
        sort_images(&mut images);
        let firsts: Vec<_> = images
            .iter()
            .map(|i| i.repo_tags.first().or(i.repo_digests.first()).cloned())
            .collect();
        assert_eq!(
            firsts,
            [Some("a:1".into()), Some("b:1".into()), Some("z@sha256:1".into())]
        );
    }

    #[test]
    fn table_aligns_columns_with_crictl_widths() {
        let mut t = Table::new(&["IMAGE", "TAG"]);
        t.push(vec!["registry.example.com/some/long/name".into(), "v1".into()]);
        let expected = format!(
            "IMAGE{}TAG\nregistry.example.com/some/long/name   v1\n",
            " ".repeat("registry.example.com/some/long/name".len() + 3 - "IMAGE".len())
        );
        assert_eq!(t.render(), expected);
        let mut short = Table::new(&["A", "B"]);
        short.push(vec!["x".into(), String::new()]);
        assert_eq!(short.render(), format!("A{}B\nx\n", " ".repeat(19)));
    }

    #[test]
    fn image_json_uses_protobuf_json_names() {
        let mut i = image(&["a:1"], &[]);
        i.uid = Some(cri::Int64Value { value: 0 });
        let v = image_json(&i);
        assert_eq!(v["repoTags"], json!(["a:1"]));
        assert_eq!(v["size"], json!("1240000"));
        assert_eq!(v["uid"], json!({"value": "0"}));
        assert!(v.get("spec").is_none());
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(timestamp(0), "1970-01-01T00:00:00Z");
        assert_eq!(timestamp(1_700_000_000_123_456_789), "2023-11-14T22:13:20Z");
        assert_eq!(timestamp(951_782_400 * 1_000_000_000), "2000-02-29T00:00:00Z");
        assert_eq!(timestamp(-1_000_000_000), "1969-12-31T23:59:59Z");
    }
}
