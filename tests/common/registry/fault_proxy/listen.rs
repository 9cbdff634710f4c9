//! The connection-level fault: [`Fault::Refuse`] as the default closes the port, any other default opens it
//! again on the same address; each accepted connection is served with the default of that moment.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;

use super::{Fault, Shared, serve::serve};

/// A listener with `SO_REUSEADDR`, so the port can be bound again after [`Fault::Refuse`].
pub(super) fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Accepts connections on `first` (and on `addr` again after a refusal) until the proxy is dropped.
pub(super) async fn accept_loop(
    first: TcpListener,
    addr: SocketAddr,
    upstream: SocketAddr,
    mut default: watch::Receiver<Fault>,
    shared: Arc<Mutex<Shared>>,
) {
    let mut listener = Some(first);
    loop {
        let refuse = *default.borrow_and_update() == Fault::Refuse;
        if refuse {
            listener = None; // Closes the port: connections are refused.
        } else if listener.is_none() {
            match bind(addr) {
                Ok(l) => listener = Some(l),
                Err(e) => panic!("fault proxy cannot listen on {addr} again: {e}"),
            }
        }
        let Some(l) = listener.as_ref() else {
            if default.changed().await.is_err() {
                return;
            }
            continue;
        };
        tokio::select! {
            accepted = l.accept() => {
                let Ok((client, _)) = accepted else { continue };
                let fallback = default.borrow().clone();
                let task = tokio::spawn(serve(client, upstream, fallback, shared.clone()));
                let mut s = shared.lock().unwrap();
                s.tasks.retain(|t| !t.is_finished());
                s.tasks.push(task.abort_handle());
            }
            changed = default.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}
