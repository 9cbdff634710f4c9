//! What containerd's CRI plugin shows of an image, and waiting until it shows what imaged just changed.
//!
//! containerd's CRI plugin learns about image records through image events, asynchronously (within
//! milliseconds). A publication waits until CRI's ImageStatus finds the image by id, so kubelet's next call
//! (CreateContainer) never races it. A removal waits until CRI no longer shows the names imaged published:
//! the image gone altogether, or still there under names that are not imaged's only. containerd may hold the
//! same image (same id) under names of its own (it pulled the sandbox image itself, say), and then it rightly
//! keeps the id: waiting for the id to go would wait for ever.

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use tonic::Code;

use super::{BridgeError, Conn, ContainerdBridge};
use crate::digest::Digest;
use crate::proto::runtime::v1 as cri;

/// Longest wait for containerd's CRI plugin to see a change (it follows image events within milliseconds).
const CRI_WAIT: Duration = Duration::from_secs(10);

/// Whether CRI's view of image `id` (`None`: absent) no longer shows any of `ours`, the names imaged
/// published for it and took back. An image left with no name at all still waits: the deletion of its id
/// record (the last one imaged deletes) has not been seen yet.
pub(super) fn forgotten(image: Option<&cri::Image>, ours: &BTreeSet<String>) -> bool {
    let Some(image) = image else { return true };
    let mut names = image.repo_tags.iter().chain(&image.repo_digests).peekable();
    names.peek().is_some() && names.all(|n| !ours.contains(n))
}

/// What containerd's CRI ListImages shows.
#[derive(Debug, Default)]
pub(super) struct CriImages {
    /// The image ids.
    pub ids: HashSet<String>,
    /// The names of the images it says are pinned.
    pub pinned_names: Vec<String>,
}

impl ContainerdBridge {
    /// Waits until containerd's CRI ImageStatus finds image `id`. Without a CRI plugin there is nothing to
    /// wait for.
    pub(super) async fn wait_cri_knows(&self, conn: &Conn, id: &Digest) -> Result<(), BridgeError> {
        self.wait_cri(conn, id, "show", |image| image.is_some()).await
    }

    /// Waits until containerd's CRI no longer shows the names of `ours` for image `id` (see [`forgotten`]).
    pub(super) async fn wait_cri_forgot(
        &self,
        conn: &Conn,
        id: &Digest,
        ours: &BTreeSet<String>,
    ) -> Result<(), BridgeError> {
        self.wait_cri(conn, id, "forget", |image| forgotten(image, ours)).await
    }

    async fn wait_cri(
        &self,
        conn: &Conn,
        id: &Digest,
        what: &str,
        done: impl Fn(Option<&cri::Image>) -> bool,
    ) -> Result<(), BridgeError> {
        let deadline = tokio::time::Instant::now() + CRI_WAIT;
        let mut pause = Duration::from_millis(2);
        loop {
            let req = cri::ImageStatusRequest {
                image: Some(cri::ImageSpec {
                    image: id.to_string(),
                    ..Default::default()
                }),
                verbose: false,
            };
            match conn.cri_images().image_status(conn.req(req, None)).await {
                Ok(r) if done(r.get_ref().image.as_ref()) => return Ok(()),
                Ok(_) => {}
                Err(s) if s.code() == Code::Unimplemented => return Ok(()),
                Err(s) => return Err(self.failed(BridgeError::rpc(conn.address(), "ask CRI for the image", &s))),
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(
                    image = %id,
                    "containerd's CRI plugin did not {what} the image's names within {CRI_WAIT:?}; going on"
                );
                return Ok(());
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }

    /// What containerd's CRI plugin lists, or `None` without a CRI plugin.
    pub(super) async fn cri_images(&self, conn: &Conn) -> Result<Option<CriImages>, BridgeError> {
        match conn
            .cri_images()
            .list_images(conn.req(cri::ListImagesRequest { filter: None }, None))
            .await
        {
            Ok(r) => {
                let mut listed = CriImages::default();
                for i in r.into_inner().images {
                    if i.pinned {
                        listed
                            .pinned_names
                            .extend(i.repo_tags.into_iter().chain(i.repo_digests));
                    }
                    listed.ids.insert(i.id);
                }
                Ok(Some(listed))
            }
            Err(s) if s.code() == Code::Unimplemented => Ok(None),
            Err(s) => Err(self.failed(BridgeError::rpc(conn.address(), "list CRI images", &s))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(tags: &[&str], digests: &[&str]) -> cri::Image {
        cri::Image {
            id: "sha256:1".into(),
            repo_tags: tags.iter().map(|s| s.to_string()).collect(),
            repo_digests: digests.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_removal_waits_only_for_the_names_imaged_published() {
        let ours: BTreeSet<String> = ["r/app:v1", "r/app@sha256:m", "sha256:1"]
            .into_iter()
            .map(String::from)
            .collect();
        // Gone altogether.
        assert!(forgotten(None, &ours));
        // Still shown under one of imaged's names: not yet.
        assert!(!forgotten(Some(&image(&["r/app:v1"], &[])), &ours));
        assert!(!forgotten(Some(&image(&["r/pause:3"], &["r/app@sha256:m"])), &ours));
        // Held by containerd under its own names only: done, although the id stays.
        assert!(forgotten(Some(&image(&["r/pause:3"], &["r/pause@sha256:m"])), &ours));
        // No name left but the id is still shown: the id record's deletion is on its way.
        assert!(!forgotten(Some(&image(&[], &[])), &ours));
    }
}
