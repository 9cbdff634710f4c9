//! `imaged rmi IMAGE...`: for each name, ImageStatus to resolve it, then RemoveImage by id. A failure is
//! reported and the others still go ahead; the exit status says whether any failed (as `crictl rmi`).

use std::io::Write;

use serde_json::json;

use super::{CliError, Common, OutputFormat, output};
use crate::proto::runtime::v1 as cri;
use crate::proto::runtime::v1::image_service_client::ImageServiceClient;

/// Removes each of `names` (duplicates once), printing `Deleted: <tag>` for every tag removed and each
/// failure to `err` as it happens.
pub async fn run(
    common: &Common,
    names: &[String],
    out: &mut (dyn Write + Send),
    err: &mut (dyn Write + Send),
) -> Result<(), CliError> {
    let mut client = super::client(common).await?;
    let mut unique: Vec<&str> = Vec::with_capacity(names.len());
    for name in names {
        if !unique.contains(&name.as_str()) {
            unique.push(name);
        }
    }
    let mut deleted = Vec::new();
    let mut failed = 0;
    for name in &unique {
        match remove(&mut client, name).await {
            Ok(names) => {
                if common.output == OutputFormat::Table {
                    for n in &names {
                        writeln!(out, "Deleted: {n}")?;
                    }
                }
                deleted.extend(names);
            }
            Err(e) => {
                failed += 1;
                writeln!(err, "error: {e}")?;
            }
        }
    }
    if common.output == OutputFormat::Json {
        output::write_json(out, &json!({ "deleted": deleted }))?;
    }
    match failed {
        0 => Ok(()),
        failed => Err(CliError::RemoveFailed {
            failed,
            total: unique.len(),
        }),
    }
}

/// Resolves `name` and removes the image by id; returns what was deleted, as [`deleted_names`].
async fn remove(
    client: &mut ImageServiceClient<tonic::transport::Channel>,
    name: &str,
) -> Result<Vec<String>, CliError> {
    let spec = |image: &str| {
        Some(cri::ImageSpec {
            image: image.to_string(),
            ..Default::default()
        })
    };
    let call = || format!("rmi {name}");
    let status = client
        .image_status(cri::ImageStatusRequest {
            image: spec(name),
            verbose: false,
        })
        .await
        .map_err(|s| CliError::rpc(call(), &s))?
        .into_inner();
    let image = status.image.ok_or_else(|| CliError::NoSuchImage {
        image: name.to_string(),
    })?;
    client
        .remove_image(cri::RemoveImageRequest { image: spec(&image.id) })
        .await
        .map_err(|s| CliError::rpc(call(), &s))?;
    Ok(deleted_names(&image))
}

/// Removing by id removes every tag: they are what is reported deleted, or the repo digests of an
/// untagged image, or its id when it has neither.
fn deleted_names(image: &cri::Image) -> Vec<String> {
    if !image.repo_tags.is_empty() {
        image.repo_tags.clone()
    } else if !image.repo_digests.is_empty() {
        image.repo_digests.clone()
    } else {
        vec![image.id.clone()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deleted_names_prefer_tags_then_digests_then_id() {
        let mut image = cri::Image {
            id: "sha256:1".into(),
            repo_tags: vec!["a:1".into(), "a:2".into()],
            repo_digests: vec!["a@sha256:2".into()],
            ..Default::default()
        };
        assert_eq!(deleted_names(&image), ["a:1", "a:2"]);
        image.repo_tags.clear();
        assert_eq!(deleted_names(&image), ["a@sha256:2"]);
        image.repo_digests.clear();
        assert_eq!(deleted_names(&image), ["sha256:1"]);
    }
}
