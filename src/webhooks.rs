//! Delivery of outgoing events to downstream systems (the dossier system, a treasury adapter).
//!
//! Invariants: events come only from the transactional outbox, so an event is sent if and only
//! if the change it announces committed; each delivery is signed with `Paygate-Signature`
//! (`t=<unix>,v1=<HMAC-SHA256(secret, "<t>.<body>")>`), carries the event id and the notice's
//! sequence number in its body, and is retried with exponential backoff (capped at
//! `webhooks.max_backoff_secs`) until the endpoint answers 2xx; deliveries are claimed in the
//! database, so several instances never send the same one at the same time.

use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};

use crate::app::AppState;
use crate::providers::protocol::signature;

/// Deliveries claimed per round.
const DELIVERY_BATCH: i64 = 10;

/// Transfers chained per sealing transaction.
pub const SEAL_BATCH: i64 = 500;

/// What a round did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryReport {
    pub attempted: usize,
    pub delivered: usize,
    pub failed: usize,
}

/// One round at `now`: plan missing deliveries, send those due.
pub async fn deliver_once(
    state: &AppState,
    http: &reqwest::Client,
    now: DateTime<Utc>,
) -> Result<DeliveryReport, crate::store::StoreError> {
    let endpoints = &state.config.webhooks.endpoints;
    if endpoints.is_empty() {
        return Ok(DeliveryReport::default());
    }
    let names: Vec<String> = endpoints.iter().map(|e| e.name.clone()).collect();
    state.store.plan_deliveries(&names, now).await?;
    // The lease covers every send of the batch, one after another, each within the timeout.
    let lease = now + Duration::seconds(state.config.providers.http_timeout_secs as i64 * (DELIVERY_BATCH + 1));
    let due = state.store.claim_deliveries(now, lease, DELIVERY_BATCH).await?;
    let mut report = DeliveryReport { attempted: due.len(), ..DeliveryReport::default() };
    for d in due {
        let Some(endpoint) = endpoints.iter().find(|e| e.name == d.endpoint) else { continue };
        let t = Utc::now().timestamp();
        let header = signature::sign(&endpoint.secret, t, d.payload.as_bytes());
        let sent = http
            .post(&endpoint.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(signature::HEADER_NAME, header)
            .header("Paygate-Event-Id", &d.event_id)
            .body(d.payload.clone())
            .send()
            .await;
        let outcome = match sent {
            Ok(resp) if resp.status().is_success() => Ok(Utc::now()),
            Ok(resp) => Err(format!("HTTP {}", resp.status())),
            Err(e) => Err(e.without_url().to_string()),
        };
        match outcome {
            Ok(at) => {
                report.delivered += 1;
                state.store.record_delivery(&d.event_id, &d.endpoint, Ok(at)).await?;
            }
            Err(error) => {
                report.failed += 1;
                let backoff = 2i64.saturating_pow(d.attempts.clamp(0, 30) as u32);
                let wait = Duration::seconds(backoff.min(state.config.webhooks.max_backoff_secs as i64));
                tracing::warn!(event = %d.event_id, endpoint = %d.endpoint, %error, attempts = d.attempts,
                    "webhook delivery failed; retrying with backoff");
                state.store.record_delivery(&d.event_id, &d.endpoint, Err((error, now + wait))).await?;
            }
        }
    }
    Ok(report)
}

/// How often the SQLite write-ahead log is checkpointed in the background.
const CHECKPOINT_EVERY: StdDuration = StdDuration::from_millis(100);

/// Checkpoints the SQLite write-ahead log every [`CHECKPOINT_EVERY`] until `stop` turns true
/// (nothing on PostgreSQL). Frequent passive checkpoints keep what a writer's own automatic
/// checkpoint has left to copy small, so no payment batch stalls on a large one.
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

/// Runs the background work every instance does: payment status rounds, ledger sealing,
/// webhook deliveries and the purge of expired idempotency keys, until `stop` turns true.
pub async fn run_background(state: AppState, mut stop: tokio::sync::watch::Receiver<bool>) {
    let http = match reqwest::Client::builder()
        .timeout(StdDuration::from_secs(state.config.providers.http_timeout_secs))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the webhook HTTP client; background work stopped");
            return;
        }
    };
    let seal_every = StdDuration::from_millis(state.config.ledger.seal_interval_ms);
    let poll_every = StdDuration::from_secs(state.config.providers.status_poll_interval_secs);
    let mut last_poll = std::time::Instant::now() - poll_every;
    loop {
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
        if last_poll.elapsed() >= poll_every {
            last_poll = std::time::Instant::now();
            match crate::payments::poller::run_once(&state, crate::store::now()).await {
                Ok(r) if r.claimed > 0 => tracing::info!(?r, "payment status round"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "payment status round failed"),
            }
            if let Err(e) = deliver_once(&state, &http, crate::store::now()).await {
                tracing::warn!(error = %e, "webhook delivery round failed");
            }
            let ttl = chrono::Duration::seconds(state.config.idempotency.ttl_secs as i64);
            if let Err(e) = state.store.purge_idempotency_keys(crate::store::now() - ttl).await {
                tracing::warn!(error = %e, "could not purge expired idempotency keys");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(seal_every) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}
