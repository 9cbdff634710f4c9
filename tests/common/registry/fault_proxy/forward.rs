//! The response-level faults: the request is forwarded upstream (with `Connection: close`, and without
//! `Range` under [`super::FaultProxy::ignore_range`]) and the response comes back whole ([`Fault::Pass`]),
//! stops after a number of body bytes ([`Fault::Stall`]), is closed after them ([`Fault::Cut`]) or trickles
//! ([`Fault::Drip`]); over any of them, the body is paced to the front's per-connection cap
//! ([`super::pace`]) and a blob body is closed when an armed [`super::FaultProxy::cut_all_at`] fires.
//!
//! A cut is counted, not guessed: each blob piece reserves its bytes in the front's running total under the
//! proxy's lock before it is written, so the piece that reaches the armed total is shortened to end exactly
//! there, and a response that sees the cut fired (at its next read, wait or write) forwards nothing more. A
//! write interrupted by the cut gives back the bytes it did not send. A cut closes the connection with a FIN
//! (`shutdown`), so the client reads every byte counted and then an early end of the body.

use std::net::SocketAddr;
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::watch;

use super::Fault;
use super::pace::{Pacer, max_piece};
use super::serve::{LogEntry, read_head};

/// How a piece's write ended.
enum Wrote {
    /// Every byte went.
    All,
    /// A cut fired first; the count says how many went.
    Cut(usize),
    /// The client went away; the count says how many went.
    Gone(usize),
}

/// Forwards request `text` (its head; `early_body` the body bytes read with it) of `client` to `upstream`
/// and the response back, applying `fault`; notes the response on the request's `entry` in the log.
pub(super) async fn forward(
    mut client: TcpStream,
    upstream: SocketAddr,
    text: &str,
    early_body: &[u8],
    method: &str,
    fault: Fault,
    entry: &LogEntry<'_>,
) {
    let note = |status: Option<u16>, finished: bool| entry.note(status, finished);
    let Ok(mut up) = TcpStream::connect(upstream).await else {
        note(Some(502), true);
        let _ = client
            .write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .await;
        return;
    };
    let (cap, ignore_range, blob) = {
        let s = entry.shared.lock().unwrap();
        let blob = s.log.get(entry.index).is_some_and(|r| r.is_blob_get());
        (s.front.cap, s.front.ignore_range, blob)
    };
    // The request, with `Connection: close`; a request body follows as it comes.
    let mut request = String::new();
    for line in text.split("\r\n").filter(|l| !l.is_empty()) {
        let lower = line.to_ascii_lowercase();
        let dropped = lower.starts_with("connection:")
            || (ignore_range && (lower.starts_with("range:") || lower.starts_with("if-range:")));
        if !dropped {
            request.push_str(line);
            request.push_str("\r\n");
        }
    }
    request.push_str("Connection: close\r\n\r\n");
    if up.write_all(request.as_bytes()).await.is_err() || up.write_all(early_body).await.is_err() {
        note(None, true);
        return;
    }
    let (mut client_read, mut client_write) = client.into_split();
    let (mut up_read, mut up_write) = up.into_split();
    let body_copy = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut client_read, &mut up_write).await;
    });
    entry.shared.lock().unwrap().tasks.push(body_copy.abort_handle());
    let Some((resp_head, mut pending)) = read_head(&mut up_read).await else {
        note(None, true);
        body_copy.abort();
        return;
    };
    let resp_text = String::from_utf8_lossy(&resp_head).to_lowercase();
    let status: Option<u16> = resp_text.split(' ').nth(1).and_then(|s| s.parse().ok());
    note(status, false);
    let length: Option<usize> = resp_text
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok());
    let body_len = if method == "HEAD" { Some(0) } else { length };
    // Blob responses watch for a cut from their start: one that fired before is not theirs.
    let mut cuts = blob.then(|| subscribe(entry));
    if client_write.write_all(&resp_head).await.is_err() {
        note(None, true);
        body_copy.abort();
        return;
    }
    let mut pacer = cap.map(Pacer::new);
    let piece_max = cap.map_or(usize::MAX, max_piece);
    let mut sent = 0usize;
    let mut cut = false;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if pending.is_empty() {
            if body_len.is_some_and(|n| sent >= n) {
                break;
            }
            let read = tokio::select! {
                r = up_read.read(&mut buf) => r,
                () = fired(&mut cuts) => { cut = true; break; }
            };
            match read {
                Ok(0) | Err(_) => break,
                Ok(n) => pending.extend_from_slice(&buf[..n]),
            }
        }
        let mut piece: Vec<u8> = std::mem::take(&mut pending);
        let (limit, pause) = match &fault {
            Fault::Stall(after) | Fault::Cut(after) => (after.saturating_sub(sent), None),
            Fault::Drip { chunk, pause } => ((*chunk).max(1), Some(*pause)),
            _ => (usize::MAX, None),
        };
        let limit = limit.min(piece_max);
        if piece.len() > limit {
            pending = piece.split_off(limit);
        }
        if piece.is_empty() {
            if let Fault::Cut(_) = fault {
                cut = true;
                break;
            }
            // Stalled: keep the connection, send nothing more (until a cut closes it).
            fired(&mut cuts).await;
            cut = true;
            break;
        }
        if let Some(p) = pacer.as_mut() {
            let due = p.pay(piece.len(), Instant::now());
            tokio::select! {
                () = tokio::time::sleep_until(due.into()) => {}
                () = fired(&mut cuts) => { cut = true; break; }
            }
        }
        let fire = match reserve(entry, blob, cuts.as_ref(), &mut piece) {
            Some(fire) => fire,
            None => {
                cut = true;
                break;
            }
        };
        if fire && let Some(rx) = cuts.as_mut() {
            // This response fired the cut: it still sends the piece that ends at the total.
            rx.borrow_and_update();
        }
        let last = body_len.is_some_and(|n| sent + piece.len() >= n);
        if last && !fire {
            note(None, true);
        }
        let wrote = write_or_cut(&mut client_write, &piece, &mut cuts).await;
        let n = match wrote {
            Wrote::All => piece.len(),
            Wrote::Cut(n) | Wrote::Gone(n) => n,
        };
        account(entry, blob, n, piece.len() - n);
        sent += n;
        match wrote {
            Wrote::All if fire => {
                cut = true;
                break;
            }
            Wrote::All => {}
            Wrote::Cut(_) => {
                cut = true;
                break;
            }
            Wrote::Gone(_) => break,
        }
        if let Some(p) = pause {
            let _ = client_write.flush().await;
            tokio::select! {
                () = tokio::time::sleep(p) => {}
                () = fired(&mut cuts) => { cut = true; break; }
            }
        }
    }
    // Every way out is an end: whole, cut, or the client or the upstream gone (a stall never gets here).
    finish(entry, cut);
    let _ = client_write.shutdown().await;
    body_copy.abort();
}

/// A watch on the front's cuts, as of now.
fn subscribe(entry: &LogEntry<'_>) -> watch::Receiver<u64> {
    let mut s = entry.shared.lock().unwrap();
    s.front.cuts.get_or_insert_with(|| watch::channel(0).0).subscribe()
}

/// Resolves when a cut fires (never without a watch: the response is not a blob's).
async fn fired(cuts: &mut Option<watch::Receiver<u64>>) {
    if let Some(rx) = cuts
        && rx.changed().await.is_ok()
    {
        return;
    }
    std::future::pending().await
}

/// Reserves `piece`'s bytes in the front's blob total: `None` when a cut fired since the response started
/// (send nothing), else whether this piece fires the armed cut (it is then shortened to end at it).
fn reserve(entry: &LogEntry<'_>, blob: bool, cuts: Option<&watch::Receiver<u64>>, piece: &mut Vec<u8>) -> Option<bool> {
    if !blob {
        return Some(false);
    }
    let mut s = entry.shared.lock().unwrap();
    if cuts.is_some_and(|rx| rx.has_changed().unwrap_or(false)) {
        return None;
    }
    let front = &mut s.front;
    let mut fire = false;
    if let Some(at) = front.cut_at {
        let room = at.saturating_sub(front.blob_total);
        if piece.len() as u64 >= room {
            piece.truncate(room as usize);
            fire = true;
            front.cut_at = None;
            // Under the lock: no other response reserves another byte once the total is reached.
            if let Some(tx) = &front.cuts {
                tx.send_modify(|n| *n += 1);
            }
        }
    }
    front.blob_total += piece.len() as u64;
    Some(fire)
}

/// Notes `sent` body bytes on the request; gives back `unsent` reserved blob bytes.
fn account(entry: &LogEntry<'_>, blob: bool, sent: usize, unsent: usize) {
    let mut s = entry.shared.lock().unwrap();
    if blob {
        s.front.blob_total -= unsent as u64;
    }
    if let Some(r) = s.log.get_mut(entry.index) {
        r.body_bytes += sent as u64;
    }
}

/// Marks the response ended now (unless its last byte was noted already) and whether it was cut.
fn finish(entry: &LogEntry<'_>, cut: bool) {
    let mut s = entry.shared.lock().unwrap();
    if let Some(r) = s.log.get_mut(entry.index) {
        r.cut = cut;
        if cut || r.finished.is_none() {
            r.finished = Some(Instant::now());
        }
    }
}

/// Writes `data`, stopping between writes when a cut fires: a write that has not completed has sent
/// nothing, so the count is exact.
async fn write_or_cut(w: &mut OwnedWriteHalf, data: &[u8], cuts: &mut Option<watch::Receiver<u64>>) -> Wrote {
    let mut off = 0;
    while off < data.len() {
        tokio::select! {
            biased;
            () = fired(cuts) => return Wrote::Cut(off),
            r = w.write(&data[off..]) => match r {
                Ok(0) | Err(_) => return Wrote::Gone(off),
                Ok(n) => off += n,
            },
        }
    }
    Wrote::All
}
