//! Publishing one image into containerd's namespace, and taking it back.
//!
//! In order, under a containerd lease (so that nothing is collected half-way, and a crash leaves nothing
//! forever: the lease expires):
//! 1. the index (if any), manifest and config blobs into containerd's content store, with containerd's
//!    garbage-collection labels (`containerd.io/gc.ref.content.*` from index to manifest to config and
//!    layers, `containerd.io/gc.ref.snapshot.<snapshotter>` from config to the top layer). Layer blobs are
//!    never copied: containerd only reads manifest and config to run an image;
//! 2. each layer claimed as a snapshot in containerd's metadata: a Prepare labelled
//!    `containerd.io/snapshot.ref=<chain id>`, which imaged's snapshotter answers AlreadyExists, so
//!    containerd records the layer as committed under its chain id (its remote snapshot protocol);
//! 3. last, the image records (each repo tag and repo digest, and `sha256:<id>` as containerd's CRI plugin
//!    names them), labelled as managed by CRI and published by imaged.
//!
//! Records come last, so containerd never shows an image whose content or layers are missing.

use std::collections::HashMap;

use containerd_client::services::v1 as ctd;
use containerd_client::services::v1::snapshots as ctd_snapshots;
use tonic::Code;

use super::BridgeError;
use super::client::Conn;
use crate::digest::Digest;
use crate::metadata::{Descriptor, ImageRecord};
use crate::stores::Stores;

/// The label imaged puts on the image records it publishes; its value is the image id.
pub const PUBLISHED_LABEL: &str = "io.imaged.published";
/// containerd's CRI plugin treats images with this label as its own (it adds the id reference otherwise).
const CRI_LABEL: (&str, &str) = ("io.cri-containerd.image", "managed");
/// containerd's lease label: the lease is collected after this time even if imaged never deletes it.
const LEASE_EXPIRE_LABEL: &str = "containerd.io/gc.expire";
/// The largest blob published (index, manifest, config): as imaged's own limit on manifests.
const MAX_SMALL_BLOB: u64 = 16 << 20;

/// The names an image is published under: its tags, its repo digests, and `sha256:<id>`.
pub fn names(rec: &ImageRecord) -> Vec<String> {
    let mut out: Vec<String> = rec.repo_tags.iter().chain(&rec.repo_digests).cloned().collect();
    out.push(rec.id.to_string());
    out
}

/// The descriptor image records point at: the index if the image came from one, else the manifest.
pub fn target(rec: &ImageRecord) -> &Descriptor {
    rec.index.as_ref().unwrap_or(&rec.manifest)
}

/// Publishes `rec` (idempotent: what exists is checked and completed). With `touch`, records that are
/// already right are written again: containerd's CRI plugin only (re)loads an image on an image event, and
/// drops the images it could not check at its start (imaged was down then).
pub async fn publish(
    conn: &Conn,
    stores: &Stores,
    snapshotter: &str,
    rec: &ImageRecord,
    touch: bool,
) -> Result<(), BridgeError> {
    let lease = create_lease(conn, rec).await?;
    let result = publish_leased(conn, stores, snapshotter, rec, &lease, touch).await;
    // Whatever happened, the lease has done its job (or expires by itself if containerd cannot be told).
    let mut leases = conn.leases();
    let req = conn.req(
        ctd::DeleteRequest {
            id: lease.clone(),
            sync: false,
        },
        None,
    );
    if let Err(s) = leases.delete(req).await {
        tracing::debug!(lease, error = %s.message(), "containerd: could not delete the publishing lease; it expires");
    }
    result
}

async fn publish_leased(
    conn: &Conn,
    stores: &Stores,
    snapshotter: &str,
    rec: &ImageRecord,
    lease: &str,
    touch: bool,
) -> Result<(), BridgeError> {
    let chains = rec.chain_ids();
    let top = chains
        .last()
        .ok_or_else(|| BridgeError::other(conn.address(), "publish", &format!("image {} has no layers", rec.id)))?;
    if let Some(index) = &rec.index {
        let labels = [(
            "containerd.io/gc.ref.content.m.0".to_string(),
            rec.manifest.digest.to_string(),
        )];
        put_blob(conn, stores, index, labels.into(), lease).await?;
    }
    let mut labels: HashMap<String, String> = [(
        "containerd.io/gc.ref.content.config".to_string(),
        rec.config.digest.to_string(),
    )]
    .into();
    for (i, l) in rec.layers.iter().enumerate() {
        labels.insert(format!("containerd.io/gc.ref.content.l.{i}"), l.blob.digest.to_string());
    }
    put_blob(conn, stores, &rec.manifest, labels, lease).await?;
    let labels = [(format!("containerd.io/gc.ref.snapshot.{snapshotter}"), top.to_string())];
    put_blob(conn, stores, &rec.config, labels.into(), lease).await?;
    claim_layers(conn, snapshotter, &chains, lease).await?;
    let target = target(rec);
    let mut names = names(rec);
    // The id last: it is the name the caller waits for (containerd handles image events in order).
    let id = names.pop().unwrap_or_default();
    for name in names.iter().chain([&id]) {
        put_image(conn, name, target, rec.id, lease, touch).await?;
    }
    Ok(())
}

async fn create_lease(conn: &Conn, rec: &ImageRecord) -> Result<String, BridgeError> {
    let now = std::time::SystemTime::now();
    let expire = now + std::time::Duration::from_secs(3600);
    let nanos = crate::clock::ns_of(now);
    let id = format!("imaged-publish-{}-{nanos}", &rec.id.hex()[..12]);
    let labels = [(LEASE_EXPIRE_LABEL.to_string(), rfc3339(expire))].into();
    let mut leases = conn.leases();
    leases
        .create(conn.req(ctd::CreateRequest { id: id.clone(), labels }, None))
        .await
        .map_err(|s| BridgeError::rpc(conn.address(), "create a lease", &s))?;
    Ok(id)
}

/// Puts a small blob (index, manifest, config) into containerd's content store with `labels`, or adds
/// the labels if it is there.
async fn put_blob(
    conn: &Conn,
    stores: &Stores,
    desc: &Descriptor,
    labels: HashMap<String, String>,
    lease: &str,
) -> Result<(), BridgeError> {
    let mut content = conn.content();
    let digest = desc.digest.to_string();
    let info = content
        .info(conn.req(ctd::InfoRequest { digest: digest.clone() }, Some(lease)))
        .await;
    match info {
        Ok(_) => return update_blob_labels(conn, &digest, labels, lease).await,
        Err(s) if s.code() == Code::NotFound => {}
        Err(s) => return Err(BridgeError::rpc(conn.address(), "look up content", &s)),
    }
    let data = stores
        .content
        .read(&desc.digest, MAX_SMALL_BLOB)
        .map_err(|e| BridgeError::other(conn.address(), "read blob", &e.to_string()))?;
    let msg = ctd::WriteContentRequest {
        action: ctd::WriteAction::Commit as i32,
        r#ref: format!("imaged-{}", desc.digest.hex()),
        total: data.len() as i64,
        expected: digest.clone(),
        offset: 0,
        data,
        labels,
    };
    let stream = tokio_stream::iter([msg]);
    match content.write(conn.req(stream, Some(lease))).await {
        Ok(resp) => {
            // Drain the answer stream: the commit happened once the server answers.
            let mut answers = resp.into_inner();
            while let Some(a) = answers.message().await.transpose() {
                a.map_err(|s| BridgeError::rpc(conn.address(), "write content", &s))?;
            }
            Ok(())
        }
        // Written meanwhile by someone else: fine, it is the same bytes.
        Err(s) if s.code() == Code::AlreadyExists => Ok(()),
        Err(s) => Err(BridgeError::rpc(conn.address(), "write content", &s)),
    }
}

async fn update_blob_labels(
    conn: &Conn,
    digest: &str,
    labels: HashMap<String, String>,
    lease: &str,
) -> Result<(), BridgeError> {
    let paths = labels.keys().map(|k| format!("labels.{k}")).collect();
    let req = ctd::UpdateRequest {
        info: Some(ctd::Info {
            digest: digest.to_string(),
            labels,
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask { paths }),
    };
    conn.content()
        .update(conn.req(req, Some(lease)))
        .await
        .map_err(|s| BridgeError::rpc(conn.address(), "label content", &s))?;
    Ok(())
}

/// Records each layer of `chains` (base first) as a committed snapshot in containerd's metadata.
async fn claim_layers(conn: &Conn, snapshotter: &str, chains: &[Digest], lease: &str) -> Result<(), BridgeError> {
    let mut sn = conn.snapshots();
    for (i, chain) in chains.iter().enumerate() {
        let key = chain.to_string();
        let stat = ctd_snapshots::StatSnapshotRequest {
            snapshotter: snapshotter.to_string(),
            key: key.clone(),
        };
        match sn.stat(conn.req(stat, Some(lease))).await {
            Ok(_) => continue,
            Err(s) if s.code() == Code::NotFound => {}
            Err(s) => return Err(BridgeError::rpc(conn.address(), "look up a snapshot", &s)),
        }
        let claim_key = format!("imaged-claim-{}-{}", std::process::id(), key);
        let prepare = ctd_snapshots::PrepareSnapshotRequest {
            snapshotter: snapshotter.to_string(),
            key: claim_key.clone(),
            parent: i.checked_sub(1).map(|p| chains[p].to_string()).unwrap_or_default(),
            labels: [(crate::snapshotter::SNAPSHOT_REF_LABEL.to_string(), key.clone())].into(),
        };
        match sn.prepare(conn.req(prepare, Some(lease))).await {
            Err(s) if s.code() == Code::AlreadyExists => {}
            Ok(_) => {
                // The snapshotter did not know the layer (it was removed meanwhile): containerd made an
                // empty active snapshot instead. Take it back and give up on this image for now.
                let remove = ctd_snapshots::RemoveSnapshotRequest {
                    snapshotter: snapshotter.to_string(),
                    key: claim_key,
                };
                let _ = sn.remove(conn.req(remove, Some(lease))).await;
                return Err(BridgeError::other(
                    conn.address(),
                    "claim a layer",
                    &format!("containerd's snapshotter {snapshotter:?} does not have layer {key}: is it imaged's?"),
                ));
            }
            Err(s) => return Err(BridgeError::rpc(conn.address(), "claim a layer", &s)),
        }
    }
    Ok(())
}

/// Creates or updates the image record `name` → `target`.
async fn put_image(
    conn: &Conn,
    name: &str,
    target: &Descriptor,
    id: Digest,
    lease: &str,
    touch: bool,
) -> Result<(), BridgeError> {
    let mut images = conn.images();
    let image = ctd::Image {
        name: name.to_string(),
        labels: [
            (CRI_LABEL.0.to_string(), CRI_LABEL.1.to_string()),
            (PUBLISHED_LABEL.to_string(), id.to_string()),
        ]
        .into(),
        target: Some(containerd_client::types::Descriptor {
            media_type: target.media_type.clone(),
            digest: target.digest.to_string(),
            size: target.size as i64,
            annotations: HashMap::new(),
        }),
        created_at: None,
        updated_at: None,
    };
    let create = ctd::CreateImageRequest {
        image: Some(image.clone()),
        source_date_epoch: None,
    };
    match images.create(conn.req(create, Some(lease))).await {
        Ok(_) => return Ok(()),
        Err(s) if s.code() == Code::AlreadyExists => {}
        Err(s) => return Err(BridgeError::rpc(conn.address(), "create an image", &s)),
    }
    let current = images
        .get(conn.req(ctd::GetImageRequest { name: name.to_string() }, Some(lease)))
        .await
        .map_err(|s| BridgeError::rpc(conn.address(), "read an image", &s))?
        .into_inner()
        .image;
    if let Some(c) = current
        && !touch
        && c.target == image.target
        && c.labels.get(PUBLISHED_LABEL) == image.labels.get(PUBLISHED_LABEL)
        && c.labels.get(CRI_LABEL.0).map(String::as_str) == Some(CRI_LABEL.1)
    {
        return Ok(());
    }
    let update = ctd::UpdateImageRequest {
        image: Some(image),
        update_mask: Some(prost_types::FieldMask {
            paths: vec![
                "target".into(),
                format!("labels.{}", CRI_LABEL.0),
                format!("labels.{PUBLISHED_LABEL}"),
            ],
        }),
        source_date_epoch: None,
    };
    images
        .update(conn.req(update, Some(lease)))
        .await
        .map_err(|s| BridgeError::rpc(conn.address(), "update an image", &s))?;
    Ok(())
}

/// Deletes the records of `rec` that still point at it (a tag that moved to another image stays).
pub async fn unpublish(conn: &Conn, rec: &ImageRecord) -> Result<(), BridgeError> {
    let mut images = conn.images();
    let target = target(rec).digest.to_string();
    let id = rec.id.to_string();
    for name in names(rec) {
        let current = match images
            .get(conn.req(ctd::GetImageRequest { name: name.clone() }, None))
            .await
        {
            Ok(r) => r.into_inner().image,
            Err(s) if s.code() == Code::NotFound => continue,
            Err(s) => return Err(BridgeError::rpc(conn.address(), "read an image", &s)),
        };
        let ours = current.is_some_and(|c| {
            c.target.is_some_and(|t| t.digest == target) && c.labels.get(PUBLISHED_LABEL) == Some(&id)
        });
        if !ours {
            continue;
        }
        match images
            .delete(conn.req(
                ctd::DeleteImageRequest {
                    name,
                    sync: false,
                    target: None,
                },
                None,
            ))
            .await
        {
            Ok(_) => {}
            Err(s) if s.code() == Code::NotFound => {}
            Err(s) => return Err(BridgeError::rpc(conn.address(), "delete an image", &s)),
        }
    }
    Ok(())
}

/// RFC 3339 in UTC, whole seconds, as containerd's label parser takes it.
fn rfc3339(t: std::time::SystemTime) -> String {
    let secs = crate::clock::ns_of(t).div_euclid(1_000_000_000);
    crate::clock::rfc3339_from_ns(secs * 1_000_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_matches_known_dates() {
        let at = |s: u64| std::time::UNIX_EPOCH + std::time::Duration::from_secs(s);
        assert_eq!(rfc3339(at(0)), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(at(951_782_400)), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(at(1_795_958_755)), "2026-11-29T13:25:55Z");
    }
}
