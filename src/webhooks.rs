//! Delivery of outgoing events to downstream systems (the dossier system, a treasury adapter).
//!
//! Invariants: events come only from the transactional outbox, so an event is sent if and only
//! if the change it announces committed; each delivery is signed with `Paygate-Signature`
//! (`t=<unix>,v1=<HMAC-SHA256(secret, "<t>.<body>")>`), carries the event id and the notice's
//! sequence number in its body, and is retried with exponential backoff (capped at
//! `webhooks.max_backoff_secs`) until the endpoint answers 2xx; deliveries are claimed in the
//! database, so several instances never send the same one at the same time.

use chrono::{DateTime, Duration, Utc};

use crate::app::AppState;
use crate::providers::protocol::signature;

/// Deliveries claimed, and sent at once, per batch; a round takes batch after batch until none is
/// due or its [`ROUND_BUDGET`] is spent, so a backlog (the receiver was down for an hour) is worked
/// off at the receivers' pace, not a batch per round.
const DELIVERY_BATCH: i64 = 16;

/// What a round did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryReport {
    pub attempted: usize,
    pub delivered: usize,
    pub failed: usize,
}

/// Which events a round gives their missing deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Planning {
    /// Every event in the outbox: the first round after start (this instance's endpoints may be
    /// new) and one round an hour ([`FULL_PLANNING_EVERY`]).
    Everything,
    /// Events made in the last [`PLANNING_LOOKBACK`]: the other rounds, which then read a few
    /// recent events, not the whole outbox.
    Recent,
}

/// How far back an ordinary round looks for events without deliveries. An event's id is made
/// moments before the transaction that writes it commits, so an event made earlier and committed
/// since is the rare one left to the hourly full round.
pub const PLANNING_LOOKBACK: Duration = Duration::minutes(10);

/// How often a round plans over the whole outbox.
pub const FULL_PLANNING_EVERY: Duration = Duration::hours(1);

/// How long a round goes on claiming batches: a receiver that hangs holds each batch for the HTTP
/// timeout, and a round that ran on through a large backlog would plan no new events meanwhile.
/// The next round, one period later, takes up what is left.
pub const ROUND_BUDGET: std::time::Duration = std::time::Duration::from_secs(60);

/// One round at `now`: plan missing deliveries, then send the deliveries due by `now`, a batch at a
/// time, the sends of a batch at once, for at most [`ROUND_BUDGET`]. Each is attempted once per
/// round: one that fails is due again a backoff (at least a second) after its attempt ended, later
/// than `now`. The sends of a batch go out together, so a receiver orders a notice's events by their
/// `sequence`, not by arrival.
pub async fn deliver_once(
    state: &AppState,
    http: &reqwest::Client,
    now: DateTime<Utc>,
    planning: Planning,
) -> Result<DeliveryReport, crate::store::StoreError> {
    let endpoints = &state.config.webhooks.endpoints;
    if endpoints.is_empty() {
        return Ok(DeliveryReport::default());
    }
    let names: Vec<String> = endpoints.iter().map(|e| e.name.clone()).collect();
    let from_id = match planning {
        Planning::Everything => String::new(),
        Planning::Recent => crate::store::outbox::event_id_floor(now - PLANNING_LOOKBACK),
    };
    state.store.plan_deliveries(&names, now, &from_id).await?;
    let started = std::time::Instant::now();
    // The round's clock: `now`, moved on with real time.
    let clock = || now + Duration::from_std(started.elapsed()).unwrap_or_default();
    let mut report = DeliveryReport::default();
    loop {
        // Each send ends within the HTTP client's timeout; the lease leaves as much again.
        let lease = clock() + Duration::seconds(state.config.providers.http_timeout_secs as i64 * 2);
        // Due by the round's start: an attempt made in this round is not due again within it.
        let due = state.store.claim_deliveries(&names, now, lease, DELIVERY_BATCH).await?;
        let claimed = due.len();
        let sends = due.into_iter().filter_map(|d| {
            let endpoint = endpoints.iter().find(|e| e.name == d.endpoint)?;
            Some(async move {
                let outcome = send(http, endpoint, &d).await;
                (d, outcome)
            })
        });
        // Every outcome is recorded before an error ends the round: one left unrecorded would be
        // sent again once its lease ran out.
        let mut first_error = None;
        for (d, outcome) in futures::future::join_all(sends).await {
            report.attempted += 1;
            let recorded = match outcome {
                Ok(at) => {
                    report.delivered += 1;
                    state.store.record_delivery(&d.event_id, &d.endpoint, Ok(at)).await
                }
                Err(error) => {
                    report.failed += 1;
                    let backoff = 2i64.saturating_pow(d.attempts.clamp(0, 30) as u32);
                    let wait = backoff.min(state.config.webhooks.max_backoff_secs as i64).max(1);
                    tracing::warn!(event = %d.event_id, endpoint = %d.endpoint, %error, attempts = d.attempts,
                        "webhook delivery failed; retrying with backoff");
                    let retry_at = clock() + Duration::seconds(wait);
                    state.store.record_delivery(&d.event_id, &d.endpoint, Err((error, retry_at))).await
                }
            };
            if let Err(e) = recorded {
                first_error.get_or_insert(e);
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        if (claimed as i64) < DELIVERY_BATCH || started.elapsed() >= ROUND_BUDGET {
            return Ok(report);
        }
    }
}

/// One signed attempt; `Ok(when it was acknowledged)` on a 2xx.
async fn send(
    http: &reqwest::Client,
    endpoint: &crate::config::WebhookEndpoint,
    d: &crate::store::outbox::DueDelivery,
) -> Result<DateTime<Utc>, String> {
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
    match sent {
        Ok(resp) if resp.status().is_success() => Ok(Utc::now()),
        Ok(resp) => Err(format!("HTTP {}", resp.status())),
        Err(e) => Err(e.without_url().to_string()),
    }
}
