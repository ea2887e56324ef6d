//! Where a projector's messages come from: the consumer as one stream (a rebuild, tests) or
//! one partition's queue handed over by the engine's dispatcher.

use super::*;

impl ProductEventConsumer {
    /// The next message within `deadline`, from the consumer or the partition queue.
    pub(super) async fn next_message(&mut self, deadline: Instant) -> Option<OwnedMessage> {
        match &mut self.feed {
            Feed::Consumer => loop {
                match tokio::time::timeout_at(deadline.into(), self.consumer.recv()).await {
                    Err(_) => return None,
                    // Brokers unreachable and the like: librdkafka reconnects; keep polling.
                    Ok(Err(e)) => tracing::warn!(error = %e, "kafka consumer error"),
                    Ok(Ok(m)) => return Some(m.detach()),
                }
            },
            Feed::Partition { rx, closed } => match tokio::time::timeout_at(deadline.into(), rx.recv()).await {
                Err(_) => None,
                Ok(None) => {
                    *closed = true;
                    None
                }
                Ok(Some(m)) => Some(m),
            },
        }
    }

    /// True once a partition pipeline's queue is closed and drained.
    pub(super) fn feed_closed(&self) -> bool {
        matches!(self.feed, Feed::Partition { closed: true, .. })
    }

    pub(super) async fn collect_batch(&mut self, first_wait: Duration) -> Vec<OwnedMessage> {
        let mut batch = std::mem::take(&mut self.carry);
        if batch.is_empty() {
            match self.next_message(Instant::now() + first_wait).await {
                Some(m) => batch.push(m),
                None => return batch,
            }
        }
        let deadline = Instant::now() + self.settings.batch_wait;
        while batch.len() < self.settings.batch_size {
            match self.next_message(deadline).await {
                Some(m) => batch.push(m),
                None => break,
            }
        }
        batch
    }

    /// Sleeps `d`; a projector reading the consumer keeps it polled meanwhile (so it stays in
    /// the group) and keeps what still arrives for the next batch (a partition pipeline's
    /// queue simply fills, and its dispatcher pauses the partition). True when shutdown fired.
    pub(super) async fn wait_polling(&mut self, d: Duration, shutdown: &Shutdown) -> bool {
        if matches!(self.feed, Feed::Partition { .. }) {
            return shutdown.sleep(d).await;
        }
        let until = tokio::time::Instant::now() + d;
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(until) => return shutdown.is_triggered(),
                () = shutdown.wait() => return true,
                m = self.consumer.recv() => {
                    if let Ok(m) = m { self.carry.push(m.detach()); }
                }
            }
        }
    }

    pub(super) fn set_paused(&self, paused: bool) {
        if matches!(self.feed, Feed::Partition { .. }) {
            return;
        }
        if let Ok(a) = self.consumer.assignment() {
            let r = if paused {
                self.consumer.pause(&a)
            } else {
                self.consumer.resume(&a)
            };
            if let Err(e) = r {
                tracing::debug!(error = %e, paused, "pause/resume failed");
            }
        }
    }
}
