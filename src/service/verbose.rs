//! The `info` map of a verbose `ImageStatus`: what `crictl inspecti` prints.
//!
//! Like containerd, one key `info` holding JSON; ours carries the manifest, the chain ids, the layers
//! and the image config itself (`imageSpec`).

use std::collections::HashMap;

use serde_json::json;

use super::ServiceError;
use crate::content::ContentStore;
use crate::manifest::MAX_CONFIG_BYTES;
use crate::metadata::ImageRecord;

pub(super) fn info(content: &ContentStore, rec: &ImageRecord) -> Result<HashMap<String, String>, ServiceError> {
    let config = content.read(&rec.config.digest, MAX_CONFIG_BYTES)?;
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
        "layers": layers,
        "imageSpec": spec,
    });
    Ok(HashMap::from([("info".to_string(), value.to_string())]))
}
