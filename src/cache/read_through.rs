//! Read-through puts that ride on a worker's next cache read.
//!
//! A product read from Postgres is written back to Redis (the read-through put) so that the
//! next read finds it there. Sent on its own, that put was a round trip of its own for every
//! read from Postgres, and the reader waited for it: a third of what such a read cost the box
//! (docs/BENCHMARKS.md). Now the reader does not wait. The product joins its worker's queue
//! ([`Riders`]), and the worker's next cache read carries the queued puts in front of its own
//! commands, in the same write to Redis and the same reply (`ProductCache::get_document`). A
//! queue that no read takes within [`LINGER`] (an idle worker), or that reaches
//! [`MAX_RIDERS`], is sent on its own.
//!
//! A put stays what it was: versioned (an older state never overwrites a newer one),
//! best-effort, and bounded like every request-path call. One that fails, or whose fate is
//! unknown, leaves its product as a missed write, so this process serves no older copy; the
//! projection repairs Redis. A write-through (after a write) does not ride: its caller waits
//! for it, so that a read right after, on any worker, sees that version.
//!
//! Pure queueing: no I/O here.

use std::sync::Mutex;
use std::time::Duration;

/// Longest a queued put waits for a read to carry it before it is sent on its own.
pub const LINGER: Duration = Duration::from_millis(2);

/// Most puts one read carries, and the queue length at which they are sent at once.
pub const MAX_RIDERS: usize = 64;

/// What the caller of [`Riders::push`] must do next.
#[derive(Debug, PartialEq)]
pub enum Join<T> {
    /// Nothing: a read, or the pending [`LINGER`] timer, takes it.
    Queued,
    /// Start the timer: after [`LINGER`], send what [`Riders::expire`] gives.
    StartTimer,
    /// The queue was full: send these now.
    SendNow(Vec<T>),
}

struct Queue<T> {
    waiting: Vec<T>,
    /// A [`LINGER`] timer is pending.
    timer: bool,
}

/// A worker's queue of read-through puts (see the module docs).
pub struct Riders<T> {
    queue: Mutex<Queue<T>>,
}

impl<T> Default for Riders<T> {
    fn default() -> Self {
        Self {
            queue: Mutex::new(Queue {
                waiting: Vec::new(),
                timer: false,
            }),
        }
    }
}

impl<T> Riders<T> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue<T>> {
        // Every change is a whole push or drain: a panic elsewhere leaves no half-made state.
        self.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues `put`.
    pub fn push(&self, put: T) -> Join<T> {
        let mut q = self.lock();
        q.waiting.push(put);
        if q.waiting.len() >= MAX_RIDERS {
            return Join::SendNow(std::mem::take(&mut q.waiting));
        }
        if q.timer {
            return Join::Queued;
        }
        q.timer = true;
        Join::StartTimer
    }

    /// Up to [`MAX_RIDERS`] queued puts, oldest first, for a read about to be sent.
    pub fn take(&self) -> Vec<T> {
        let mut q = self.lock();
        let n = q.waiting.len().min(MAX_RIDERS);
        q.waiting.drain(..n).collect()
    }

    /// The timer's end: every queued put, and the next push starts a timer again.
    pub fn expire(&self) -> Vec<T> {
        let mut q = self.lock();
        q.timer = false;
        std::mem::take(&mut q.waiting)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_put_starts_one_timer_and_a_read_takes_what_waits() {
        let r = Riders::default();
        assert_eq!(r.push("a"), Join::StartTimer);
        assert_eq!(r.push("b"), Join::Queued, "one timer at a time");
        assert_eq!(r.take(), ["a", "b"], "oldest first");
        assert!(r.take().is_empty());
        assert_eq!(r.push("c"), Join::Queued, "the timer is still pending");
        assert_eq!(r.expire(), ["c"]);
        assert!(r.expire().is_empty(), "a timer finds what no read took, once");
        assert_eq!(r.push("d"), Join::StartTimer, "after the timer, a new one");
    }

    #[test]
    fn a_full_queue_is_sent_at_once_and_a_read_carries_at_most_max_riders() {
        let r = Riders::default();
        let mut sent = None;
        for i in 0..MAX_RIDERS {
            match r.push(i) {
                Join::SendNow(batch) => sent = Some(batch),
                _ => assert!(sent.is_none(), "sent before the bound"),
            }
        }
        assert_eq!(sent, Some((0..MAX_RIDERS).collect()), "sent, in order, at the bound");
        assert!(r.take().is_empty());
        for i in 0..MAX_RIDERS - 1 {
            assert!(!matches!(r.push(i), Join::SendNow(_)), "below the bound");
        }
        assert_eq!(r.take().len(), MAX_RIDERS - 1);
    }
}
