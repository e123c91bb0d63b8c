//! The background job that owns the outcome of payments whose callback never came: it asks the
//! provider about pending payments once they are `providers.status_poll_after_secs` old, and
//! expires those still unconfirmed at their `expires_at`.
//!
//! Invariants: safe on every instance at once — payments are claimed by a database update that
//! pushes their next poll into the future (`FOR UPDATE SKIP LOCKED` on PostgreSQL), so two
//! instances never query the same payment in the same round; outcomes go through the same
//! exactly-once path as callbacks; a provider that cannot be reached is asked again later with
//! backoff, never taken as a failure.

use chrono::{DateTime, Duration, Utc};

use super::state::PaymentEvent;
use crate::app::AppState;
use crate::store::payments::{PaymentKey, PaymentRecord, PaymentUpdate};

/// How many payments one round claims (queried one after another within the lease).
const BATCH: i64 = 20;
/// How long past its expiry a payment stays pending while its provider cannot be reached: its
/// money may have moved, so it is not expired blind.
const UNREACHABLE_GRACE_HOURS: i64 = 24;

/// What a round did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PollReport {
    pub claimed: usize,
    pub settled: usize,
    pub expired: usize,
    pub still_pending: usize,
    pub provider_errors: usize,
}

/// One round at instant `now` (a parameter, so tests can run it at a chosen time).
pub async fn run_once(state: &AppState, now: DateTime<Utc>) -> Result<PollReport, crate::store::StoreError> {
    let cfg = &state.config.providers;
    let interval = Duration::seconds(cfg.status_poll_interval_secs as i64);
    // A lease long enough for this round's provider calls; each payment is rescheduled below.
    let lease = now + Duration::seconds(cfg.http_timeout_secs as i64 * (BATCH + 1)) + interval;
    let claimed = state.store.claim_payments_to_poll(now, lease, BATCH).await?;
    let mut report = PollReport { claimed: claimed.len(), ..PollReport::default() };
    for payment in claimed {
        poll_one(state, &payment, now, &mut report).await?;
    }
    Ok(report)
}

async fn poll_one(
    state: &AppState,
    p: &PaymentRecord,
    now: DateTime<Utc>,
    report: &mut PollReport,
) -> Result<(), crate::store::StoreError> {
    let answer = match state.providers.get(&p.provider) {
        Some(connector) => connector.query(&p.merchant_ref, p.created_at, p.amount).await,
        None => Ok(None),
    };
    let mut unreachable = false;
    match &answer {
        Ok(Some(event)) if !matches!(event.outcome, crate::providers::protocol::event::Outcome::Pending) => {
            super::apply_provider_event(state, event, "status_query", None).await?;
            report.settled += 1;
            return Ok(());
        }
        Err(e) => {
            tracing::warn!(payment = %p.id, provider = %p.provider, error = %e, "status query failed");
            report.provider_errors += 1;
            unreachable = true;
        }
        _ => {}
    }
    let expire_at = if unreachable { p.expires_at + Duration::hours(UNREACHABLE_GRACE_HOURS) } else { p.expires_at };
    if now >= expire_at {
        let update = PaymentUpdate {
            event: PaymentEvent::Expired,
            amount: None,
            provider_txn_id: None,
            cause: "expiry",
            detail: serde_json::json!({"expires_at": p.expires_at.to_rfc3339()}),
            at: now,
            inbox: None,
        };
        state.payment_writer.apply(PaymentKey::Id(&p.id), update).await?;
        report.expired += 1;
    } else {
        // Back off: 1, 2, 4 … intervals, at most 5 minutes, and never past the expiry.
        let cfg = &state.config.providers;
        let factor = 1i64 << p.poll_attempts.clamp(0, 8);
        let wait = Duration::seconds((cfg.status_poll_interval_secs as i64 * factor).min(300));
        let next = if now >= p.expires_at { now + wait } else { (now + wait).min(p.expires_at) };
        state.store.reschedule_poll(&p.id, next).await?;
        report.still_pending += 1;
    }
    Ok(())
}
