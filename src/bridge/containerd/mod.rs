//! The containerd bridge: imaged's outbound adapter to containerd. (containerd's snapshot API, which
//! containerd calls to build containers' root filesystems on imaged's layers, is served by `server/`.)
//!
//! - [`ContainerdBridge`] (with `[containerd] address` set): every image imaged records is published into
//!   containerd's namespace ([`publish`]) before the PullImage answers, and every image it removes is taken
//!   back; a reconciler makes containerd's records match imaged's at start, whenever a publication could
//!   not be done (containerd down), and periodically (containerd restarted on a fresh root). Each round
//!   also reads which sandbox image containerd pins, which imaged then pins too ([`sandbox`]).
//!
//! containerd's CRI plugin learns about images through image events, asynchronously; [`cri_view`] waits until
//! it shows a publication (the image by id) or a removal (imaged's names gone), so kubelet's next call never
//! races it.

mod client;
mod cri_view;
mod error;
pub mod fs_path;
pub mod publish;
pub mod sandbox;
pub mod snippet;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::future::BoxFuture;
use tonic::Code;

pub use client::Conn;
pub use error::BridgeError;

use crate::digest::Digest;
use crate::keyed_lock::KeyedLocks;
use crate::metadata::ImageRecord;
use crate::pinned::Pinned;
use crate::stores::Stores;

/// The resolved `[containerd]` section (`config` reads it from the file and the command line), present
/// when publishing is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerdConfig {
    /// containerd's gRPC socket.
    pub address: std::path::PathBuf,
    /// The namespace images are published in.
    pub namespace: String,
    /// The proxy snapshotter's name in containerd's config.
    pub snapshotter: String,
}

/// Longest a publication or removal may take before the pull answers anyway (the reconciler finishes it).
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the reconciler compares both sides when nothing asked it to.
const RECONCILE_PERIOD: Duration = Duration::from_secs(60);
/// Retry delays while containerd cannot be reached.
const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// What a reconciliation changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Reconciled {
    /// Images published (some name was missing or pointed elsewhere).
    pub published: usize,
    /// Records of imaged's deleted (their image is gone from imaged).
    pub deleted: usize,
}

/// Publishes imaged's images into containerd and takes them back.
pub struct ContainerdBridge {
    config: ContainerdConfig,
    stores: Stores,
    /// imaged's store: the filesystem containerd should report for the snapshotter ([`fs_path`]).
    store_root: std::path::PathBuf,
    /// Where the sandbox image containerd pins is pinned in imaged ([`sandbox`]).
    pinned: Arc<Pinned>,
    /// One publication or removal of an image at a time.
    locks: KeyedLocks<Digest>,
    conn: tokio::sync::Mutex<Option<Conn>>,
    /// The names published in this process's lifetime, per image: a pull of a published image only checks
    /// that containerd still has it.
    published: std::sync::Mutex<HashMap<Digest, BTreeSet<String>>>,
    /// Something could not be done; the reconciler retries until it is.
    dirty: AtomicBool,
    wake: tokio::sync::Notify,
}

impl ContainerdBridge {
    /// The bridge to the containerd of `config`, publishing from `stores` (kept at `store_root`), pinning in
    /// `pinned` the sandbox image containerd pins.
    pub fn new(
        config: ContainerdConfig,
        stores: Stores,
        store_root: std::path::PathBuf,
        pinned: Arc<Pinned>,
    ) -> Arc<ContainerdBridge> {
        Arc::new(ContainerdBridge {
            config,
            stores,
            store_root,
            pinned,
            locks: KeyedLocks::default(),
            conn: tokio::sync::Mutex::new(None),
            published: std::sync::Mutex::new(HashMap::new()),
            dirty: AtomicBool::new(true),
            wake: tokio::sync::Notify::new(),
        })
    }

    /// The bridge's configuration.
    pub fn config(&self) -> &ContainerdConfig {
        &self.config
    }

    /// Starts the reconciler: at once, then whenever work is left over, and every minute.
    fn spawn_reconciler(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let bridge = self.clone();
        tokio::spawn(async move {
            let mut delay = RETRY_MIN;
            let mut failing = false;
            loop {
                bridge.dirty.store(false, Ordering::Release);
                match bridge.reconcile().await {
                    Ok(r) => {
                        if failing {
                            tracing::info!(address = %bridge.config.address.display(), "containerd answers again");
                        }
                        if r != Reconciled::default() {
                            tracing::info!(
                                published = r.published,
                                deleted = r.deleted,
                                "containerd: images reconciled"
                            );
                        }
                        failing = false;
                        delay = RETRY_MIN;
                    }
                    Err(e) => {
                        if !failing {
                            tracing::warn!(error = %e, "containerd: cannot reconcile images; retrying until it answers");
                        }
                        failing = true;
                        bridge.dirty.store(true, Ordering::Release);
                    }
                }
                if bridge.dirty.load(Ordering::Acquire) {
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(RETRY_MAX);
                } else {
                    let _ = tokio::time::timeout(RECONCILE_PERIOD, bridge.wake.notified()).await;
                }
            }
        })
    }

    /// Makes containerd's records match imaged's: publishes images with a missing or wrong name, deletes
    /// the records imaged published whose image is gone; and pins the sandbox image containerd pins.
    pub async fn reconcile(&self) -> Result<Reconciled, BridgeError> {
        let conn = self.conn().await?;
        // Checked at every round: containerd may have been restarted on a fresh root.
        match fs_path::ensure(&conn, &self.config.snapshotter, &self.store_root).await {
            Ok(fs_path::FsPath::Linked(path)) => tracing::info!(
                path = %path.display(),
                store = %self.store_root.display(),
                "linked the path containerd reports as the snapshotter's filesystem to imaged's store"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!("{e}"),
        }
        let filter = format!("labels.\"{}\"", publish::PUBLISHED_LABEL);
        let listed = conn
            .images()
            .list(conn.req(
                containerd_client::services::v1::ListImagesRequest { filters: vec![filter] },
                None,
            ))
            .await
            .map_err(|s| self.failed(BridgeError::rpc(conn.address(), "list images", &s)))?
            .into_inner()
            .images;
        let ours: HashMap<String, (String, String)> = listed
            .into_iter()
            .map(|i| {
                let id = i.labels.get(publish::PUBLISHED_LABEL).cloned().unwrap_or_default();
                let target = i.target.map(|t| t.digest).unwrap_or_default();
                (i.name, (id, target))
            })
            .collect();
        // The images containerd's CRI plugin knows (None: no CRI plugin). It forgets images it could not
        // check at its own start (imaged was down), until an image event makes it look again.
        let cri = self.cri_images(&conn).await?;
        let pinned_listed = cri.as_ref().map(|c| c.pinned_names.as_slice()).unwrap_or_default();
        // Not knowing it keeps the pins as they are (the next round asks again); publishing goes on.
        if let Err(e) = self.learn_sandbox(&conn, pinned_listed).await {
            tracing::warn!(error = %e, "containerd: cannot read which sandbox image it pins; asking again later");
        }
        let mut done = Reconciled::default();
        let records = self.stores.metadata.list();
        let mut expected = BTreeSet::new();
        for rec in &records {
            let want = (rec.id.to_string(), publish::target(rec).digest.to_string());
            let names = publish::names(rec);
            let complete = names.iter().all(|n| ours.get(n) == Some(&want));
            let cri_knows = cri.as_ref().is_none_or(|c| c.ids.contains(&want.0));
            expected.extend(names);
            if !complete || !cri_knows {
                let _one = self.locks.lock(&rec.id).await;
                // Removed meanwhile: nothing to publish.
                if self.stores.metadata.get(&rec.id).is_none() {
                    continue;
                }
                self.publish_and_wait(&conn, rec, !cri_knows).await?;
                done.published += 1;
            }
        }
        for (name, (id, _)) in &ours {
            if expected.contains(name) {
                continue;
            }
            let Ok(id) = id.parse::<Digest>() else { continue };
            let _one = self.locks.lock(&id).await;
            if self
                .stores
                .metadata
                .get(&id)
                .is_some_and(|r| publish::names(&r).contains(name))
            {
                continue; // Recorded again meanwhile.
            }
            let req = containerd_client::services::v1::DeleteImageRequest {
                name: name.clone(),
                sync: false,
                target: None,
            };
            match conn.images().delete(conn.req(req, None)).await {
                Ok(_) => done.deleted += 1,
                Err(s) if s.code() == Code::NotFound => {}
                Err(s) => return Err(self.failed(BridgeError::rpc(conn.address(), "delete an image", &s))),
            }
            self.forget(&id);
        }
        Ok(done)
    }

    /// Publishes `rec` unless containerd has it already, and waits until containerd's CRI plugin sees it.
    async fn ensure_published(&self, rec: &ImageRecord) -> Result<(), BridgeError> {
        let conn = self.conn().await?;
        let names: BTreeSet<String> = publish::names(rec).into_iter().collect();
        let known = self
            .published
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&rec.id)
            .is_some_and(|n| n.is_superset(&names));
        if known && self.still_there(&conn, rec).await? {
            return Ok(());
        }
        self.publish_and_wait(&conn, rec, false).await
    }

    async fn publish_and_wait(&self, conn: &Conn, rec: &ImageRecord, touch: bool) -> Result<(), BridgeError> {
        publish::publish(conn, &self.stores, &self.config.snapshotter, rec, touch)
            .await
            .map_err(|e| self.failed(e))?;
        self.published
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(rec.id, publish::names(rec).into_iter().collect());
        self.wait_cri_knows(conn, &rec.id).await
    }

    /// Whether containerd still has `rec` under its id, pointing at it.
    async fn still_there(&self, conn: &Conn, rec: &ImageRecord) -> Result<bool, BridgeError> {
        let req = containerd_client::services::v1::GetImageRequest {
            name: rec.id.to_string(),
        };
        match conn.images().get(conn.req(req, None)).await {
            Ok(r) => Ok(r.into_inner().image.is_some_and(|i| {
                i.target
                    .is_some_and(|t| t.digest == publish::target(rec).digest.to_string())
            })),
            Err(s) if s.code() == Code::NotFound => Ok(false),
            Err(s) => Err(self.failed(BridgeError::rpc(conn.address(), "read an image", &s))),
        }
    }

    /// Takes `rec`'s records back and waits until containerd's CRI plugin no longer shows them (containerd
    /// may keep the image under names of its own).
    async fn take_back(&self, rec: &ImageRecord) -> Result<(), BridgeError> {
        let conn = self.conn().await?;
        publish::unpublish(&conn, rec).await.map_err(|e| self.failed(e))?;
        self.forget(&rec.id);
        let ours: BTreeSet<String> = publish::names(rec).into_iter().collect();
        self.wait_cri_forgot(&conn, &rec.id, &ours).await
    }

    fn forget(&self, id: &Digest) {
        self.published.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
    }

    /// The cached connection, or a new one.
    async fn conn(&self) -> Result<Conn, BridgeError> {
        let mut conn = self.conn.lock().await;
        if let Some(c) = conn.as_ref() {
            return Ok(c.clone());
        }
        let c = Conn::connect(&self.config.address, &self.config.namespace).await?;
        *conn = Some(c.clone());
        Ok(c)
    }

    /// Notes a failure: an unreachable containerd drops the connection (the next call connects again).
    fn failed(&self, e: BridgeError) -> BridgeError {
        if e.unavailable
            && let Ok(mut c) = self.conn.try_lock()
        {
            *c = None;
        }
        e
    }

    fn retry_later(&self) {
        self.dirty.store(true, Ordering::Release);
        self.wake.notify_one();
    }
}

impl crate::events::Bridge for ContainerdBridge {
    fn start(self: Arc<Self>) -> Option<tokio::task::JoinHandle<()>> {
        Some(self.spawn_reconciler())
    }
}

impl crate::events::ImageEvents for ContainerdBridge {
    fn recorded<'a>(&'a self, rec: &'a Arc<ImageRecord>) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let _one = self.locks.lock(&rec.id).await;
            // Removed while we waited for the lock: nothing to publish.
            if self.stores.metadata.get(&rec.id).is_none() {
                return;
            }
            let outcome = tokio::time::timeout(PUBLISH_TIMEOUT, self.ensure_published(rec)).await;
            let error = match outcome {
                Ok(Ok(())) => return,
                Ok(Err(e)) => e.to_string(),
                Err(_) => format!("no answer within {PUBLISH_TIMEOUT:?}"),
            };
            tracing::warn!(image = %rec.id, %error, "could not publish the image into containerd; it will be once containerd answers");
            self.retry_later();
        })
    }

    fn removed<'a>(&'a self, rec: &'a ImageRecord) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let _one = self.locks.lock(&rec.id).await;
            // Pulled and recorded again since the removal (and published by that pull): keep it. Names the
            // new record lacks are left to the reconciler.
            if self.stores.metadata.get(&rec.id).is_some() {
                self.retry_later();
                return;
            }
            let outcome = tokio::time::timeout(PUBLISH_TIMEOUT, self.take_back(rec)).await;
            let error = match outcome {
                Ok(Ok(())) => return,
                Ok(Err(e)) => e.to_string(),
                Err(_) => format!("no answer within {PUBLISH_TIMEOUT:?}"),
            };
            tracing::warn!(image = %rec.id, %error, "could not remove the image from containerd; it will be once containerd answers");
            self.retry_later();
        })
    }
}
