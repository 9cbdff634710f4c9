//! One layer in one pass: the download ([`super::fetch`]) writes the blob into its ingest file while, from
//! the same file, in order, as its bytes arrive, it is hashed (blob digest), decompressed, hashed again
//! (diff id) and applied into a snapshot.
//!
//! ```text
//! network ─▶ ingest file ─▶ [decoding thread] FileReader ─▶ Tee(→ Ingest: blob digest)
//!                       └─▶ decoder (gzip | zstd | none) ─▶ Counting, diff id ─blocks─▶ [applying thread] untar
//! ```
//!
//! The snapshot becomes visible only when the blob digest, its size and the diff id all match; otherwise
//! the ingest and the half-built snapshot are dropped. When the blob is already in the store (an earlier
//! pull without its snapshot), it is unpacked from the local file instead.

use std::io::{self, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc as std_mpsc;

use super::PullError;
use super::arrivals::download_stopped;
use super::fetch::{FetchCtx, FetchOptions};
use super::progress::LayerState;
use crate::content::{ContentStore, Ingest};
use crate::digest::{Digest, Hasher};
use crate::layers::LayerStore;
use crate::manifest::{self, Compression};
use crate::metadata::LayerRecord;
use crate::registry::Session;
use crate::unpack::{self, Capabilities, CountingReader, Limits};

/// Decoded blocks between the decoding and the applying thread of a layer, and their size: 4 × 128 KiB
/// in flight (plus the two being worked on) per layer.
const DECODED_DEPTH: usize = 2;
const DECODE_BUF: usize = 128 * 1024;

/// Everything a layer needs besides the layer itself.
pub(super) struct LayerCtx<'a> {
    pub session: &'a Session,
    pub content: &'a ContentStore,
    pub snapshots: &'a LayerStore,
    pub limits: Limits,
    pub caps: Capabilities,
    pub downloads: &'a tokio::sync::Semaphore,
    pub progress: &'a super::Progress,
    /// Set when the pull failed elsewhere or was dropped: stop, and above all commit nothing.
    pub cancel: &'a Arc<AtomicBool>,
    /// How blobs are split into requests.
    pub fetch: FetchOptions,
}

impl LayerCtx<'_> {
    /// What a blob's download needs.
    pub(super) fn fetch(&self) -> FetchCtx<'_> {
        FetchCtx {
            session: self.session,
            downloads: self.downloads,
            progress: self.progress,
            cancel: self.cancel,
            options: self.fetch,
        }
    }
}

/// Makes sure both the blob and the snapshot of `layer` exist (fetching and unpacking what is missing).
pub(super) async fn ensure_layer(
    ctx: &LayerCtx<'_>,
    layer: &LayerRecord,
    chain: Digest,
    parent: Option<Digest>,
) -> Result<(), PullError> {
    let blob = &layer.blob;
    if ctx.content.contains(&blob.digest) && ctx.snapshots.exists(&chain) {
        ctx.progress.layer_state(&blob.digest, LayerState::Present);
        return Ok(());
    }
    // Concurrent pulls that need this chain id build it once: the second finds it done.
    let _building = {
        let _queued = ctx.progress.queued();
        ctx.snapshots.lock_build(&chain).await
    };
    let have_blob = ctx.content.contains(&blob.digest);
    if ctx.snapshots.exists(&chain) {
        if have_blob {
            ctx.progress.layer_state(&blob.digest, LayerState::Present);
        } else {
            let _permit = super::download::slot(ctx.downloads, ctx.progress).await?;
            super::download::blob_to_store(&ctx.fetch(), ctx.content, blob).await?;
            ctx.progress.layer_state(&blob.digest, LayerState::Done);
        }
        return Ok(());
    }
    let compression = manifest::layer_compression(&blob.media_type).unwrap_or(Compression::None);
    let job = Job {
        pending: ctx.snapshots.prepare()?,
        snapshots: ctx.snapshots.clone(),
        chain,
        parent,
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

    let _permit = super::download::slot(ctx.downloads, ctx.progress).await?;
    let (ingest, reader, pending) = super::fetch::open_ingest(ctx.content, blob, ctx.fetch)?;
    let worker = tokio::task::spawn_blocking(move || job.run(reader, Some(ingest)));
    let fetched = super::fetch::fetch(&ctx.fetch(), blob, pending).await;
    let result = worker.await.map_err(|e| PullError::Task(e.to_string()))?;
    // A download that failed shows as an early end to the worker, which then commits nothing: the
    // download's error is the cause. A worker that failed (bytes that do not decode) stops the download:
    // the worker's error is the cause then.
    match fetched {
        Err(PullError::Interrupted) if !ctx.cancel.load(Ordering::Relaxed) && result.is_err() => {}
        fetched => fetched?,
    }
    result?;
    ctx.progress.layer_state(&blob.digest, LayerState::Done);
    Ok(())
}

/// The blocking half of a layer.
struct Job {
    pending: crate::layers::Pending,
    snapshots: LayerStore,
    chain: Digest,
    /// The chain id of the layer below (`None` for the base layer).
    parent: Option<Digest>,
    diff_id: Digest,
    blob: Digest,
    compression: Compression,
    limits: Limits,
    caps: Capabilities,
    cancel: Arc<AtomicBool>,
}

impl Job {
    /// Runs the layer on two threads: this one reads the source (writing and hashing the blob),
    /// decompresses and hashes the tar (diff id); a second one applies the tar. Decompression and file
    /// creation are the two big costs of a layer, and this way they overlap (PERF-NOTES: ~1.6× per layer),
    /// which matters most for the last layers of a pull, when the other layers are done and a core is free.
    fn run<R: Read>(self, source: R, ingest: Option<Ingest>) -> Result<(), PullError> {
        let layer = self.blob.to_string();
        let (full_tx, full_rx) = std_mpsc::sync_channel::<Vec<u8>>(DECODED_DEPTH);
        let (empty_tx, empty_rx) = std_mpsc::channel::<Vec<u8>>();
        let (decoded, applied) = std::thread::scope(|scope| {
            let applier = std::thread::Builder::new()
                .name("imaged-untar".into())
                .spawn_scoped(scope, || {
                    let mut tar = DecodedReader {
                        rx: full_rx,
                        recycle: empty_tx,
                        current: Vec::new(),
                        pos: 0,
                    };
                    let stats = unpack::apply_layer(&mut tar, &self.pending.fs(), &layer, &self.limits, self.caps)?;
                    // The tar's end-of-archive padding and anything after it count for the diff id: let the
                    // decoding side read to the end.
                    io::copy(&mut tar, &mut io::sink()).map_err(|e| self.corrupt(&layer, e))?;
                    Ok::<_, PullError>(stats)
                });
            let applier = match applier {
                Ok(a) => a,
                Err(e) => {
                    let failed = Err(PullError::Task(format!("cannot start the unpacking thread: {e}")));
                    return (Ok(Decoded::ApplierStopped), failed);
                }
            };
            let decoded = self.decode(source, ingest, &layer, full_tx, empty_rx);
            let applied = applier
                .join()
                .unwrap_or_else(|_| Err(PullError::Task("the unpacking thread panicked".into())));
            (decoded, applied)
        });
        // The decoding side's failure (a corrupt stream, the size cap, a read error) is the cause of whatever
        // the applying side then saw (a truncated tar); if the applying side stopped first, its error is it.
        let (diff_id, diff_size, ingest) = match decoded? {
            Decoded::Done {
                diff_id,
                diff_size,
                ingest,
            } => (diff_id, diff_size, ingest),
            Decoded::ApplierStopped => {
                return Err(match applied {
                    Err(e) => e,
                    Ok(_) => PullError::Task("the unpacking thread stopped without an error".into()),
                });
            }
        };
        let stats = applied?;
        if self.cancel.load(Ordering::Relaxed) {
            return Err(PullError::Interrupted); // The pull is over: leave no blob or snapshot behind.
        }
        if let Some(ingest) = ingest {
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
            self.parent.as_ref(),
            self.caps.overlay_whiteouts,
            stats.implicit_dirs,
            Some(diff_size),
        )?;
        Ok(())
    }

    /// Reads the whole source through the ingest and the decoder, hashes the decoded bytes and hands them
    /// to the applying thread in `DECODE_BUF` blocks (recycled, so a layer allocates a handful of buffers).
    fn decode<R: Read>(
        &self,
        source: R,
        ingest: Option<Ingest>,
        layer: &str,
        full: std_mpsc::SyncSender<Vec<u8>>,
        empty: std_mpsc::Receiver<Vec<u8>>,
    ) -> Result<Decoded, PullError> {
        let mut tee = Tee { inner: source, ingest };
        match self.decode_all(&mut tee, full, empty) {
            Ok(Some((diff_id, diff_size))) => Ok(Decoded::Done {
                diff_id,
                diff_size,
                ingest: tee.ingest,
            }),
            Ok(None) => Ok(Decoded::ApplierStopped),
            Err(e) => {
                // Bytes that do not decode are not worth resuming; a download that stopped is.
                if !download_stopped(&e)
                    && let Some(ingest) = tee.ingest.take()
                {
                    ingest.discard();
                }
                Err(self.corrupt(layer, e))
            }
        }
    }

    /// The diff id and size of the tar, or `None` when the applying side stopped reading.
    fn decode_all<R: Read>(
        &self,
        tee: &mut Tee<R>,
        full: std_mpsc::SyncSender<Vec<u8>>,
        empty: std_mpsc::Receiver<Vec<u8>>,
    ) -> io::Result<Option<(Digest, u64)>> {
        let (diff_id, diff_size) = {
            let decoder: Box<dyn Read + '_> = match self.compression {
                Compression::None => Box::new(&mut *tee),
                Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(&mut *tee)),
                Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(&mut *tee)?),
            };
            let mut decoded = CountingReader::new(decoder, self.limits.max_layer_bytes);
            let mut hasher = Hasher::new();
            loop {
                let mut buf = empty.try_recv().unwrap_or_else(|_| vec![0u8; DECODE_BUF]);
                buf.resize(DECODE_BUF, 0);
                let n = read_full(&mut decoded, &mut buf)?;
                if n == 0 {
                    break;
                }
                buf.truncate(n);
                hasher.update(&buf);
                if full.send(buf).is_err() {
                    return Ok(None);
                }
            }
            (hasher.finish(), decoded.count())
        };
        drop(full); // The end of the tar for the applying side.
        // Bytes after the compressed stream's end still count for the blob digest.
        io::copy(tee, &mut io::sink())?;
        Ok(Some((diff_id, diff_size)))
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

/// Passes the bytes of the ingest file through, hashing them for the blob digest.
struct Tee<R> {
    inner: R,
    ingest: Option<Ingest>,
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(ingest) = self.ingest.as_mut() {
            ingest.absorb(&buf[..n])?;
        }
        Ok(n)
    }
}

/// What the decoding side of a layer ended with (once per layer: its size does not matter).
#[allow(clippy::large_enum_variant)]
enum Decoded {
    /// The whole source was read: the diff id and size of the tar, and the ingest to commit.
    Done {
        diff_id: Digest,
        diff_size: u64,
        ingest: Option<Ingest>,
    },
    /// The applying side stopped reading (it failed): its error is the one to report.
    ApplierStopped,
}

/// Fills `buf` as far as the reader goes; fewer bytes only at the end.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// The applying side's view of the decoded tar: the blocks the decoding side sends, the empty ones sent
/// back for reuse. The end of the channel is the end of the tar.
struct DecodedReader {
    rx: std_mpsc::Receiver<Vec<u8>>,
    recycle: std_mpsc::Sender<Vec<u8>>,
    current: Vec<u8>,
    pos: usize,
}

impl Read for DecodedReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.current.len() {
            match self.rx.recv() {
                Ok(next) => {
                    let used = std::mem::replace(&mut self.current, next);
                    let _ = self.recycle.send(used);
                    self.pos = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len() - self.pos);
        buf[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}
