//! The `info` map of a verbose `ImageStatus`: what `crictl inspecti` prints.
//!
//! Like containerd, one key `info` holding JSON; ours carries the manifest, the chain ids, the layers
//! and the image config itself (`imageSpec`).

use std::collections::HashMap;

use serde_json::json;

use super::ServiceError;
use crate::manifest::MAX_CONFIG_BYTES;
use crate::metadata::ImageRecord;
use crate::stores::Stores;

pub(super) fn info(stores: &Stores, rec: &ImageRecord) -> Result<HashMap<String, String>, ServiceError> {
    let config = stores.content.read(&rec.config.digest, MAX_CONFIG_BYTES)?;
    // Base first, as `imaged mount` applies them; overlay's lowerdir lists them top first.
    let snapshots: Vec<String> = rec
        .chain_ids()
        .iter()
        .map(|c| stores.layers.fs_dir(c).display().to_string())
        .collect();
    let lowerdir = snapshots.iter().rev().cloned().collect::<Vec<_>>().join(":");
    let spec: serde_json::Value = serde_json::from_slice(&config).unwrap_or(serde_json::Value::Null);
    let layers: Vec<_> = rec
        .layers
        .iter()
        .map(|l| {
            json!({
                "digest": l.blob.digest,
                "size": l.blob.size,
                "mediaType": l.blob.media_type,
                "diffID": l.diff_id,
            })
        })
        .collect();
    let value = json!({
        "id": rec.id,
        "manifestDigest": rec.manifest.digest,
        "manifestMediaType": rec.manifest.media_type,
        "indexDigest": rec.index.as_ref().map(|i| i.digest),
        "platform": rec.platform,
        "chainIDs": rec.chain_ids(),
        "snapshots": snapshots,
        "lowerdir": lowerdir,
        "layers": layers,
        "imageSpec": spec,
    });
    Ok(HashMap::from([("info".to_string(), value.to_string())]))
}
