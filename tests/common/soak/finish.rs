//! The store after the load: nothing left over, nothing held, every image whole, `imaged fsck` clean.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use imaged::proto::imaged::v1 as pb;
use imaged::proto::imaged::v1::images_client::ImagesClient;
use imaged::proto::runtime::v1 as cri;

use super::Shared;
use super::check;
use crate::common::daemon::{Daemon, blobs, ingest_files, spec};

/// One end-of-run check and its outcome.
#[derive(Clone, Debug)]
pub struct Verdict {
    /// What was checked.
    pub check: String,
    /// Whether it held.
    pub ok: bool,
    /// What was found.
    pub detail: String,
}

fn verdict(check: &str, ok: bool, detail: String) -> Verdict {
    Verdict {
        check: check.to_string(),
        ok,
        detail,
    }
}

/// `snapshots/tmp-*` directories (snapshots being built or deleted).
pub fn tmp_snapshots(root: &Path) -> Vec<String> {
    std::fs::read_dir(root.join("snapshots"))
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("tmp-"))
                .collect()
        })
        .unwrap_or_default()
}

/// The committed snapshots, as `sha256:<hex>`.
fn snapshots(root: &Path) -> BTreeSet<String> {
    std::fs::read_dir(root.join("snapshots"))
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.len() == 64 && n.bytes().all(|b| b.is_ascii_hexdigit()))
                .map(|n| format!("sha256:{n}"))
                .collect()
        })
        .unwrap_or_default()
}

/// Leftovers of work in flight: ingest files and `tmp-` snapshots.
pub fn leftovers(root: &Path) -> (usize, usize) {
    (ingest_files(root), tmp_snapshots(root).len())
}

/// Runs `imaged fsck` on a stopped store: whether it is clean, and its output.
pub fn fsck(root: &Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_imaged"))
        .args(["fsck", "--root"])
        .arg(root)
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .output()
        .expect("run imaged fsck");
    let clean = out.status.success();
    // Its findings, without the log lines of the recovery it runs first.
    let text: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .chain(String::from_utf8_lossy(&out.stderr).lines())
        .filter(|l| {
            ["checked ", "repaired", "problem: ", "ok", "Error"]
                .iter()
                .any(|p| l.starts_with(p))
        })
        .map(String::from)
        .collect();
    (
        clean && !text.iter().any(|l| l.starts_with("problem: ")),
        text.join("\n"),
    )
}

/// The checks on a quiet daemon, then on its stopped store. Stops the daemon.
pub async fn check_store(shared: &Shared, daemon: &mut Daemon) -> Vec<Verdict> {
    let root = daemon.root.clone();
    let mut out = Vec::new();
    let in_flight = shared.in_flight.load(std::sync::atomic::Ordering::SeqCst);
    out.push(verdict(
        "every call answered",
        in_flight == 0,
        format!("{in_flight} calls in flight"),
    ));

    let (ingest, tmp) = leftovers(&root);
    out.push(verdict(
        "no ingest files or tmp- snapshots left (daemon idle)",
        ingest + tmp == 0,
        format!("{ingest} ingest files, {tmp} tmp- snapshots"),
    ));

    let mut c = daemon.client().await;
    let images = match c.list_images(cri::ListImagesRequest { filter: None }).await {
        Ok(r) => r.into_inner().images,
        Err(e) => {
            out.push(verdict("ListImages answers at the end", false, e.to_string()));
            Vec::new()
        }
    };
    let mut problems = check::listed(&shared.catalog, &shared.registry_host, &images);
    for img in &images {
        for reference in &img.repo_tags {
            let Some(tag) = shared
                .catalog
                .tags
                .iter()
                .find(|t| format!("{}/{}", shared.registry_host, t.path) == *reference)
            else {
                continue;
            };
            let r = c
                .image_status(cri::ImageStatusRequest {
                    image: spec(reference),
                    verbose: true,
                })
                .await;
            match r.map(|r| r.into_inner()) {
                Ok(cri::ImageStatusResponse { image: Some(i), info }) => {
                    let info = info.get("info").map(String::as_str);
                    problems.extend(check::image_by_tag(&shared.catalog, reference, tag, &i, true, info));
                    let missing = info.map(|i| check::missing_on_disk(&root, i)).unwrap_or_default();
                    if !missing.is_empty() {
                        problems.push(format!("{reference}: {missing:?} are missing"));
                    }
                }
                Ok(_) => problems.push(format!("{reference} is listed but ImageStatus finds nothing")),
                Err(e) => problems.push(format!("{reference}: ImageStatus failed: {e}")),
            }
        }
    }
    out.push(verdict(
        "every listed image is whole, inspectable by each of its tags, and on disk",
        problems.is_empty(),
        if problems.is_empty() {
            format!("{} images", images.len())
        } else {
            problems.join("; ")
        },
    ));

    out.push(held_items(daemon, &images).await);

    let status = daemon.stop();
    out.push(verdict(
        "SIGTERM stops the daemon cleanly",
        status.is_some_and(|s| s.success()),
        format!("{status:?}"),
    ));
    let (ingest, tmp) = leftovers(&root);
    out.push(verdict(
        "no ingest files or tmp- snapshots after the stop",
        ingest + tmp == 0,
        format!("{ingest} ingest files, {tmp} tmp- snapshots"),
    ));
    let (clean, report) = fsck(&root);
    let counted = report.contains(&format!("checked {} images", images.len()));
    // An idle store after a clean stop has nothing to repair: not even blobs no record references (a pull
    // that records an image id again in another form discards what only the previous form named).
    let repaired = report.lines().any(|l| l.starts_with("repaired"));
    out.push(verdict(
        "imaged fsck is clean, repairs nothing and finds every listed image",
        clean && counted && !repaired,
        report.trim().replace('\n', "; "),
    ));
    out
}

/// Nothing is held once the daemon is idle: a dry-run prune that keeps nothing must plan to remove every
/// image and every blob and snapshot in the store. An image or item it leaves out is protected by a lease
/// nobody will release (or referenced by an image nobody can see).
async fn held_items(daemon: &Daemon, images: &[cri::Image]) -> Verdict {
    let check = "no leases or references held once idle (a keep-nothing dry-run prune takes everything)";
    let request = pb::PruneRequest {
        keep_younger_than_seconds: Some(0),
        keep_tag_revisions: Some(0),
        all: true,
        dry_run: true,
    };
    let plan = match imaged::cli::channel(&daemon.socket).await {
        Ok(ch) => ImagesClient::new(ch).prune(request).await.map(|r| r.into_inner()),
        Err(e) => Err(tonic::Status::unavailable(e.to_string())),
    };
    let plan = match plan {
        Ok(p) => p,
        Err(e) => return verdict(check, false, format!("the dry-run prune failed: {e}")),
    };
    let planned: BTreeSet<String> = plan.images.iter().map(|i| i.id.clone()).collect();
    let listed: BTreeSet<String> = images.iter().map(|i| i.id.clone()).collect();
    let planned_items: BTreeSet<String> = plan.resources.iter().map(|r| r.digest.clone()).collect();
    let mut on_disk: BTreeSet<String> = blobs(&daemon.root).into_iter().collect();
    on_disk.extend(snapshots(&daemon.root));
    let held_images: Vec<_> = listed.difference(&planned).collect();
    let held_items: Vec<_> = on_disk.difference(&planned_items).collect();
    verdict(
        check,
        held_images.is_empty() && held_items.is_empty(),
        format!(
            "{} of {} images and {} of {} blobs/snapshots planned; held images {held_images:?}, held items \
             {held_items:?}",
            planned.len(),
            listed.len(),
            planned_items.len(),
            on_disk.len()
        ),
    )
}
