//! The consumer engine's dispatcher: one lane per assigned partition, behind
//! `run-product-event-consumer`.
//!
//! A single task polls the consumer (so the process stays in its group) and hands each
//! message to its partition's lane, a task running [`Lanes::run_lane`] over a bounded queue:
//! for both consumers a [`Lane`] (the one run loop: ledger, unfinished messages, backoff)
//! around their [`Handler`] (the projection's stages, the command consumer's commands). Partitions therefore never wait for each
//! other: one whose index writes are slow, or whose message cannot be dead-lettered yet, backs
//! off alone while the others go on. Order within a partition (and so per product, the key)
//! is kept: one pipeline per partition, messages in offset order.
//!
//! Backpressure: when a pipeline's queue is full, its partition is paused and the message is
//! held here; the partition is resumed once the queue has room and the held messages are
//! handed over. librdkafka resumes a paused partition from the message after the last one it
//! delivered, so nothing is skipped or delivered twice by pausing.
//!
//! A pipeline is started for a partition when its first message arrives and stopped when the
//! partition is no longer assigned (checked every second, and on every rebalance its
//! messages simply stop coming): its queue is closed, it finishes the batch in hand and
//! stores what it finished; what it had not finished goes to the partition's next owner
//! (offsets are never stored past it).

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::TopicPartitionList;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::task::JoinHandle;

use futures::future::BoxFuture;

use super::Shutdown;
use crate::telemetry::metrics::{PROJECTION_PARTITIONS_PAUSED, PROJECTION_PARTITION_PAUSES, PROJECTION_PIPELINES};

pub mod lane;
pub use lane::{Handler, Lane, LaneSettings, Processed};

type Partition = (String, i32);

/// What the engine runs in each partition's lane.
pub trait Lanes: Send + Sync + 'static {
    /// A lane's loop over `rx`, one partition's messages in offset order, until the queue is
    /// closed and drained (partition revoked) or `shutdown` fires; it stores the offsets of
    /// what it finished. An error stops the role.
    fn run_lane(&self, rx: mpsc::Receiver<OwnedMessage>, shutdown: Shutdown) -> BoxFuture<'static, anyhow::Result<()>>;

    /// Publishes consumer lag for `topic` (called every 5 s).
    fn update_lag<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, ()>;
}

/// Lanes of one kind of [`Handler`]: each partition's lane gets a handler from `make`, stores
/// its offsets in `consumer`, and the lag of `group` is exported for the dispatcher.
pub struct HandlerLanes<F> {
    /// A new handler for a partition's lane.
    pub make: F,
    /// The consumer the dispatcher polls.
    pub consumer: Arc<StreamConsumer>,
    /// Each lane's batch bounds and backoff.
    pub settings: LaneSettings,
    /// Consumer group (for the lag metrics).
    pub group: String,
}

impl<H, F> Lanes for HandlerLanes<F>
where
    H: Handler,
    F: Fn() -> H + Send + Sync + 'static,
{
    fn run_lane(&self, rx: mpsc::Receiver<OwnedMessage>, shutdown: Shutdown) -> BoxFuture<'static, anyhow::Result<()>> {
        let lane = lane::Lane::new((self.make)(), self.consumer.clone(), self.settings.clone());
        Box::pin(lane.run(rx, shutdown))
    }

    fn update_lag<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(crate::bus::consumer::export_lag(
            self.consumer.clone(),
            |c| c,
            &self.group,
            topic,
        ))
    }
}

/// A running lane and what waits to enter its queue.
struct Running {
    tx: mpsc::Sender<OwnedMessage>,
    task: JoinHandle<anyhow::Result<()>>,
    /// Messages that found the queue full, in offset order; the partition is paused meanwhile.
    held: VecDeque<OwnedMessage>,
}

/// The dispatcher: routes each message to its partition's lane.
pub struct Dispatcher<L: Lanes> {
    template: L,
    consumer: Arc<StreamConsumer>,
    lanes: HashMap<Partition, Running>,
    /// Pipelines of partitions no longer assigned, finishing their batch.
    retiring: HashMap<Partition, JoinHandle<anyhow::Result<()>>>,
    /// Partitions revoked while paused here: resumed if they are assigned again (a pause can
    /// outlive the assignment, and no message would ever come to lift it).
    revoked_paused: HashSet<Partition>,
    /// Messages one pipeline's queue holds: four batches, so that after a pause the
    /// partition is fetched again (a round trip) while its pipeline still has full batches.
    queue_capacity: usize,
    /// The role's signal, shared with the pipelines: on it each ends the batch in hand
    /// without waiting out retries, then stores its progress.
    shutdown: Shutdown,
}

impl<L: Lanes> Dispatcher<L> {
    /// A dispatcher polling `consumer` whose lanes `template` runs, each over a queue of
    /// `batch_size * 4` messages.
    pub fn new(template: L, consumer: Arc<StreamConsumer>, batch_size: usize) -> Self {
        let queue_capacity = batch_size.saturating_mul(4).max(1);
        Self {
            template,
            consumer,
            lanes: HashMap::new(),
            retiring: HashMap::new(),
            revoked_paused: HashSet::new(),
            queue_capacity,
            shutdown: Shutdown::new(),
        }
    }

    /// Polls and dispatches until shutdown (or a fatal consumer error, or a pipeline that
    /// failed); then closes every queue, waits for the pipelines to store what they finished,
    /// commits and leaves the group.
    pub async fn run(mut self, topic: &str, shutdown: Shutdown) -> anyhow::Result<()> {
        self.shutdown = shutdown.clone();
        let mut last_lag = Instant::now() - Duration::from_secs(60);
        let mut last_assignment = Instant::now();
        let result = loop {
            if shutdown.is_triggered() {
                break Ok(());
            }
            if let Some(e) = crate::bus::consumer::fatal_error(&*self.consumer) {
                break Err(anyhow::anyhow!(
                    "the Kafka consumer hit a fatal error ({e}); exiting so the role is started again"
                ));
            }
            if let Err(e) = self.check_pipelines().await {
                break Err(e);
            }
            let wait = if self.lanes.values().any(|l| !l.held.is_empty()) {
                Duration::from_millis(20)
            } else {
                Duration::from_millis(500)
            };
            tokio::select! {
                () = shutdown.wait() => {}
                r = tokio::time::timeout(wait, self.consumer.recv()) => match r {
                    Err(_) => {}
                    // Brokers unreachable and the like: librdkafka reconnects; keep polling.
                    Ok(Err(e)) => tracing::warn!(error = %e, "kafka consumer error"),
                    Ok(Ok(m)) => self.dispatch(m.detach()),
                },
            }
            self.hand_over_held();
            if last_assignment.elapsed() >= Duration::from_secs(1) {
                self.retire_revoked();
                last_assignment = Instant::now();
            }
            if last_lag.elapsed() > crate::bus::consumer::LAG_EXPORT_INTERVAL {
                self.template.update_lag(topic).await;
                last_lag = Instant::now();
            }
        };
        self.stop_all().await;
        if let Err(e) = self.consumer.commit_consumer_state(CommitMode::Sync) {
            tracing::debug!(error = %e, "final commit (nothing stored?)");
        }
        self.consumer.unsubscribe();
        result
    }

    /// Hands `m` to its partition's pipeline (starting one if needed); holds it and pauses the
    /// partition when the queue is full.
    fn dispatch(&mut self, m: OwnedMessage) {
        let key = (m.topic().to_owned(), m.partition());
        if !self.lanes.contains_key(&key) {
            let lane = self.start(&key);
            self.lanes.insert(key.clone(), lane);
        }
        let Some(lane) = self.lanes.get_mut(&key) else { return };
        if !lane.held.is_empty() {
            lane.held.push_back(m);
            return;
        }
        match lane.tx.try_send(m) {
            Ok(()) => {}
            Err(TrySendError::Full(m)) => {
                lane.held.push_back(m);
                set_paused(&self.consumer, &key, true);
                PROJECTION_PARTITION_PAUSES.inc();
            }
            // Its task ended; `check_pipelines` reports why.
            Err(TrySendError::Closed(m)) => lane.held.push_back(m),
        }
    }

    /// Moves held messages into queues that have room; resumes partitions whose held messages
    /// are all handed over.
    fn hand_over_held(&mut self) {
        for (key, lane) in &mut self.lanes {
            if lane.held.is_empty() {
                continue;
            }
            while let Some(m) = lane.held.pop_front() {
                match lane.tx.try_send(m) {
                    Ok(()) => {}
                    Err(TrySendError::Full(m) | TrySendError::Closed(m)) => {
                        lane.held.push_front(m);
                        break;
                    }
                }
            }
            if lane.held.is_empty() {
                set_paused(&self.consumer, key, false);
            }
        }
        let paused = self.lanes.values().filter(|l| !l.held.is_empty()).count();
        PROJECTION_PARTITIONS_PAUSED.set(i64::try_from(paused).unwrap_or(i64::MAX));
    }

    fn start(&mut self, key: &Partition) -> Running {
        if let Some(old) = self.retiring.remove(key) {
            // Assigned back while its last pipeline still works: that one stops now; it never
            // stored past what it finished, so the new one loses nothing.
            old.abort();
        }
        let (tx, rx) = mpsc::channel(self.queue_capacity);
        let span = tracing::info_span!("partition", kafka.topic = %key.0, kafka.partition = key.1);
        let lane = self.template.run_lane(rx, self.shutdown.clone());
        let task = tokio::spawn(tracing::Instrument::instrument(lane, span));
        tracing::info!(kafka.topic = %key.0, kafka.partition = key.1, "partition pipeline started");
        PROJECTION_PIPELINES.inc();
        Running {
            tx,
            task,
            held: VecDeque::new(),
        }
    }

    /// Closes the queues of partitions no longer assigned; forgets retired pipelines that
    /// ended.
    fn retire_revoked(&mut self) {
        let assigned: Option<HashSet<Partition>> = self.consumer.assignment().ok().map(|a| {
            a.elements()
                .iter()
                .map(|e| (e.topic().to_owned(), e.partition()))
                .collect()
        });
        if let Some(assigned) = assigned {
            let back: Vec<Partition> = self.revoked_paused.intersection(&assigned).cloned().collect();
            for key in back {
                set_paused(&self.consumer, &key, false);
                self.revoked_paused.remove(&key);
            }
            let gone: Vec<Partition> = self.lanes.keys().filter(|k| !assigned.contains(*k)).cloned().collect();
            for key in gone {
                if let Some(lane) = self.lanes.remove(&key) {
                    tracing::info!(kafka.topic = %key.0, kafka.partition = key.1, held = lane.held.len(),
                        "partition revoked; its pipeline finishes its batch and stops");
                    PROJECTION_PIPELINES.dec();
                    if !lane.held.is_empty() {
                        self.revoked_paused.insert(key.clone());
                    }
                    self.retiring.insert(key, lane.task);
                }
            }
        }
        self.retiring.retain(|_, t| !t.is_finished());
    }

    /// An error when a pipeline ended by itself (it only ends when its queue is closed).
    async fn check_pipelines(&mut self) -> anyhow::Result<()> {
        let ended: Vec<Partition> = self
            .lanes
            .iter()
            .filter(|(_, l)| l.task.is_finished())
            .map(|(k, _)| k.clone())
            .collect();
        for key in ended {
            if let Some(lane) = self.lanes.remove(&key) {
                PROJECTION_PIPELINES.dec();
                let why = match lane.task.await {
                    Ok(Ok(())) => "ended".to_owned(),
                    Ok(Err(e)) => format!("failed: {e:#}"),
                    Err(e) => format!("panicked: {e}"),
                };
                anyhow::bail!("the pipeline of partition {} of {} {why}", key.1, key.0);
            }
        }
        Ok(())
    }

    /// Closes every queue and waits for each pipeline to finish its batch and store its
    /// progress.
    async fn stop_all(&mut self) {
        let mut tasks: Vec<(Partition, JoinHandle<anyhow::Result<()>>)> = self.retiring.drain().collect();
        for (key, lane) in self.lanes.drain() {
            PROJECTION_PIPELINES.dec();
            drop(lane.tx);
            tasks.push((key, lane.task));
        }
        for ((topic, partition), task) in tasks {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(kafka.topic = %topic, kafka.partition = partition, error = %e, "partition pipeline failed")
                }
                Err(e) if e.is_cancelled() => {}
                Err(e) => {
                    tracing::warn!(kafka.topic = %topic, kafka.partition = partition, error = %e, "partition pipeline panicked")
                }
            }
        }
        PROJECTION_PARTITIONS_PAUSED.set(0);
    }
}

fn set_paused(consumer: &StreamConsumer, (topic, partition): &Partition, paused: bool) {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, *partition);
    let r = if paused {
        consumer.pause(&tpl)
    } else {
        consumer.resume(&tpl)
    };
    if let Err(e) = r {
        // Revoked meanwhile: pausing no longer matters.
        tracing::debug!(kafka.partition = partition, paused, error = %e, "pause/resume failed");
    }
}
