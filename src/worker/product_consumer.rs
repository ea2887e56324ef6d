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

use super::Shutdown;
use crate::bus::dlq::{DlqReason, DlqWriter};
use crate::bus::envelope::decode_command;
use crate::bus::offset_ledger::{self, OffsetLedger};
use crate::domain::product::ProductCommand;
use crate::failure::{Disposition, Failed, RetryPolicy};
use crate::store::product_repo::{self, ExecuteOptions, ExecuteOutcome};
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

    /// Handles one message in a span of its own that continues the message's trace.
    async fn handle(&self, msg: &BorrowedMessage<'_>, shutdown: &Shutdown) -> CommandOutcome {
        let span = tracing::info_span!(
            "command",
            kafka.partition = msg.partition(),
            kafka.offset = msg.offset()
        );
        if let Some(tp) = crate::bus::consumer::header_str(msg, TRACEPARENT).and_then(TraceParent::parse) {
            crate::telemetry::trace_context::set_parent(&span, &tp);
        }
        tracing::Instrument::instrument(self.handle_in_span(msg, shutdown), span).await
    }

    async fn handle_in_span(&self, msg: &BorrowedMessage<'_>, shutdown: &Shutdown) -> CommandOutcome {
        let s = match self.decode(msg) {
            Ok(s) => s,
            Err(reason) => {
                tracing::warn!(kafka.partition = msg.partition(), kafka.offset = msg.offset(), error = %reason.message,
                    "malformed command sent to the DLQ");
                return self.dead_letter(msg, &reason, shutdown).await;
            }
        };
        let executed = self
            .retry
            .run(shutdown.token(), "command", || async {
                let mut conn = pool::get(&self.pool).await?;
                product_repo::run_command(&mut conn, s.product_id, &s.command, &s.opts).await
            })
            .await;
        let outcome = match executed {
            Ok(ExecuteOutcome::Applied(a)) => CommandOutcome::Applied(a.0.version),
            Ok(ExecuteOutcome::Rejected(rule)) => CommandOutcome::Rejected(rule.to_string()),
            Ok(ExecuteOutcome::Duplicate { .. }) => CommandOutcome::Duplicate,
            Err(Failed::Permanent(e)) => self.reject(msg, &s, &e, shutdown).await,
            Err(Failed::Exhausted(e)) => {
                tracing::warn!(command.id = %s.command_id, error = %e, "command unfinished; will be delivered again");
                CommandOutcome::Unfinished
            }
            Err(Failed::Cancelled) => CommandOutcome::Unfinished,
        };
        let label = match &outcome {
            CommandOutcome::Applied(v) => {
                tracing::info!(command.id = %s.command_id, product.id = %s.product_id, product.version = v,
                    command.r#type = s.command.command_type(), "command applied");
                "applied"
            }
            CommandOutcome::Rejected(r) => {
                tracing::info!(command.id = %s.command_id, product.id = %s.product_id, reason = %r, "command rejected");
                "rejected"
            }
            CommandOutcome::Duplicate => {
                tracing::info!(command.id = %s.command_id, "command already processed; skipping");
                "duplicate"
            }
            CommandOutcome::DeadLettered(_) => "dead_lettered",
            CommandOutcome::Unfinished => "unfinished",
        };
        COMMANDS_PROCESSED.with_label_values(&[label]).inc();
        outcome
    }

    fn decode(&self, msg: &BorrowedMessage<'_>) -> Result<Submitted, DlqReason> {
        let (env, command) = decode_command(msg.payload()).map_err(|e| DlqReason {
            stage: "decode",
            class: e.class,
            message: e.message,
            attempts: 1,
        })?;
        let command_id = env.command_id.ok_or_else(|| DlqReason {
            stage: "decode",
            class: "invalid_envelope",
            message: "missing field `command_id`".into(),
            attempts: 1,
        })?;
        Ok(Submitted {
            command_id,
            product_id: env.product_id,
            command,
            opts: ExecuteOptions {
                command_id: Some(command_id),
                correlation_id: env.correlation_id,
                // The command's trace continues into its event.
                traceparent: crate::bus::consumer::header_str(msg, TRACEPARENT)
                    .map(|tp| TraceParent::continue_or_start(Some(tp)).to_string()),
                expected_version: env.expected_version,
                events_topic: self.events_topic.clone(),
                notify: self.notify,
                // A command names its product id; it may exist already.
                fresh_id: false,
            },
        })
    }

    /// A command the store refused for good. Conflicts are refusals in their own right; any
    /// other permanent store error is first checked against a working database (so a broken
    /// connection is never taken for a bad command), then recorded as a rejection.
    async fn reject(
        &self,
        msg: &BorrowedMessage<'_>,
        s: &Submitted,
        err: &StoreError,
        shutdown: &Shutdown,
    ) -> CommandOutcome {
        let reason = match err {
            StoreError::VersionConflict { .. } | StoreError::SkuTaken(_) | StoreError::Domain(_) => err.to_string(),
            other => {
                let healthy = self
                    .retry
                    .run(shutdown.token(), "database check", || async {
                        let mut conn = pool::get(&self.pool).await?;
                        pool::ping(&mut conn).await
                    })
                    .await;
                if healthy.is_err() {
                    return CommandOutcome::Unfinished;
                }
                tracing::warn!(command.id = %s.command_id, error = %other, "the database refuses this command; rejecting it");
                format!("the command could not be stored: {other}")
            }
        };
        let recorded = self
            .retry
            .run(shutdown.token(), "record rejection", || async {
                let mut conn = pool::get(&self.pool).await?;
                product_repo::record_rejection(&mut conn, s.command_id, s.product_id, s.command.command_type(), &reason)
                    .await
            })
            .await;
        match recorded {
            Ok(()) => CommandOutcome::Rejected(reason),
            Err(Failed::Permanent(e)) => {
                let dlq = DlqReason {
                    stage: "store",
                    class: "store_refused",
                    message: format!("{reason}; recording the rejection failed too: {e}"),
                    attempts: 1,
                };
                self.dead_letter(msg, &dlq, shutdown).await
            }
            Err(Failed::Exhausted(_) | Failed::Cancelled) => CommandOutcome::Unfinished,
        }
    }

    async fn dead_letter(&self, msg: &BorrowedMessage<'_>, reason: &DlqReason, shutdown: &Shutdown) -> CommandOutcome {
        match self
            .retry
            .run(shutdown.token(), "DLQ write", || self.dlq.send(msg, reason))
            .await
        {
            Ok(()) => {
                COMMANDS_PROCESSED.with_label_values(&["dead_lettered"]).inc();
                CommandOutcome::DeadLettered(reason.class)
            }
            Err(e) => {
                tracing::warn!(kafka.partition = msg.partition(), kafka.offset = msg.offset(), error = %e,
                    "could not dead-letter; message unfinished");
                CommandOutcome::Unfinished
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
