//! `imaged fsinfo`: ImageFsInfo, the image filesystem's usage.

use std::io::Write;

use serde_json::{Value, json};

use super::output::{self, Table};
use super::{CliError, Common, OutputFormat};
use crate::proto::runtime::v1 as cri;

/// Prints the usage of the image filesystems: a table, or the response as `crictl imagefsinfo` prints it.
pub async fn run(common: &Common, out: &mut (dyn Write + Send)) -> Result<(), CliError> {
    let mut client = super::client(common).await?;
    let response = client
        .image_fs_info(cri::ImageFsInfoRequest {})
        .await
        .map_err(|s| CliError::rpc("fsinfo", &s))?
        .into_inner();
    match common.output {
        OutputFormat::Table => out.write_all(table(&response).as_bytes())?,
        OutputFormat::Json => output::write_json(out, &json!({ "status": to_json(&response) }))?,
    }
    Ok(())
}

/// `MOUNTPOINT  USED  INODES  TIMESTAMP`, one row per image filesystem; `-` where a value is unset.
fn table(response: &cri::ImageFsInfoResponse) -> String {
    let mut table = Table::new(&["MOUNTPOINT", "USED", "INODES", "TIMESTAMP"]);
    for fs in &response.image_filesystems {
        table.push(vec![
            fs.fs_id
                .as_ref()
                .map_or_else(|| "-".to_string(), |id| id.mountpoint.clone()),
            fs.used_bytes
                .as_ref()
                .map_or_else(|| "-".to_string(), |u| output::human_size(u.value)),
            fs.inodes_used
                .as_ref()
                .map_or_else(|| "-".to_string(), |u| u.value.to_string()),
            output::timestamp(fs.timestamp),
        ]);
    }
    table.render()
}

/// The response as protobuf JSON: camelCase keys, 64-bit integers as strings, unset messages omitted.
fn to_json(response: &cri::ImageFsInfoResponse) -> Value {
    let usage = |fs: &cri::FilesystemUsage| {
        let mut v = json!({ "timestamp": fs.timestamp.to_string() });
        if let Some(id) = &fs.fs_id {
            v["fsId"] = json!({ "mountpoint": id.mountpoint });
        }
        if let Some(used) = &fs.used_bytes {
            v["usedBytes"] = json!({ "value": used.value.to_string() });
        }
        if let Some(inodes) = &fs.inodes_used {
            v["inodesUsed"] = json!({ "value": inodes.value.to_string() });
        }
        v
    };
    json!({
        "imageFilesystems": response.image_filesystems.iter().map(usage).collect::<Vec<_>>(),
        "containerFilesystems": response.container_filesystems.iter().map(usage).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response() -> cri::ImageFsInfoResponse {
        cri::ImageFsInfoResponse {
            image_filesystems: vec![cri::FilesystemUsage {
                timestamp: 1_700_000_000_000_000_000,
                fs_id: Some(cri::FilesystemIdentifier {
                    mountpoint: "/var/lib/imaged".into(),
                }),
                used_bytes: Some(cri::UInt64Value { value: 1_240_000 }),
                inodes_used: None,
            }],
            container_filesystems: Vec::new(),
        }
    }

    #[test]
    fn table_shows_human_sizes_and_times() {
        let text = table(&response());
        let rows: Vec<Vec<&str>> = text.lines().map(|l| l.split_whitespace().collect()).collect();
        assert_eq!(
            rows,
            vec![
                vec!["MOUNTPOINT", "USED", "INODES", "TIMESTAMP"],
                vec!["/var/lib/imaged", "1.24MB", "-", "2023-11-14T22:13:20Z"]
            ]
        );
    }

    #[test]
    fn json_follows_protobuf_json() {
        let v = to_json(&response());
        assert_eq!(v["imageFilesystems"][0]["usedBytes"], json!({"value": "1240000"}));
        assert_eq!(v["imageFilesystems"][0]["fsId"]["mountpoint"], json!("/var/lib/imaged"));
        assert_eq!(v["imageFilesystems"][0]["timestamp"], json!("1700000000000000000"));
        assert!(v["imageFilesystems"][0].get("inodesUsed").is_none());
        assert_eq!(v["containerFilesystems"], json!([]));
    }
}
