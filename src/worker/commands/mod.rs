//! The write-side consumer behind `run-product-consumer`: reads `product.commands`, runs each
//! command through the same aggregate and repository code as the API, and stores the Kafka
//! offset only after the database transaction committed.
//!
//! Every message ends as one [`Disposition`] (see [`crate::failure`]):
//! - *done*: applied, or a redelivered command id answered from the `commands` table;
//! - *rejected*: the domain or the store refuses it for good (a rule, a version conflict, a
//!   taken sku, a value Postgres cannot hold); the reason is recorded for
//!   `GET /api/commands/{id}` and the consumer moves on at once;
//! - *dead-lettered*: undecodable, sent to `dlq.product.commands` with the reason headers;
//! - *unfinished*: a transient failure (database or broker down) outlasted its bounded
//!   retries, or shutdown came. Its offset is not stored, and each partition with an
//!   unfinished message is sought back to the first one, so it is delivered again after a
//!   backoff: nothing is ever committed past it.
//!
//! Batches: commands of different products run concurrently on the pool; one product's
//! commands run in offset order, and stop at the first unfinished one.

use crate::telemetry::trace_context::{TraceParent, TRACEPARENT};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::Offset;
use std::collections::HashMap;
use std::time::Duration;

use futures::future::join_all;
use uuid::Uuid;

use crate::worker::Shutdown;

mod handle;
use crate::app::execute::{ExecuteOptions, ExecuteOutcome};
use crate::bus::dlq::{DlqReason, DlqWriter};
use crate::bus::envelope::decode_command;
use crate::bus::offset_ledger::{self, OffsetLedger};
use crate::domain::access::{Principal, Scope};
use crate::domain::product::ProductCommand;
use crate::failure::{Disposition, Failed, RetryPolicy};
use crate::store::product_repo;
use crate::store::{pool, PgPool, StoreError};
use crate::telemetry::metrics::COMMANDS_PROCESSED;

/// Most commands handled per batch (different products run concurrently on the pool).
pub const COMMAND_BATCH: usize = 64;

/// Dependencies of the command consumer.
pub struct ProductConsumer {
    /// Subscribed consumer.
    pub consumer: StreamConsumer,
    /// Postgres pool.
    pub pool: PgPool,
    /// Dead-letter writer for `dlq.product.commands`.
    pub dlq: DlqWriter,
    /// Topic recorded on outbox rows.
    pub events_topic: String,
    /// NOTIFY the relay on commit.
    pub notify: bool,
    /// Retry bounds for transient and ambiguous failures.
    pub retry: RetryPolicy,
    /// Which delivered offsets are finished: how far each partition may be stored.
    ledger: std::sync::Mutex<OffsetLedger>,
}

/// What happened to one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandOutcome {
    /// Applied; new version.
    Applied(i64),
    /// Refused for good (recorded).
    Rejected(String),
    /// Already processed earlier.
    Duplicate,
    /// Sent to the DLQ.
    DeadLettered(&'static str),
    /// Not finished (transient failure past its retries, or shutdown); offset not stored.
    Unfinished,
}

impl CommandOutcome {
    /// The failure-policy state this outcome is.
    pub fn disposition(&self) -> Disposition {
        match self {
            Self::Applied(_) | Self::Duplicate => Disposition::Done,
            Self::Rejected(r) => Disposition::Rejected(r.clone()),
            Self::DeadLettered(c) => Disposition::DeadLettered(c),
            Self::Unfinished => Disposition::Unfinished,
        }
    }

    fn finished(&self) -> bool {
        *self != Self::Unfinished
    }
}

/// The decoded parts of a command message.
struct Submitted {
    command_id: Uuid,
    product_id: Uuid,
    command: ProductCommand,
    opts: ExecuteOptions,
    /// Where the message's payload holds a NUL (PostgreSQL cannot store one), even in a key no
    /// field reads: the command is rejected naming it.
    nul_at: Option<String>,
}

impl ProductConsumer {
    /// A command consumer over a subscribed consumer.
    pub fn new(
        consumer: StreamConsumer,
        pool: PgPool,
        dlq: DlqWriter,
        events_topic: String,
        notify: bool,
        retry: RetryPolicy,
    ) -> Self {
        Self {
            consumer,
            pool,
            dlq,
            events_topic,
            notify,
            retry,
            ledger: std::sync::Mutex::new(OffsetLedger::new()),
        }
    }

    /// Receives up to `max` messages (waiting up to `wait` for the first) and handles them:
    /// messages with the same key (product) one after another in offset order, different
    /// products concurrently. Per partition, the offset is stored up to the message before
    /// the first unfinished one, and the partition is sought back to that message.
    pub async fn process_batch(
        &self,
        max: usize,
        wait: Duration,
        shutdown: &Shutdown,
    ) -> Result<Vec<CommandOutcome>, anyhow::Error> {
        let msgs = self.receive(max, wait).await;
        if msgs.is_empty() {
            return Ok(Vec::new());
        }
        // Group by key, keeping each group's arrival (offset) order.
        let mut groups: Vec<Vec<usize>> = Vec::new();
        let mut by_key: HashMap<Option<&[u8]>, usize> = HashMap::new();
        for (i, m) in msgs.iter().enumerate() {
            let g = *by_key.entry(m.key()).or_insert_with(|| {
                groups.push(Vec::new());
                groups.len() - 1
            });
            groups[g].push(i);
        }
        let msgs_ref = &msgs;
        let done = join_all(groups.iter().map(|g| async move {
            let mut out = Vec::with_capacity(g.len());
            for &i in g {
                let o = self.handle(&msgs_ref[i], shutdown).await;
                let stop = !o.finished();
                out.push((i, o));
                if stop {
                    break;
                }
            }
            out
        }))
        .await;
        let mut outcomes = vec![CommandOutcome::Unfinished; msgs.len()];
        for (i, o) in done.into_iter().flatten() {
            outcomes[i] = o;
        }
        self.store_or_rewind(&msgs, &outcomes);
        Ok(outcomes)
    }

    /// Up to `max` messages; consumer errors (brokers unreachable) are logged and polling goes
    /// on, so an outage's queued errors cost nothing once the brokers are back.
    async fn receive(&self, max: usize, wait: Duration) -> Vec<BorrowedMessage<'_>> {
        let mut msgs = Vec::with_capacity(max);
        let first_deadline = tokio::time::Instant::now() + wait;
        while msgs.is_empty() {
            match tokio::time::timeout_at(first_deadline, self.consumer.recv()).await {
                Err(_) => return msgs,
                Ok(Err(e)) => tracing::warn!(error = %e, "kafka consumer error"),
                Ok(Ok(m)) => msgs.push(m),
            }
        }
        let deadline = tokio::time::Instant::now() + Duration::from_millis(5);
        while msgs.len() < max {
            match tokio::time::timeout_at(deadline, self.consumer.recv()).await {
                Ok(Ok(m)) => msgs.push(m),
                Ok(Err(e)) => tracing::warn!(error = %e, "kafka consumer error"),
                Err(_) => break,
            }
        }
        msgs
    }

    /// Marks the finished messages in the ledger and stores what it says is safe (per
    /// partition, up to the message before the first unfinished one); seeks partitions with an
    /// unfinished message back to it.
    fn store_or_rewind(&self, msgs: &[BorrowedMessage<'_>], outcomes: &[CommandOutcome]) {
        let mut first_unfinished: HashMap<(&str, i32), i64> = HashMap::new();
        {
            let mut ledger = self.ledger.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            for m in msgs {
                ledger.deliver(m.topic(), m.partition(), m.offset());
            }
            for (m, o) in msgs.iter().zip(outcomes) {
                if o.finished() {
                    ledger.finish(m.topic(), m.partition(), m.offset());
                } else {
                    let e = first_unfinished.entry((m.topic(), m.partition())).or_insert(m.offset());
                    *e = (*e).min(m.offset());
                }
            }
            offset_ledger::store_safe(&self.consumer, &mut ledger);
        }
        for ((topic, partition), offset) in first_unfinished {
            tracing::info!(
                kafka.partition = partition,
                kafka.offset = offset,
                "rewinding to the first unfinished command"
            );
            if let Err(e) = self
                .consumer
                .seek(topic, partition, Offset::Offset(offset), Duration::from_secs(5))
            {
                // Revoked meanwhile: the new owner starts from the committed offset, which is
                // not past this message.
                tracing::warn!(kafka.partition = partition, kafka.offset = offset, error = %e, "seek back failed");
            }
        }
    }

    /// Consumes until shutdown, then commits stored offsets and leaves the group. After a batch
    /// that left messages unfinished, waits a growing, jittered delay before polling again.
    pub async fn run_until_stopped(&self, shutdown: Shutdown) -> Result<(), anyhow::Error> {
        tracing::info!("Product consumer started");
        let mut backoff = self.retry.backoff();
        while !shutdown.is_triggered() {
            if let Some(e) = crate::bus::consumer::fatal_error(&self.consumer) {
                anyhow::bail!("the Kafka consumer hit a fatal error ({e}); exiting so the role is started again");
            }
            // Not raced against shutdown: the batch in hand is finished, then committed.
            let outcomes = self
                .process_batch(COMMAND_BATCH, Duration::from_millis(500), &shutdown)
                .await?;
            if outcomes.contains(&CommandOutcome::Unfinished) {
                let d = backoff.next().unwrap_or(self.retry.max_delay);
                tracing::warn!(
                    retry_in_ms = d.as_millis() as u64,
                    "commands left unfinished; backing off"
                );
                shutdown.sleep(d).await;
            } else {
                backoff = self.retry.backoff();
            }
        }
        if let Err(e) = self.consumer.commit_consumer_state(CommitMode::Sync) {
            tracing::debug!(error = %e, "final commit (nothing stored?)");
        }
        self.consumer.unsubscribe();
        tracing::info!("Product consumer stopped");
        Ok(())
    }
}
