//! Moving a blob from the registry into the content store.
//!
//! The network side is async; writing, hashing and syncing are blocking work, done on a blocking thread
//! that receives the chunks over a small bounded channel (so a slow disk slows the download instead of
//! buffering the layer in memory).

use std::io::Write;

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::{Progress, PullError};
use crate::content::ContentStore;
use crate::manifest::Descriptor;
use crate::registry::Session;

/// Chunks in flight between the network and the disk (reqwest chunks are 8–64 KiB).
const CHANNEL_DEPTH: usize = 8;

enum Chunk {
    Data(Bytes),
    End,
}

/// Waits for one of the download slots every blob download takes (`registry.max_concurrent_downloads`,
/// across all pulls); the wait counts as queueing, not as standing still.
pub(super) async fn slot<'a>(
    downloads: &'a tokio::sync::Semaphore,
    progress: &Progress,
) -> Result<tokio::sync::SemaphorePermit<'a>, PullError> {
    let _queued = progress.queued();
    downloads.acquire().await.map_err(|e| PullError::Task(e.to_string()))
}

/// Streams the blob into the store, verified and committed, counting its bytes in `progress`.
pub(super) async fn blob_to_store(
    session: &Session,
    content: &ContentStore,
    desc: &Descriptor,
    progress: &Progress,
) -> Result<(), PullError> {
    let mut stream = session.fetch_blob(desc).await?;
    let mut ingest = content.ingest(desc.digest, Some(desc.size))?;
    let (tx, mut rx) = mpsc::channel::<Chunk>(CHANNEL_DEPTH);
    let writer = tokio::task::spawn_blocking(move || -> Result<(), PullError> {
        while let Some(chunk) = rx.blocking_recv() {
            match chunk {
                Chunk::Data(b) => ingest.write_all(&b).map_err(|source| PullError::Write {
                    path: ingest.path().display().to_string(),
                    source,
                })?,
                // Only an explicit end commits; a dropped sender (failed download) drops the ingest.
                Chunk::End => return Ok(ingest.commit()?),
            }
        }
        Err(PullError::Interrupted)
    });
    let mut failure = None;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(b) => {
                progress.bytes(&desc.digest, b.len() as u64);
                if tx.send(Chunk::Data(b)).await.is_err() {
                    break; // The writer failed; its error is the one to report.
                }
            }
            Err(e) => {
                failure = Some(stream_error(desc, &e));
                break;
            }
        }
    }
    if failure.is_none() {
        let _ = tx.send(Chunk::End).await;
    }
    drop(tx);
    let written = writer.await.map_err(|e| PullError::Task(e.to_string()))?;
    match failure {
        Some(f) => Err(f),
        None => written,
    }
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

pub(super) fn stream_error(desc: &Descriptor, e: &std::io::Error) -> PullError {
    PullError::Stream {
        digest: desc.digest,
        detail: e.to_string(),
        mismatch: e.kind() == std::io::ErrorKind::InvalidData,
    }
}
