//! Downloading one blob into its ingest file ([`crate::content::PartialWriter`]): a blob above
//! [`FetchOptions::parallel_above`] as concurrent `Range` requests of [`FetchOptions::chunk`] bytes, on up
//! to [`FetchOptions::connections`] connections, each taking a download slot beyond the first only when
//! one is free; what an earlier, interrupted download wrote is not fetched again; a connection cut
//! mid-body is asked again for the rest of its range, from the byte it reached.
//!
//! The pieces are started in order, so the prefix that the reader ([`super::arrivals`]) hashes and
//! decodes grows steadily while later pieces arrive. A host that ignores `Range` (answers 200 with the
//! whole blob) gets the rest of the blob from that one stream; the other pieces stop.
//!
//! ```text
//! pieces ─▶ [request tasks, ≤ connections] ─(offset, bytes)─▶ [writer thread] write_at ─▶ Arrivals
//! ```

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::sync::{Notify, Semaphore, SemaphorePermit, mpsc};

use super::arrivals::{Arrivals, FileReader};
use super::{Progress, PullError};
use crate::content::partial::RangeSet;
use crate::content::{ContentStore, Ingest, PartialWriter};
use crate::manifest::Descriptor;
use crate::registry::{BlobStream, Session};

/// How a blob is split into requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchOptions {
    /// Bytes per `Range` request (`registry.concurrent_layer_fetch_buffer`); 0 fetches every blob as one
    /// stream.
    pub chunk: u64,
    /// Blobs larger than this are fetched in ranges (`registry.concurrent_layer_fetch_above`).
    pub parallel_above: u64,
    /// Connections one blob may use at most (`registry.max_concurrent_downloads`).
    pub connections: usize,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            chunk: 8 * 1024 * 1024,
            parallel_above: 64 * 1024 * 1024,
            connections: 3,
        }
    }
}

/// Pieces written and waiting for the writer thread (each a network chunk of up to a few hundred KiB).
const WRITE_DEPTH: usize = 16;
/// How often a range cut mid-body is asked again, when each attempt brought bytes.
const MAX_RETRIES: u32 = 8;

/// Everything a download needs besides the blob.
pub(super) struct FetchCtx<'a> {
    pub session: &'a Session,
    /// The download slots of the daemon (one is held by the caller).
    pub downloads: &'a Semaphore,
    pub progress: &'a Progress,
    pub cancel: &'a AtomicBool,
    pub options: FetchOptions,
}

/// The download side of an ingest opened by [`open_ingest`], for [`fetch`].
pub(super) struct Pending {
    writer: PartialWriter,
    arrivals: Arc<Arrivals>,
}

/// Opens the ingest of `desc`'s download: for a blob above [`FetchOptions::parallel_above`] a resumable one
/// (with what an interrupted download already wrote), for a smaller one a fresh one (fetched again whole
/// if interrupted: cheaper than keeping its partial). Returns the ingest, the reader that follows the
/// file's written prefix (for the hash and the decoder), and the download to hand to [`fetch`].
pub(super) fn open_ingest(
    content: &ContentStore,
    desc: &Descriptor,
    options: FetchOptions,
) -> Result<(Ingest, FileReader, Pending), PullError> {
    let (ingest, written) = if desc.size > options.parallel_above {
        content.ingest_resumable(desc.digest, desc.size)?
    } else {
        (content.ingest(desc.digest, Some(desc.size))?, RangeSet::new())
    };
    let (writer, file) = ingest.positional(written)?;
    let arrivals = Arrivals::new(writer.written().prefix());
    let reader = FileReader::new(file, desc.size, arrivals.clone());
    Ok((ingest, reader, Pending { writer, arrivals }))
}

/// Downloads what the ingest lacks of `desc` and writes it, while its reader follows the written prefix.
/// Returns once every byte is written, or on the first failure (the ingest keeps what was written, for a
/// resume).
pub(super) async fn fetch(ctx: &FetchCtx<'_>, desc: &Descriptor, pending: Pending) -> Result<(), PullError> {
    let Pending { writer, arrivals } = pending;
    let had = writer.written().clone();
    if had.total() > 0 {
        tracing::info!(blob = %desc.digest, bytes = had.total(), size = desc.size, "resuming an interrupted download");
    }
    let (tx, rx) = mpsc::channel::<(u64, Bytes)>(WRITE_DEPTH);
    let to_writer = arrivals.clone();
    let writer = tokio::task::spawn_blocking(move || write_loop(writer, rx, &to_writer));
    let fetched = Download {
        ctx,
        desc,
        tx,
        arrivals: &arrivals,
        whole: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        ranges_work: Notify::new(),
        ranges_confirmed: AtomicBool::new(false),
    }
    .run(&had)
    .await;
    let written = writer.await.map_err(|e| PullError::Task(e.to_string()));
    arrivals.end();
    let written = written??;
    fetched?;
    if !written.covers(0, desc.size) {
        return Err(PullError::Task(format!(
            "the download of {} ended with {} of {} bytes written",
            desc.digest,
            written.total(),
            desc.size
        )));
    }
    Ok(())
}

/// Writes what the request tasks received at its offset; the end of the channel is the end, also when the
/// download's future was dropped (a cancelled pull): the reader is then told that no more bytes come.
fn write_loop(
    mut writer: PartialWriter,
    mut rx: mpsc::Receiver<(u64, Bytes)>,
    arrivals: &Arrivals,
) -> Result<RangeSet, PullError> {
    struct EndOnExit<'a>(&'a Arrivals);
    impl Drop for EndOnExit<'_> {
        fn drop(&mut self) {
            self.0.end();
        }
    }
    let _end = EndOnExit(arrivals);
    while let Some((offset, bytes)) = rx.blocking_recv() {
        if let Err(source) = writer.write_at(offset, &bytes) {
            writer.save();
            return Err(PullError::Write {
                path: writer.path().display().to_string(),
                source,
            });
        }
        arrivals.advance(writer.written().prefix());
    }
    writer.save();
    Ok(writer.written().clone())
}

/// One blob's download in progress.
struct Download<'a, 'c> {
    ctx: &'a FetchCtx<'c>,
    desc: &'a Descriptor,
    tx: mpsc::Sender<(u64, Bytes)>,
    arrivals: &'a Arrivals,
    /// A host sent the whole blob from one stream: no more pieces.
    whole: AtomicBool,
    /// A piece failed: the others stop.
    stop: AtomicBool,
    /// Signalled when a response showed that the host serves ranges.
    ranges_work: Notify,
    ranges_confirmed: AtomicBool,
}

/// How a piece ended.
enum Piece {
    /// Its range is written.
    Done,
    /// The host ignored the range and the whole blob was written.
    Whole,
}

impl Download<'_, '_> {
    async fn run(&self, had: &RangeSet) -> Result<(), PullError> {
        let size = self.desc.size;
        let opts = self.ctx.options;
        let parallel = opts.chunk > 0 && opts.connections > 1 && size > opts.parallel_above;
        let chunk = if parallel { opts.chunk } else { size.max(1) };
        let mut queue = pieces(had, size, chunk);
        let mut extra: Vec<SemaphorePermit<'_>> = Vec::new();
        let mut running = FuturesUnordered::new();
        let mut first_error = None;
        loop {
            let ranges_ok = self.ranges_confirmed.load(Ordering::Relaxed);
            while first_error.is_none() && !self.whole.load(Ordering::Relaxed) {
                let Some(&(from, to)) = queue.front() else { break };
                if running.len() > extra.len() {
                    // All slots busy: take another one if the host serves ranges and one is free.
                    if !parallel || !ranges_ok || extra.len() + 1 >= opts.connections {
                        break;
                    }
                    match self.ctx.downloads.try_acquire() {
                        Ok(p) => extra.push(p),
                        Err(_) => break,
                    }
                }
                queue.pop_front();
                running.push(self.piece(from, to));
            }
            let next = if parallel && !ranges_ok && !queue.is_empty() {
                tokio::select! {
                    r = running.next() => r,
                    () = self.ranges_work.notified() => continue,
                }
            } else {
                running.next().await
            };
            match next {
                None => break,
                Some(Ok(Piece::Done)) => {}
                Some(Ok(Piece::Whole)) => queue.clear(),
                Some(Err(e)) => {
                    self.stop.store(true, Ordering::Relaxed);
                    // The first real failure, not the stops it caused.
                    if first_error.is_none() || matches!(first_error, Some(PullError::Interrupted)) {
                        first_error = Some(e);
                    }
                }
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        Ok(())
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed) || self.ctx.cancel.load(Ordering::Relaxed) || self.arrivals.abandoned()
    }

    /// Fetches bytes `from..to`, asking again from where a cut stream stopped.
    async fn piece(&self, from: u64, to: u64) -> Result<Piece, PullError> {
        let desc = self.desc;
        let (mut at, mut retries, mut idle_retries) = (from, 0u32, 0u32);
        loop {
            if self.whole.load(Ordering::Relaxed) {
                return Ok(Piece::Done); // Another stream brings these bytes.
            }
            if self.stopped() {
                return Err(PullError::Interrupted);
            }
            let end = (to < desc.size).then_some(to);
            let body = self.ctx.session.fetch_blob_range(desc, at, end).await?;
            // A 200 is the whole blob, asked for (no range) or not (a host that ignores `Range`).
            let whole = !body.partial;
            if whole {
                if at > 0 || end.is_some() {
                    tracing::info!(blob = %desc.digest, "the registry ignored a Range request: fetching the rest of the blob from its one stream");
                }
                self.whole.store(true, Ordering::Relaxed);
            } else {
                self.ranges_confirmed.store(true, Ordering::Relaxed);
                self.ranges_work.notify_one();
            }
            let (mut pos, stop_at) = if whole { (0, desc.size) } else { (at, to) };
            let started = pos;
            let e = match self.stream(body.stream, &mut pos, stop_at, whole).await {
                Ok(()) => return Ok(if whole { Piece::Whole } else { Piece::Done }),
                Err(Ended::Superseded) => return Ok(Piece::Done),
                Err(Ended::Stopped) => return Err(PullError::Interrupted),
                Err(Ended::Broken(e)) => e,
            };
            // A stream that brought bytes is asked again for the rest; one that brought none, once.
            let progressed = pos > started;
            if progressed {
                retries += 1;
            } else {
                idle_retries += 1;
            }
            if retries > MAX_RETRIES || idle_retries > 1 {
                return Err(stream_error(desc, &e));
            }
            if !whole {
                at = pos;
            }
            tracing::info!(blob = %desc.digest, at, error = %e, "a blob download was cut; asking for the rest");
            tokio::time::sleep(Duration::from_millis(100 * u64::from(retries + idle_retries))).await;
        }
    }

    /// Hands the stream's bytes to the writer from `pos` until `end` (moving `pos`); with `whole`, bytes
    /// that other pieces wrote are written again (the same bytes).
    async fn stream(&self, mut stream: BlobStream, pos: &mut u64, end: u64, whole: bool) -> Result<(), Ended> {
        while *pos < end {
            if self.stopped() {
                return Err(Ended::Stopped);
            }
            if !whole && self.whole.load(Ordering::Relaxed) {
                return Err(Ended::Superseded);
            }
            let mut bytes = match stream.next().await {
                None => {
                    return Err(Ended::Broken(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("the response ended at byte {pos}, before byte {end}"),
                    )));
                }
                Some(Err(e)) => return Err(Ended::Broken(e)),
                Some(Ok(b)) => b,
            };
            bytes.truncate((end - *pos).min(bytes.len() as u64) as usize);
            let n = bytes.len() as u64;
            self.ctx.progress.bytes(&self.desc.digest, n);
            if self.tx.send((*pos, bytes)).await.is_err() {
                return Err(Ended::Stopped); // The writer failed; its error is the one to report.
            }
            *pos += n;
        }
        Ok(())
    }
}

/// A blob's response body that failed (a cut connection, a silent one, bytes that do not verify).
pub(super) fn stream_error(desc: &Descriptor, e: &io::Error) -> PullError {
    PullError::Stream {
        digest: desc.digest,
        detail: e.to_string(),
        mismatch: e.kind() == io::ErrorKind::InvalidData,
    }
}

/// Why a response's stream ended early.
enum Ended {
    /// Another stream brings the whole blob.
    Superseded,
    /// The download stopped (another failure, a cancelled pull).
    Stopped,
    /// The connection broke.
    Broken(io::Error),
}

/// The ranges of `[0, size)` that `had` lacks, split into pieces of at most `chunk` bytes, in order.
fn pieces(had: &RangeSet, size: u64, chunk: u64) -> VecDeque<(u64, u64)> {
    let mut out = VecDeque::new();
    let mut at = had.next_missing(0);
    while at < size {
        let gap_end = had
            .ranges()
            .iter()
            .map(|&(a, _)| a)
            .find(|&a| a > at)
            .unwrap_or(size)
            .min(size);
        let mut from = at;
        while from < gap_end {
            let to = (from + chunk).min(gap_end);
            out.push_back((from, to));
            from = to;
        }
        at = had.next_missing(gap_end);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_cover_what_is_missing_in_order() {
        let mut had = RangeSet::new();
        assert_eq!(pieces(&had, 10, 4), [(0, 4), (4, 8), (8, 10)]);
        had.insert(0, 3);
        had.insert(5, 6);
        assert_eq!(pieces(&had, 10, 4), [(3, 5), (6, 10)]);
        had.insert(6, 10);
        assert_eq!(pieces(&had, 10, 100), [(3, 5)]);
        had.insert(3, 5);
        assert!(pieces(&had, 10, 4).is_empty());
        assert_eq!(pieces(&RangeSet::new(), 0, 4), []);
    }
}
