//! The subcommands that use imaged's own service (`pull` with progress, `gc`, `prune`) end to end, against a
//! fake `imaged.v1.Images` served next to the fake CRI service; and without it, as on containerd's socket.

use std::pin::Pin;
use std::sync::{Arc, Mutex};

use clap::Parser;
use serde_json::{Value, json};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::{BUSYBOX_ID, Cli, run, serve, serve_with, spec_image};
use crate::proto::imaged::v1 as pb;
use crate::proto::imaged::v1::images_server::{Images, ImagesServer};
use crate::proto::imaged::v1::{LayerProgress, LayerState};
use crate::proto::runtime::v1 as cri;

const LAYER: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const BASE: &str = "sha256:fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";

/// imaged's own service, recording its requests. Pulls stream a scripted sequence of events; an image
/// named `missing…` fails after the first event, one named `late…` answers Unimplemented in the stream.
#[derive(Default)]
pub(super) struct FakeImaged {
    pulls: Mutex<Vec<cri::PullImageRequest>>,
    gcs: Mutex<Vec<pb::GarbageCollectRequest>>,
    prunes: Mutex<Vec<pb::PruneRequest>>,
}

fn progress(layers: Vec<LayerProgress>) -> Result<pb::PullEvent, Status> {
    let progress = pb::PullProgress {
        phase: "pulling".into(),
        layers,
    };
    Ok(pb::PullEvent {
        event: Some(pb::pull_event::Event::Progress(progress)),
    })
}

fn layer(digest: &str, state: LayerState, done: u64, total: u64) -> LayerProgress {
    LayerProgress {
        digest: digest.to_string(),
        done_bytes: done,
        total_bytes: total,
        state: state.into(),
    }
}

type PullStream = Pin<Box<dyn Stream<Item = Result<pb::PullEvent, Status>> + Send>>;

#[tonic::async_trait]
impl Images for FakeImaged {
    type PullStream = PullStream;

    async fn pull(&self, req: Request<cri::PullImageRequest>) -> Result<Response<PullStream>, Status> {
        let req = req.into_inner();
        let name = spec_image(req.image.as_ref());
        self.pulls.lock().unwrap().push(req);
        let present = layer(BASE, LayerState::Present, 0, 700_000);
        let first = progress(vec![layer(LAYER, LayerState::Waiting, 0, 3_000_000), present.clone()]);
        let events = if name.starts_with("missing") {
            vec![first, Err(Status::not_found(format!("{name}: manifest unknown")))]
        } else if name.starts_with("late") {
            vec![Err(Status::unimplemented("not here"))]
        } else {
            vec![
                first,
                progress(vec![
                    layer(LAYER, LayerState::Downloading, 1_000_000, 3_000_000),
                    present.clone(),
                ]),
                // Within a second of the previous one, in the same state: no line.
                progress(vec![
                    layer(LAYER, LayerState::Downloading, 2_000_000, 3_000_000),
                    present.clone(),
                ]),
                progress(vec![layer(LAYER, LayerState::Done, 3_000_000, 3_000_000), present]),
                Ok(pb::PullEvent {
                    event: Some(pb::pull_event::Event::ImageRef(BUSYBOX_ID.into())),
                }),
            ]
        };
        Ok(Response::new(Box::pin(tokio_stream::iter(events))))
    }

    async fn garbage_collect(
        &self,
        req: Request<pb::GarbageCollectRequest>,
    ) -> Result<Response<pb::GarbageCollectResponse>, Status> {
        self.gcs.lock().unwrap().push(req.into_inner());
        Ok(Response::new(pb::GarbageCollectResponse {
            removed: vec![pb::RemovedImage {
                id: BUSYBOX_ID.into(),
                repo_tags: vec!["busybox:1.36".into()],
                reason: "unused for 3d".into(),
                freed_bytes: 2_150_000,
            }],
            freed_bytes: 2_150_000,
            target_bytes: 2_000_000,
            capacity_bytes: 10_000_000,
            used_bytes_before: 9_000_000,
            used_bytes_after: 6_850_000,
            shortfall: String::new(),
        }))
    }

    async fn prune(&self, req: Request<pb::PruneRequest>) -> Result<Response<pb::PruneResponse>, Status> {
        let req = req.into_inner();
        self.prunes.lock().unwrap().push(req);
        let verb = if req.dry_run { "would remove" } else { "removed" };
        Ok(Response::new(pb::PruneResponse {
            images: Vec::new(),
            resources: vec![pb::RemovedResource {
                kind: "blob".into(),
                digest: LAYER.into(),
                bytes: 3_000_000,
            }],
            freed_bytes: 3_000_000,
            report: format!("{verb} blob {LAYER} (3MB)\n{verb} 3MB in total"),
        }))
    }
}

/// The CRI fake and the imaged fake on one socket; returns both and the imaged fake's handle.
fn serve_imaged() -> (super::Served, Arc<FakeImaged>) {
    let fake = Arc::new(FakeImaged::default());
    let served = serve_with(Vec::new(), Some(ImagesServer::from_arc(fake.clone())));
    (served, fake)
}

#[tokio::test]
async fn pull_streams_progress_lines_to_stderr_and_prints_the_ref() {
    let (s, imaged) = serve_imaged();
    let (result, out, err) = run(&s.socket, &["pull", "busybox", "--creds", "me:pa:ss"]).await;
    result.unwrap();
    assert_eq!(out, format!("Image is up to date for {BUSYBOX_ID}\n"));
    assert_eq!(
        err,
        "sha256:0123456789ab waiting\n\
         sha256:fedcba987654 already present\n\
         sha256:0123456789ab downloading 1MB/3MB\n\
         sha256:0123456789ab done\n"
    );
    let pulls = imaged.pulls.lock().unwrap();
    assert_eq!(spec_image(pulls[0].image.as_ref()), "busybox");
    let auth = pulls[0].auth.as_ref().unwrap();
    assert_eq!((auth.username.as_str(), auth.password.as_str()), ("me", "pa:ss"));
    assert!(
        s.fake.pulls.lock().unwrap().is_empty(),
        "CRI PullImage must not be called as well"
    );
}

#[tokio::test]
async fn pull_json_is_unchanged_by_progress() {
    let (s, _) = serve_imaged();
    let (result, out, err) = run(&s.socket, &["pull", "busybox", "-o", "json"]).await;
    result.unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap(),
        json!({ "imageRef": BUSYBOX_ID })
    );
    assert!(err.ends_with("sha256:0123456789ab done\n"), "{err}");
}

#[tokio::test]
async fn pull_failing_mid_stream_reports_the_status_after_the_progress_shown() {
    let (s, _) = serve_imaged();
    let (result, out, err) = run(&s.socket, &["pull", "missing:1"]).await;
    assert_eq!(
        result.unwrap_err().to_string(),
        "pull missing:1: missing:1: manifest unknown (NotFound)"
    );
    assert!(out.is_empty());
    assert_eq!(
        err,
        "sha256:0123456789ab waiting\nsha256:fedcba987654 already present\n"
    );
    assert!(s.fake.pulls.lock().unwrap().is_empty());
}

#[tokio::test]
async fn pull_falls_back_to_cri_where_the_service_is_not_imaged() {
    let s = serve(Vec::new());
    let (result, out, err) = run(&s.socket, &["pull", "busybox", "--creds", "me:pw"]).await;
    result.unwrap();
    assert_eq!(out, format!("Image is up to date for {BUSYBOX_ID}\n"));
    assert!(err.is_empty(), "{err}");
    let pulls = s.fake.pulls.lock().unwrap();
    assert_eq!(spec_image(pulls[0].image.as_ref()), "busybox");
    assert_eq!(pulls[0].auth.as_ref().unwrap().username, "me");
}

#[tokio::test]
async fn pull_falls_back_when_unimplemented_comes_in_the_stream() {
    let (s, imaged) = serve_imaged();
    let (result, out, _) = run(&s.socket, &["pull", "late:1"]).await;
    result.unwrap();
    assert_eq!(out, format!("Image is up to date for {BUSYBOX_ID}\n"));
    assert_eq!(imaged.pulls.lock().unwrap().len(), 1);
    assert_eq!(spec_image(s.fake.pulls.lock().unwrap()[0].image.as_ref()), "late:1");
}

#[tokio::test]
async fn gc_prints_the_usage_and_removed_images_or_json() {
    let (s, imaged) = serve_imaged();
    let (result, out, _) = run(&s.socket, &["gc"]).await;
    result.unwrap();
    let lines: Vec<Vec<&str>> = out.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(lines[0], ["Used", "before:", "9MB", "of", "10MB", "(90%)"]);
    assert_eq!(lines[1], ["Used", "after:", "6.85MB", "of", "10MB", "(68%)"]);
    assert_eq!(lines[2], ["Target:", "free", "2MB"]);
    assert_eq!(lines[4], ["IMAGE", "ID", "TAGS", "REASON", "FREED"]);
    assert_eq!(
        lines[5],
        ["0123456789abc", "busybox:1.36", "unused", "for", "3d", "2.15MB"]
    );
    assert_eq!(lines[6], ["Freed", "2.15MB", "from", "1", "image"]);

    let (result, out, _) = run(&s.socket, &["gc", "--dry-run", "-o", "json"]).await;
    result.unwrap();
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["usedBytesAfter"], json!("6850000"));
    assert_eq!(v["removed"][0]["repoTags"], json!(["busybox:1.36"]));
    let dry_runs: Vec<bool> = imaged.gcs.lock().unwrap().iter().map(|r| r.dry_run).collect();
    assert_eq!(dry_runs, [false, true]);
}

#[tokio::test]
async fn gc_and_prune_need_imaged() {
    let s = serve(Vec::new());
    let expected = format!(
        "the image service at {} is not imaged (no imaged.v1 service)",
        s.socket.display()
    );
    for args in [&["gc"][..], &["prune", "--dry-run"][..]] {
        let (result, out, _) = run(&s.socket, args).await;
        assert_eq!(result.unwrap_err().to_string(), expected, "{args:?}");
        assert!(out.is_empty());
    }
}

#[tokio::test]
async fn prune_sends_the_flags_and_prints_the_report_as_is() {
    let (s, imaged) = serve_imaged();
    let args = [
        "prune",
        "--keep-younger-than",
        "1h30m",
        "--keep-tag-revisions",
        "1",
        "--all",
        "--dry-run",
    ];
    let (result, out, _) = run(&s.socket, &args).await;
    result.unwrap();
    assert_eq!(
        out,
        format!("would remove blob {LAYER} (3MB)\nwould remove 3MB in total\n")
    );
    let (result, out, _) = run(&s.socket, &["prune", "-o", "json"]).await;
    result.unwrap();
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v["resources"][0],
        json!({ "kind": "blob", "digest": LAYER, "bytes": "3000000" })
    );
    assert_eq!(v["freedBytes"], json!("3000000"));

    let prunes = imaged.prunes.lock().unwrap();
    let expected_dry = pb::PruneRequest {
        keep_younger_than_seconds: Some(5400),
        keep_tag_revisions: Some(1),
        all: true,
        dry_run: true,
    };
    // Without flags: OpenShift's defaults, sent explicitly.
    let expected_default = pb::PruneRequest {
        keep_younger_than_seconds: Some(3600),
        keep_tag_revisions: Some(3),
        all: false,
        dry_run: false,
    };
    assert_eq!(*prunes, [expected_dry, expected_default]);
}

#[test]
fn prune_defaults_are_the_prune_policy_defaults() {
    use crate::gc::prune::{DEFAULT_KEEP_TAG_REVISIONS, DEFAULT_KEEP_YOUNGER_THAN};
    let cli = Cli::try_parse_from(["imaged", "prune"]).unwrap();
    let super::ClientCommand::Prune {
        keep_younger_than,
        keep_tag_revisions,
        ..
    } = cli.command
    else {
        panic!("not prune")
    };
    assert_eq!(keep_younger_than, DEFAULT_KEEP_YOUNGER_THAN);
    assert_eq!(usize::try_from(keep_tag_revisions).unwrap(), DEFAULT_KEEP_TAG_REVISIONS);
}

#[test]
fn a_bad_duration_is_an_error_naming_the_flag() {
    let Err(e) = Cli::try_parse_from(["imaged", "prune", "--keep-younger-than", "5x"]) else {
        panic!("parsed a bad duration")
    };
    let message = e.to_string();
    assert!(message.contains("--keep-younger-than"), "{message}");
    assert!(message.contains("invalid duration \"5x\""), "{message}");
    assert!(Cli::try_parse_from(["imaged", "prune", "--keep-tag-revisions", "-1"]).is_err());
}
