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

/// Deliveries claimed per round.
const DELIVERY_BATCH: i64 = 10;

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
    let due = state.store.claim_deliveries(&names, now, lease, DELIVERY_BATCH).await?;
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
