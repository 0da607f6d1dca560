//! [`TcpProxy`]: a small TCP proxy on a free loopback port that a test can sever and restore,
//! to cut a link (a leaf's connection to its hub) without stopping either end.
//!
//! ```no_run
//! # fn main() -> tributary_tests::Result<()> {
//! use tributary_tests::{NatsServer, TcpProxy};
//! let hub = NatsServer::hub()?;
//! let proxy = TcpProxy::start(hub.leafnode_port().unwrap())?;
//! // … point a leaf at 127.0.0.1:proxy.port() …
//! proxy.lose_replies(); // bytes towards the client vanish: the hub stores, acks get lost
//! proxy.sever(); // every connection closed, new ones closed at once
//! proxy.restore(); // connections go through again
//! # Ok(()) }
//! ```
//!
//! Each accepted connection is pumped by two threads (one per direction). Severing shuts
//! both sockets of every connection down; while severed, a new connection is accepted and
//! closed at once (the client sees its link fail quickly, as after a network cut, rather
//! than a refused port). Dropping the proxy severs it and stops its threads.

use crate::error::{HarnessError, Result};
use crate::ports::free_port;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

const OPEN: u8 = 0;
const LOSE_REPLIES: u8 = 1;
const SEVERED: u8 = 2;

#[derive(Debug, Default)]
struct Shared {
    mode: AtomicU8,
    stop: AtomicBool,
    connections: Mutex<Vec<(TcpStream, TcpStream)>>,
}

impl Shared {
    fn close_all(&self) {
        let mut conns = self.connections.lock().unwrap_or_else(|e| e.into_inner());
        for (client, upstream) in conns.drain(..) {
            let _ = client.shutdown(Shutdown::Both);
            let _ = upstream.shutdown(Shutdown::Both);
        }
    }
}

/// A TCP proxy from `127.0.0.1:port()` to `127.0.0.1:upstream`. Severed and stopped on drop.
#[derive(Debug)]
pub struct TcpProxy {
    port: u16,
    upstream: u16,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl TcpProxy {
    /// Listens on a free loopback port and forwards every connection to
    /// `127.0.0.1:upstream` (connected when the client connects).
    pub fn start(upstream: u16) -> Result<Self> {
        let port = free_port();
        let listener = TcpListener::bind(("127.0.0.1", port))
            .map_err(|e| HarnessError::io("binding the proxy", "127.0.0.1", e))?;
        let shared = Arc::new(Shared::default());
        let accept = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("proxy-{port}"))
                .spawn(move || accept_loop(listener, upstream, shared))
                .map_err(|e| HarnessError::io("starting the proxy thread", "proxy", e))?
        };
        Ok(TcpProxy {
            port,
            upstream,
            shared,
            accept: Some(accept),
        })
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The port connections are forwarded to.
    pub fn upstream(&self) -> u16 {
        self.upstream
    }

    /// From now on bytes from the upstream towards the clients are discarded, while the
    /// clients' bytes still reach the upstream: what the upstream answers is lost.
    pub fn lose_replies(&self) {
        self.shared.mode.store(LOSE_REPLIES, Ordering::SeqCst);
    }

    /// Closes every connection and closes new ones at once until [`restore`](Self::restore).
    pub fn sever(&self) {
        self.shared.mode.store(SEVERED, Ordering::SeqCst);
        self.shared.close_all();
    }

    /// Lets connections through again (existing ones, when only replies were lost).
    pub fn restore(&self) {
        self.shared.mode.store(OPEN, Ordering::SeqCst);
    }

    /// Whether the proxy is severed.
    pub fn is_severed(&self) -> bool {
        self.shared.mode.load(Ordering::SeqCst) == SEVERED
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.sever();
        // Wake the accept loop up.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

fn accept_loop(listener: TcpListener, upstream: u16, shared: Arc<Shared>) {
    for client in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = client else { continue };
        if shared.mode.load(Ordering::SeqCst) == SEVERED {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        }
        let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let clones = (
            client.try_clone(),
            server.try_clone(),
            client.try_clone(),
            server.try_clone(),
        );
        let (Ok(c1), Ok(s1), Ok(c2), Ok(s2)) = clones else {
            continue;
        };
        shared
            .connections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((client, server));
        let up = shared.clone();
        let down = shared.clone();
        let _ = std::thread::Builder::new()
            .name("proxy-up".into())
            .spawn(move || pump(c1, s1, &up, false));
        let _ = std::thread::Builder::new()
            .name("proxy-down".into())
            .spawn(move || pump(s2, c2, &down, true));
    }
}

/// Copies `from` into `to` until either side closes or the proxy is severed; towards the
/// client (`replies`) nothing is written while replies are lost.
fn pump(mut from: TcpStream, mut to: TcpStream, shared: &Shared, replies: bool) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        match shared.mode.load(Ordering::SeqCst) {
            SEVERED => break,
            LOSE_REPLIES if replies => continue,
            _ => {}
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn echo_server() -> u16 {
        let listener = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for s in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut r = s.try_clone().unwrap();
                    let mut w = s;
                    let _ = std::io::copy(&mut r, &mut w);
                });
            }
        });
        port
    }

    fn round_trip(port: u16) -> std::io::Result<Vec<u8>> {
        let mut s = TcpStream::connect(("127.0.0.1", port))?;
        s.set_read_timeout(Some(Duration::from_millis(500)))?;
        s.write_all(b"ping")?;
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf)?;
        Ok(buf.to_vec())
    }

    #[test]
    fn a_proxy_forwards_until_severed_and_again_once_restored() {
        let proxy = TcpProxy::start(echo_server()).unwrap();
        assert_eq!(round_trip(proxy.port()).unwrap(), b"ping");
        proxy.sever();
        assert!(round_trip(proxy.port()).is_err());
        proxy.restore();
        assert_eq!(round_trip(proxy.port()).unwrap(), b"ping");
    }

    #[test]
    fn a_proxy_that_loses_replies_still_carries_requests() {
        let proxy = TcpProxy::start(echo_server()).unwrap();
        let mut s = TcpStream::connect(("127.0.0.1", proxy.port())).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        s.write_all(b"a").unwrap();
        let mut one = [0u8; 1];
        s.read_exact(&mut one).unwrap();
        proxy.lose_replies();
        s.write_all(b"b").unwrap();
        assert!(s.read_exact(&mut one).is_err(), "the reply came through");
        proxy.sever();
    }
}
