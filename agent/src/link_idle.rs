//! Whether the link is idle, for the batcher: Nagle's rule at the edge.
//!
//! The link is *idle* when it is live and has nothing in flight and nothing
//! waiting to be published. A reading that finds it idle gains nothing by
//! lingering: there is no message it could share and no ack to wait
//! behind, so the batcher cuts it at once and the reading is at the hub
//! one round trip after it was taken. While the link is busy (acks
//! pending, a backlog, an outage), readings wait for company up to
//! `forward.linger`, or until the link becomes idle, or until a message
//! fills — batching exactly when there is something to batch, as TCP's
//! Nagle algorithm does for small segments.
//!
//! The signal is a `watch` channel: the link sets it after every step of
//! its live state, and clears it in every other state. The batcher trusts
//! an *idle* only if it was set after the batcher's last message: a message
//! the batcher just sent and the link has not yet taken makes the link busy
//! even though the flag still says idle.

use tokio::sync::watch;

/// The link's side: sets the flag.
#[derive(Debug)]
pub(crate) struct IdleSignal(watch::Sender<bool>);

impl IdleSignal {
    /// A signal that says busy.
    pub(crate) fn new() -> Self {
        IdleSignal(watch::channel(false).0)
    }

    /// Sets the flag; wakes the batcher only when it changes.
    pub(crate) fn set(&self, idle: bool) {
        self.0.send_if_modified(|now| {
            let changed = *now != idle;
            *now = idle;
            changed
        });
    }

    /// A watch for the batcher.
    pub(crate) fn watch(&self) -> LinkIdle {
        LinkIdle {
            rx: self.0.subscribe(),
            sent_since_seen: false,
        }
    }
}

/// The batcher's side: whether a reading may go at once.
#[derive(Debug, Clone)]
pub struct LinkIdle {
    rx: watch::Receiver<bool>,
    /// The batcher sent a message after it last looked at the flag: until
    /// the flag changes, the link has not taken that message yet.
    sent_since_seen: bool,
}

impl LinkIdle {
    /// Whether the link is idle now, as far as the batcher can tell.
    pub fn is_idle(&self) -> bool {
        let fresh = !self.sent_since_seen || self.rx.has_changed().unwrap_or(false);
        fresh && *self.rx.borrow()
    }

    /// The batcher handed the link a message.
    pub fn sent(&mut self) {
        self.rx.borrow_and_update();
        self.sent_since_seen = true;
    }

    /// Resolves when the link becomes idle; never, once the link is gone.
    pub async fn wait_idle(&mut self) {
        loop {
            if self.is_idle() {
                return;
            }
            if self.rx.changed().await.is_err() {
                return std::future::pending().await;
            }
            // Seen: whatever the flag says now, it was set after our send.
            self.sent_since_seen = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_link_is_busy_until_it_says_it_is_idle() {
        let signal = IdleSignal::new();
        let idle = signal.watch();
        assert!(!idle.is_idle());
        signal.set(true);
        assert!(idle.is_idle());
        signal.set(false);
        assert!(!idle.is_idle());
    }

    #[test]
    fn a_message_just_sent_makes_the_link_busy_until_the_flag_is_set_again() {
        let signal = IdleSignal::new();
        let mut idle = signal.watch();
        signal.set(true);
        idle.sent();
        assert!(!idle.is_idle(), "the link has not taken the message yet");
        // The link took it, published it and got its ack.
        signal.set(false);
        signal.set(true);
        assert!(idle.is_idle());
    }

    #[tokio::test]
    async fn waiting_for_idle_ends_when_the_link_becomes_idle_and_never_once_it_is_gone() {
        let signal = IdleSignal::new();
        let mut idle = signal.watch();
        let waiter = tokio::spawn(async move {
            idle.wait_idle().await;
            idle
        });
        tokio::task::yield_now().await;
        signal.set(true);
        let mut idle = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .expect("join");
        idle.sent();
        drop(signal);
        let gone = tokio::time::timeout(Duration::from_millis(50), idle.wait_idle()).await;
        assert!(gone.is_err(), "a gone link is never idle");
    }
}
