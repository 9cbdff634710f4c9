//! Opening the service, in two steps so the composition root (`daemon`) can build the bridges between
//! them: [`ImageService::open_stores`] opens the stores (with the cleanup a start does) and the pins,
//! [`ImageService::open`] the registry adapter, the puller, the ensure logic and the collector over them,
//! announcing to the bridges it is given.

use std::sync::Arc;

use super::{ImageService, ServiceError};
use crate::config::Config;
use crate::content::ContentStore;
use crate::ensure::backoff::BackoffPolicy;
use crate::ensure::verify::{CredentialKey, Verifier};
use crate::ensure::{EnsureOptions, Ensurer};
use crate::events::{Bridge, Bridges};
use crate::gc::run::Collector;
use crate::layers::LayerStore;
use crate::lease::LeaseTable;
use crate::metadata::MetadataStore;
use crate::metrics::Metrics;
use crate::pattern::ImagePattern;
use crate::pinned::Pinned;
use crate::pull::{PullOptions, Puller};
use crate::registry::{Registry, RegistryOptions};
use crate::stores::Stores;
use crate::unpack::Capabilities;

/// What [`ImageService::open_stores`] opened: the stores, and what is pinned, which the bridges are built on.
pub struct Opened {
    /// The stores.
    pub stores: Stores,
    /// What GC never removes (the containerd bridge adds the sandbox image it reads).
    pub pinned: Arc<Pinned>,
    snapshotter: Arc<crate::snapshotter::Snapshotter>,
    caps: Capabilities,
}

/// An error opening the service at `config.root`.
fn open_err(config: &Config) -> impl Fn(String) -> ServiceError + '_ {
    |detail| ServiceError::Open {
        path: config.root.display().to_string(),
        detail,
    }
}

impl ImageService {
    /// Opens the store under `config.root` (creating it) and drops partial downloads and builds; reads
    /// the pinned images.
    pub fn open_stores(config: &Config) -> Result<Opened, ServiceError> {
        let open_err = open_err(config);
        create_private_dir(&config.root).map_err(|e| open_err(e.to_string()))?;
        let leases = LeaseTable::new();
        // The metadata first: redb locks its file, so a second daemon on the same root stops here, before
        // it touches anything.
        let metadata = Arc::new(
            MetadataStore::open(&config.root.join("metadata.redb"))
                .map_err(|e| open_err(format!("{e} (is another imaged running on this root?)")))?,
        );
        // Deletions ask the records too: what an image references is never deleted (see `lease`).
        leases.set_references(metadata.clone());
        let content = ContentStore::open(&config.root.join("content"), leases.clone())?;
        let layers = LayerStore::open(&config.root.join("snapshots"), leases.clone())?;
        // Stores written before snapshots recorded their parents learn them from the images' chains.
        let chains: Vec<Vec<crate::digest::Digest>> = metadata.list().iter().map(|r| r.chain_ids()).collect();
        let filled = layers.fill_parents(chains.iter().map(Vec::as_slice))?;
        if filled > 0 {
            tracing::info!(
                snapshots = filled,
                "recorded the parents of snapshots from an older store"
            );
        }
        let snapshotter = Arc::new(crate::snapshotter::Snapshotter::open(
            &config.root.join("snapshotter"),
            layers.clone(),
            leases.clone(),
        )?);
        let caps = Capabilities::probe(&config.root.join("snapshots"));
        if !caps.overlay_whiteouts {
            tracing::info!("cannot create overlay whiteouts here (not root?): layers keep deletions in OCI form");
        }
        let stores = Stores {
            content,
            layers,
            metadata,
            leases,
        };
        let patterns = config
            .pinned_images
            .iter()
            .map(|s| ImagePattern::parse(s).map_err(|e| open_err(format!("pinned image {s:?}: {e}"))))
            .collect::<Result<Vec<_>, _>>()?;
        // The sandbox image is pinned on top of these (containerd's once the bridge reads it).
        let pinned = Arc::new(Pinned::new(patterns));
        Ok(Opened {
            stores,
            pinned,
            snapshotter,
            caps,
        })
    }

    /// Sets up everything a pull, GC and prune need over `opened`, announcing to `bridges`. The sweep of
    /// unreferenced content follows: [`ImageService::recover`].
    pub fn open(config: &Config, opened: Opened, bridges: Vec<Arc<dyn Bridge>>) -> Result<ImageService, ServiceError> {
        let open_err = open_err(config);
        let Opened {
            stores,
            pinned,
            snapshotter,
            caps,
        } = opened;
        let metrics = Arc::new(Metrics::new());
        let registry = Arc::new(Registry::new(
            RegistryOptions {
                hosts_dir: config.hosts_dir.clone(),
                auth_files: config.auth_files.clone(),
                connect_timeout_secs: config.connect_timeout_secs,
                response_timeout: config.response_timeout,
                credential_helper_timeout: config.credential_helper_timeout,
                rate_limit_wait: config.rate_limit_wait,
            },
            metrics.clone(),
        ));
        let options = PullOptions {
            platform: config.platform.clone(),
            downloads: Arc::new(tokio::sync::Semaphore::new(config.max_concurrent_downloads)),
            limits: config.unpack,
            caps,
            fetch: config.fetch,
        };
        let p = &config.pull;
        let rules = p
            .verify_rules()
            .map_err(|e| open_err(format!("pull.preloaded_images_verification_allowlist: {e}")))?;
        let key = CredentialKey::load_or_create(&config.root).map_err(|e| open_err(e.to_string()))?;
        let verifier = Verifier::new(rules, key, registry.clone(), stores.metadata.clone(), metrics.clone());
        let puller = Arc::new(Puller::new(stores.clone(), registry, options));
        let policy = match &p.policy {
            Some(pc) => pc.build().map_err(|e| open_err(format!("pull.policy: {e}")))?,
            None => Default::default(),
        };
        let ensure = EnsureOptions {
            max_parallel_pulls: p.max_parallel_pulls.unwrap_or(0),
            qps: p.qps.unwrap_or(0.0),
            burst: p.burst.unwrap_or(10),
            max_qps_wait: p.max_qps_wait(),
            backoff: BackoffPolicy {
                initial: p.backoff_initial(),
                max: p.backoff_max(),
            },
            progress_timeout: p.progress_timeout(),
            stale_if_unavailable: p.stale_if_unavailable.unwrap_or(false),
            policy,
        };
        let bridges = Arc::new(Bridges::new(bridges));
        let ensurer = Ensurer::new(
            puller,
            stores.metadata.clone(),
            ensure,
            metrics.clone(),
            bridges.clone(),
            verifier,
        )
        .map_err(|e| open_err(format!("[pull]: {e}")))?;
        let gc_policy = config.gc.policy();
        gc_policy.validate().map_err(|e| open_err(format!("[gc]: {e}")))?;
        let collector = Collector::new(stores.clone(), config.root.clone(), pinned.clone(), bridges.clone());
        let service = ImageService {
            root: config.root.clone(),
            stores,
            ensurer,
            collector,
            gc_policy,
            pinned,
            metrics,
            runtime_handlers: config.runtime_handlers.clone(),
            snapshotter,
            bridges,
            image_id_format: config.image_id_format,
        };
        Ok(service)
    }

    /// The rest of what a start does: removes what no image references (left by a crash between commit
    /// and record) and rewrites `index.json` from the metadata. A serving daemon runs it in the background
    /// (the sweep respects the leases of pulls started meanwhile), which keeps a third of the start-up with
    /// thousands of images off the path to a served socket; `imaged fsck` awaits it before checking.
    pub async fn recover(&self) {
        let (removed, freed, ingests) = self.collector.sweep().await;
        if removed + ingests > 0 {
            tracing::info!(
                removed,
                freed_bytes = freed,
                ingests,
                "removed what no image references (left by an interrupted pull)"
            );
        }
        let stores = self.stores.clone();
        match tokio::task::spawn_blocking(move || stores.refresh_index()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot rewrite index.json; OCI tools may see a stale index"),
            Err(e) => tracing::warn!(error = %e, "index.json rewrite task failed"),
        }
    }
}

/// Creates `dir` (and parents) readable only by its owner: image layers can hold secrets.
fn create_private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}
