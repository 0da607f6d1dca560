//! Self-tests of process ownership: every server the harness starts is gone once its guard is
//! dropped, also when the test panics.

use std::time::Duration;
use tributary_tests::{Kafka, Mosquitto, NatsServer, pid_exists};

#[test]
fn every_server_process_is_gone_after_its_guard_is_dropped() {
    let hub = NatsServer::hub().unwrap();
    let leaf = NatsServer::leaf(&hub).unwrap();
    let kafka = Kafka::start_memory().unwrap();
    let mqtt = Mosquitto::start().unwrap();
    let pids = [
        hub.pid().unwrap(),
        leaf.pid().unwrap(),
        kafka.pid().unwrap(),
        mqtt.pid().unwrap(),
    ];
    assert!(pids.iter().all(|p| pid_exists(*p)));
    drop((leaf, hub, kafka, mqtt));
    for pid in pids {
        assert!(!pid_exists(pid), "pid {pid} still exists");
    }
}

#[test]
fn a_paused_server_is_gone_after_a_panicking_test() {
    let (tx, rx) = std::sync::mpsc::channel();
    let outcome = std::thread::spawn(move || {
        let mut hub = NatsServer::hub().unwrap();
        hub.pause().unwrap();
        tx.send(hub.pid().unwrap()).unwrap();
        panic!("the test failed while the hub was paused");
    })
    .join();
    assert!(outcome.is_err());
    let pid = rx.recv().unwrap();
    assert!(!pid_exists(pid), "pid {pid} still exists");
}

#[test]
fn a_terminated_hub_exits_cleanly_and_comes_back_on_restart() {
    let mut hub = NatsServer::hub().unwrap();
    let status = hub.terminate(Duration::from_secs(10)).unwrap();
    assert!(hub.pid().is_none());
    // nats-server's exit code on SIGTERM differs between versions (0, 1 or
    // the signal); what matters is that it is gone and comes back.
    let _ = status;
    hub.restart().unwrap();
    assert!(hub.is_running());
}
