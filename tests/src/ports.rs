//! Free loopback TCP ports for the servers a test starts.
//!
//! A port is found by binding `127.0.0.1:0` and closing the socket again, so another process could
//! in principle take it before the server binds it; within one test process the same port is
//! never handed out twice, which removes the common race between servers of the same test binary.

use std::collections::HashSet;
use std::net::{Ipv4Addr, TcpListener};
use std::sync::{Mutex, OnceLock};

fn handed_out() -> &'static Mutex<HashSet<u16>> {
    static PORTS: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    PORTS.get_or_init(|| Mutex::new(HashSet::new()))
}

/// Returns a loopback TCP port that was free a moment ago and was not returned before by this
/// process.
///
/// # Panics
/// When no port can be bound at all (the loopback interface is unusable), since no test can run.
pub fn free_port() -> u16 {
    for _ in 0..1000 {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .expect("binding 127.0.0.1:0 failed: the loopback interface is unusable");
        let port = listener
            .local_addr()
            .expect("a bound listener has a local address")
            .port();
        drop(listener);
        let mut ports = handed_out().lock().unwrap_or_else(|e| e.into_inner());
        if ports.insert(port) {
            return port;
        }
    }
    panic!("no fresh loopback port found after 1000 attempts");
}

/// Whether something accepts TCP connections on `127.0.0.1:port` right now.
pub fn is_listening(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(
        &(Ipv4Addr::LOCALHOST, port).into(),
        std::time::Duration::from_millis(200),
    )
    .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_port_is_never_handed_out_twice() {
        let ports: Vec<u16> = (0..200).map(|_| free_port()).collect();
        let unique: HashSet<u16> = ports.iter().copied().collect();
        assert_eq!(unique.len(), ports.len());
    }

    #[test]
    fn a_handed_out_port_can_be_bound_and_then_reports_listening() {
        let port = free_port();
        assert!(!is_listening(port));
        let _l = TcpListener::bind((Ipv4Addr::LOCALHOST, port)).unwrap();
        assert!(is_listening(port));
    }
}
