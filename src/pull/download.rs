//! Moving a blob from the registry into the content store, or into memory (a small one).
//!
//! The network side is async; hashing and syncing are blocking work, done on a blocking thread that reads
//! the ingest file as the download ([`super::fetch`]) writes it.

use std::io::Read;

use futures_util::StreamExt;

use super::fetch::{FetchCtx, stream_error};
use super::{Progress, PullError};
use crate::content::ContentStore;
use crate::manifest::Descriptor;
use crate::registry::Session;

/// Waits for one of the download slots every blob download takes (`registry.max_concurrent_downloads`,
/// across all pulls); the wait counts as queueing, not as standing still.
pub(super) async fn slot<'a>(
    downloads: &'a tokio::sync::Semaphore,
    progress: &Progress,
) -> Result<tokio::sync::SemaphorePermit<'a>, PullError> {
    let _queued = progress.queued();
    downloads.acquire().await.map_err(|e| PullError::Task(e.to_string()))
}

/// Downloads the blob into the store ([`super::fetch`]), hashed in order as it arrives, verified and
/// committed.
pub(super) async fn blob_to_store(
    ctx: &FetchCtx<'_>,
    content: &ContentStore,
    desc: &Descriptor,
) -> Result<(), PullError> {
    let (mut ingest, mut reader, pending) = super::fetch::open_ingest(content, desc, ctx.options)?;
    let blob = desc.clone();
    let hashing = tokio::task::spawn_blocking(move || -> Result<(), PullError> {
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(stream_error(&blob, &e)),
            };
            ingest.absorb(&buf[..n]).map_err(|source| PullError::Write {
                path: ingest.path().display().to_string(),
                source,
            })?;
        }
        Ok(ingest.commit()?)
    });
    let fetched = super::fetch::fetch(ctx, desc, pending).await;
    let hashed = hashing.await.map_err(|e| PullError::Task(e.to_string()))?;
    fetched?;
    hashed
}

/// Fetches a small blob into memory, verified against its digest and bounded by `limit`, counting its bytes
/// in `progress`.
pub(super) async fn blob_to_memory(
    session: &Session,
    desc: &Descriptor,
    limit: u64,
    progress: &Progress,
) -> Result<Vec<u8>, PullError> {
    let mut stream = session.fetch_blob(desc).await?;
    let mut body = Vec::with_capacity(desc.size.min(limit) as usize);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| stream_error(desc, &e))?;
        progress.bytes(&desc.digest, chunk.len() as u64);
        if body.len() as u64 + chunk.len() as u64 > limit.min(desc.size) {
            return Err(PullError::ConfigTooLarge {
                digest: desc.digest,
                size: body.len() as u64 + chunk.len() as u64,
                limit,
            });
        }
        body.extend_from_slice(&chunk);
    }
    let actual = crate::digest::Digest::of(&body);
    if actual != desc.digest {
        return Err(PullError::Content(crate::content::ContentError::DigestMismatch {
            expected: desc.digest,
            actual,
            size: body.len() as u64,
        }));
    }
    Ok(body)
}
