//! `imaged images [IMAGE] [-q]`: ListImages, as a table like `crictl images`, ids, or JSON.

use std::collections::HashSet;
use std::io::Write;

use serde_json::{Value, json};

use super::output::{self, Table};
use super::{CliError, Common, OutputFormat};
use crate::proto::runtime::v1 as cri;

/// Lists the images (those matching `filter`, if given), sorted as `crictl` sorts them.
pub async fn run(
    common: &Common,
    filter: Option<&str>,
    quiet: bool,
    out: &mut (dyn Write + Send),
) -> Result<(), CliError> {
    let mut client = super::client(common).await?;
    let request = cri::ListImagesRequest {
        filter: filter.map(|image| cri::ImageFilter {
            image: Some(cri::ImageSpec {
                image: image.to_string(),
                ..Default::default()
            }),
        }),
    };
    let call = filter.map_or_else(|| "images".to_string(), |f| format!("images {f}"));
    let mut images = client
        .list_images(request)
        .await
        .map_err(|s| CliError::rpc(call, &s))?
        .into_inner()
        .images;
    output::sort_images(&mut images);
    if quiet {
        out.write_all(ids(&images).as_bytes())?;
        return Ok(());
    }
    match common.output {
        OutputFormat::Table => out.write_all(table(&images).as_bytes())?,
        OutputFormat::Json => output::write_json(out, &to_json(&images))?,
    }
    Ok(())
}

/// Full image ids, one per line, each once.
fn ids(images: &[cri::Image]) -> String {
    let mut seen = HashSet::new();
    images
        .iter()
        .filter(|i| seen.insert(i.id.as_str()))
        .map(|i| format!("{}\n", i.id))
        .collect()
}

/// `IMAGE  TAG  IMAGE ID  SIZE`, one row per tag.
fn table(images: &[cri::Image]) -> String {
    let mut table = Table::new(&["IMAGE", "TAG", "IMAGE ID", "SIZE"]);
    for row in images.iter().flat_map(output::image_rows) {
        table.push(row);
    }
    table.render()
}

/// `{"images": [...]}`, the ListImagesResponse as `crictl images -o json` prints it.
fn to_json(images: &[cri::Image]) -> Value {
    json!({ "images": images.iter().map(output::image_json).collect::<Vec<_>>() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(id: &str, tags: &[&str]) -> cri::Image {
        cri::Image {
            id: id.to_string(),
            repo_tags: tags.iter().map(|s| s.to_string()).collect(),
            size: 5_000,
            ..Default::default()
        }
    }

    #[test]
    fn quiet_prints_each_full_id_once() {
        let images = [
            image("sha256:1", &["a:1"]),
            image("sha256:2", &[]),
            image("sha256:1", &["a:2"]),
        ];
        assert_eq!(ids(&images), "sha256:1\nsha256:2\n");
    }

    #[test]
    fn table_has_crictl_columns_and_a_row_per_tag() {
        let text = table(&[image("sha256:0123456789abcdef", &["a:1", "a:2"])]);
        let lines: Vec<Vec<&str>> = text
            .lines()
            .map(|l| l.split("   ").map(str::trim).filter(|c| !c.is_empty()).collect())
            .collect();
        assert_eq!(
            lines,
            vec![
                vec!["IMAGE", "TAG", "IMAGE ID", "SIZE"],
                vec!["a", "1", "0123456789abc", "5kB"],
                vec!["a", "2", "0123456789abc", "5kB"],
            ]
        );
    }

    #[test]
    fn empty_list_is_just_the_header() {
        assert!(table(&[]).starts_with("IMAGE"));
        assert_eq!(table(&[]).lines().count(), 1);
        assert_eq!(to_json(&[]), json!({ "images": [] }));
    }
}
