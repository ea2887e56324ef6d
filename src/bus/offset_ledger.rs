//! The offset ledger of a consumer: which delivered offsets are finished, and so how far each
//! partition may be stored (store-after-effect, in order per partition).
//!
//! A consumer [`deliver`](OffsetLedger::deliver)s each message it takes, marks it
//! [`finish`](OffsetLedger::finish)ed once its effect is durable (done, rejected or
//! dead-lettered), and may [`hold`](OffsetLedger::hold) a finished offset whose effect is
//! deferred (the projection's Redis writes waiting for Redis) until it
//! [`release`](OffsetLedger::release)s it. [`to_store`](OffsetLedger::to_store) answers, per
//! partition, the highest offset that is safe to store: never at or past an unfinished or held
//! message, never backwards. A revoked partition is [`forget`](OffsetLedger::forget)-ten: after
//! a rebalance nothing is safe to commit for it (its new owner starts from what was committed).
//!
//! Pure bookkeeping: no Kafka calls. Offsets are those of the messages themselves (Kafka's
//! `store_offset(o)` commits `o + 1`, the next to read).

use std::collections::{BTreeMap, HashMap, HashSet};

/// State of one delivered offset not yet folded into the finished prefix.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Mark {
    finished: bool,
    /// Effects still deferred for this offset.
    holds: u32,
}

impl Mark {
    fn settled(self) -> bool {
        self.finished && self.holds == 0
    }
}

/// The ledger of one partition.
#[derive(Debug, Clone, Default)]
pub struct PartitionLedger {
    /// Highest offset up to which every delivered message is finished and not held.
    done_upto: Option<i64>,
    /// Delivered offsets past `done_upto`.
    open: BTreeMap<i64, Mark>,
    /// Offset last stored.
    stored: Option<i64>,
}

impl PartitionLedger {
    /// Records that `offset` was delivered (again): it is unfinished until
    /// [`finish`](Self::finish). An offset already in the finished prefix (delivered again
    /// after a seek back) is finished already; re-applying it is harmless.
    pub fn deliver(&mut self, offset: i64) {
        if self.done_upto.is_some_and(|d| offset <= d) {
            return;
        }
        self.open.entry(offset).or_default().finished = false;
    }

    /// Marks `offset` finished (its effect durable, or it was rejected or dead-lettered).
    pub fn finish(&mut self, offset: i64) {
        if let Some(m) = self.open.get_mut(&offset) {
            m.finished = true;
        }
        self.settle();
    }

    /// Holds `offset`: its effect is deferred; nothing at or past it is stored until it is
    /// [`release`](Self::release)d (once per hold).
    pub fn hold(&mut self, offset: i64) {
        if self.done_upto.is_some_and(|d| offset <= d) {
            return;
        }
        self.open.entry(offset).or_default().holds += 1;
    }

    /// Releases one hold of `offset`.
    pub fn release(&mut self, offset: i64) {
        if let Some(m) = self.open.get_mut(&offset) {
            m.holds = m.holds.saturating_sub(1);
        }
        self.settle();
    }

    /// Folds the settled head of `open` into `done_upto`.
    fn settle(&mut self) {
        while let Some(entry) = self.open.first_entry() {
            if !entry.get().settled() {
                break;
            }
            let (o, _) = entry.remove_entry();
            self.done_upto = Some(self.done_upto.map_or(o, |d| d.max(o)));
        }
    }

    /// The highest offset safe to store: every delivered message up to it is finished and not
    /// held. `None` when nothing is.
    pub fn safe(&self) -> Option<i64> {
        self.done_upto
    }

    /// The offset to store now: [`safe`](Self::safe) when it is past what was stored.
    pub fn to_store(&self) -> Option<i64> {
        self.done_upto.filter(|d| self.stored.is_none_or(|s| *d > s))
    }

    /// Records that `offset` was stored.
    pub fn stored(&mut self, offset: i64) {
        self.stored = Some(self.stored.map_or(offset, |s| s.max(offset)));
    }

    /// Offset last stored.
    pub fn last_stored(&self) -> Option<i64> {
        self.stored
    }

    /// Delivered offsets not finished.
    pub fn unfinished(&self) -> usize {
        self.open.values().filter(|m| !m.finished).count()
    }

    /// Offsets held (finished, effect deferred).
    pub fn held(&self) -> usize {
        self.open.values().filter(|m| m.holds > 0).count()
    }
}

/// A topic and partition.
pub type TopicPartition = (String, i32);

/// The ledgers of every partition a consumer reads.
#[derive(Debug, Clone, Default)]
pub struct OffsetLedger {
    partitions: HashMap<TopicPartition, PartitionLedger>,
}

impl OffsetLedger {
    /// An empty ledger.
    pub fn new() -> Self {
        Self::default()
    }

    fn entry(&mut self, topic: &str, partition: i32) -> &mut PartitionLedger {
        self.partitions.entry((topic.to_owned(), partition)).or_default()
    }

    /// See [`PartitionLedger::deliver`].
    pub fn deliver(&mut self, topic: &str, partition: i32, offset: i64) {
        self.entry(topic, partition).deliver(offset);
    }

    /// See [`PartitionLedger::finish`].
    pub fn finish(&mut self, topic: &str, partition: i32, offset: i64) {
        self.entry(topic, partition).finish(offset);
    }

    /// See [`PartitionLedger::hold`].
    pub fn hold(&mut self, topic: &str, partition: i32, offset: i64) {
        self.entry(topic, partition).hold(offset);
    }

    /// See [`PartitionLedger::release`]. A forgotten partition has nothing to release.
    pub fn release(&mut self, topic: &str, partition: i32, offset: i64) {
        if let Some(p) = self.partitions.get_mut(&(topic.to_owned(), partition)) {
            p.release(offset);
        }
    }

    /// The ledger of one partition, if it has one.
    pub fn partition(&self, topic: &str, partition: i32) -> Option<&PartitionLedger> {
        self.partitions.get(&(topic.to_owned(), partition))
    }

    /// Forgets a revoked partition: nothing of it is safe to store any more.
    pub fn forget(&mut self, topic: &str, partition: i32) {
        self.partitions.remove(&(topic.to_owned(), partition));
    }

    /// Forgets every partition not in `assigned`.
    pub fn retain_assigned(&mut self, assigned: &HashSet<TopicPartition>) {
        self.partitions.retain(|tp, _| assigned.contains(tp));
    }

    /// Per partition, the offset to store now (see [`PartitionLedger::to_store`]).
    pub fn to_store(&self) -> Vec<(TopicPartition, i64)> {
        self.partitions
            .iter()
            .filter_map(|(tp, p)| p.to_store().map(|o| (tp.clone(), o)))
            .collect()
    }

    /// Records that `offset` of a partition was stored.
    pub fn stored(&mut self, topic: &str, partition: i32, offset: i64) {
        if let Some(p) = self.partitions.get_mut(&(topic.to_owned(), partition)) {
            p.stored(offset);
        }
    }
}

/// The partitions a consumer is assigned now, if librdkafka answers.
pub fn assigned<C: rdkafka::consumer::Consumer>(consumer: &C) -> Option<HashSet<TopicPartition>> {
    consumer.assignment().ok().map(|a| {
        a.elements()
            .iter()
            .map(|e| (e.topic().to_owned(), e.partition()))
            .collect()
    })
}

/// Stores in `consumer` what `ledger` says is safe (after forgetting partitions no longer
/// assigned). A store refused because the partition was revoked meanwhile is harmless: its
/// new owner re-applies from the committed offset (effects are idempotent).
pub fn store_safe<C: rdkafka::consumer::Consumer>(consumer: &C, ledger: &mut OffsetLedger) {
    if let Some(assigned) = assigned(consumer) {
        ledger.retain_assigned(&assigned);
    }
    for ((topic, partition), offset) in ledger.to_store() {
        match consumer.store_offset(&topic, partition, offset) {
            Ok(()) => ledger.stored(&topic, partition, offset),
            Err(e) => tracing::debug!(kafka.partition = partition, error = %e, "offset not stored"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn stores_up_to_the_first_unfinished_offset() {
        let mut p = PartitionLedger::default();
        for o in 10..15 {
            p.deliver(o);
        }
        p.finish(10);
        p.finish(11);
        p.finish(13);
        assert_eq!(p.to_store(), Some(11));
        p.stored(11);
        assert_eq!(p.to_store(), None);
        p.finish(12);
        assert_eq!(p.to_store(), Some(13));
        p.finish(14);
        assert_eq!(p.to_store(), Some(14));
    }

    #[test]
    fn a_held_offset_stops_the_store_until_released() {
        let mut p = PartitionLedger::default();
        for o in 0..4 {
            p.deliver(o);
        }
        p.hold(1);
        p.hold(1);
        for o in 0..4 {
            p.finish(o);
        }
        assert_eq!(p.safe(), Some(0));
        p.release(1);
        assert_eq!(p.safe(), Some(0), "held twice, released once");
        p.release(1);
        assert_eq!(p.safe(), Some(3));
    }

    #[test]
    fn gaps_in_offsets_are_not_waited_for() {
        let mut p = PartitionLedger::default();
        for o in [3, 7, 9] {
            p.deliver(o);
            p.finish(o);
        }
        assert_eq!(p.safe(), Some(9));
    }

    #[test]
    fn a_redelivered_offset_is_unfinished_again_unless_stored_past() {
        let mut p = PartitionLedger::default();
        for o in 0..3 {
            p.deliver(o);
        }
        p.finish(0);
        p.finish(2);
        // Sought back to 1: 1 and 2 come again.
        p.deliver(1);
        p.deliver(2);
        p.finish(1);
        assert_eq!(p.safe(), Some(1));
        p.finish(2);
        assert_eq!(p.safe(), Some(2));
        p.deliver(0);
        assert_eq!(p.safe(), Some(2));
    }

    #[test]
    fn a_forgotten_partition_has_nothing_to_store() {
        let mut l = OffsetLedger::new();
        l.deliver("t", 0, 5);
        l.finish("t", 0, 5);
        l.deliver("t", 1, 8);
        l.finish("t", 1, 8);
        l.forget("t", 0);
        assert_eq!(l.to_store(), vec![(("t".to_owned(), 1), 8)]);
        l.retain_assigned(&HashSet::new());
        assert!(l.to_store().is_empty());
        // Assigned again: it starts afresh from what its first message says.
        l.deliver("t", 0, 3);
        assert!(l.to_store().is_empty());
    }

    #[derive(Debug, Clone)]
    enum Op {
        Deliver(i64),
        Finish(i64),
        Hold(i64),
        Release(i64),
        Store,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0i64..30).prop_map(Op::Deliver),
            3 => (0i64..30).prop_map(Op::Finish),
            1 => (0i64..30).prop_map(Op::Hold),
            1 => (0i64..30).prop_map(Op::Release),
            2 => Just(Op::Store),
        ]
    }

    proptest! {
        /// Messages delivered in order (with seek-backs), finished and held in any order: a
        /// stored offset never passes a delivered message that is unfinished or held, and the
        /// stored offset never goes backwards.
        #[test]
        fn never_stores_past_an_unfinished_or_held_offset(ops in proptest::collection::vec(op(), 1..200)) {
            let mut p = PartitionLedger::default();
            // The model: per offset, finished and holds, for offsets delivered and not yet
            // stored past.
            let mut model: BTreeMap<i64, (bool, u32)> = BTreeMap::new();
            let mut last: Option<i64> = None;
            for op in ops {
                match op {
                    Op::Deliver(o) => {
                        // Delivered again only from the first unsettled offset on (a seek back).
                        if p.safe().is_none_or(|s| o > s) {
                            p.deliver(o);
                            model.entry(o).or_insert((false, 0)).0 = false;
                        }
                    }
                    Op::Finish(o) => {
                        p.finish(o);
                        if let Some(e) = model.get_mut(&o) { e.0 = true; }
                    }
                    Op::Hold(o) => {
                        // Held while its effect is deferred, before it is finished.
                        if model.get(&o).is_some_and(|e| !e.0) {
                            p.hold(o);
                            model.get_mut(&o).unwrap().1 += 1;
                        }
                    }
                    Op::Release(o) => {
                        if model.get(&o).is_some_and(|e| e.1 > 0) {
                            p.release(o);
                            model.get_mut(&o).unwrap().1 -= 1;
                        }
                    }
                    Op::Store => {
                        if let Some(s) = p.to_store() {
                            prop_assert!(last.is_none_or(|l| s > l), "went backwards: {s} after {last:?}");
                            for (o, (finished, holds)) in model.range(..=s) {
                                prop_assert!(*finished && *holds == 0, "stored {s} past offset {o} ({finished}, {holds})");
                            }
                            p.stored(s);
                            last = Some(s);
                            model.retain(|o, _| *o > s);
                        }
                    }
                }
                if let Some(safe) = p.safe() {
                    for (o, (finished, holds)) in model.range(..=safe) {
                        prop_assert!(*finished && *holds == 0, "safe {safe} past offset {o}");
                    }
                }
            }
        }
    }
}
