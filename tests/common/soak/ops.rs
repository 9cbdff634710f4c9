//! The operations a soak client issues, each with the checks on its answer.

use std::sync::atomic::Ordering;

use imaged::proto::imaged::v1 as pb;
use imaged::proto::runtime::v1 as cri;

use super::catalog::Tag;
use super::check;
use super::classify::Rpc;
use super::client::Client;
use super::ledger::{DELIVERY_SLACK, Kind, Scope};

impl Client {
    pub(super) async fn pull(&mut self, tag: &Tag) {
        let reference = self.reference(tag);
        let pod = format!("soak-pod-{}", self.n);
        let request = cri::PullImageRequest {
            image: crate::common::daemon::spec(&reference),
            auth: None,
            sandbox_config: Some(cri::PodSandboxConfig {
                metadata: Some(cri::PodSandboxMetadata {
                    name: pod.clone(),
                    uid: format!("uid-{pod}"),
                    namespace: "soak".into(),
                    attempt: 0,
                }),
                ..Default::default()
            }),
        };
        let ledger = &self.shared.ledger;
        let now = self.shared.clock.now();
        let ticket = ledger.begin(Kind::Pull, Scope::Id(tag.id.clone()), now);
        let form = ledger.begin(Kind::Pull, Scope::Form(tag.image.manifest_digest.clone()), now);
        let a = self
            .call(Rpc::Pull, Some(&tag.id), &reference, |mut c, _| async move {
                c.pull_image(request).await.map(|r| r.into_inner())
            })
            .await;
        self.shared.ledger.end(ticket, a.answered);
        self.shared.ledger.end(form, a.answered);
        let Ok(resp) = a.result else { return };
        if resp.image_ref != tag.id {
            self.violation(
                "PullImage answers the tag's image id",
                format!("{reference}: image_ref {} but the tag names {}", resp.image_ref, tag.id),
            );
        }
        self.present_after_pull(tag, a.answered).await;
    }

    /// Right after a successful pull answered at `pulled`: the image is inspectable by the tag and listed,
    /// unless a removal that can remove it may have acted since.
    pub(super) async fn present_after_pull(&mut self, tag: &Tag, pulled: f64) {
        let s = self.shared.clone();
        let (present, answered) = self.status(tag, true).await;
        if present == Some(false) {
            s.counters.checked_after_pull.fetch_add(1, Ordering::Relaxed);
            if s.ledger
                .may_have_acted(Kind::Removal, &tag.id, pulled - DELIVERY_SLACK, answered)
            {
                s.counters.excused_after_pull.fetch_add(1, Ordering::Relaxed);
            } else {
                self.violation(
                    "a pulled image is present right after PullImage answered",
                    format!(
                        "{} ({}): pulled at t={pulled:.3}s, ImageStatus at t={answered:.3}s found nothing, \
                         and no removal, GC or prune that could remove it ran in between",
                        self.reference(tag),
                        tag.id
                    ),
                );
            }
        } else if present == Some(true) {
            s.counters.checked_after_pull.fetch_add(1, Ordering::Relaxed);
        }
        let Some((ids, answered)) = self.list().await else {
            return;
        };
        if !ids.contains(&tag.id)
            && !s
                .ledger
                .may_have_acted(Kind::Removal, &tag.id, pulled - DELIVERY_SLACK, answered)
        {
            self.violation(
                "a pulled image is listed right after PullImage answered",
                format!(
                    "{} ({}): pulled at t={pulled:.3}s, not in ListImages at t={answered:.3}s, and no removal, \
                     GC or prune that could remove it ran in between",
                    self.reference(tag),
                    tag.id
                ),
            );
        }
    }

    pub(super) async fn remove(&mut self, tag: &Tag) {
        let reference = self.reference(tag);
        let ticket = self
            .shared
            .ledger
            .begin(Kind::Removal, Scope::Id(tag.id.clone()), self.shared.clock.now());
        let req = cri::RemoveImageRequest {
            image: crate::common::daemon::spec(&reference),
        };
        let a = self
            .call(Rpc::Remove, Some(&tag.id), &reference, |mut c, _| async move {
                c.remove_image(req).await.map(|_| ())
            })
            .await;
        self.shared.ledger.end(ticket, a.answered);
        if a.result.is_err() {
            return;
        }
        // The removal took effect somewhere between its issue and its answer: only a pull that may have
        // acted after that (answered after the removal was issued) can have brought the image back.
        let s = self.shared.clone();
        let (present, answered) = self.status(tag, false).await;
        if present == Some(true) {
            if s.ledger.may_have_acted(Kind::Pull, &tag.id, a.issued, answered) {
                s.counters.excused_after_remove.fetch_add(1, Ordering::Relaxed);
            } else {
                self.violation(
                    "a removed image is gone right after RemoveImage answered",
                    format!(
                        "{reference} ({}): removed at t={:.3}..{:.3}s, ImageStatus at t={answered:.3}s still \
                         finds it, and no pull of it ran since the removal was issued",
                        tag.id, a.issued, a.answered
                    ),
                );
            }
        }
        if present.is_some() {
            s.counters.checked_after_remove.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// ImageStatus of `tag`; checks what it answers. Returns whether the image was present (`None` if the
    /// call failed other than by NotFound) and when the call answered.
    pub(super) async fn status(&mut self, tag: &Tag, verbose: bool) -> (Option<bool>, f64) {
        let reference = self.reference(tag);
        let req = cri::ImageStatusRequest {
            image: crate::common::daemon::spec(&reference),
            verbose,
        };
        let a = self
            .call(Rpc::Status, Some(&tag.id), &reference, |mut c, _| async move {
                c.image_status(req).await.map(|r| r.into_inner())
            })
            .await;
        let present = match a.result {
            Ok(resp) => match resp.image {
                Some(img) => {
                    let info = resp.info.get("info").map(String::as_str);
                    let problems = check::image_by_tag(&self.shared.catalog, &reference, tag, &img, verbose, info);
                    for p in problems {
                        self.violation("ImageStatus answers the tag's image, complete", p);
                    }
                    if let Some(info) = info {
                        self.on_disk(tag, info, a.issued).await;
                    }
                    Some(true)
                }
                None => Some(false),
            },
            Err(st) if st.code() == tonic::Code::NotFound => Some(false),
            Err(_) => None,
        };
        (present, a.answered)
    }

    /// An image ImageStatus found recorded (the call was issued at `issued`) has every blob and snapshot
    /// on disk, unless a removal that may have acted since then took some, or a pull of another form of
    /// the same id recorded it meanwhile (the tags of one id are gzip, zstd, Docker and plain forms: a pull
    /// replaces the record's manifest and layers, and discards what only the old form named). Then the
    /// image as recorded now must be whole (see [`Client::whole_now`]).
    async fn on_disk(&mut self, tag: &Tag, info: &str, issued: f64) {
        let s = self.shared.clone();
        s.counters.checked_on_disk.fetch_add(1, Ordering::Relaxed);
        let missing = check::missing_on_disk(&s.root, info);
        if missing.is_empty() {
            return;
        }
        let now = s.clock.now();
        if s.ledger.may_have_acted(Kind::Removal, &tag.id, issued, now)
            || (self.other_form_pulled(tag, info, issued, now) && self.whole_now(tag, issued).await)
        {
            s.counters.excused_on_disk.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.violation(
            "a recorded image has every blob and snapshot on disk",
            format!(
                "{} ({}): recorded at t={issued:.3}s, at t={now:.3}s {missing:?} are missing, and no removal, \
                 GC or prune that could remove it ran in between (nor a pull of another form that left the \
                 image whole)",
                self.reference(tag),
                tag.id
            ),
        );
    }

    /// Whether a pull of `tag`'s image in another form than the one `info` names may have acted between
    /// `after` and `before`.
    fn other_form_pulled(&self, tag: &Tag, info: &str, after: f64, before: f64) -> bool {
        let recorded = manifest_digest(info);
        self.shared.catalog.tags.iter().any(|t| {
            t.id == tag.id
                && Some(t.image.manifest_digest.as_str()) != recorded.as_deref()
                && self
                    .shared
                    .ledger
                    .form_pull_may_have_acted(&t.image.manifest_digest, after, before)
        })
    }

    /// Whether `tag`'s image, as recorded now, has every blob and snapshot of its record on disk. Forms
    /// may replace each other between an answer and the look at the disk (pulls of all forms run all the
    /// time): while one did, it asks again (at most 50 times). A removal since `since` excuses a missing
    /// record; one since the last answer, missing files.
    async fn whole_now(&mut self, tag: &Tag, since: f64) -> bool {
        let reference = self.reference(tag);
        for _ in 0..50 {
            let req = cri::ImageStatusRequest {
                image: crate::common::daemon::spec(&reference),
                verbose: true,
            };
            let a = self
                .call(Rpc::Status, Some(&tag.id), &reference, |mut c, _| async move {
                    c.image_status(req).await.map(|r| r.into_inner())
                })
                .await;
            let Some(info) = a.result.ok().and_then(|r| r.info.get("info").cloned()) else {
                let now = self.shared.clock.now();
                return self.shared.ledger.may_have_acted(Kind::Removal, &tag.id, since, now);
            };
            if check::missing_on_disk(&self.shared.root, &info).is_empty() {
                return true;
            }
            let now = self.shared.clock.now();
            if self.shared.ledger.may_have_acted(Kind::Removal, &tag.id, a.issued, now) {
                return true;
            }
            if !self.other_form_pulled(tag, &info, a.issued, now) {
                return false;
            }
        }
        false
    }

    /// ListImages; checks every image. Returns the ids listed and when the call answered.
    pub(super) async fn list(&mut self) -> Option<(Vec<String>, f64)> {
        let a = self
            .call(Rpc::List, None, "", |mut c, _| async move {
                c.list_images(cri::ListImagesRequest { filter: None })
                    .await
                    .map(|r| r.into_inner())
            })
            .await;
        let images = a.result.ok()?.images;
        for p in check::listed(&self.shared.catalog, &self.shared.registry_host, &images) {
            self.violation("ListImages shows only whole, known images", p);
        }
        Some((images.into_iter().map(|i| i.id).collect(), a.answered))
    }

    pub(super) async fn fs_info(&mut self) {
        let a = self
            .call(Rpc::FsInfo, None, "", |mut c, _| async move {
                c.image_fs_info(cri::ImageFsInfoRequest {})
                    .await
                    .map(|r| r.into_inner())
            })
            .await;
        let Ok(r) = a.result else { return };
        let root = self.shared.root.display().to_string();
        let mountpoints: Vec<_> = r
            .image_filesystems
            .iter()
            .map(|f| f.fs_id.as_ref().map_or("", |i| i.mountpoint.as_str()))
            .collect();
        if mountpoints != [root.as_str()] {
            self.violation(
                "ImageFsInfo reports the store",
                format!("image filesystems {mountpoints:?}, expected [{root:?}]"),
            );
        }
    }

    pub(super) async fn gc(&mut self) {
        let t = self
            .shared
            .ledger
            .begin(Kind::Removal, Scope::All, self.shared.clock.now());
        let a = self
            .call(Rpc::Gc, None, "", |_, mut i| async move {
                i.garbage_collect(pb::GarbageCollectRequest { dry_run: false })
                    .await
                    .map(|r| r.into_inner())
            })
            .await;
        self.shared.ledger.end(t, a.answered);
        if let Ok(r) = a.result {
            let ids: Vec<String> = r.removed.into_iter().map(|r| r.id).collect();
            for p in check::known_ids(&self.shared.catalog, &ids) {
                self.violation("GarbageCollect removes only known images", p);
            }
        }
    }

    pub(super) async fn prune(&mut self) {
        let req = pb::PruneRequest {
            keep_younger_than_seconds: Some(self.rng.next() % 4),
            keep_tag_revisions: Some((self.rng.next() % 3) as u32),
            all: self.rng.chance(50),
            dry_run: false,
        };
        let t = self
            .shared
            .ledger
            .begin(Kind::Removal, Scope::All, self.shared.clock.now());
        let a = self
            .call(Rpc::Prune, None, &format!("{req:?}"), |_, mut i| async move {
                i.prune(req).await.map(|r| r.into_inner())
            })
            .await;
        self.shared.ledger.end(t, a.answered);
        if let Ok(r) = a.result {
            let ids: Vec<String> = r.images.into_iter().map(|r| r.id).collect();
            for p in check::known_ids(&self.shared.catalog, &ids) {
                self.violation("Prune removes only known images", p);
            }
        }
    }
}

/// The manifest digest a verbose ImageStatus's `info` names.
fn manifest_digest(info: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(info).ok()?;
    v["manifestDigest"].as_str().map(String::from)
}
