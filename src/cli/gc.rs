//! `imaged gc [--dry-run]`: imaged's GarbageCollect, the disk-threshold image GC run now. imaged only.

use std::fmt::Write as _;
use std::io::Write;

use serde_json::{Value, json};

use super::output::{self, NONE, Table, human_size, short_id};
use super::{CliError, Common, OutputFormat};
use crate::proto::imaged::v1::{GarbageCollectRequest, GarbageCollectResponse, RemovedImage};

/// Runs the image GC (or plans it, with `dry_run`) and prints what it removed.
pub async fn run(common: &Common, dry_run: bool, out: &mut (dyn Write + Send)) -> Result<(), CliError> {
    let mut client = super::imaged_client(super::open(common).await?);
    let response = client
        .garbage_collect(GarbageCollectRequest { dry_run })
        .await
        .map_err(|s| CliError::imaged_rpc(&common.socket, "gc", &s))?
        .into_inner();
    match common.output {
        OutputFormat::Table => out.write_all(render(&response, dry_run).as_bytes())?,
        OutputFormat::Json => output::write_json(out, &to_json(&response))?,
    }
    Ok(())
}

/// The report for people: usage before and after against the capacity, the bytes the run had to free (its
/// target), a table of the removed images, the total, and why the target was missed if it was. A dry run
/// says so and speaks conditionally.
fn render(r: &GarbageCollectResponse, dry_run: bool) -> String {
    // Writing to a String cannot fail: the `let _ =` below discard an always-Ok result.
    let mut text = String::new();
    if dry_run {
        text.push_str("Dry run: nothing was removed\n");
    }
    let (before, after) = if dry_run {
        ("Used now:", "Used after:")
    } else {
        ("Used before:", "Used after:")
    };
    let _ = writeln!(text, "{before:<13} {}", usage(r.used_bytes_before, r.capacity_bytes));
    let _ = writeln!(text, "{after:<13} {}", usage(r.used_bytes_after, r.capacity_bytes));
    let _ = writeln!(text, "{:<13} {}", "Target:", target(r.target_bytes));
    text.push('\n');
    if r.removed.is_empty() {
        text.push_str("No images to remove\n");
    } else {
        let mut table = Table::new(&["IMAGE ID", "TAGS", "REASON", "FREED"]);
        for image in &r.removed {
            let tags = match image.repo_tags.as_slice() {
                [] => NONE.to_string(),
                tags => tags.join(","),
            };
            table.push(vec![
                short_id(&image.id),
                tags,
                image.reason.clone(),
                human_size(image.freed_bytes),
            ]);
        }
        text.push_str(&table.render());
        let (verb, images) = (if dry_run { "Would free" } else { "Freed" }, r.removed.len());
        let plural = if images == 1 { "" } else { "s" };
        let _ = writeln!(text, "{verb} {} from {images} image{plural}", human_size(r.freed_bytes));
    }
    if !r.shortfall.is_empty() {
        let _ = writeln!(text, "Shortfall: {}", r.shortfall);
    }
    text
}

/// The disk-pressure target in words: `free 1.5GB`, or `none (below the high threshold)` for 0 (max-age
/// victims may still be removed).
fn target(bytes: u64) -> String {
    match bytes {
        0 => "none (below the high threshold)".to_string(),
        bytes => format!("free {}", human_size(bytes)),
    }
}

/// `used` against `capacity`: `8.2GB of 10GB (82%)`, or just `8.2GB` when the capacity is unknown (0).
fn usage(used: u64, capacity: u64) -> String {
    if capacity == 0 {
        return human_size(used);
    }
    let percent = u128::from(used) * 100 / u128::from(capacity);
    format!("{} of {} ({percent}%)", human_size(used), human_size(capacity))
}

/// A removed image as protobuf JSON (camelCase keys, 64-bit integers as strings); `prune` uses it too.
pub fn removed_image_json(image: &RemovedImage) -> Value {
    json!({
        "id": image.id,
        "repoTags": image.repo_tags,
        "reason": image.reason,
        "freedBytes": image.freed_bytes.to_string(),
    })
}

/// The response as protobuf JSON, default values included (as the other commands print).
fn to_json(r: &GarbageCollectResponse) -> Value {
    json!({
        "removed": r.removed.iter().map(removed_image_json).collect::<Vec<_>>(),
        "freedBytes": r.freed_bytes.to_string(),
        "targetBytes": r.target_bytes.to_string(),
        "capacityBytes": r.capacity_bytes.to_string(),
        "usedBytesBefore": r.used_bytes_before.to_string(),
        "usedBytesAfter": r.used_bytes_after.to_string(),
        "shortfall": r.shortfall,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn removed(id: &str, tags: &[&str], reason: &str, freed: u64) -> RemovedImage {
        RemovedImage {
            id: id.to_string(),
            repo_tags: tags.iter().map(|t| t.to_string()).collect(),
            reason: reason.to_string(),
            freed_bytes: freed,
        }
    }

    fn response() -> GarbageCollectResponse {
        GarbageCollectResponse {
            removed: vec![
                removed(
                    "sha256:0123456789abcdef",
                    &["busybox:1.36", "busybox:latest"],
                    "unused for 3d",
                    2_150_000,
                ),
                removed("sha256:fedcba9876543210", &[], "unused for 1h", 850_000),
            ],
            freed_bytes: 3_000_000,
            target_bytes: 7_000_000,
            capacity_bytes: 10_000_000,
            used_bytes_before: 8_500_000,
            used_bytes_after: 5_500_000,
            shortfall: String::new(),
        }
    }

    #[test]
    fn table_shows_usage_each_removed_image_and_the_total() {
        let expected = "\
Used before:  8.5MB of 10MB (85%)
Used after:   5.5MB of 10MB (55%)
Target:       free 7MB

IMAGE ID            TAGS                          REASON              FREED
0123456789abc       busybox:1.36,busybox:latest   unused for 3d       2.15MB
fedcba9876543       <none>                        unused for 1h       850kB
Freed 3MB from 2 images
";
        assert_eq!(render(&response(), false), expected);
    }

    #[test]
    fn dry_run_says_nothing_was_removed_and_what_would_be_freed() {
        let text = render(&response(), true);
        assert!(
            text.starts_with("Dry run: nothing was removed\nUsed now:     8.5MB of 10MB (85%)\n"),
            "{text}"
        );
        assert!(text.ends_with("Would free 3MB from 2 images\n"), "{text}");
    }

    #[test]
    fn nothing_removed_and_a_shortfall_are_spelled_out() {
        let r = GarbageCollectResponse {
            removed: Vec::new(),
            freed_bytes: 0,
            capacity_bytes: 0,
            used_bytes_before: 9_000_000,
            used_bytes_after: 9_000_000,
            shortfall: "every image is in use".into(),
            ..response()
        };
        let expected = "\
Used before:  9MB
Used after:   9MB
Target:       free 7MB

No images to remove
Shortfall: every image is in use
";
        assert_eq!(render(&r, false), expected);
        let calm = GarbageCollectResponse {
            target_bytes: 0,
            ..response()
        };
        assert!(render(&calm, false).contains("\nTarget:       none (below the high threshold)\n"));
    }

    #[test]
    fn usage_percent_does_not_overflow() {
        assert_eq!(usage(u64::MAX, u64::MAX), "18.4EB of 18.4EB (100%)");
        let one_image = GarbageCollectResponse {
            removed: vec![removed("sha256:aa", &["a:1"], "r", 5)],
            ..response()
        };
        assert!(render(&one_image, false).contains("from 1 image\n"));
    }

    #[test]
    fn json_uses_protobuf_json_names() {
        let v = to_json(&response());
        assert_eq!(v["usedBytesBefore"], json!("8500000"));
        assert_eq!(v["capacityBytes"], json!("10000000"));
        assert_eq!(v["shortfall"], json!(""));
        assert_eq!(
            v["removed"][0],
            json!({
                "id": "sha256:0123456789abcdef",
                "repoTags": ["busybox:1.36", "busybox:latest"],
                "reason": "unused for 3d",
                "freedBytes": "2150000",
            })
        );
    }
}
