//! Group commit for payment updates: many callbacks, one transaction.
//!
//! Confirming a payment is a dozen statements (payment, history, notice, postings, outbox,
//! inbox); done one callback per transaction, a busy gateway spends its time on round trips and
//! commits, and on SQLite writers queue for the one write lock. Instead, callers hand their
//! update to a [`PaymentWriter`], whose writer task takes whatever has queued up (at most
//! `max_batch`), applies it with [`Store::apply_payment_batch`] — statements per batch, not per
//! callback — and answers each caller. While one batch commits, the next one gathers, so the batch
//! grows with the load and a lone callback is written at once.
//!
//! On PostgreSQL each writer keeps a connection of its own ([`Store::dedicated_writer`]), with
//! its prepared statements. On SQLite the writers run on a thread of their own, with a
//! single-threaded runtime: a batch runs there through SQLite's C API and blocks that thread
//! while it holds the one write lock (which no shared runtime worker may do), and whatever else
//! holds that lock (sealing, log checkpoints) runs beside it instead of waiting behind hundreds of
//! request handlers.
//!
//! Invariants: a caller is answered only after its batch committed (or failed); a batch that
//! fails is retried one job per transaction, so one bad job cannot fail the others and no job is
//! applied twice (a failed batch wrote nothing); a panic fails its batch, not the writer;
//! exactly-once still rests on the database — row locks, guarded updates, unique posting keys —
//! so any number of writers, in any number of processes, is safe.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt;

use tokio::sync::{Mutex, mpsc, oneshot};

use super::inbox::InboxRecord;
use super::payments::{Applied, PaymentKey, PaymentUpdate};
use super::{Store, StoreError, StoreResult};
use crate::payments::batch::{Job, JobOutcome, PaymentRef};

type Request = (Job, oneshot::Sender<StoreResult<JobOutcome>>);

/// How many turns of its runtime the writer waits for more requests before closing a batch.
const LINGER_YIELDS: usize = 4;

/// The queue to this process's payment writers; cheap to clone.
#[derive(Clone, Debug)]
pub struct PaymentWriter {
    queue: mpsc::Sender<Request>,
    /// The runtime of the writers' own thread (SQLite); `None`: they run on the caller's.
    thread: Option<tokio::runtime::Handle>,
}

impl PaymentWriter {
    /// Starts `writers` writer tasks on `store`, each committing at most `max_batch` jobs per
    /// transaction. They stop when the last `PaymentWriter` is dropped.
    pub fn start(store: Store, writers: usize, max_batch: usize) -> std::io::Result<PaymentWriter> {
        let (queue, rx) = mpsc::channel::<Request>(max_batch.max(1) * 4);
        let rx = Arc::new(Mutex::new(rx));
        let (writers, max_batch) = (writers.max(1), max_batch.max(1));
        if !matches!(store, Store::Sqlite(_)) {
            // PostgreSQL locks rows, not the database: nothing waits on a batch's hand-offs, and
            // its connections stay with the runtime that opened them.
            for _ in 0..writers {
                tokio::spawn(run(store.clone(), rx.clone(), max_batch));
            }
            return Ok(PaymentWriter { queue, thread: None });
        }
        let (started, handle) = std::sync::mpsc::channel();
        std::thread::Builder::new().name("payment-writer".into()).spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(runtime) => runtime,
                Err(e) => {
                    let _ = started.send(Err(e));
                    return;
                }
            };
            let _ = started.send(Ok(runtime.handle().clone()));
            runtime.block_on(async move {
                let mut tasks = tokio::task::JoinSet::new();
                for _ in 0..writers {
                    tasks.spawn(run(store.clone(), rx.clone(), max_batch));
                }
                while tasks.join_next().await.is_some() {}
            })
        })?;
        // The thread answers as soon as its runtime is built.
        let thread = handle.recv().map_err(|_| std::io::Error::other("the payment writer thread ended at start"))??;
        Ok(PaymentWriter { queue, thread: Some(thread) })
    }

    /// Runs `task` beside the writers — on their thread on SQLite — for background work that holds
    /// the same write lock (ledger sealing, log checkpoints), so that it, too, is not kept waiting
    /// by request handlers while it holds it. The writers keep running while such a task holds
    /// the service's state: it must end on the service's stop signal or be aborted.
    pub fn spawn<F>(&self, task: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match &self.thread {
            Some(thread) => thread.spawn(task),
            None => tokio::spawn(task),
        }
    }

    /// Applies a provider's (or the clock's) word to a payment, exactly once.
    pub async fn apply(&self, key: PaymentKey<'_>, update: PaymentUpdate) -> StoreResult<Applied> {
        let payment = PaymentRef::from(key);
        match self.submit(Job::Apply { payment, update }).await? {
            JobOutcome::Applied(applied) => Ok(applied),
            JobOutcome::Kept => Err(StoreError::Invariant("a payment update came back as kept".into())),
        }
    }

    /// Keeps a callback that changes nothing in the inbox.
    pub async fn keep(&self, record: InboxRecord) -> StoreResult<()> {
        self.submit(Job::Keep(record)).await.map(|_| ())
    }

    async fn submit(&self, job: Job) -> StoreResult<JobOutcome> {
        let (reply, answer) = oneshot::channel();
        let stopped = || StoreError::Unavailable("the payment writer has stopped".into());
        self.queue.send((job, reply)).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

async fn run(store: Store, rx: Arc<Mutex<mpsc::Receiver<Request>>>, max_batch: usize) {
    let (store, own_pool) = match store.dedicated_writer().await {
        Ok(own) => {
            let own_pool = matches!(own, Store::Postgres(_));
            (own, own_pool)
        }
        Err(e) => {
            // Still correct on the shared pool, only slower to warm up.
            tracing::warn!(error = %e, "a payment writer could not open a connection of its own; it shares the pool");
            (store, false)
        }
    };
    let mut batch: Vec<Request> = Vec::with_capacity(max_batch);
    loop {
        {
            let mut rx = rx.lock().await;
            if rx.recv_many(&mut batch, max_batch).await == 0 {
                if own_pool {
                    store.close().await;
                }
                return;
            }
            // Take in what request handlers hand over in the next moments (a few turns of the
            // writer's runtime: its own thread on SQLite, the shared one on PostgreSQL): fewer,
            // larger commits rewrite the hot pages (inbox and ledger tails) less often.
            for _ in 0..LINGER_YIELDS {
                if batch.len() >= max_batch {
                    break;
                }
                tokio::task::yield_now().await;
                while batch.len() < max_batch
                    && let Ok(request) = rx.try_recv()
                {
                    batch.push(request);
                }
            }
        }
        let (jobs, replies): (Vec<Job>, Vec<_>) = batch.drain(..).unzip();
        let started = std::time::Instant::now();
        // A panic while applying a batch must not stop the writer (every later callback would be
        // answered "retry"): it fails this batch, whose jobs are then tried one by one.
        let result = AssertUnwindSafe(store.apply_payment_batch(&jobs))
            .catch_unwind()
            .await
            .unwrap_or_else(|_| Err(StoreError::Invariant("applying a payment batch panicked".into())));
        tracing::debug!(jobs = jobs.len(), elapsed_us = started.elapsed().as_micros() as u64, "payment batch");
        match result {
            Ok(outcomes) => {
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    let _ = reply.send(Ok(outcome));
                }
            }
            Err(e) if jobs.len() == 1 => {
                let _ = replies.into_iter().next().map(|reply| reply.send(Err(e)));
            }
            Err(e) => {
                tracing::warn!(jobs = jobs.len(), error = %e, "payment batch failed; applying its jobs one by one");
                for (job, reply) in jobs.into_iter().zip(replies) {
                    let one = AssertUnwindSafe(store.apply_payment_batch(std::slice::from_ref(&job)))
                        .catch_unwind()
                        .await
                        .unwrap_or_else(|_| Err(StoreError::Invariant("applying a payment update panicked".into())));
                    let _ = reply.send(one.and_then(|mut o| {
                        o.pop().ok_or_else(|| StoreError::Invariant("a batch of one gave no outcome".into()))
                    }));
                }
            }
        }
    }
}
