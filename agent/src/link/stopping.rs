//! The link's end: the batcher's last messages, the last acks within the
//! drain deadline, one last spill, the buffer closed and the read-back
//! point saved (see "Stopping" in the module docs of [`super`]).

use super::{Link, LinkError, Publisher};
use crate::batcher::Message;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::time::Instant;

impl<P: Publisher> Link<P> {
    /// The last messages, the last acks, one last spill, close.
    pub(super) async fn stop(
        mut self,
        input: &mut mpsc::Receiver<Message>,
        live: bool,
    ) -> Result<(), LinkError> {
        let deadline = Instant::now() + self.settings.drain_deadline;
        // The batcher cuts what the stopped sensors sent and closes.
        loop {
            tokio::select! {
                m = input.recv() => match m {
                    Some(m) => self.memory.push(m),
                    None => break,
                },
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        let mut publishing = live;
        let mut failed = false;
        loop {
            if publishing && let Err(e) = self.publish_waiting().await {
                tracing::debug!(error = %e, "publishing at shutdown failed");
                publishing = false;
            }
            if self.window.is_empty() || failed {
                break;
            }
            tokio::select! {
                Some(a) = self.window.next() => {
                    if self.on_ack(a).is_err() {
                        failed = true;
                    }
                }
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        let unanswered = self.window.len();
        self.window.clear();
        self.spilled.clear();
        self.send_disk_acks().await?;
        // Nothing is in flight any more: everything spilled is unread.
        self.memory.reset_to_waiting();
        self.spill().await?;
        self.buffer.close().await?;
        self.readback.finish().await;
        tracing::info!(unanswered, "link stopped");
        Ok(())
    }
}
