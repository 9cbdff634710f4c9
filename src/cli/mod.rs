//! Client subcommands of the `imaged` binary: they speak CRI over a unix socket, to imaged or to any CRI
//! image service (containerd's socket included).
//!
//! They behave like their `crictl` counterparts (`pull`, `images`, `inspecti`, `rmi`, `imagefsinfo`), so
//! scripts written for one work with the other: the same table columns, the same protobuf-style JSON with
//! camelCase keys. One file per command; [`output`] holds the pure formatting they share.
//!
//! Where the socket is imaged's, they also use imaged's own service (`imaged.v1.Images`, same socket):
//! `pull` streams its progress (see `progress.rs`) and falls back to plain CRI elsewhere; `gc` and `prune` exist
//! only there.

mod bars;
mod error;
mod fsinfo;
mod gc;
mod images;
mod inspect;
mod layer_text;
mod mount;
mod output;
mod progress;
mod prune;
mod pull;
mod rmi;
#[cfg(test)]
mod tests;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tonic::transport::Channel;

pub use error::CliError;
pub use pull::Creds;

use crate::proto::imaged::v1::images_client::ImagesClient;
use crate::proto::runtime::v1::image_service_client::ImageServiceClient;
use crate::uds::MAX_MESSAGE_BYTES;
use progress::ProgressMode;

/// The client subcommands. Their doc comments are the `--help` text.
#[derive(Debug, clap::Subcommand)]
pub enum ClientCommand {
    /// Pull an image from a registry through the image service, showing its progress on stderr
    Pull {
        /// Image to pull, e.g. docker.io/library/busybox:latest
        image: String,
        /// Registry credentials (visible to other users in the process list)
        #[arg(long, value_name = "USER:PASS", value_parser = Creds::from_arg)]
        creds: Option<Creds>,
        /// Options every client subcommand takes.
        #[command(flatten)]
        common: Common,
    },
    /// List images
    Images {
        /// Only list images matching this reference
        image: Option<String>,
        /// Only print image ids, one per line
        #[arg(short, long)]
        quiet: bool,
        /// Options every client subcommand takes.
        #[command(flatten)]
        common: Common,
    },
    /// Show an image's status and details as JSON (like crictl inspecti)
    Inspect {
        /// Image reference, id or digest
        image: String,
        /// Options every client subcommand takes.
        #[command(flatten)]
        common: Common,
    },
    /// Remove images, each with all its tags
    Rmi {
        /// Image references, ids or digests
        #[arg(required = true, value_name = "IMAGE")]
        images: Vec<String>,
        /// Options every client subcommand takes.
        #[command(flatten)]
        common: Common,
    },
    /// Materialise an image's root filesystem in a directory (for an OCI runtime bundle)
    Mount {
        /// Image reference, id or digest
        image: String,
        /// Empty or absent directory to fill
        dir: PathBuf,
        /// Options every client subcommand takes.
        #[command(flatten)]
        common: Common,
    },
    /// Show the image filesystem's usage
    Fsinfo {
        /// Options every client subcommand takes.
        #[command(flatten)]
        common: Common,
    },
    /// Run imaged's disk-threshold image garbage collection now (imaged only)
    Gc {
        /// Only report what would be removed
        #[arg(long)]
        dry_run: bool,
        /// Options every client subcommand takes.
        #[command(flatten)]
        common: Common,
    },
    /// Remove old tag revisions and the content only they use, like `oc adm prune images` (imaged only)
    Prune {
        /// Keep images and tag revisions younger than this, e.g. 90s, 2m, 1h30m (0 keeps none by age)
        #[arg(long, value_name = "DURATION", value_parser = crate::duration::parse, default_value = "60m")]
        keep_younger_than: Duration,
        /// Keep this many of the newest revisions of every tag (0 keeps none, not even the current one)
        #[arg(long, value_name = "N", default_value_t = 3)]
        keep_tag_revisions: u32,
        /// Also prune untagged images (those no tag revision mentions, e.g. pulled by digest)
        #[arg(long)]
        all: bool,
        /// Only list what would be removed and the bytes it would free
        #[arg(long)]
        dry_run: bool,
        /// Options every client subcommand takes.
        #[command(flatten)]
        common: Common,
    },
}

/// Options every client subcommand takes, after the subcommand's name.
#[derive(Debug, Clone, clap::Args)]
pub struct Common {
    /// CRI image service socket (imaged's, or e.g. /run/containerd/containerd.sock)
    #[arg(long, value_name = "PATH", env = "IMAGED_SOCKET", default_value_os_t = crate::config::default_socket())]
    pub socket: PathBuf,
    /// Output format
    #[arg(short, long, value_name = "FORMAT", value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

/// How a command prints its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns for people.
    Table,
    /// Pretty-printed JSON with crictl's (protobuf JSON) field names.
    Json,
}

/// Runs `cmd`, printing to stdout and stderr; `pull` draws progress bars when stderr is a terminal. A closed
/// stdout (`imaged images | head -1`) is not an error.
pub async fn run(cmd: ClientCommand) -> Result<(), CliError> {
    let progress = ProgressMode::for_stderr();
    match dispatch(cmd, progress, &mut std::io::stdout(), &mut std::io::stderr()).await {
        Err(CliError::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// Runs `cmd`, writing its result to `out`, and to `err` the failures of single items (in `rmi`) and the
/// progress of `pull` as plain lines.
pub async fn execute(
    cmd: ClientCommand,
    out: &mut (dyn Write + Send),
    err: &mut (dyn Write + Send),
) -> Result<(), CliError> {
    dispatch(cmd, ProgressMode::Lines, out, err).await
}

/// Runs `cmd`, `pull` showing its progress as `progress` says.
async fn dispatch(
    cmd: ClientCommand,
    progress: ProgressMode,
    out: &mut (dyn Write + Send),
    err: &mut (dyn Write + Send),
) -> Result<(), CliError> {
    match cmd {
        ClientCommand::Pull { image, creds, common } => {
            pull::run(&common, &image, creds.as_ref(), progress, out, err).await?;
        }
        ClientCommand::Images { image, quiet, common } => images::run(&common, image.as_deref(), quiet, out).await?,
        ClientCommand::Inspect { image, common } => inspect::run(&common, &image, out).await?,
        ClientCommand::Rmi { images, common } => rmi::run(&common, &images, out, err).await?,
        ClientCommand::Fsinfo { common } => fsinfo::run(&common, out).await?,
        ClientCommand::Mount { image, dir, common } => mount::run(&common, &image, &dir, out).await?,
        ClientCommand::Gc { dry_run, common } => gc::run(&common, dry_run, out).await?,
        ClientCommand::Prune {
            keep_younger_than,
            keep_tag_revisions,
            all,
            dry_run,
            common,
        } => {
            let request = prune::request(keep_younger_than, keep_tag_revisions, all, dry_run);
            prune::run(&common, request, out).await?;
        }
    }
    out.flush()?;
    Ok(())
}

/// Connects a CRI image service client to the unix socket at `socket`.
pub async fn connect(socket: &Path) -> Result<ImageServiceClient<Channel>, tonic::transport::Error> {
    Ok(cri_client(channel(socket).await?))
}

/// A CRI image service client on `channel`, taking messages as large as imaged's server does.
fn cri_client(channel: Channel) -> ImageServiceClient<Channel> {
    ImageServiceClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

/// An imaged.v1 client on `channel`, with the same message limits as [`cri_client`].
fn imaged_client(channel: Channel) -> ImagesClient<Channel> {
    ImagesClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

pub use crate::uds::channel;

/// Verbose ImageStatus of `image`; `command` names the call in errors. An absent image is an error.
async fn verbose_status(
    common: &Common,
    command: &str,
    image: &str,
) -> Result<crate::proto::runtime::v1::ImageStatusResponse, CliError> {
    let mut client = client(common).await?;
    let request = crate::proto::runtime::v1::ImageStatusRequest {
        image: Some(crate::proto::runtime::v1::ImageSpec {
            image: image.to_string(),
            ..Default::default()
        }),
        verbose: true,
    };
    let response = client
        .image_status(request)
        .await
        .map_err(|s| CliError::rpc(format!("{command} {image}"), &s))?
        .into_inner();
    if response.image.is_none() {
        return Err(CliError::ImageNotFound {
            image: image.to_string(),
        });
    }
    Ok(response)
}

/// [`connect`], with a failure turned into the error a person at a terminal needs.
async fn client(common: &Common) -> Result<ImageServiceClient<Channel>, CliError> {
    Ok(cri_client(open(common).await?))
}

/// [`channel`] to `--socket`, with a failure turned into the error a person at a terminal needs.
async fn open(common: &Common) -> Result<Channel, CliError> {
    channel(&common.socket)
        .await
        .map_err(|e| CliError::connect(&common.socket, &e))
}
