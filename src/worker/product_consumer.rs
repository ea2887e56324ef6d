//! The write-side consumer behind `run-product-consumer`: reads `product.commands`, runs each
//! command through the same aggregate and repository code as the API, and stores the Kafka
//! offset only after the database transaction committed.
//!
//! - Idempotent by command id: a redelivered command is answered from the `commands` table.
//! - Malformed messages go to `dlq.product.commands` with the reason, then the consumer moves on.
//! - Commands the domain refuses are recorded as rejected and not retried.
//! - Transient failures (database down) are retried with backoff, never skipped.

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Message};
use std::future::Future;
use std::time::Duration;

use futures::future::join_all;
use std::collections::HashMap;

use super::{backoff, Shutdown};

/// Most commands handled per batch (different products run concurrently on the pool).
pub const COMMAND_BATCH: usize = 64;
use crate::bus::dlq::{DlqReason, DlqWriter};
use crate::bus::envelope::decode_command;
use crate::store::product_repo::{self, ExecuteOptions, ExecuteOutcome};
use crate::store::{pool, PgPool, StoreError};
use crate::telemetry::metrics::COMMANDS_PROCESSED;

/// Dependencies of the command consumer.
pub struct CommandConsumer {
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
}

/// What happened to one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandOutcome {
    /// Applied; new version.
    Applied(i64),
    /// Refused by the domain (recorded).
    Rejected(String),
    /// Already processed earlier.
    Duplicate,
    /// Sent to the DLQ.
    DeadLettered(&'static str),
    /// Shutdown came while retrying; offset not stored.
    Interrupted,
}

impl CommandConsumer {
    /// Waits up to `wait` for one message and handles it; None when nothing arrived.
    pub async fn process_once(
        &self,
        wait: Duration,
        shutdown: &Shutdown,
    ) -> Result<Option<CommandOutcome>, anyhow::Error> {
        let msg = match tokio::time::timeout(wait, self.consumer.recv()).await {
            Err(_) => return Ok(None),
            Ok(Err(e)) => return Err(anyhow::anyhow!("kafka consumer error: {e}")),
            Ok(Ok(m)) => m,
        };
        let outcome = self.handle(&msg, shutdown).await?;
        if outcome != CommandOutcome::Interrupted {
            self.consumer.store_offset(msg.topic(), msg.partition(), msg.offset())?;
        }
        Ok(Some(outcome))
    }

    /// Receives up to `max` messages (waiting up to `wait` for the first) and handles them:
    /// messages with the same key (product) one after another in offset order, different
    /// products concurrently. Offsets are stored per partition only up to the first message
    /// that did not complete, so nothing is committed ahead of its effect.
    pub async fn process_batch(
        &self,
        max: usize,
        wait: Duration,
        shutdown: &Shutdown,
    ) -> Result<Vec<CommandOutcome>, anyhow::Error> {
        let mut msgs = Vec::with_capacity(max);
        match tokio::time::timeout(wait, self.consumer.recv()).await {
            Err(_) => return Ok(Vec::new()),
            Ok(Err(e)) => return Err(anyhow::anyhow!("kafka consumer error: {e}")),
            Ok(Ok(m)) => msgs.push(m),
        }
        let deadline = tokio::time::Instant::now() + Duration::from_millis(5);
        while msgs.len() < max {
            match tokio::time::timeout_at(deadline, self.consumer.recv()).await {
                Ok(Ok(m)) => msgs.push(m),
                _ => break,
            }
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
        let done: Vec<Vec<(usize, Result<CommandOutcome, anyhow::Error>)>> =
            join_all(groups.iter().map(|g| async move {
                let mut out = Vec::with_capacity(g.len());
                for &i in g {
                    let r = self.handle(&msgs_ref[i], shutdown).await;
                    let stop = !matches!(&r, Ok(o) if *o != CommandOutcome::Interrupted);
                    out.push((i, r));
                    if stop {
                        break;
                    }
                }
                out
            }))
            .await;
        let mut results: Vec<Option<Result<CommandOutcome, anyhow::Error>>> = (0..msgs.len()).map(|_| None).collect();
        for (i, r) in done.into_iter().flatten() {
            results[i] = Some(r);
        }
        // Per partition: store the last offset of the completed prefix.
        let mut first_gap: HashMap<i32, i64> = HashMap::new();
        for (m, r) in msgs.iter().zip(&results) {
            if !matches!(r, Some(Ok(o)) if *o != CommandOutcome::Interrupted) {
                let e = first_gap.entry(m.partition()).or_insert(m.offset());
                *e = (*e).min(m.offset());
            }
        }
        let mut store: HashMap<(&str, i32), i64> = HashMap::new();
        for m in &msgs {
            if first_gap.get(&m.partition()).is_some_and(|gap| m.offset() >= *gap) {
                continue;
            }
            let e = store.entry((m.topic(), m.partition())).or_insert(m.offset());
            *e = (*e).max(m.offset());
        }
        for ((topic, partition), offset) in store {
            self.consumer.store_offset(topic, partition, offset)?;
        }
        let mut outcomes = Vec::with_capacity(msgs.len());
        for r in results.into_iter().flatten() {
            outcomes.push(r?);
        }
        Ok(outcomes)
    }

    async fn handle(&self, msg: &BorrowedMessage<'_>, shutdown: &Shutdown) -> Result<CommandOutcome, anyhow::Error> {
        let (env, command) = match decode_command(msg.payload()) {
            Ok(ok) => ok,
            Err(e) => {
                tracing::warn!(kafka.partition = msg.partition(), kafka.offset = msg.offset(), error = %e, "malformed command sent to the DLQ");
                let reason = DlqReason {
                    stage: "decode",
                    class: e.class,
                    message: e.message.clone(),
                    attempts: 1,
                };
                self.retry(shutdown, "DLQ write", || self.dlq.send(msg, &reason))
                    .await?;
                COMMANDS_PROCESSED.with_label_values(&["dead_lettered"]).inc();
                return Ok(CommandOutcome::DeadLettered(e.class));
            }
        };
        let Some(command_id) = env.command_id else {
            let reason = DlqReason {
                stage: "decode",
                class: "invalid_envelope",
                message: "missing field `command_id`".into(),
                attempts: 1,
            };
            self.retry(shutdown, "DLQ write", || self.dlq.send(msg, &reason))
                .await?;
            COMMANDS_PROCESSED.with_label_values(&["dead_lettered"]).inc();
            return Ok(CommandOutcome::DeadLettered("invalid_envelope"));
        };
        let opts = ExecuteOptions {
            command_id: Some(command_id),
            correlation_id: env.correlation_id,
            expected_version: env.expected_version,
            events_topic: self.events_topic.clone(),
            notify: self.notify,
        };
        let mut attempt = 0u32;
        loop {
            let result = async {
                let mut conn = pool::get(&self.pool).await?;
                product_repo::execute(&mut conn, env.product_id, &command, &opts).await
            }
            .await;
            let outcome = match result {
                Ok(ExecuteOutcome::Applied(a)) => CommandOutcome::Applied(a.0.version),
                Ok(ExecuteOutcome::Rejected(rule)) => CommandOutcome::Rejected(rule.to_string()),
                Ok(ExecuteOutcome::Duplicate { .. }) => CommandOutcome::Duplicate,
                Err(e) if e.is_transient() => {
                    attempt += 1;
                    let d = backoff(Duration::from_millis(200), Duration::from_secs(30), attempt);
                    tracing::warn!(command.id = %command_id, error = %e, retry_in_ms = d.as_millis() as u64, "command failed transiently; retrying");
                    if shutdown.sleep(d).await {
                        return Ok(CommandOutcome::Interrupted);
                    }
                    continue;
                }
                Err(e @ (StoreError::VersionConflict { .. } | StoreError::SkuTaken(_))) => {
                    let reason = e.to_string();
                    let mut conn = pool::get(&self.pool).await?;
                    product_repo::record_rejection(
                        &mut conn,
                        command_id,
                        env.product_id,
                        command.command_type(),
                        &reason,
                    )
                    .await?;
                    CommandOutcome::Rejected(reason)
                }
                Err(e) => return Err(anyhow::Error::new(e).context(format!("command {command_id}"))),
            };
            match &outcome {
                CommandOutcome::Applied(v) => {
                    COMMANDS_PROCESSED.with_label_values(&["applied"]).inc();
                    tracing::info!(command.id = %command_id, product.id = %env.product_id, product.version = v, command.r#type = %env.command_type, "command applied");
                }
                CommandOutcome::Rejected(r) => {
                    COMMANDS_PROCESSED.with_label_values(&["rejected"]).inc();
                    tracing::info!(command.id = %command_id, product.id = %env.product_id, reason = %r, "command rejected");
                }
                CommandOutcome::Duplicate => {
                    COMMANDS_PROCESSED.with_label_values(&["duplicate"]).inc();
                    tracing::info!(command.id = %command_id, "command already processed; skipping");
                }
                _ => {}
            }
            return Ok(outcome);
        }
    }

    async fn retry<F, Fut, E>(&self, shutdown: &Shutdown, what: &str, mut f: F) -> Result<(), anyhow::Error>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<(), E>>,
        E: std::fmt::Display,
    {
        let mut attempt = 0;
        loop {
            match f().await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    attempt += 1;
                    let d = backoff(Duration::from_millis(200), Duration::from_secs(30), attempt);
                    tracing::warn!(error = %e, retry_in_ms = d.as_millis() as u64, "{what} failed; retrying");
                    if shutdown.sleep(d).await {
                        anyhow::bail!("shutdown during {what}");
                    }
                }
            }
        }
    }

    /// Consumes until shutdown, then commits stored offsets and leaves the group.
    pub async fn run_until_stopped(&self, shutdown: Shutdown) -> Result<(), anyhow::Error> {
        tracing::info!("Product consumer started");
        while !shutdown.is_triggered() {
            // Not raced against shutdown: the batch in hand is finished, then committed.
            if let Err(e) = self
                .process_batch(COMMAND_BATCH, Duration::from_millis(500), &shutdown)
                .await
            {
                tracing::error!(error = %e, "command consumer error");
                shutdown.sleep(Duration::from_secs(1)).await;
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
