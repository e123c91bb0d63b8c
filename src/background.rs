//! The work every instance does in the background, each on a timer until the service stops:
//! ledger sealing, payment status rounds, webhook deliveries, the purge of expired idempotency
//! keys, and (SQLite) write-ahead-log checkpoints.
//!
//! Invariants: every round is safe on any number of instances at once — sealing under its lock,
//! status rounds and deliveries by row claims in the database — so no instance is special; a
//! failed round is logged and tried again on the next tick, never ends the loop; the loops stop
//! when `stop` turns true.

use std::time::Duration as StdDuration;

use crate::app::AppState;

pub use crate::store::ledger::SEAL_BATCH;

/// How often the SQLite write-ahead log is checkpointed in the background.
const CHECKPOINT_EVERY: StdDuration = StdDuration::from_millis(100);

/// Checkpoints the SQLite write-ahead log every [`CHECKPOINT_EVERY`] until `stop` turns true
/// (nothing on PostgreSQL), so that no payment batch stalls on a checkpoint of its own (see
/// [`crate::store::Store::checkpoint_wal`]). Started beside the payment writers, on their thread,
/// like the sealer, since it sometimes holds their write queue.
pub async fn run_checkpoints(state: AppState, mut stop: tokio::sync::watch::Receiver<bool>) {
    if state.store.backend() != "sqlite" {
        return;
    }
    let mut every = tokio::time::interval(CHECKPOINT_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        if let Err(e) = state.store.checkpoint_wal().await {
            tracing::warn!(error = %e, "WAL checkpoint failed");
        }
    }
}

/// Seals the ledger every `ledger.seal_interval_ms` until `stop` turns true. It is started beside
/// the payment writers ([`crate::store::group_commit::PaymentWriter::spawn`]): on SQLite a sealing
/// round holds the same write lock as a payment batch, and on the writers' thread its statements
/// are not queued behind request handlers while it holds it. (On SQLite payment batches chain
/// their own transfers; these rounds chain what other writers leave, and usually find nothing.)
pub async fn run_sealing(state: AppState, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut seal_every = tokio::time::interval(StdDuration::from_millis(state.config.ledger.seal_interval_ms.max(1)));
    seal_every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = seal_every.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        // Small batches, so that payments confirmed meanwhile wait at most one short batch for
        // the writer (SQLite) and the chain catches up within the round.
        loop {
            match state.store.seal_ledger(SEAL_BATCH).await {
                Ok(n) if n as i64 == SEAL_BATCH => continue,
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "ledger sealing round failed");
                    break;
                }
            }
        }
    }
}

/// The period of the status and delivery rounds, `providers.status_poll_interval_secs`, the first
/// round one period after start, not at once: work left by a restart waits at most one period (5 s
/// by default), and a test that drives the rounds itself (with a long period) never has a round of
/// the service's own beside it.
fn every_round(state: &AppState) -> tokio::time::Interval {
    let period = StdDuration::from_secs(state.config.providers.status_poll_interval_secs);
    let mut every = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    every
}

/// Sends the outgoing webhooks due, a round every `providers.status_poll_interval_secs`, until
/// `stop` turns true. A loop of its own, so that a receiver that is slow or down (each attempt
/// may take the HTTP timeout) delays only deliveries, never the payment status rounds.
pub async fn run_deliveries(state: AppState, mut stop: tokio::sync::watch::Receiver<bool>) {
    if state.config.webhooks.endpoints.is_empty() {
        return;
    }
    let http = match reqwest::Client::builder()
        .timeout(StdDuration::from_secs(state.config.providers.http_timeout_secs))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the webhook HTTP client; webhook delivery stopped");
            return;
        }
    };
    let mut every = every_round(&state);
    let mut last_full: Option<chrono::DateTime<chrono::Utc>> = None;
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let now = crate::store::now();
        let planning = match last_full {
            Some(at) if now - at < crate::webhooks::FULL_PLANNING_EVERY => crate::webhooks::Planning::Recent,
            _ => crate::webhooks::Planning::Everything,
        };
        match crate::webhooks::deliver_once(&state, &http, now, planning).await {
            Ok(_) if planning == crate::webhooks::Planning::Everything => last_full = Some(now),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "webhook delivery round failed"),
        }
    }
}

/// Runs the rounds every instance does every `providers.status_poll_interval_secs`: payment
/// status queries and the purge of expired idempotency keys, until `stop` turns true.
pub async fn run_background(state: AppState, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut every = every_round(&state);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        match crate::payments::poller::run_once(&state, crate::store::now()).await {
            Ok(r) if r.claimed > 0 => tracing::info!(?r, "payment status round"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "payment status round failed"),
        }
        let ttl = chrono::Duration::seconds(state.config.idempotency.ttl_secs as i64);
        if let Err(e) = state.store.purge_idempotency_keys(crate::store::now() - ttl).await {
            tracing::warn!(error = %e, "could not purge expired idempotency keys");
        }
    }
}
