//! Self-tests of the mosquitto part of the harness: a QoS 1 round trip, and a persistent
//! session whose queued message survives a broker restart.

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use std::time::Duration;
use tributary_tests::Mosquitto;

fn client(broker: &Mosquitto, id: &str, clean: bool) -> (AsyncClient, EventLoop) {
    let mut opts = MqttOptions::new(id, "127.0.0.1", broker.port());
    opts.set_clean_session(clean);
    opts.set_keep_alive(Duration::from_secs(5));
    AsyncClient::new(opts, 16)
}

/// Drives the event loop until a publish arrives or `timeout` passes.
async fn next_publish(events: &mut EventLoop, timeout: Duration) -> Option<(String, Vec<u8>)> {
    tokio::time::timeout(timeout, async {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    return (p.topic.clone(), p.payload.to_vec());
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    })
    .await
    .ok()
}

/// Drives the event loop until the broker acknowledged the subscription.
async fn until_suback(events: &mut EventLoop) {
    loop {
        if let Event::Incoming(Packet::SubAck(_)) = events.poll().await.unwrap() {
            return;
        }
    }
}

/// Publishes one QoS 1 message and waits for the broker's PUBACK.
async fn publish_acked(broker: &Mosquitto, topic: &str, payload: &str) {
    let (publisher, mut events) = client(broker, "publisher", true);
    publisher
        .publish(topic, QoS::AtLeastOnce, false, payload.as_bytes().to_vec())
        .await
        .unwrap();
    loop {
        if let Event::Incoming(Packet::PubAck(_)) = events.poll().await.unwrap() {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_qos1_message_makes_the_round_trip() {
    let broker = Mosquitto::start().unwrap();
    let (subscriber, mut sub_events) = client(&broker, "subscriber", true);
    subscriber
        .subscribe("sensors/+/temp", QoS::AtLeastOnce)
        .await
        .unwrap();
    until_suback(&mut sub_events).await;

    publish_acked(&broker, "sensors/kitchen/temp", "21.5").await;
    let got = next_publish(&mut sub_events, Duration::from_secs(10)).await;
    assert_eq!(
        got,
        Some(("sensors/kitchen/temp".to_owned(), b"21.5".to_vec()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persistent_session_gets_its_queued_message_after_a_broker_restart() {
    let mut broker = Mosquitto::start().unwrap();
    let port = broker.port();
    {
        let (subscriber, mut events) = client(&broker, "durable", false);
        subscriber
            .subscribe("sensors/#", QoS::AtLeastOnce)
            .await
            .unwrap();
        until_suback(&mut events).await;
        subscriber.disconnect().await.unwrap();
        let _ = tokio::time::timeout(Duration::from_secs(2), events.poll()).await;
    }
    publish_acked(&broker, "sensors/porch/temp", "3.5").await;

    // A clean shutdown writes mosquitto.db; the restart reads it back.
    broker.terminate(Duration::from_secs(10)).unwrap();
    broker.restart().unwrap();
    assert_eq!(broker.port(), port);
    assert!(broker.data_dir().join("mosquitto.db").exists());

    let (_subscriber, mut events) = client(&broker, "durable", false);
    let got = next_publish(&mut events, Duration::from_secs(10)).await;
    assert_eq!(
        got,
        Some(("sensors/porch/temp".to_owned(), b"3.5".to_vec()))
    );
}
