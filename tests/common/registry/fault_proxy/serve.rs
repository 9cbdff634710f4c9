//! One connection, one request: read and log it, then the request-level faults (a missing required header
//! answered 400, [`Fault::Refuse`] as a rule, [`Fault::Blackhole`], [`Fault::Status`], [`Fault::Respond`]);
//! anything else is forwarded ([`super::forward`]).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::forward::forward;
use super::{Fault, ProxiedRequest, Shared};

/// Reads until the end of an HTTP head; returns the head and any bytes after it.
pub(super) async fn read_head<R: AsyncRead + Unpin>(r: &mut R) -> Option<(Vec<u8>, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            return Some((buf, rest));
        }
        match r.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Serves one connection (one request).
pub(super) async fn serve(mut client: TcpStream, upstream: SocketAddr, fallback: Fault, shared: Arc<Mutex<Shared>>) {
    let Some((head, early_body)) = read_head(&mut client).await else {
        return;
    };
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut first = text.lines().next().unwrap_or_default().split(' ');
    let method = first.next().unwrap_or_default().to_string();
    let path = first.next().unwrap_or_default().to_string();
    let headers: Vec<(String, String)> = text
        .split("\r\n")
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let (fault, missing) = {
        let mut s = shared.lock().unwrap();
        let counted = s
            .counted
            .iter_mut()
            .find(|(p, _, left)| *left > 0 && path.contains(p.as_str()))
            .map(|(_, f, left)| {
                *left -= 1;
                f.clone()
            });
        let fault = counted.unwrap_or_else(|| {
            s.rules
                .iter()
                .find(|(p, _)| path.contains(p.as_str()))
                .map_or(fallback, |(_, f)| f.clone())
        });
        let missing = s.required.as_ref().is_some_and(|req| !headers.contains(req));
        (fault, missing)
    };
    // A request without the required header is refused as such, whatever the fault.
    let fault = if missing { Fault::Status(400) } else { fault };
    let index = {
        let mut s = shared.lock().unwrap();
        s.log.push(ProxiedRequest {
            method: method.clone(),
            path,
            fault: fault.clone(),
            started: Instant::now(),
            status: None,
            finished: None,
            headers,
            body_bytes: 0,
            cut: false,
        });
        s.log.len() - 1
    };
    let entry = LogEntry { shared: &shared, index };
    let note = |status: Option<u16>, finished: bool| entry.note(status, finished);
    match fault {
        Fault::Refuse => return,
        Fault::Blackhole => {
            // Hold the connection open, reading whatever comes, until the client or the proxy goes.
            let mut sink = [0u8; 1024];
            while matches!(client.read(&mut sink).await, Ok(n) if n > 0) {}
            return;
        }
        Fault::Status(code) => {
            note(Some(code), true);
            let resp = format!("HTTP/1.1 {code} Fault\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            let _ = client.write_all(resp.as_bytes()).await;
            let _ = client.shutdown().await;
            return;
        }
        Fault::Respond { status, headers, body } => {
            note(Some(status), true);
            let mut resp = format!("HTTP/1.1 {status} Fault\r\n");
            for (name, value) in &headers {
                resp.push_str(&format!("{name}: {value}\r\n"));
            }
            resp.push_str(&format!("Content-Length: {}\r\nConnection: close\r\n\r\n", body.len()));
            if method != "HEAD" {
                resp.push_str(&body);
            }
            let _ = client.write_all(resp.as_bytes()).await;
            let _ = client.shutdown().await;
            return;
        }
        Fault::Pass | Fault::Stall(_) | Fault::Drip { .. } | Fault::Cut(_) => {}
    }
    forward(client, upstream, &text, &early_body, &method, fault, &entry).await;
}

/// A request's line in the proxy's log, to note its response on.
pub(super) struct LogEntry<'a> {
    /// The proxy's state (the log, and the tasks to abort on drop).
    pub shared: &'a Mutex<Shared>,
    /// The request's index in the log.
    pub index: usize,
}

impl LogEntry<'_> {
    /// Records the response's status (when known) and, with `finished`, that its last byte is about to be
    /// sent.
    pub fn note(&self, status: Option<u16>, finished: bool) {
        let mut s = self.shared.lock().unwrap();
        if let Some(r) = s.log.get_mut(self.index) {
            if status.is_some() {
                r.status = status;
            }
            if finished {
                r.finished = Some(Instant::now());
            }
        }
    }
}
