//! The response-level faults: the request is forwarded upstream (with `Connection: close`) and the response
//! comes back whole ([`Fault::Pass`]), stops after a number of body bytes ([`Fault::Stall`]) or trickles
//! ([`Fault::Drip`]).

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::Fault;
use super::serve::{LogEntry, read_head};

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
    // The request, with `Connection: close`; a request body follows as it comes.
    let mut request = String::new();
    for line in text.split("\r\n").filter(|l| !l.is_empty()) {
        if !line.to_ascii_lowercase().starts_with("connection:") {
            request.push_str(line);
            request.push_str("\r\n");
        }
    }
    request.push_str("Connection: close\r\n\r\n");
    if up.write_all(request.as_bytes()).await.is_err() || up.write_all(early_body).await.is_err() {
        return;
    }
    let (mut client_read, mut client_write) = client.into_split();
    let (mut up_read, mut up_write) = up.into_split();
    let body_copy = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut client_read, &mut up_write).await;
    });
    entry.shared.lock().unwrap().tasks.push(body_copy.abort_handle());
    let Some((resp_head, mut pending)) = read_head(&mut up_read).await else {
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
    if client_write.write_all(&resp_head).await.is_err() {
        body_copy.abort();
        return;
    }
    let mut sent = 0usize;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if pending.is_empty() {
            if body_len.is_some_and(|n| sent >= n) {
                break;
            }
            match up_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => pending.extend_from_slice(&buf[..n]),
            }
        }
        let mut piece: Vec<u8> = std::mem::take(&mut pending);
        let (limit, pause) = match &fault {
            Fault::Stall(after) => (after.saturating_sub(sent), None),
            Fault::Drip { chunk, pause } => ((*chunk).max(1), Some(*pause)),
            _ => (usize::MAX, None),
        };
        if piece.len() > limit {
            pending = piece.split_off(limit);
        }
        if piece.is_empty() {
            // Stalled: keep the connection, send nothing more.
            std::future::pending::<()>().await;
        }
        let last = body_len.is_some_and(|n| sent + piece.len() >= n);
        if last {
            note(None, true);
        }
        if client_write.write_all(&piece).await.is_err() {
            break;
        }
        sent += piece.len();
        if let Some(p) = pause {
            let _ = client_write.flush().await;
            tokio::time::sleep(p).await;
        }
    }
    if body_len.is_none() {
        note(None, true);
    }
    let _ = client_write.shutdown().await;
    body_copy.abort();
}
