//! `imaged prune [--keep-younger-than DURATION] [--keep-tag-revisions N] [--all] [--dry-run]`: imaged's
//! Prune, which removes old tag revisions and whatever only they reference. imaged only.
//!
//! The defaults (60m, 3) are OpenShift's, given here rather than left to the server: an unset age on the
//! wire means "keep nothing by age", which is not what someone typing a bare `imaged prune` expects.

use std::io::Write;
use std::time::Duration;

use serde_json::{Value, json};

use super::gc::removed_image_json;
use super::{CliError, Common, OutputFormat, output};
use crate::proto::imaged::v1::{PruneRequest, PruneResponse};

/// The Prune request for the flags. A sub-second remainder of the age rounds up: keeping a little more is
/// the safe side.
pub fn request(keep_younger_than: Duration, keep_tag_revisions: u32, all: bool, dry_run: bool) -> PruneRequest {
    let seconds = keep_younger_than.as_secs() + u64::from(keep_younger_than.subsec_nanos() > 0);
    PruneRequest {
        keep_younger_than_seconds: Some(seconds),
        keep_tag_revisions: Some(keep_tag_revisions),
        all,
        dry_run,
    }
}

/// Prunes (or, with `dry_run` in `request`, plans to) and prints the service's report, or the response as JSON.
pub async fn run(common: &Common, request: PruneRequest, out: &mut (dyn Write + Send)) -> Result<(), CliError> {
    let mut client = super::imaged_client(super::open(common).await?);
    let response = client
        .prune(request)
        .await
        .map_err(|s| CliError::imaged_rpc(&common.socket, "prune", &s))?
        .into_inner();
    match common.output {
        OutputFormat::Table => {
            out.write_all(response.report.as_bytes())?;
            if !response.report.is_empty() && !response.report.ends_with('\n') {
                writeln!(out)?;
            }
        }
        OutputFormat::Json => output::write_json(out, &to_json(&response))?,
    }
    Ok(())
}

/// The response as protobuf JSON: camelCase keys, 64-bit integers as strings, default values included.
fn to_json(r: &PruneResponse) -> Value {
    let resources: Vec<Value> = r
        .resources
        .iter()
        .map(|res| json!({ "kind": res.kind, "digest": res.digest, "bytes": res.bytes.to_string() }))
        .collect();
    json!({
        "images": r.images.iter().map(removed_image_json).collect::<Vec<_>>(),
        "resources": resources,
        "freedBytes": r.freed_bytes.to_string(),
        "report": r.report,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::imaged::v1::{RemovedImage, RemovedResource};

    #[test]
    fn request_carries_every_flag_and_rounds_the_age_up() {
        let r = request(Duration::from_secs(90), 2, true, true);
        assert_eq!(
            r,
            PruneRequest {
                keep_younger_than_seconds: Some(90),
                keep_tag_revisions: Some(2),
                all: true,
                dry_run: true,
            }
        );
        assert_eq!(
            request(Duration::from_millis(1500), 0, false, false).keep_younger_than_seconds,
            Some(2)
        );
        assert_eq!(
            request(Duration::ZERO, 0, false, false).keep_younger_than_seconds,
            Some(0)
        );
    }

    #[test]
    fn json_uses_protobuf_json_names() {
        let r = PruneResponse {
            images: vec![RemovedImage {
                id: "sha256:aa".into(),
                repo_tags: Vec::new(),
                reason: "untagged".into(),
                freed_bytes: 10,
            }],
            resources: vec![RemovedResource {
                kind: "blob".into(),
                digest: "sha256:bb".into(),
                bytes: 7,
            }],
            freed_bytes: 17,
            report: "r\n".into(),
        };
        assert_eq!(
            to_json(&r),
            json!({
                "images": [{ "id": "sha256:aa", "repoTags": [], "reason": "untagged", "freedBytes": "10" }],
                "resources": [{ "kind": "blob", "digest": "sha256:bb", "bytes": "7" }],
                "freedBytes": "17",
                "report": "r\n",
            })
        );
    }
}
