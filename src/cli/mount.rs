//! `imaged mount IMAGE DIR`: materialise the image's root filesystem in DIR (for an OCI runtime bundle).
//!
//! The daemon reports the image's snapshot directories (verbose ImageStatus, `info.snapshots`, base
//! first); they are copied into DIR layer by layer, each applying its deletions to the layers below. It
//! runs where the daemon's store is, as a user who can read it.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::{CliError, Common};
use crate::proto::runtime::v1 as cri;
use crate::unpack::{self, Capabilities};

/// Copies `image`'s layers into `dir`, which must be empty or absent.
pub async fn run(common: &Common, image: &str, dir: &Path, out: &mut (dyn Write + Send)) -> Result<(), CliError> {
    if std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some()) {
        return Err(CliError::Mount {
            dir: dir.to_path_buf(),
            detail: "the directory is not empty".into(),
        });
    }
    let response = super::verbose_status(common, "mount", image).await?;
    let layers = snapshot_dirs(&response).ok_or_else(|| CliError::Mount {
        dir: dir.to_path_buf(),
        detail: "the image service did not report snapshot directories (is it imaged?)".into(),
    })?;
    let caps = Capabilities {
        privileged: rustix::process::geteuid().is_root(),
        overlay_whiteouts: false,
    };
    let target = dir.to_path_buf();
    tokio::task::spawn_blocking(move || unpack::flatten(&layers, &target, caps))
        .await
        .map_err(|e| CliError::Mount {
            dir: dir.to_path_buf(),
            detail: e.to_string(),
        })?
        .map_err(|e| CliError::Mount {
            dir: dir.to_path_buf(),
            detail: e.to_string(),
        })?;
    writeln!(out, "{image} materialised at {}", dir.display())?;
    Ok(())
}

/// `info.snapshots` of a verbose status: the snapshot directories, base first.
fn snapshot_dirs(response: &cri::ImageStatusResponse) -> Option<Vec<PathBuf>> {
    let info: serde_json::Value = serde_json::from_str(response.info.get("info")?).ok()?;
    info.get("snapshots")?
        .as_array()?
        .iter()
        .map(|v| v.as_str().map(PathBuf::from))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_snapshot_dirs_from_info() {
        let mut r = cri::ImageStatusResponse::default();
        assert!(snapshot_dirs(&r).is_none());
        r.info
            .insert("info".into(), r#"{"snapshots":["/s/a/fs","/s/b/fs"]}"#.into());
        assert_eq!(
            snapshot_dirs(&r).unwrap(),
            vec![PathBuf::from("/s/a/fs"), PathBuf::from("/s/b/fs")]
        );
    }
}
