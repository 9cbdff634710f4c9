//! The client subcommands end to end: parsed from arguments by clap, run against a fake CRI image service
//! served by tonic on a real unix socket. The fake records the requests it was sent. [`imaged`] adds a fake
//! of imaged's own service, on the same socket as the real daemon does.

mod imaged;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use clap::Parser;
use serde_json::{Value, json};
use tokio_stream::wrappers::UnixListenerStream;
use tonic::{Request, Response, Status};

use super::{CliError, ClientCommand, execute};
use crate::proto::imaged::v1::images_server::ImagesServer;
use crate::proto::runtime::v1 as cri;
use crate::proto::runtime::v1::image_service_server::{ImageService, ImageServiceServer};

const BUSYBOX_ID: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// A CRI image service holding images in memory. `locked` images fail to be removed.
#[derive(Default)]
struct Fake {
    images: Mutex<Vec<cri::Image>>,
    pulls: Mutex<Vec<cri::PullImageRequest>>,
    removed: Mutex<Vec<String>>,
}

impl Fake {
    fn find(&self, name: &str) -> Option<cri::Image> {
        let images = self.images.lock().unwrap();
        images
            .iter()
            .find(|i| i.id == name || i.repo_tags.iter().chain(&i.repo_digests).any(|t| t == name))
            .cloned()
    }
}

fn spec_image(spec: Option<&cri::ImageSpec>) -> String {
    spec.map(|s| s.image.clone()).unwrap_or_default()
}

#[tonic::async_trait]
impl ImageService for Fake {
    async fn list_images(
        &self,
        req: Request<cri::ListImagesRequest>,
    ) -> Result<Response<cri::ListImagesResponse>, Status> {
        let filter = spec_image(req.into_inner().filter.and_then(|f| f.image).as_ref());
        let images = self.images.lock().unwrap().clone();
        let images = images
            .into_iter()
            .filter(|i| filter.is_empty() || i.repo_tags.contains(&filter))
            .collect();
        Ok(Response::new(cri::ListImagesResponse { images, encoded: None }))
    }

    type StreamImagesStream =
        std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<cri::StreamImagesResponse, Status>> + Send>>;

    async fn stream_images(
        &self,
        _req: Request<cri::StreamImagesRequest>,
    ) -> Result<Response<Self::StreamImagesStream>, Status> {
        Err(Status::unimplemented(
            "the fake is a runtime before Kubernetes 1.36: no StreamImages",
        ))
    }

    async fn image_status(
        &self,
        req: Request<cri::ImageStatusRequest>,
    ) -> Result<Response<cri::ImageStatusResponse>, Status> {
        let req = req.into_inner();
        let image = self.find(&spec_image(req.image.as_ref()));
        let info = match (&image, req.verbose) {
            (Some(i), true) => HashMap::from([("info".to_string(), json!({ "chainIDs": [i.id] }).to_string())]),
            _ => HashMap::new(),
        };
        Ok(Response::new(cri::ImageStatusResponse { image, info }))
    }

    async fn pull_image(
        &self,
        req: Request<cri::PullImageRequest>,
    ) -> Result<Response<cri::PullImageResponse>, Status> {
        let req = req.into_inner();
        let name = spec_image(req.image.as_ref());
        self.pulls.lock().unwrap().push(req);
        if name.contains("missing") {
            return Err(Status::not_found(format!("{name}: manifest unknown")));
        }
        Ok(Response::new(cri::PullImageResponse {
            image_ref: BUSYBOX_ID.to_string(),
        }))
    }

    async fn remove_image(
        &self,
        req: Request<cri::RemoveImageRequest>,
    ) -> Result<Response<cri::RemoveImageResponse>, Status> {
        let id = spec_image(req.into_inner().image.as_ref());
        if self
            .find(&id)
            .is_some_and(|i| i.repo_tags.iter().any(|t| t.contains("locked")))
        {
            return Err(Status::failed_precondition("image is in use"));
        }
        self.images.lock().unwrap().retain(|i| i.id != id);
        self.removed.lock().unwrap().push(id);
        Ok(Response::new(cri::RemoveImageResponse {}))
    }

    async fn image_fs_info(
        &self,
        _: Request<cri::ImageFsInfoRequest>,
    ) -> Result<Response<cri::ImageFsInfoResponse>, Status> {
        let fs = cri::FilesystemUsage {
            timestamp: 1_700_000_000_000_000_000,
            fs_id: Some(cri::FilesystemIdentifier {
                mountpoint: "/var/lib/imaged".into(),
            }),
            used_bytes: Some(cri::UInt64Value { value: 2_500_000 }),
            inodes_used: Some(cri::UInt64Value { value: 42 }),
        };
        Ok(Response::new(cri::ImageFsInfoResponse {
            image_filesystems: vec![fs],
            container_filesystems: Vec::new(),
        }))
    }
}

/// The fake, serving on a socket in its own temp dir until dropped.
struct Served {
    fake: Arc<Fake>,
    socket: PathBuf,
    _dir: tempfile::TempDir,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Served {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn image(id: &str, tags: &[&str], digests: &[&str], size: u64) -> cri::Image {
    cri::Image {
        id: id.to_string(),
        repo_tags: tags.iter().map(|s| s.to_string()).collect(),
        repo_digests: digests.iter().map(|s| s.to_string()).collect(),
        size,
        ..Default::default()
    }
}

fn serve(images: Vec<cri::Image>) -> Served {
    serve_with(images, None)
}

/// [`serve`], with imaged's own service too if `imaged` is given (else the socket is like containerd's).
fn serve_with(images: Vec<cri::Image>, imaged: Option<ImagesServer<imaged::FakeImaged>>) -> Served {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("cri.sock");
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    let fake = Arc::new(Fake {
        images: Mutex::new(images),
        ..Default::default()
    });
    let service = ImageServiceServer::from_arc(fake.clone());
    let server = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(service)
            .add_optional_service(imaged)
            .serve_with_incoming(UnixListenerStream::new(listener))
            .await;
    });
    Served {
        fake,
        socket,
        _dir: dir,
        server,
    }
}

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: ClientCommand,
}

/// Parses `args` (the subcommand and its arguments) with `--socket socket` appended, runs it, and returns
/// the result with stdout and stderr.
async fn run(socket: &Path, args: &[&str]) -> (Result<(), CliError>, String, String) {
    let mut argv = vec!["imaged"];
    argv.extend_from_slice(args);
    let socket = socket.to_str().unwrap();
    argv.extend(["--socket", socket]);
    let cli = Cli::try_parse_from(argv).unwrap();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let result = execute(cli.command, &mut out, &mut err).await;
    (result, String::from_utf8(out).unwrap(), String::from_utf8(err).unwrap())
}

#[tokio::test]
async fn pull_sends_image_and_creds_and_prints_the_ref() {
    let s = serve(Vec::new());
    let (result, out, _) = run(&s.socket, &["pull", "busybox", "--creds", "me:pa:ss"]).await;
    result.unwrap();
    assert_eq!(out, format!("Image is up to date for {BUSYBOX_ID}\n"));
    let pulls = s.fake.pulls.lock().unwrap();
    let spec = pulls[0].image.as_ref().unwrap();
    assert_eq!(
        (spec.image.as_str(), spec.user_specified_image.as_str()),
        ("busybox", "busybox")
    );
    let auth = pulls[0].auth.as_ref().unwrap();
    assert_eq!((auth.username.as_str(), auth.password.as_str()), ("me", "pa:ss"));
}

#[tokio::test]
async fn pull_json_and_pull_errors() {
    let s = serve(Vec::new());
    let (result, out, _) = run(&s.socket, &["pull", "busybox", "-o", "json"]).await;
    result.unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap(),
        json!({ "imageRef": BUSYBOX_ID })
    );
    let (result, _, _) = run(&s.socket, &["pull", "missing:1"]).await;
    assert_eq!(
        result.unwrap_err().to_string(),
        "pull missing:1: missing:1: manifest unknown (NotFound)"
    );
}

#[tokio::test]
async fn bad_creds_fail_before_any_call() {
    let s = serve(Vec::new());
    let (result, _, _) = run(&s.socket, &["pull", "busybox", "--creds", "secret"]).await;
    assert!(matches!(result, Err(CliError::InvalidCreds)));
    assert!(s.fake.pulls.lock().unwrap().is_empty());
}

#[tokio::test]
async fn images_table_quiet_and_json() {
    let s = serve(vec![
        image(
            BUSYBOX_ID,
            &["docker.io/library/busybox:1.36", "docker.io/library/busybox:latest"],
            &[],
            2_150_000,
        ),
        image(
            "sha256:fedcba9876543210",
            &[],
            &["docker.io/library/alpine@sha256:99"],
            3_000_000,
        ),
    ]);
    let (result, out, _) = run(&s.socket, &["images"]).await;
    result.unwrap();
    let rows: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split("   ").map(str::trim).filter(|c| !c.is_empty()).collect())
        .collect();
    assert_eq!(
        rows,
        vec![
            vec!["IMAGE", "TAG", "IMAGE ID", "SIZE"],
            vec!["docker.io/library/busybox", "1.36", "0123456789abc", "2.15MB"],
            vec!["docker.io/library/busybox", "latest", "0123456789abc", "2.15MB"],
            vec!["docker.io/library/alpine", "<none>", "fedcba9876543", "3MB"],
        ]
    );

    let (result, out, _) = run(&s.socket, &["images", "-q"]).await;
    result.unwrap();
    assert_eq!(out, format!("{BUSYBOX_ID}\nsha256:fedcba9876543210\n"));

    let (result, out, _) = run(&s.socket, &["images", "docker.io/library/busybox:1.36", "-o", "json"]).await;
    result.unwrap();
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["images"].as_array().unwrap().len(), 1);
    assert_eq!(v["images"][0]["id"], json!(BUSYBOX_ID));
    assert_eq!(v["images"][0]["size"], json!("2150000"));
}

#[tokio::test]
async fn inspect_prints_status_and_info_or_fails_when_absent() {
    let s = serve(vec![image(BUSYBOX_ID, &["busybox:latest"], &[], 10)]);
    let (result, out, _) = run(&s.socket, &["inspect", "busybox:latest"]).await;
    result.unwrap();
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["status"]["repoTags"], json!(["busybox:latest"]));
    assert_eq!(v["info"], json!({ "chainIDs": [BUSYBOX_ID] }));

    let (result, out, _) = run(&s.socket, &["inspect", "nope:1"]).await;
    assert_eq!(result.unwrap_err().to_string(), "image nope:1 not found");
    assert!(out.is_empty());
}

#[tokio::test]
async fn rmi_removes_by_id_reports_each_failure_and_goes_on() {
    let s = serve(vec![
        image(BUSYBOX_ID, &["busybox:1", "busybox:2"], &[], 10),
        image("sha256:2", &["locked:1"], &[], 10),
        image("sha256:3", &["alpine:3"], &[], 10),
    ]);
    let (result, out, err) = run(
        &s.socket,
        &["rmi", "busybox:1", "nope", "locked:1", "alpine:3", "alpine:3"],
    )
    .await;
    assert_eq!(out, "Deleted: busybox:1\nDeleted: busybox:2\nDeleted: alpine:3\n");
    assert_eq!(
        err,
        "error: no such image nope\nerror: rmi locked:1: image is in use (FailedPrecondition)\n"
    );
    assert_eq!(result.unwrap_err().to_string(), "cannot remove 2 of 4 images");
    assert_eq!(*s.fake.removed.lock().unwrap(), [BUSYBOX_ID, "sha256:3"]);
}

#[tokio::test]
async fn rmi_json_lists_what_was_deleted() {
    let s = serve(vec![image(BUSYBOX_ID, &["busybox:1"], &[], 10)]);
    let (result, out, _) = run(&s.socket, &["rmi", "-o", "json", BUSYBOX_ID]).await;
    result.unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap(),
        json!({ "deleted": ["busybox:1"] })
    );
}

#[tokio::test]
async fn fsinfo_table_and_json() {
    let s = serve(Vec::new());
    let (result, out, _) = run(&s.socket, &["fsinfo"]).await;
    result.unwrap();
    let rows: Vec<Vec<&str>> = out.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows[1], ["/var/lib/imaged", "2.5MB", "42", "2023-11-14T22:13:20Z"]);
    let (result, out, _) = run(&s.socket, &["fsinfo", "-o", "json"]).await;
    result.unwrap();
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v["status"]["imageFilesystems"][0]["inodesUsed"],
        json!({ "value": "42" })
    );
}

#[tokio::test]
async fn an_absent_socket_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("absent.sock");
    let (result, _, _) = run(&socket, &["images"]).await;
    let message = result.unwrap_err().to_string();
    let expected = format!("cannot connect to the CRI image service at {}: ", socket.display());
    assert!(message.starts_with(&expected), "{message}");
    assert!(message.ends_with("(is imaged running? see --socket)"), "{message}");
    assert!(message.contains("No such file or directory"), "{message}");
}

#[test]
fn flags_follow_the_subcommand_and_rmi_needs_an_image() {
    let cli = Cli::try_parse_from(["imaged", "images", "-q", "--socket", "/x.sock", "-o", "json"]).unwrap();
    let ClientCommand::Images { quiet, common, image } = cli.command else {
        panic!("not images")
    };
    assert!(quiet && image.is_none());
    assert_eq!(common.socket, Path::new("/x.sock"));
    assert_eq!(common.output, super::OutputFormat::Json);
    assert!(Cli::try_parse_from(["imaged", "rmi"]).is_err());
    assert!(Cli::try_parse_from(["imaged", "images", "-o", "yaml"]).is_err());
}

#[test]
fn parsed_commands_do_not_show_the_password() {
    let cli = Cli::try_parse_from(["imaged", "pull", "busybox", "--creds", "me:secret"]).unwrap();
    assert!(!format!("{:?}", cli.command).contains("secret"));
}
