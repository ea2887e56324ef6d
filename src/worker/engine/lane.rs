//! A lane: the one run loop every consumer's messages go through, over a [`Handler`] that
//! does the work (the projection's stages, the command consumer's commands).
//!
//! The lane owns what each consumer used to keep its own way: the offset ledger (a message
//! is `deliver`ed when taken, `finish`ed once the handler says its effect is durable, and the
//! partition is stored only up to what `store_safe` allows), the messages the handler left
//! unfinished (kept, in order, at the head of the next batch: never skipped, never sought
//! past), and the one backoff between batches that left work unfinished (the
//! [`RetryPolicy`] of `failure.rs`: jittered, exponential, reset by a batch that finished).
//!
//! Where the messages come from is the only difference between the two ways of running it:
//! - [`Lane::run`]: a partition's queue, filled by the engine's
//!   [`Dispatcher`](super::Dispatcher) (`run-product-consumer`, `run-product-event-consumer`);
//!   it ends when the queue is closed (partition revoked) or on shutdown;
//! - [`Lane::poll`]: the consumer itself read as one stream, for one-shot work that drives
//!   the lane batch by batch (a rebuild, tests).
//!
//! Both hand the batch to the same [`Lane::process`].

use rdkafka::consumer::StreamConsumer;
use rdkafka::message::{Message, OwnedMessage};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::bus::offset_ledger::{self, OffsetLedger};
use crate::failure::RetryPolicy;
use crate::worker::Shutdown;

/// How long a lane waits for the first message of a batch before it looks at shutdown and
/// its handler's deferred work again.
const FIRST_WAIT: Duration = Duration::from_millis(500);

/// The work a lane runs on each batch.
pub trait Handler: Send + 'static {
    /// Handles `batch` (offset order within each partition) and sets `done[i]` for every
    /// message whose effect is durable (applied, rejected or dead-lettered). A message left
    /// undone heads the next batch; the handler keeps order per key by leaving the messages
    /// behind an undone one undone too. An effect the handler defers (written later) is
    /// `hold`en in `ledger` and `release`d once written. An error stops the role.
    fn handle<'a>(
        &'a mut self,
        batch: &'a [OwnedMessage],
        done: &'a mut [bool],
        ledger: &'a mut OffsetLedger,
        shutdown: &'a Shutdown,
    ) -> impl Future<Output = anyhow::Result<()>> + Send + 'a;

    /// Before each batch: deferred effects written when they can be. `false` holds the lane
    /// (no new messages this turn).
    fn before_batch<'a>(&'a mut self, _ledger: &'a mut OffsetLedger) -> impl Future<Output = bool> + Send + 'a {
        async { true }
    }

    /// When the lane stops (queue closed, shutdown): the last deferred effects written if they
    /// can be; whatever is still not durable is not stored and goes to the next owner.
    fn on_stop<'a>(&'a mut self, _ledger: &'a mut OffsetLedger) -> impl Future<Output = ()> + Send + 'a {
        async {}
    }
}

/// A lane's batch bounds and its backoff.
#[derive(Debug, Clone)]
pub struct LaneSettings {
    /// Most messages per batch (the unfinished ones carried over included).
    pub batch_size: usize,
    /// Longest wait to fill a batch once its first message is in.
    pub batch_wait: Duration,
    /// Backoff between batches that left messages unfinished.
    pub retry: RetryPolicy,
}

/// What one batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Processed {
    /// Messages in the batch (those carried over included).
    pub received: usize,
    /// Messages left unfinished (they head the next batch).
    pub unfinished: usize,
}

/// One lane: a handler, its ledger and its unfinished messages (see the module docs).
pub struct Lane<H: Handler> {
    /// The work.
    pub handler: H,
    consumer: Arc<StreamConsumer>,
    ledger: OffsetLedger,
    carry: Vec<OwnedMessage>,
    settings: LaneSettings,
}

impl<H: Handler> Lane<H> {
    /// A lane storing its offsets in `consumer`.
    pub fn new(handler: H, consumer: Arc<StreamConsumer>, settings: LaneSettings) -> Self {
        Self {
            handler,
            consumer,
            ledger: OffsetLedger::new(),
            carry: Vec::new(),
            settings,
        }
    }

    /// One batch: the unfinished messages first, then `more`, through the handler; the finished
    /// ones marked in the ledger, the rest kept; then what the ledger allows is stored.
    pub async fn process(&mut self, more: Vec<OwnedMessage>, shutdown: &Shutdown) -> anyhow::Result<Processed> {
        let mut batch = std::mem::take(&mut self.carry);
        batch.extend(more);
        if batch.is_empty() {
            self.store();
            return Ok(Processed::default());
        }
        for m in &batch {
            self.ledger.deliver(m.topic(), m.partition(), m.offset());
        }
        let mut done = vec![false; batch.len()];
        self.handler
            .handle(&batch, &mut done, &mut self.ledger, shutdown)
            .await?;
        let received = batch.len();
        for (m, finished) in batch.into_iter().zip(done) {
            if finished {
                self.ledger.finish(m.topic(), m.partition(), m.offset());
            } else {
                self.carry.push(m);
            }
        }
        self.store();
        Ok(Processed {
            received,
            unfinished: self.carry.len(),
        })
    }

    /// Reads up to `max` new messages from the consumer as one stream (waiting up to
    /// `first_wait` for the first, `batch_wait` when unfinished ones are waiting) and processes them
    /// (a rebuild, tests). Room is left for the unfinished ones: a batch never exceeds
    /// `batch_size`.
    pub async fn poll(&mut self, max: usize, first_wait: Duration, shutdown: &Shutdown) -> anyhow::Result<Processed> {
        if !self.handler.before_batch(&mut self.ledger).await {
            // Deferred work is too far behind: take nothing new this turn.
            shutdown.sleep(first_wait).await;
            self.store();
            return Ok(Processed::default());
        }
        let room = max.min(self.settings.batch_size.saturating_sub(self.carry.len()));
        let first_wait = if self.carry.is_empty() {
            first_wait
        } else {
            self.settings.batch_wait
        };
        let more = receive(&self.consumer, room, first_wait, self.settings.batch_wait).await;
        self.process(more, shutdown).await
    }

    /// The lane's loop over its partition's queue until the queue is closed and drained (the
    /// partition was revoked: what is unfinished goes to its next owner) or shutdown. After a
    /// batch that left messages unfinished it waits a growing, jittered delay (its queue fills
    /// meanwhile and the dispatcher pauses the partition).
    pub async fn run(mut self, mut rx: mpsc::Receiver<OwnedMessage>, shutdown: Shutdown) -> anyhow::Result<()> {
        let mut backoff = self.settings.retry.backoff();
        let mut closed = false;
        while !shutdown.is_triggered() {
            let more = if self.handler.before_batch(&mut self.ledger).await {
                self.collect(&mut rx, &mut closed).await
            } else {
                shutdown.sleep(FIRST_WAIT).await;
                Vec::new()
            };
            let p = self.process(more, &shutdown).await?;
            if closed && (p.received == 0 || p.unfinished > 0) {
                break;
            }
            if p.unfinished > 0 {
                let d = backoff.next().unwrap_or(self.settings.retry.max_delay);
                tracing::warn!(
                    unfinished = p.unfinished,
                    retry_in_ms = d.as_millis() as u64,
                    "messages left unfinished; backing off"
                );
                shutdown.sleep(d).await;
            } else if p.received > 0 {
                backoff = self.settings.retry.backoff();
            }
        }
        self.handler.on_stop(&mut self.ledger).await;
        self.store();
        Ok(())
    }

    /// New messages from the queue: the first within [`FIRST_WAIT`] (`batch_wait` when
    /// unfinished ones wait), then up to the batch's room within `batch_wait`.
    async fn collect(&mut self, rx: &mut mpsc::Receiver<OwnedMessage>, closed: &mut bool) -> Vec<OwnedMessage> {
        let room = self.settings.batch_size.saturating_sub(self.carry.len());
        let mut more = Vec::new();
        if room == 0 || *closed {
            return more;
        }
        // With unfinished messages waiting the batch goes ahead with what arrives meanwhile.
        let first = if self.carry.is_empty() {
            FIRST_WAIT
        } else {
            self.settings.batch_wait
        };
        let mut deadline = Instant::now() + first;
        while more.len() < room {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Err(_) => break,
                Ok(None) => {
                    *closed = true;
                    break;
                }
                Ok(Some(m)) => {
                    if more.is_empty() {
                        deadline = Instant::now() + self.settings.batch_wait;
                    }
                    more.push(m);
                }
            }
        }
        more
    }

    fn store(&mut self) {
        offset_ledger::store_safe(&*self.consumer, &mut self.ledger);
    }
}

/// Up to `max` messages from `consumer`: the first within `first_wait`, the rest within
/// `batch_wait` after it. Consumer errors (brokers unreachable) are logged and polling goes
/// on: librdkafka reconnects.
pub async fn receive(
    consumer: &StreamConsumer,
    max: usize,
    first_wait: Duration,
    batch_wait: Duration,
) -> Vec<OwnedMessage> {
    let mut msgs = Vec::new();
    let mut deadline = Instant::now() + first_wait;
    while msgs.len() < max {
        match tokio::time::timeout_at(deadline, consumer.recv()).await {
            Err(_) => break,
            Ok(Err(e)) => tracing::warn!(error = %e, "kafka consumer error"),
            Ok(Ok(m)) => {
                if msgs.is_empty() {
                    deadline = Instant::now() + batch_wait;
                }
                msgs.push(m.detach());
            }
        }
    }
    msgs
}
