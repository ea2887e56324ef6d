//! [`Batcher`]: many callers' single-item calls made as a few batched calls, the way a
//! database groups commits.
//!
//! A caller hands in one item and awaits its answer. When fewer than `max_in_flight` batches
//! are running, its call starts one (an idle process adds no latency); otherwise it waits with
//! the others. A batch takes up to `max_batch` waiting items, in arrival order, when its task
//! first runs, and again each time it is done while items wait: so the callers woken together
//! (by one read from a socket) and run before it join it, and under load one round trip
//! answers many callers. The per-call costs (a query's execution, a round trip, the syscalls
//! and task switches on both sides) are paid once a batch instead of once a caller.
//!
//! Batches run on a task of their own, so a caller that goes away (a client that hung up)
//! never strands the callers batched with it. Every caller gets an answer: its own output,
//! the batch's error, or [`BatchError::Abandoned`] if the batch's task ended without one (a
//! panic); a batch's task that ends that way also answers the callers still waiting, and the
//! next call starts afresh. Nothing here knows what a batch does.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::oneshot;

/// What a batch returns: one output per input, in input order, or one error for all.
pub type BatchFuture<O, E> = Pin<Box<dyn Future<Output = Result<Vec<O>, E>> + Send>>;

/// Runs one batch.
pub type BatchFn<I, O, E> = Box<dyn Fn(Vec<I>) -> BatchFuture<O, E> + Send + Sync>;

/// Why a call has no output.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError<E> {
    /// The batch failed; every caller in it gets the error.
    #[error(transparent)]
    Failed(E),
    /// The batch ended without an answer for this caller (its task panicked, or it returned
    /// fewer outputs than inputs).
    #[error("the batch ended without an answer")]
    Abandoned,
}

type Reply<O, E> = oneshot::Sender<Result<O, BatchError<E>>>;

struct Queue<I, O, E> {
    waiting: Vec<(I, Reply<O, E>)>,
    running: usize,
}

/// Batches calls of one kind (see the module docs). Cheap to share: hold it in an `Arc`.
pub struct Batcher<I, O, E> {
    queue: Mutex<Queue<I, O, E>>,
    run: BatchFn<I, O, E>,
    max_batch: usize,
    max_in_flight: usize,
}

impl<I, O, E> std::fmt::Debug for Batcher<I, O, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher")
            .field("max_batch", &self.max_batch)
            .field("max_in_flight", &self.max_in_flight)
            .finish_non_exhaustive()
    }
}

impl<I, O, E> Batcher<I, O, E>
where
    I: Send + 'static,
    O: Send + 'static,
    E: Clone + Send + 'static,
{
    /// A batcher that runs `run` on at most `max_batch` items, at most `max_in_flight` batches
    /// at a time (both at least 1).
    pub fn new(max_batch: usize, max_in_flight: usize, run: BatchFn<I, O, E>) -> Arc<Self> {
        Arc::new(Self {
            queue: Mutex::new(Queue {
                waiting: Vec::new(),
                running: 0,
            }),
            run,
            max_batch: max_batch.max(1),
            max_in_flight: max_in_flight.max(1),
        })
    }

    /// `item`'s output, from the batch it joins. Needs a Tokio runtime.
    pub async fn call(self: &Arc<Self>, item: I) -> Result<O, BatchError<E>> {
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut q = self.lock();
            q.waiting.push((item, tx));
            let start = q.running < self.max_in_flight;
            q.running += usize::from(start);
            start
        };
        if start {
            tokio::spawn(Arc::clone(self).drive());
        }
        rx.await.unwrap_or(Err(BatchError::Abandoned))
    }

    /// Runs batches of the waiting items until none waits.
    async fn drive(self: Arc<Self>) {
        let running = Running(&self);
        loop {
            let batch = {
                let mut q = self.lock();
                if q.waiting.is_empty() {
                    q.running -= 1;
                    std::mem::forget(running);
                    return;
                }
                let n = q.waiting.len().min(self.max_batch);
                q.waiting.drain(..n).collect::<Vec<_>>()
            };
            let (items, replies): (Vec<I>, Vec<Reply<O, E>>) = batch.into_iter().unzip();
            match (self.run)(items).await {
                Ok(outputs) => {
                    // A reply with no output left is dropped: its caller reads `Abandoned`.
                    for (reply, out) in replies.into_iter().zip(outputs) {
                        let _ = reply.send(Ok(out));
                    }
                }
                Err(e) => {
                    for reply in replies {
                        let _ = reply.send(Err(BatchError::Failed(e.clone())));
                    }
                }
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue<I, O, E>> {
        // The queue is consistent at every unlock: a panic elsewhere leaves it usable.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Held by a batch's task: if the task ends early (a panic in a batch), the count of running
/// batches goes down and the callers still waiting are answered (`Abandoned`), so none waits
/// on a task that is gone.
struct Running<'a, I, O, E>(&'a Batcher<I, O, E>);

impl<I, O, E> Drop for Running<'_, I, O, E> {
    fn drop(&mut self) {
        let mut q = self.0.queue.lock().unwrap_or_else(PoisonError::into_inner);
        q.running -= 1;
        if q.running == 0 {
            q.waiting.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::Semaphore;

    /// A batcher doubling numbers; each batch waits for a permit and records its size.
    fn doubler(
        gate: Arc<Semaphore>,
        sizes: Arc<Mutex<Vec<usize>>>,
        max_in_flight: usize,
    ) -> Arc<Batcher<u32, u32, String>> {
        Batcher::new(
            4,
            max_in_flight,
            Box::new(move |items: Vec<u32>| {
                let (gate, sizes) = (gate.clone(), sizes.clone());
                Box::pin(async move {
                    gate.acquire().await.map_err(|e| e.to_string())?.forget();
                    sizes.lock().unwrap().push(items.len());
                    if items.contains(&13) {
                        return Err("unlucky".to_owned());
                    }
                    if items.contains(&99) {
                        panic!("a batch that panics");
                    }
                    Ok(items.into_iter().map(|i| i * 2).collect())
                })
            }),
        )
    }

    type Doubler = Arc<Batcher<u32, u32, String>>;

    /// `b.call(i)` on a task of its own.
    fn spawn_call(b: &Doubler, i: u32) -> tokio::task::JoinHandle<Result<u32, BatchError<String>>> {
        let b = b.clone();
        tokio::spawn(async move { b.call(i).await })
    }

    /// Waits until a batch is running and has taken every waiting item.
    async fn until_taken(b: &Doubler) {
        while b.lock().running == 0 || !b.lock().waiting.is_empty() {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn an_idle_batcher_runs_a_call_at_once_and_callers_arriving_meanwhile_share_batches() {
        let (gate, sizes) = (Arc::new(Semaphore::new(0)), Arc::new(Mutex::new(Vec::new())));
        let b = doubler(gate.clone(), sizes.clone(), 1);
        let first = spawn_call(&b, 1);
        // The first call's batch took it alone; ten more queue behind it.
        until_taken(&b).await;
        let rest: Vec<_> = (2..12).map(|i| spawn_call(&b, i)).collect();
        while b.lock().waiting.len() < 10 {
            tokio::task::yield_now().await;
        }
        gate.add_permits(100);
        assert_eq!(first.await.unwrap(), Ok(2));
        for (i, h) in (2..12).zip(rest) {
            assert_eq!(h.await.unwrap(), Ok(i * 2));
        }
        assert_eq!(*sizes.lock().unwrap(), vec![1, 4, 4, 2], "at most 4 a batch, in order");
        assert_eq!(b.lock().running, 0);
    }

    #[tokio::test]
    async fn a_failed_batch_answers_each_of_its_callers_and_the_next_batch_runs() {
        let (gate, sizes) = (Arc::new(Semaphore::new(100)), Arc::new(Mutex::new(Vec::new())));
        let b = doubler(gate, sizes, 1);
        assert_eq!(b.call(13).await, Err(BatchError::Failed("unlucky".to_owned())));
        assert_eq!(b.call(5).await, Ok(10));
    }

    #[tokio::test]
    async fn a_panicking_batch_abandons_its_callers_and_the_waiting_ones_and_the_batcher_goes_on() {
        let (gate, sizes) = (Arc::new(Semaphore::new(0)), Arc::new(Mutex::new(Vec::new())));
        let b = doubler(gate.clone(), sizes, 1);
        let doomed = spawn_call(&b, 99);
        until_taken(&b).await;
        let waiting = spawn_call(&b, 3);
        while b.lock().waiting.is_empty() {
            tokio::task::yield_now().await;
        }
        gate.add_permits(100);
        assert_eq!(doomed.await.unwrap(), Err(BatchError::Abandoned));
        assert_eq!(waiting.await.unwrap(), Err(BatchError::Abandoned));
        assert_eq!(b.lock().running, 0);
        assert_eq!(b.call(4).await, Ok(8), "the next call starts afresh");
    }

    #[tokio::test]
    async fn a_caller_that_goes_away_does_not_stop_its_batch() {
        let (gate, sizes) = (Arc::new(Semaphore::new(0)), Arc::new(Mutex::new(Vec::new())));
        let b = doubler(gate.clone(), sizes.clone(), 1);
        let gone = spawn_call(&b, 1);
        until_taken(&b).await;
        gone.abort();
        let stays = spawn_call(&b, 2);
        while b.lock().waiting.is_empty() {
            tokio::task::yield_now().await;
        }
        gate.add_permits(100);
        assert_eq!(stays.await.unwrap(), Ok(4));
        assert_eq!(
            *sizes.lock().unwrap(),
            vec![1, 1],
            "the abandoned caller's batch ran, then the next"
        );
    }

    #[tokio::test]
    async fn callers_that_run_before_the_batch_starts_join_it() {
        let (gate, sizes) = (Arc::new(Semaphore::new(100)), Arc::new(Mutex::new(Vec::new())));
        let b = doubler(gate, sizes.clone(), 2);
        // Spawned together on this one thread: every call is queued before the batch task runs.
        let calls: Vec<_> = (1..=3).map(|i| spawn_call(&b, i)).collect();
        for (i, h) in (1..=3).zip(calls) {
            assert_eq!(h.await.unwrap(), Ok(i * 2));
        }
        assert_eq!(
            *sizes.lock().unwrap(),
            vec![3],
            "one batch; the second one started found none waiting"
        );
        assert_eq!(b.lock().running, 0);
    }
}
