//! `imaged inspect IMAGE`: verbose ImageStatus, printed as `crictl inspecti` prints it.

use std::io::Write;

use serde_json::{Map, Value};

use super::{CliError, Common, output};
use crate::proto::runtime::v1 as cri;

/// Prints `image`'s status and verbose info as one JSON document, whatever the output format (as
/// `crictl inspecti`, whose default is JSON). An absent image is an error.
pub async fn run(common: &Common, image: &str, out: &mut (dyn Write + Send)) -> Result<(), CliError> {
    let response = super::verbose_status(common, "inspect", image).await?;
    let document = document(&response).ok_or_else(|| CliError::ImageNotFound {
        image: image.to_string(),
    })?;
    output::write_json(out, &document)?;
    Ok(())
}

/// `{"status": <image>, <info key>: <value>...}`, or `None` when the response has no image. Info values
/// that hold JSON (containerd's and imaged's `info` do) are embedded as JSON, others as strings.
fn document(response: &cri::ImageStatusResponse) -> Option<Value> {
    let image = response.image.as_ref()?;
    let mut doc = Map::new();
    doc.insert("status".to_string(), output::image_json(image));
    for (key, value) in &response.info {
        let value = serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.clone()));
        doc.insert(key.clone(), value);
    }
    Some(Value::Object(doc))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use serde_json::json;

    use super::*;

    #[test]
    fn absent_image_has_no_document() {
        assert_eq!(document(&cri::ImageStatusResponse::default()), None);
    }

    #[test]
    fn info_json_is_embedded_and_other_values_kept_as_strings() {
        let response = cri::ImageStatusResponse {
            image: Some(cri::Image {
                id: "sha256:1".into(),
                size: 3,
                ..Default::default()
            }),
            info: HashMap::from([
                ("info".to_string(), r#"{"chainIDs":["sha256:2"]}"#.to_string()),
                ("note".to_string(), "plain text".to_string()),
            ]),
        };
        let doc = document(&response).unwrap();
        assert_eq!(doc["status"]["id"], json!("sha256:1"));
        assert_eq!(doc["status"]["size"], json!("3"));
        assert_eq!(doc["info"], json!({"chainIDs": ["sha256:2"]}));
        assert_eq!(doc["note"], json!("plain text"));
    }
}
