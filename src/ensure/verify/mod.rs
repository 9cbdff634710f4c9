//! Credential re-verification (kubelet's KEP-2535, "ensure secret pulled images"), enforced where the
//! registry is reached: the step between "the policy says the store may answer" and the answer.
//!
//! # Design note
//!
//! kubelet 1.35 sends PullImage again, with the new pod's pull secret, for an image already on the node,
//! when its own records do not show that this secret (or an anonymous pull) got the image. The request is
//! a question to the registry: "may these credentials pull this image?". An image service that answers
//! it from its store (`if-not-present`, `never`, or any digest under `always`) says yes without asking,
//! and a pod without access to a private image runs it because another pod pulled it.
//!
//! So imaged keeps its own records of who the registry served each image to ([`crate::metadata::access`]:
//! image, repository, and the node or a keyed hash of the credentials, kept across restarts, written with
//! the pull that proves them), and before the store answers a request it decides, as kubelet does
//! ([`policy::must_verify`]), whether the request must be verified. If so, the request asks the registry
//! itself (the upstream `server`, never a mirror: a pull-through cache or a peer may serve anyone) for the
//! manifest the store holds, by digest, with the request's credentials: one HEAD (a GET only where the
//! HEAD tells no digest), no layer. A yes is recorded and the store answers; a no refuses the request with kubelet's `ErrImagePull` and the
//! registry's reason. Requests without credentials are the node's: they ask with the node's own
//! credentials (its docker config files), if any, like an anonymous pull does.
//!
//! Verification runs as a flight of its own in [`super::flight`] (keyed by image and credentials, so
//! concurrent requests for the same image with the same credentials share one registry request), with the
//! same back-off, events and rate limit as a pull; a refused verification is answered to every request that
//! joined it and is never announced to the runtimes.

mod key;
pub mod policy;

use std::sync::Arc;

pub use key::{CredentialKey, KEY_FILE, KeyError};
pub use policy::{AllowPattern, AllowlistError, VerifyPolicy, VerifyRules};

use super::EnsureError;
use crate::metadata::{Accessor, Grant, ImageRecord, MetadataStore};
use crate::metrics::Metrics;
use crate::reference::ImageRef;
use crate::registry::Registry;
use crate::registry::auth::Credentials;

/// What a request for an image the store holds needs before the store answers it.
#[derive(Debug)]
pub enum Check {
    /// Nothing: the store may answer.
    Local,
    /// Ask the registry first.
    Verify(Target),
}

/// What to verify: the image the store would answer with, the manifest to ask the registry for, and the
/// record a yes writes.
#[derive(Debug, Clone)]
pub struct Target {
    /// The image in the store.
    pub rec: Arc<ImageRecord>,
    /// The digest of its manifest (or index) in the requested repository.
    pub digest: String,
    /// The record that a yes writes.
    pub grant: Grant,
}

/// Decides and runs verifications.
pub struct Verifier {
    rules: VerifyRules,
    key: CredentialKey,
    registry: Arc<Registry>,
    metadata: Arc<MetadataStore>,
    metrics: Arc<Metrics>,
}

impl Verifier {
    /// A verifier applying `rules`, hashing credentials with `key`, asking `registry` and recording in
    /// `metadata`.
    pub fn new(
        rules: VerifyRules,
        key: CredentialKey,
        registry: Arc<Registry>,
        metadata: Arc<MetadataStore>,
        metrics: Arc<Metrics>,
    ) -> Verifier {
        Verifier {
            rules,
            key,
            registry,
            metadata,
            metrics,
        }
    }

    /// The policy in force.
    pub fn policy(&self) -> VerifyPolicy {
        self.rules.policy()
    }

    /// The record a successful pull of `image` with `creds` (the request's) writes with the image.
    pub fn grant_for(&self, image: &ImageRef, creds: Option<&Credentials>) -> Grant {
        Grant {
            repository: image.name(),
            accessor: self.key.accessor(creds),
        }
    }

    /// Whether the store may answer a request for `image` with `creds` with the image `rec` it holds.
    pub fn check(&self, rec: &Arc<ImageRecord>, image: &ImageRef, creds: Option<&Credentials>) -> Check {
        let grant = self.grant_for(image, creds);
        let view = self.metadata.access(&rec.id, &grant.repository, &grant.accessor);
        if !self.rules.must_verify(&grant.repository, &view) {
            return Check::Local;
        }
        Check::Verify(Target {
            rec: rec.clone(),
            digest: manifest_digest(rec, image),
            grant,
        })
    }

    /// Asks the registry's upstream server for `target`'s manifest with `creds` (or the node's credentials
    /// when `None`); records the grant and returns the image on a yes.
    pub async fn verify(
        &self,
        image: &ImageRef,
        creds: Option<Credentials>,
        target: Target,
    ) -> Result<Arc<ImageRecord>, EnsureError> {
        let who = match target.grant.accessor {
            Accessor::Node => "this node (the request has no credentials)",
            Accessor::Keyed(_) => "the request's credentials",
        };
        let refused = |source| EnsureError::Unverified {
            image: image.to_string(),
            digest: target.digest.clone(),
            who,
            policy: self.rules.policy(),
            source: Arc::new(source),
        };
        let asked = match self.registry.upstream_session(image, creds).await {
            Ok(session) => ask(&session, &target.digest).await,
            Err(e) => Err(e),
        };
        if let Err(e) = asked {
            self.metrics.verification("refused");
            // Logged with the pod by the flight that settles every request.
            return Err(refused(e));
        }
        self.metrics.verification("verified");
        let now = crate::clock::now_ns();
        let metadata = self.metadata.clone();
        let (id, grant) = (target.rec.id, target.grant.clone());
        let recorded = tokio::task::spawn_blocking(move || metadata.grant(&id, &grant, now))
            .await
            .map_err(|e| EnsureError::Pull(Arc::new(crate::pull::PullError::Task(e.to_string()))))?;
        match recorded {
            Ok(true) => self.metadata.touch(&target.rec.id, now),
            // Removed meanwhile: the answer is the image as it was, like any answer from the store.
            Ok(false) => {}
            // The registry said yes: this request is answered; the next one asks again.
            Err(e) => tracing::warn!(image = %image, error = %e, "cannot record verified credentials"),
        }
        tracing::debug!(image = %image, id = %target.rec.id, digest = %target.digest, "credentials verified with the registry");
        Ok(target.rec)
    }
}

/// Asks the registry whether the session's credentials may pull the manifest `digest`: a HEAD (which
/// Docker Hub does not count as a pull), and a GET only when the HEAD tells no digest.
async fn ask(session: &crate::registry::Session, digest: &str) -> Result<(), crate::registry::RegistryError> {
    match session.head_manifest(digest).await? {
        Some(head) if head.digest.to_string() == digest => Ok(()),
        _ => session.fetch_manifest(digest).await.map(|_| ()),
    }
}

/// The digest to ask the registry for: the request's own, or the top manifest (index or manifest) the
/// image was recorded with in this repository, or else its platform manifest.
fn manifest_digest(rec: &ImageRecord, image: &ImageRef) -> String {
    if let Some(d) = image.digest() {
        return d.to_string();
    }
    let prefix = format!("{}@", image.name());
    rec.repo_digests
        .iter()
        .find_map(|d| d.strip_prefix(&prefix))
        .map_or_else(|| rec.manifest.digest.to_string(), str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Digest;

    fn rec(repo_digests: &[&str]) -> ImageRecord {
        ImageRecord::sample("config").digested(repo_digests)
    }

    #[test]
    fn asks_for_the_digest_the_store_holds_in_the_requested_repository() {
        let top = Digest::of(b"index");
        let other = Digest::of(b"other");
        let r = rec(&[&format!("r.example/b@{other}"), &format!("r.example/a@{top}")]);
        let tag = ImageRef::parse("r.example/a:1").unwrap();
        assert_eq!(manifest_digest(&r, &tag), top.to_string());
        let by_digest = ImageRef::parse(&format!("r.example/a@{other}")).unwrap();
        assert_eq!(manifest_digest(&r, &by_digest), other.to_string());
        let elsewhere = ImageRef::parse("r.example/c:1").unwrap();
        assert_eq!(manifest_digest(&r, &elsewhere), r.manifest.digest.to_string());
    }
}
