//! `ImageFsInfo`: the store's usage, kept incrementally (kubelet polls it).

use super::Images;
use crate::proto::runtime::v1 as cri;

impl Images {
    pub(super) fn image_fs_info(&self, _req: cri::ImageFsInfoRequest) -> cri::ImageFsInfoResponse {
        let u = self.service.fs_usage();
        let fs = cri::FilesystemUsage {
            timestamp: u.timestamp_ns,
            fs_id: Some(cri::FilesystemIdentifier {
                mountpoint: u.mountpoint.display().to_string(),
            }),
            used_bytes: Some(cri::UInt64Value { value: u.used_bytes }),
            inodes_used: Some(cri::UInt64Value { value: u.inodes_used }),
        };
        cri::ImageFsInfoResponse {
            image_filesystems: vec![fs],
            container_filesystems: Vec::new(),
        }
    }
}
