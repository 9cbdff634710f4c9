//! One layer in one pass: the registry stream is hashed and written to the content store while, from the
//! same bytes, it is decompressed, hashed again (diff id) and applied into a snapshot.
//!
//! ```text
//! network ─chunks─▶ [blocking thread] ChannelReader ─▶ Tee(→ Ingest: blob digest, write)
//!                                        └─▶ decoder (gzip | zstd | none) ─▶ Counting+Hashing (diff id) ─▶ untar
//! ```
//!
//! The snapshot becomes visible only when the blob digest, its size and the diff id all match; otherwise
//! the ingest and the half-built snapshot are dropped. When the blob is already in the store (an earlier
//! pull without its snapshot), it is unpacked from the local file instead.

use std::io::{self, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::PullError;
use super::progress::LayerState;
use crate::content::{ContentStore, Ingest};
use crate::digest::{Digest, Hasher};
use crate::manifest::{self, Compression};
use crate::metadata::LayerRecord;
use crate::registry::Session;
use crate::snapshot::SnapshotStore;
use crate::unpack::{self, Capabilities, CountingReader, Limits};

/// Chunks in flight between the network and the unpacking thread. hyper hands over chunks of up to a few
/// hundred KiB at loopback speed, so the depth bounds memory: 8 chunks keep a layer's buffer to a few MiB
/// (at 64, four layers in flight held over 100 MB), while the unpacking thread never waits on an empty
/// channel when the network is faster than it.
const CHANNEL_DEPTH: usize = 8;

/// Everything a layer needs besides the layer itself.
pub(super) struct LayerCtx<'a> {
    pub session: &'a Session,
    pub content: &'a ContentStore,
    pub snapshots: &'a SnapshotStore,
    pub limits: Limits,
    pub caps: Capabilities,
    pub downloads: &'a tokio::sync::Semaphore,
    pub progress: &'a super::Progress,
    /// Set when the pull failed elsewhere or was dropped: stop, and above all commit nothing.
    pub cancel: &'a Arc<AtomicBool>,
}

/// Makes sure both the blob and the snapshot of `layer` exist (fetching and unpacking what is missing).
pub(super) async fn ensure_layer(ctx: &LayerCtx<'_>, layer: &LayerRecord, chain: Digest) -> Result<(), PullError> {
    let blob = &layer.blob;
    if ctx.content.contains(&blob.digest) && ctx.snapshots.exists(&chain) {
        ctx.progress.layer_state(&blob.digest, LayerState::Present);
        return Ok(());
    }
    // Concurrent pulls that need this chain id build it once: the second finds it done.
    let _building = ctx.snapshots.lock_build(&chain).await;
    let have_blob = ctx.content.contains(&blob.digest);
    if ctx.snapshots.exists(&chain) {
        if have_blob {
            ctx.progress.layer_state(&blob.digest, LayerState::Present);
        } else {
            let _permit = ctx
                .downloads
                .acquire()
                .await
                .map_err(|e| PullError::Task(e.to_string()))?;
            super::download::blob_to_store(ctx.session, ctx.content, blob).await?;
            ctx.progress.layer_state(&blob.digest, LayerState::Done);
        }
        return Ok(());
    }
    let compression = manifest::layer_compression(&blob.media_type).unwrap_or(Compression::None);
    let job = Job {
        pending: ctx.snapshots.prepare()?,
        snapshots: ctx.snapshots.clone(),
        chain,
        diff_id: layer.diff_id,
        blob: blob.digest,
        compression,
        limits: ctx.limits,
        caps: ctx.caps,
        cancel: ctx.cancel.clone(),
    };
    if have_blob {
        let path = ctx.content.blob_path(&blob.digest);
        return tokio::task::spawn_blocking(move || {
            let file = std::fs::File::open(&path).map_err(|source| PullError::Write {
                path: path.display().to_string(),
                source,
            })?;
            job.run(io::BufReader::with_capacity(256 * 1024, file), None)
        })
        .await
        .map_err(|e| PullError::Task(e.to_string()))?;
    }

    let mut stream = ctx.session.fetch_blob(blob).await?;
    let ingest = ctx.content.ingest(blob.digest, Some(blob.size))?;
    let (tx, rx) = mpsc::channel::<Bytes>(CHANNEL_DEPTH);
    let worker = tokio::task::spawn_blocking(move || {
        job.run(
            ChannelReader {
                rx,
                current: Bytes::new(),
            },
            Some(ingest),
        )
    });
    let mut failure = None;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(_) if ctx.cancel.load(Ordering::Relaxed) => {
                failure = Some(PullError::Interrupted);
                break;
            }
            Ok(b) => {
                ctx.progress.bytes(&blob.digest, b.len() as u64);
                if tx.send(b).await.is_err() {
                    break; // The worker stopped; its error is the one to report.
                }
            }
            Err(e) => {
                failure = Some(super::download::stream_error(blob, &e));
                break;
            }
        }
    }
    // A cut stream looks like an early end to the worker, which then fails verification (tar, size or
    // digest) and commits nothing; the network error, the real cause, is the one reported.
    drop(tx);
    let result = worker.await.map_err(|e| PullError::Task(e.to_string()))?;
    match failure {
        Some(f) => Err(f),
        None => {
            result?;
            ctx.progress.layer_state(&blob.digest, LayerState::Done);
            Ok(())
        }
    }
}

/// The blocking half of a layer.
struct Job {
    pending: crate::snapshot::Pending,
    snapshots: SnapshotStore,
    chain: Digest,
    diff_id: Digest,
    blob: Digest,
    compression: Compression,
    limits: Limits,
    caps: Capabilities,
    cancel: Arc<AtomicBool>,
}

impl Job {
    fn run<R: Read>(self, source: R, ingest: Option<Ingest>) -> Result<(), PullError> {
        let layer = self.blob.to_string();
        let mut tee = Tee { inner: source, ingest };
        let (diff_id, stats) = {
            let decoded: Box<dyn Read + '_> = match self.compression {
                Compression::None => Box::new(&mut tee),
                Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(&mut tee)),
                Compression::Zstd => {
                    Box::new(zstd::stream::read::Decoder::new(&mut tee).map_err(|e| self.corrupt(&layer, e))?)
                }
            };
            let mut hashing = HashingReader {
                inner: CountingReader::new(decoded, self.limits.max_layer_bytes),
                hasher: Hasher::new(),
            };
            let stats = unpack::apply_layer(&mut hashing, &self.pending.fs(), &layer, &self.limits, self.caps)?;
            // The tar's end-of-archive padding and anything after it count for the diff id.
            io::copy(&mut hashing, &mut io::sink()).map_err(|e| self.corrupt(&layer, e))?;
            (hashing.hasher.finish(), stats)
        };
        // Bytes after the compressed stream's end still count for the blob digest.
        io::copy(&mut tee, &mut io::sink()).map_err(|e| self.corrupt(&layer, e))?;
        if self.cancel.load(Ordering::Relaxed) {
            return Err(PullError::Interrupted); // The pull is over: leave no blob or snapshot behind.
        }
        if let Some(ingest) = tee.ingest.take() {
            ingest.commit()?;
        }
        if diff_id != self.diff_id {
            return Err(PullError::DiffIdMismatch {
                layer: self.blob,
                expected: self.diff_id,
                actual: diff_id,
            });
        }
        self.snapshots.commit(
            self.pending,
            &self.chain,
            self.caps.overlay_whiteouts,
            stats.implicit_dirs,
        )?;
        Ok(())
    }

    fn corrupt(&self, layer: &str, e: io::Error) -> PullError {
        if unpack::is_too_large(&e) {
            return PullError::Unpack(unpack::UnpackError::Limit {
                layer: layer.to_string(),
                what: "the uncompressed size",
                limit: self.limits.max_layer_bytes,
                setting: "unpack.max_layer_bytes",
            });
        }
        PullError::Unpack(unpack::UnpackError::Tar {
            layer: layer.to_string(),
            source: e,
        })
    }
}

/// Reads the chunks the network side sends; the end of the channel is the end of the blob.
struct ChannelReader {
    rx: mpsc::Receiver<Bytes>,
    current: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(b) => self.current = b,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// Passes bytes through while writing them to the ingest (which hashes them for the blob digest).
struct Tee<R> {
    inner: R,
    ingest: Option<Ingest>,
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(ingest) = self.ingest.as_mut() {
            io::Write::write_all(ingest, &buf[..n])?;
        }
        Ok(n)
    }
}

struct HashingReader<R> {
    inner: R,
    hasher: Hasher,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}
