//! The reconciling state on its own: a scripted hub whose stream keeps
//! every publish (no duplicate window, as after a long outage) and answers
//! read backs, and a real buffer thread on a temp dir.

use super::point_file::POINT_FILE;
use super::stored::ReadBackPoint;
use super::tests::{Harness, Mode, Scripted, message, msg_id, start_in};
use super::*;

fn ids(seqs: impl IntoIterator<Item = u64>) -> Vec<String> {
    seqs.into_iter().map(msg_id).collect()
}

/// Acks one message, then lets the hub store the next two without acking
/// them while `unanswered` read backs lose the hub part way and, before
/// those, `unreachable` get no answer at all; then acks again.
async fn two_lost_acks_with_read_backs_failing(unanswered: u32, unreachable: u32) -> Harness {
    let tmp = tempfile::tempdir().expect("tempdir");
    let h = start_in(tmp, Scripted::new(Mode::Ack), &[], false);
    h.wait_for("live", |h| h.state() == LinkState::Live).await;
    h.input.send(message(0)).await.expect("send");
    h.wait_for("the first ack", |h| h.acked() == 1).await;
    h.publisher.leave_read_backs_unanswered(unanswered);
    h.publisher.leave_read_backs_unreachable(unreachable);
    h.publisher.set(Mode::StoreSilent);
    for seq in 1..3 {
        h.input.send(message(seq)).await.expect("send");
    }
    h.wait_for("spilling", |h| h.state() == LinkState::Spilling)
        .await;
    h.publisher.set(Mode::Ack);
    h
}

#[tokio::test]
async fn a_message_stored_whose_ack_was_lost_is_read_back_and_not_sent_again() {
    // The hub stores the two after the first, but their acks are lost.
    let h = two_lost_acks_with_read_backs_failing(0, 0).await;
    h.wait_for("the two skipped", |h| {
        h.stats.already_stored_messages.load(Ordering::Relaxed) == 2
    })
    .await;
    h.wait_for("live again", |h| h.state() == LinkState::Live)
        .await;
    h.input.send(message(3)).await.expect("send");
    h.wait_for("the next ack", |h| h.acked() == 2).await;
    assert_eq!(h.publisher.stored(), ids(0..4), "each message stored once");
    assert_eq!(
        h.publisher.read_backs(),
        vec![2],
        "from after the first ack"
    );
    assert_eq!(h.stats.read_backs.load(Ordering::Relaxed), 1);
    assert!(h.stop().await.is_empty(), "nothing left to send");
}

#[tokio::test]
async fn a_read_back_without_an_answer_is_tried_again_before_anything_is_resent() {
    let h = two_lost_acks_with_read_backs_failing(2, 0).await;
    h.wait_for("the two skipped", |h| {
        h.stats.already_stored_messages.load(Ordering::Relaxed) == 2
    })
    .await;
    h.wait_for("live again", |h| h.state() == LinkState::Live)
        .await;
    assert_eq!(h.stats.read_back_failures.load(Ordering::Relaxed), 2);
    assert_eq!(h.stats.read_backs.load(Ordering::Relaxed), 1);
    assert_eq!(h.publisher.read_backs(), vec![2, 2, 2], "the same point");
    assert_eq!(h.publisher.stored(), ids(0..3), "nothing stored twice");
    assert!(h.stop().await.is_empty());
}

#[tokio::test]
async fn a_hub_that_answers_no_read_back_for_many_backoffs_gets_nothing_resent() {
    // Three times the tries that make a read back lost part way give up:
    // an outage, however long, is waited out, not resent into.
    let away = 3 * readback::READ_BACK_TRIES;
    let h = two_lost_acks_with_read_backs_failing(0, away).await;
    h.wait_for("the two skipped", |h| {
        h.stats.already_stored_messages.load(Ordering::Relaxed) == 2
    })
    .await;
    h.wait_for("live again", |h| h.state() == LinkState::Live)
        .await;
    assert_eq!(
        h.stats.read_back_failures.load(Ordering::Relaxed),
        u64::from(away)
    );
    assert_eq!(h.stats.read_backs.load(Ordering::Relaxed), 1);
    assert_eq!(
        h.publisher.read_backs().len(),
        usize::try_from(away).unwrap() + 1,
        "tried until the hub answered"
    );
    assert_eq!(h.publisher.stored(), ids(0..3), "nothing stored twice");
    assert!(h.stop().await.is_empty());
}

#[tokio::test]
async fn a_read_back_that_never_gets_an_answer_resends_everything_and_loses_nothing() {
    let h = two_lost_acks_with_read_backs_failing(u32::MAX, 0).await;
    h.wait_for("the resends' acks", |h| h.acked() == 3).await;
    assert_eq!(
        h.stats.read_back_failures.load(Ordering::Relaxed),
        u64::from(readback::READ_BACK_TRIES)
    );
    assert_eq!(
        h.publisher.stored(),
        ids([0, 1, 2, 1, 2]),
        "resent: duplicates, no loss"
    );
    assert!(h.stop().await.is_empty());
}

#[tokio::test]
async fn the_point_saved_at_stop_makes_the_next_run_read_back_before_sending_its_backlog() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let hub = Scripted::new(Mode::Ack);
    let h = start_in(tmp, hub.clone(), &[], true);
    h.wait_for("live", |h| h.state() == LinkState::Live).await;
    h.input.send(message(0)).await.expect("send");
    h.wait_for("the first ack", |h| h.acked() == 1).await;
    let (left, dir) = h.stop_keeping_dir().await;
    assert!(left.is_empty());
    assert_eq!(
        ReadBackPoint::load(dir.path()).expect("load"),
        Some(ReadBackPoint {
            stream: "S".into(),
            seq: 1
        }),
        "{POINT_FILE} holds the last clean point"
    );
    // The hub stored 1 and 2, and the agent died before it knew: they are
    // still in its buffer when it starts again (long after the window).
    hub.store(&msg_id(1));
    hub.store(&msg_id(2));
    let published_before = hub.published().len();
    let h = start_in(dir, hub.clone(), &[1, 2], true);
    h.wait_for("live", |h| h.state() == LinkState::Live).await;
    h.input.send(message(3)).await.expect("send");
    h.wait_for("the next ack", |h| h.acked() == 1).await;
    assert_eq!(hub.read_backs(), vec![2]);
    assert_eq!(
        hub.published()[published_before..],
        ids([3]),
        "1 and 2 not resent"
    );
    assert_eq!(hub.stored(), ids(0..4));
    assert!(h.stop().await.is_empty());
}

#[tokio::test]
async fn a_slow_read_back_still_spills_new_messages_within_the_flush_interval() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let h = start_in(tmp, Scripted::new(Mode::Ack), &[], false);
    h.wait_for("live", |h| h.state() == LinkState::Live).await;
    h.input.send(message(0)).await.expect("send");
    h.wait_for("the first ack", |h| h.acked() == 1).await;
    h.publisher.set(Mode::Refuse);
    h.publisher.slow_read_back(Duration::from_secs(2));
    h.input.send(message(1)).await.expect("send");
    h.wait_for("spilling", |h| h.state() == LinkState::Spilling)
        .await;
    h.publisher.set(Mode::Ack);
    h.wait_for("the read back", |h| !h.publisher.read_backs().is_empty())
        .await;
    // While the hub takes its time answering, new messages keep the
    // power-cut promise: on disk within the flush interval (200 ms).
    let spilled = h.stats.spilled_messages.load(Ordering::Relaxed);
    h.input.send(message(2)).await.expect("send");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        h.stats.read_backs.load(Ordering::Relaxed),
        0,
        "still reading back"
    );
    assert!(
        h.stats.spilled_messages.load(Ordering::Relaxed) > spilled,
        "the message waited for the read back instead of the disk"
    );
    h.wait_for("everything acknowledged", |h| h.acked() == 3)
        .await;
    assert_eq!(h.publisher.stored(), ids(0..3));
    assert!(h.stop().await.is_empty());
}
