//! The `imaged` binary: `imaged serve` runs the daemon; the other subcommands are CRI clients.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use imaged::config::{Config, DEFAULT_CONFIG_FILE, FileConfig, Overrides};

/// How long in-flight calls may run after SIGTERM/SIGINT before the daemon exits anyway. The store is
/// crash-safe, so cutting a pull short only loses that pull's progress.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

#[derive(Parser)]
#[command(name = "imaged", version, about = "A Kubernetes CRI image service")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon: serve CRI runtime.v1.ImageService on a unix socket.
    Serve(ServeArgs),
    /// Check the store offline (daemon stopped): blobs match their digests, images are complete, no leftovers.
    Fsck(FsckArgs),
    /// Print the lines containerd's config.toml needs to run imaged's images (proxy snapshotter, CRI).
    ContainerdConfig(ContainerdConfigArgs),
    #[command(flatten)]
    Client(imaged::cli::ClientCommand),
}

#[derive(Args)]
struct FsckArgs {
    /// TOML config file [default: /etc/imaged/config.toml if it exists]
    #[arg(long)]
    config: Option<PathBuf>,
    /// Store directory [default: as `imaged serve`]
    #[arg(long)]
    root: Option<PathBuf>,
    /// The containers-storage store `imaged serve` keeps, if it was given on its command line: its layers
    /// kept for runtimes' containers are then known, and the store is checked too
    #[arg(long, value_name = "DIR")]
    containers_storage_root: Option<PathBuf>,
}

#[derive(Args)]
struct ContainerdConfigArgs {
    /// TOML config file [default: /etc/imaged/config.toml if it exists]
    #[arg(long)]
    config: Option<PathBuf>,
    /// imaged's socket [default: as `imaged serve`]
    #[arg(long)]
    socket: Option<PathBuf>,
    /// imaged's store, the filesystem containerd reports for images and writable layers [default: as
    /// `imaged serve`]
    #[arg(long)]
    root: Option<PathBuf>,
    /// The containerd to write for (1.6, 1.7.24, 2.1, ...) [default: asked of the containerd at
    /// `[containerd] address`, else `containerd --version`, else the newest line]
    #[arg(long, value_name = "VERSION")]
    containerd_version: Option<String>,
}

#[derive(Args)]
struct ServeArgs {
    /// TOML config file [default: /etc/imaged/config.toml if it exists]
    #[arg(long)]
    config: Option<PathBuf>,
    /// Store directory [default: /var/lib/imaged as root, else $XDG_DATA_HOME/imaged]
    #[arg(long)]
    root: Option<PathBuf>,
    /// CRI socket path [default: /run/imaged/imaged.sock as root, else $XDG_RUNTIME_DIR/imaged/imaged.sock]
    #[arg(long)]
    socket: Option<PathBuf>,
    /// containerd-style hosts.toml directory (mirrors, plain-http registries, TLS)
    #[arg(long)]
    hosts_dir: Option<PathBuf>,
    /// Docker config.json with registry credentials (repeatable; first match wins)
    #[arg(long = "auth-file")]
    auth_files: Vec<PathBuf>,
    /// Platform to select from multi-platform images, os/arch[/variant] [default: the host's]
    #[arg(long)]
    platform: Option<String>,
    /// Never garbage-collect or prune images matching this (exact or glob, e.g. registry.k8s.io/pause:*);
    /// repeatable, added to the config's pinned_images
    #[arg(long = "pinned-image", value_name = "PATTERN")]
    pinned_images: Vec<String>,
    /// Serve Prometheus metrics on this TCP address, e.g. 127.0.0.1:9090
    #[arg(long)]
    metrics_addr: Option<String>,
    /// CRI runtime endpoint whose containers' images are in use and never collected
    /// (e.g. unix:///run/containerd/containerd.sock)
    #[arg(long)]
    runtime_endpoint: Option<String>,
    /// Publish images into the containerd at this socket (e.g. /run/containerd/containerd.sock), whose CRI
    /// plugin then runs them through imaged's snapshotter
    #[arg(long)]
    containerd_address: Option<PathBuf>,
    /// Keep a read-only containers/storage image store here (e.g. /var/lib/imaged-storage), for CRI-O and
    /// podman to list in additionalimagestores
    #[arg(long, value_name = "DIR")]
    containers_storage_root: Option<PathBuf>,
    /// How image ids are written in CRI answers: digest (sha256:<hex>, containerd) or hex (CRI-O)
    #[arg(long, value_name = "FORMAT", value_parser = parse_image_id_format)]
    image_id_format: Option<imaged::config::ImageIdFormat>,
}

fn parse_image_id_format(s: &str) -> Result<imaged::config::ImageIdFormat, String> {
    imaged::config::ImageIdFormat::parse(s).ok_or_else(|| format!("{s:?}: expected digest or hex"))
}

fn main() -> anyhow::Result<()> {
    imaged::memory::tune_allocator();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    match cli.command {
        Command::Serve(args) => runtime.block_on(serve(args)),
        Command::Fsck(args) => fsck(args, &runtime),
        Command::ContainerdConfig(args) => containerd_config(args, &runtime),
        Command::Client(cmd) => Ok(runtime.block_on(imaged::cli::run(cmd))?),
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        // Colours only for a person at a terminal; journald and log files get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let file = config_file(args.config.as_deref())?;
    let config = Config::resolve(
        file,
        Overrides {
            root: args.root,
            socket: args.socket,
            hosts_dir: args.hosts_dir,
            auth_files: args.auth_files,
            platform: args.platform,
            pinned_images: args.pinned_images,
            metrics_addr: args.metrics_addr,
            runtime_endpoint: args.runtime_endpoint,
            containerd_address: args.containerd_address,
            containers_storage_root: args.containers_storage_root,
            image_id_format: args.image_id_format,
        },
    )?;
    let service = Arc::new(imaged::daemon::open(&config)?);
    let housekeeping = imaged::service::Housekeeping::start(service.clone(), config.gc.period());
    let _metrics = config.metrics_addr.map(|addr| {
        let s = service.clone();
        let refresh: Arc<dyn Fn() + Send + Sync> = Arc::new(move || s.refresh_metrics());
        let metrics = service.metrics().clone();
        AbortOnDrop(tokio::spawn(async move {
            if let Err(e) = imaged::metrics::serve(addr, metrics, refresh).await {
                tracing::error!(%addr, error = %e, "metrics endpoint failed");
            }
        }))
    });
    let listener = imaged::server::listener::bind(&config.socket)?;
    tracing::info!(socket = %config.socket.display(), root = %config.root.display(), platform = %config.platform, "serving CRI image service");

    let metrics = service.metrics().clone();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let _recovery = {
        let s = service.clone();
        AbortOnDrop(tokio::spawn(async move { s.recover().await }))
    };
    let _bridges: Vec<AbortOnDrop> = service.start_bridges().into_iter().map(AbortOnDrop).collect();
    let server = tokio::spawn(imaged::server::serve(listener, service, async {
        let _ = stop_rx.await;
    }));
    let signal = shutdown_signal().await?;
    tracing::info!(signal, "shutting down: no new calls accepted");
    let _ = stop_tx.send(());
    // tonic's graceful shutdown also waits for idle connections to close, and kubelet keeps one open
    // forever: once no pull is running there is nothing left worth waiting for.
    let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
    tokio::pin!(server);
    loop {
        tokio::select! {
            joined = &mut server => {
                joined.context("server task")?.context("serving")?;
                break;
            }
            _ = tokio::time::sleep(Duration::from_millis(100)) => {
                if metrics.pulls_in_progress.get() == 0 {
                    break;
                }
                if tokio::time::Instant::now() >= deadline {
                    tracing::warn!("pulls still running after {SHUTDOWN_GRACE:?}; exiting anyway (the store is crash-safe)");
                    break;
                }
            }
        }
    }
    drop(housekeeping); // Stops the loop and persists last-use times.
    let _ = std::fs::remove_file(&config.socket);
    Ok(())
}

/// Aborts a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The config file given with `--config` (which must exist), else the default one if it exists.
fn config_file(path: Option<&std::path::Path>) -> anyhow::Result<FileConfig> {
    Ok(match path {
        Some(path) => FileConfig::load(path, true)?,
        None => FileConfig::load(std::path::Path::new(DEFAULT_CONFIG_FILE), false)?,
    })
}

fn fsck(args: FsckArgs, runtime: &tokio::runtime::Runtime) -> anyhow::Result<()> {
    let file = config_file(args.config.as_deref())?;
    let config = Config::resolve(
        file,
        Overrides {
            root: args.root,
            containers_storage_root: args.containers_storage_root,
            ..Overrides::default()
        },
    )?;
    // What a start does: open (drops partial downloads that cannot resume, and builds), then recover (sweeps what nothing
    // references, rewrites index.json), here awaited before checking. What they repair is found first, and
    // reported.
    let mut repaired = imaged::service::fsck_leftovers(&config.root);
    let kept = imaged::service::resumable_downloads(&config.root);
    let service = imaged::daemon::open(&config)?;
    repaired.extend(service.unreferenced());
    runtime.block_on(service.recover());
    let report = service.fsck();
    println!(
        "checked {} images, {} blobs (content hashed), {} snapshots in {}",
        report.images,
        report.blobs,
        report.snapshots,
        config.root.display()
    );
    for r in &repaired {
        println!("repaired: removed {r}");
    }
    if !repaired.is_empty() {
        println!("repaired {} leftovers of interrupted pulls or removals", repaired.len());
    }
    for k in &kept {
        println!("kept: {k}");
    }
    for p in &report.problems {
        println!("problem: {p}");
    }
    if report.problems.is_empty() {
        println!("ok");
        Ok(())
    } else {
        anyhow::bail!("{} problems found", report.problems.len())
    }
}

fn containerd_config(args: ContainerdConfigArgs, runtime: &tokio::runtime::Runtime) -> anyhow::Result<()> {
    use imaged::bridge::containerd::snippet::{Target, Version, render};
    let file = config_file(args.config.as_deref())?;
    let config = Config::resolve(
        file,
        Overrides {
            root: args.root,
            socket: args.socket,
            ..Overrides::default()
        },
    )?;
    let version = match &args.containerd_version {
        Some(v) => {
            Version::parse(v).with_context(|| format!("--containerd-version {v:?}: expected 1.6, 1.7.24, 2.1, ..."))?
        }
        None => match runtime.block_on(containerd_version(&config)) {
            Some((v, from)) => {
                eprintln!("note: for containerd {v} ({from}); --containerd-version chooses another");
                v
            }
            None => {
                eprintln!(
                    "note: no containerd found to ask (neither [containerd] address nor `containerd --version`): \
                     written for containerd {} and later; --containerd-version chooses another",
                    Version::NEWEST
                );
                Version::NEWEST
            }
        },
    };
    let snapshotter = config.containerd.as_ref().map_or("imaged", |c| c.snapshotter.as_str());
    let platform = config.platform.to_string();
    print!(
        "{}",
        render(
            version,
            &Target {
                socket: &config.socket,
                root: &config.root,
                snapshotter,
                platform: &platform,
                capabilities: imaged::snapshotter::CAPABILITIES,
            }
        )
    );
    if config.containerd.is_none() {
        eprintln!(
            "note: imaged does not publish images into containerd yet: set [containerd] address in its config \
             (or --containerd-address) so that containerd's CRI plugin finds the images imaged pulls"
        );
    }
    Ok(())
}

/// The version of the containerd imaged publishes to (its Version service), else of the `containerd` on
/// `PATH`, with where it was found.
async fn containerd_version(config: &Config) -> Option<(imaged::bridge::containerd::snippet::Version, String)> {
    use imaged::bridge::containerd::{Conn, snippet::Version};
    if let Some(c) = &config.containerd {
        match Conn::connect(&c.address, &c.namespace).await {
            Ok(conn) => match conn.version().await {
                Ok(v) => match Version::parse(&v) {
                    Some(parsed) => return Some((parsed, format!("asked at {}", c.address.display()))),
                    None => eprintln!("note: containerd at {} says its version is {v:?}", c.address.display()),
                },
                Err(e) => eprintln!("note: {e}"),
            },
            Err(e) => eprintln!("note: {e}"),
        }
    }
    Version::of_installed_binary().map(|v| (v, "`containerd --version`".to_string()))
}

async fn shutdown_signal() -> anyhow::Result<&'static str> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}
