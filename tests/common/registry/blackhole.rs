//! A loopback port that swallows connection attempts, as a dead peer or a firewall that drops packets does:
//! connecting to it neither succeeds nor is refused, it waits until the client gives up. (A closed port, by
//! contrast, refuses at once, and [`crate::common::registry::fault_proxy::Fault::Blackhole`] accepts the connection and then
//! never answers.)
//!
//! Made without privileges: a listener with an accept queue of one, filled by one connection and never
//! accepted from. Linux drops the SYNs of further connection attempts while the queue is full.

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// The port; it swallows connection attempts until dropped.
pub struct DroppingPort {
    addr: SocketAddr,
    _listener: tokio::net::TcpListener,
    _queued: TcpStream,
}

impl DroppingPort {
    /// Binds, fills the accept queue and checks that a further connection attempt goes unanswered.
    pub async fn start() -> DroppingPort {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.bind(SocketAddr::from(([127, 0, 0, 1], 0))).expect("bind");
        let listener = socket.listen(0).expect("listen");
        let addr = listener.local_addr().expect("local addr");
        let queued = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("fill the accept queue");
        let probe = tokio::task::spawn_blocking(move || TcpStream::connect_timeout(&addr, Duration::from_millis(300)))
            .await
            .expect("probe");
        let err = probe.expect_err("a connection to a full accept queue must not succeed");
        assert_eq!(
            err.kind(),
            std::io::ErrorKind::TimedOut,
            "the attempt must hang, not fail: {err}"
        );
        DroppingPort {
            addr,
            _listener: listener,
            _queued: queued,
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}
