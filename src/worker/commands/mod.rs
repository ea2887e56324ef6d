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
//!   retries, or shutdown came. Its offset is not stored; it heads its lane's next batch
//!   after a backoff (or, the partition revoked, goes to its next owner): nothing is ever
//!   committed past it.
//!
//! The commands are a [`Handler`] of the consumer engine (`worker::engine`), run by a [`Lane`]
//! per assigned partition ([`Dispatcher`]): the lane keeps the offset ledger, the unfinished
//! messages (they head the next batch; nothing is stored past them) and the backoff between
//! batches. Within a batch, commands of different products run concurrently on the pool; one
//! product's commands run in offset order and stop at the first unfinished one.

use crate::telemetry::trace_context::{TraceParent, TRACEPARENT};
use rdkafka::consumer::StreamConsumer;
use rdkafka::message::{Message, OwnedMessage};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use uuid::Uuid;

use crate::worker::engine::{Dispatcher, Handler, HandlerLanes, Lane, LaneSettings};
use crate::worker::Shutdown;

mod handle;
use crate::app::execute::{ExecuteOptions, ExecuteOutcome};
use crate::bus::dlq::{DlqReason, DlqWriter};
use crate::bus::envelope::decode_command;
use crate::bus::offset_ledger::OffsetLedger;
use crate::domain::access::{Principal, Scope};
use crate::domain::product::ProductCommand;
use crate::failure::{Disposition, Failed, RetryPolicy};
use crate::store::product_repo;
use crate::store::{pool, PgPool, StoreError};
use crate::telemetry::metrics::COMMANDS_PROCESSED;

/// Most commands handled per batch (different products run concurrently on the pool).
pub const COMMAND_BATCH: usize = 64;

/// The command consumer's work on a batch: the [`Handler`] each lane runs.
#[derive(Clone)]
pub struct Commands {
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
    /// What the last batch did, per message (read by [`ProductConsumer::process_batch`]).
    last: Vec<CommandOutcome>,
}

/// The command consumer over a subscribed consumer: one lane of [`Commands`].
pub struct ProductConsumer {
    /// Subscribed consumer.
    pub consumer: Arc<StreamConsumer>,
    /// Driven batch by batch by [`process_batch`](Self::process_batch).
    lane: tokio::sync::Mutex<Lane<Commands>>,
    /// Consumer group (for the lag metrics).
    group: String,
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

impl Commands {
    /// Runs the batch: messages with the same key (product) one after another in offset
    /// order, stopping at the first unfinished one; different products concurrently.
    async fn run_batch(&self, msgs: &[OwnedMessage], shutdown: &Shutdown) -> Vec<CommandOutcome> {
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
        let done = join_all(groups.iter().map(|g| async move {
            let mut out = Vec::with_capacity(g.len());
            for &i in g {
                let o = self.handle_one(&msgs[i], shutdown).await;
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
        outcomes
    }
}

impl Handler for Commands {
    async fn handle<'a>(
        &'a mut self,
        batch: &'a [OwnedMessage],
        done: &'a mut [bool],
        _ledger: &'a mut OffsetLedger,
        shutdown: &'a Shutdown,
    ) -> anyhow::Result<()> {
        let outcomes = self.run_batch(batch, shutdown).await;
        for (d, o) in done.iter_mut().zip(&outcomes) {
            *d = o.finished();
        }
        self.last = outcomes;
        Ok(())
    }
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
        let consumer = Arc::new(consumer);
        let group = dlq.group().to_owned();
        let commands = Commands {
            pool,
            dlq,
            events_topic,
            notify,
            retry: retry.clone(),
            last: Vec::new(),
        };
        let settings = LaneSettings {
            batch_size: COMMAND_BATCH,
            batch_wait: Duration::from_millis(5),
            retry,
        };
        Self {
            lane: tokio::sync::Mutex::new(Lane::new(commands, consumer.clone(), settings)),
            consumer,
            group,
        }
    }

    /// Receives up to `max` new messages (waiting up to `wait` for the first; the unfinished
    /// ones of the last batch head it) from the consumer read as one stream, and handles
    /// them. The outcomes are in the batch's order.
    pub async fn process_batch(
        &self,
        max: usize,
        wait: Duration,
        shutdown: &Shutdown,
    ) -> Result<Vec<CommandOutcome>, anyhow::Error> {
        let mut lane = self.lane.lock().await;
        lane.handler.last.clear();
        lane.poll(max, wait, shutdown).await?;
        Ok(std::mem::take(&mut lane.handler.last))
    }

    /// Consumes `topic` until shutdown with one lane per assigned partition (see
    /// [`Dispatcher`]), then commits stored offsets and leaves the group.
    pub async fn run_until_stopped(self, topic: &str, shutdown: Shutdown) -> Result<(), anyhow::Error> {
        tracing::info!("Product consumer started");
        let lane = self.lane.into_inner();
        let template = lane.handler;
        let lanes = HandlerLanes {
            consumer: self.consumer.clone(),
            settings: LaneSettings {
                batch_size: COMMAND_BATCH,
                batch_wait: Duration::from_millis(5),
                retry: template.retry.clone(),
            },
            group: self.group,
            make: move || template.clone(),
        };
        let result = Dispatcher::new(lanes, self.consumer, COMMAND_BATCH)
            .run(topic, shutdown)
            .await;
        tracing::info!("Product consumer stopped");
        result
    }
}
