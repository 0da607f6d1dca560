//! Self-tests of the NATS part of the harness: a real hub and leaf, JetStream through the
//! leafnode, dedupe, hub restart with data, TLS and auth options.

use async_nats::jetstream::{self, context::Context, message::PublishMessage, publish::PublishAck};
use std::time::{Duration, Instant};
use tributary_tests::{ClientAuth, Credentials, NatsOptions, NatsServer, TestCerts};

const STREAM: &str = "READINGS";

async fn create_stream(hub: &NatsServer) -> Context {
    let js = jetstream::new(hub.connect().await.unwrap());
    js.create_stream(jetstream::stream::Config {
        name: STREAM.into(),
        subjects: vec!["tributary.>".into()],
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    })
    .await
    .unwrap();
    js
}

/// Publishes with a message id, retrying while the stream's interest has not yet reached the
/// leaf (right after the stream was created or the hub restarted) or the hub is still coming up.
async fn publish(js: &Context, subject: &str, id: &str, payload: &'static str) -> PublishAck {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let msg = PublishMessage::build()
            .payload(payload.into())
            .message_id(id);
        let result = match js.send_publish(subject.to_owned(), msg).await {
            Ok(ack) => ack.await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match result {
            Ok(ack) => return ack,
            Err(e) if Instant::now() < deadline => {
                eprintln!("publish of {id} not acknowledged yet: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("publish of {id} never acknowledged: {e}"),
        }
    }
}

async fn stream_messages(js: &Context) -> u64 {
    let mut stream = js.get_stream(STREAM).await.unwrap();
    stream.info().await.unwrap().state.messages
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaf_client_gets_a_hub_stream_ack_and_a_resend_is_reported_duplicate() {
    let hub = NatsServer::hub().unwrap();
    let leaf = NatsServer::leaf(&hub).unwrap();
    let hub_js = create_stream(&hub).await;
    let leaf_js = jetstream::new(leaf.connect().await.unwrap());

    let first = publish(&leaf_js, "tributary.r.dev1", "dev1:1:1", "21.5").await;
    assert_eq!(first.stream, STREAM);
    assert!(!first.duplicate);

    let again = publish(&leaf_js, "tributary.r.dev1", "dev1:1:1", "21.5").await;
    assert!(again.duplicate, "{again:?}");
    assert_eq!(again.sequence, first.sequence);

    let other = publish(&leaf_js, "tributary.r.dev1", "dev1:1:2", "21.6").await;
    assert!(!other.duplicate);
    assert_eq!(stream_messages(&hub_js).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_hub_restarts_with_its_stream_and_the_leaf_reconnects() {
    let mut hub = NatsServer::hub().unwrap();
    let leaf = NatsServer::leaf(&hub).unwrap();
    let port = hub.port();
    let hub_js = create_stream(&hub).await;
    let leaf_js = jetstream::new(leaf.connect().await.unwrap());
    publish(&leaf_js, "tributary.r.dev1", "dev1:1:1", "1").await;
    let old_pid = hub.pid().unwrap();

    hub.kill().unwrap();
    assert!(!tributary_tests::pid_exists(old_pid));
    assert!(hub.data_dir().exists());
    hub.restart().unwrap();
    assert_eq!(hub.port(), port);
    leaf.wait_leaf_connected(Duration::from_secs(15)).unwrap();

    let ack = publish(&leaf_js, "tributary.r.dev1", "dev1:1:2", "2").await;
    assert_eq!(
        ack.sequence, 2,
        "the stream kept its first message: {ack:?}"
    );
    // The dedupe window survives the restart too.
    let dup = publish(&leaf_js, "tributary.r.dev1", "dev1:1:1", "1").await;
    assert!(dup.duplicate, "{dup:?}");
    assert_eq!(stream_messages(&hub_js).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaf_can_require_tls_and_the_hub_auth_and_leaf_credentials() {
    let certs = TestCerts::generate().unwrap();
    let link = Credentials::new("leaf", "s3cret");
    let hub = NatsServer::hub_with(NatsOptions {
        auth: Some(ClientAuth::Token("hub-token".into())),
        leaf_credentials: Some(link.clone()),
        ..NatsOptions::default()
    })
    .unwrap();
    let leaf = NatsServer::leaf_with(
        &hub,
        NatsOptions {
            tls: Some(certs.server_tls(true)),
            auth: Some(ClientAuth::UserPassword(Credentials::new("agent", "pw"))),
            leaf_credentials: Some(link),
            ..NatsOptions::default()
        },
    )
    .unwrap();
    assert!(leaf.client_url().starts_with("tls://"));

    // Without a token the hub refuses; without TLS the leaf refuses.
    assert!(async_nats::connect(hub.client_url()).await.is_err());
    let plain = async_nats::ConnectOptions::new()
        .user_and_password("agent".into(), "pw".into())
        .connect(format!("nats://127.0.0.1:{}", leaf.port()))
        .await;
    assert!(plain.is_err());

    let hub_js = create_stream(&hub).await;
    let leaf_js = jetstream::new(leaf.connect().await.unwrap());
    let ack = publish(&leaf_js, "tributary.r.dev1", "dev1:1:1", "x").await;
    assert_eq!(ack.stream, STREAM);
    assert_eq!(stream_messages(&hub_js).await, 1);
}

#[test]
fn a_leaf_restarted_while_its_hub_is_down_reconnects_when_the_hub_returns() {
    let mut hub = NatsServer::hub().unwrap();
    let mut leaf = NatsServer::leaf(&hub).unwrap();
    hub.kill().unwrap();
    leaf.restart().unwrap();
    assert!(
        leaf.wait_leaf_connected(Duration::from_millis(500))
            .is_err()
    );
    hub.restart().unwrap();
    leaf.wait_leaf_connected(Duration::from_secs(15)).unwrap();
}
