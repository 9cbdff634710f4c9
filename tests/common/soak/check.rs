//! What every answer must satisfy whatever else runs: images are whole, known, and named only by their own
//! tags. Each function returns the problems found, as sentences; none means the answer is right.

use std::collections::BTreeSet;
use std::path::Path;

use imaged::proto::runtime::v1 as cri;
use serde_json::Value;

use super::catalog::{Catalog, Tag};

/// Checks an image `ImageStatus` found for `reference` (the tag `tag`), with its verbose `info` if asked.
pub fn image_by_tag(
    catalog: &Catalog,
    reference: &str,
    tag: &Tag,
    img: &cri::Image,
    verbose: bool,
    info: Option<&str>,
) -> Vec<String> {
    let mut out = Vec::new();
    if img.id != tag.id {
        out.push(format!(
            "{reference} names {} but ImageStatus answered {}",
            tag.id, img.id
        ));
        return out;
    }
    if img.size == 0 {
        out.push(format!("{reference} ({}): size 0 (kubelet rejects it)", img.id));
    }
    if !img.repo_tags.iter().any(|t| t == reference) {
        out.push(format!(
            "{reference} ({}): found by the tag, but its repo_tags {:?} lack it",
            img.id, img.repo_tags
        ));
    }
    if verbose {
        match info {
            None => out.push(format!("{reference} ({}): verbose ImageStatus without info", img.id)),
            Some(info) => out.extend(verbose_info(catalog, reference, &tag.id, info)),
        }
    }
    out
}

/// The verbose `info` JSON of image `id` must describe one of the forms pushed for it, and its snapshots.
fn verbose_info(catalog: &Catalog, reference: &str, id: &str, info: &str) -> Vec<String> {
    let v: Value = match serde_json::from_str(info) {
        Ok(v) => v,
        Err(e) => return vec![format!("{reference} ({id}): info is not JSON ({e}): {info}")],
    };
    let mut out = Vec::new();
    if v["id"] != id {
        out.push(format!("{reference}: info names image {} instead of {id}", v["id"]));
    }
    let chains: BTreeSet<String> = v["chainIDs"]
        .as_array()
        .map(|a| a.iter().filter_map(|c| c.as_str().map(String::from)).collect())
        .unwrap_or_default();
    if Some(&chains) != catalog.chain_ids.get(id) {
        out.push(format!("{reference} ({id}): chain ids {chains:?} are not the image's"));
    }
    let manifest = v["manifestDigest"].as_str().unwrap_or_default();
    let layers: Vec<&str> = v["layers"]
        .as_array()
        .map(|a| a.iter().filter_map(|l| l["digest"].as_str()).collect())
        .unwrap_or_default();
    let form = catalog
        .tags_of(id)
        .into_iter()
        .find(|t| t.image.manifest_digest == manifest);
    match form {
        None => out.push(format!(
            "{reference} ({id}): manifest {manifest} is none of the image's forms"
        )),
        Some(t) => {
            let want: Vec<&str> = t.image.layers.iter().map(|l| l.digest.as_str()).collect();
            if layers != want {
                out.push(format!(
                    "{reference} ({id}): manifest {manifest} lists layers {want:?}, info says {layers:?}"
                ));
            }
        }
    }
    out
}

/// Checks a `ListImages` answer: every image is one of the catalog's ids, named only by its own tags,
/// listed once, with a size.
pub fn listed(catalog: &Catalog, registry_host: &str, images: &[cri::Image]) -> Vec<String> {
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for img in images {
        if !seen.insert(img.id.clone()) {
            out.push(format!("{} is listed twice", img.id));
        }
        let own: BTreeSet<String> = catalog
            .tags_of(&img.id)
            .iter()
            .map(|t| format!("{registry_host}/{}", t.path))
            .collect();
        if own.is_empty() {
            out.push(format!("unknown image {} listed (tags {:?})", img.id, img.repo_tags));
            continue;
        }
        if img.size == 0 {
            out.push(format!("{} listed with size 0", img.id));
        }
        for t in &img.repo_tags {
            if !own.contains(t) {
                out.push(format!("{} listed with tag {t}, which names another image", img.id));
            }
        }
    }
    out
}

/// Every id in `ids` must be one of the catalog's.
pub fn known_ids(catalog: &Catalog, ids: &[String]) -> Vec<String> {
    let known = catalog.ids();
    ids.iter()
        .filter(|id| !known.contains(*id))
        .map(|id| format!("unknown image {id} reported removed"))
        .collect()
}

/// The store files a recorded image needs, from its verbose `info`: every blob (manifest, config, layers) and
/// every snapshot directory. Returns those missing now.
pub fn missing_on_disk(root: &Path, info: &str) -> Vec<String> {
    let Ok(v) = serde_json::from_str::<Value>(info) else {
        return Vec::new(); // Reported by `image_by_tag`.
    };
    let mut blobs: Vec<&str> = vec![
        v["manifestDigest"].as_str().unwrap_or_default(),
        v["id"].as_str().unwrap_or_default(),
    ];
    if let Some(layers) = v["layers"].as_array() {
        blobs.extend(layers.iter().filter_map(|l| l["digest"].as_str()));
    }
    let mut paths: Vec<std::path::PathBuf> = blobs
        .iter()
        .filter_map(|d| d.strip_prefix("sha256:"))
        .map(|hex| root.join("content/blobs/sha256").join(hex))
        .collect();
    if let Some(snaps) = v["snapshots"].as_array() {
        paths.extend(snaps.iter().filter_map(|p| p.as_str()).map(std::path::PathBuf::from));
    }
    paths
        .into_iter()
        .filter(|p| !p.exists())
        .map(|p| p.display().to_string())
        .collect()
}
