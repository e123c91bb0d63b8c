//! The transactional outbox of events for downstream systems, and their deliveries.
//!
//! Invariants: an event is inserted in the same transaction as the change it announces (so it
//! exists if and only if the change committed) and at most once (`dedupe_key` is unique); its
//! `notice_seq` numbers a notice's events 1, 2, 3… so receivers can order them; deliveries are
//! claimed by pushing `next_attempt_at` forward in one statement (`FOR UPDATE SKIP LOCKED` on
//! PostgreSQL), so several instances never send the same delivery at the same time.

use chrono::{DateTime, Utc};

use super::{Store, StoreError, StoreResult, on_pool};

/// Inserts an outbox event inside the transaction `$tx`.
macro_rules! insert_event {
    ($tx:ident, $dedupe_key:expr, $notice_code:expr, $event_type:expr, $payload:expr, $at:expr) => {{
        let notice_code: &str = $notice_code;
        // Holds the notice's row for the rest of the transaction, so two events of one notice
        // never read the same next sequence number.
        sqlx::query("UPDATE notices SET code = code WHERE code = $1").bind(notice_code).execute(&mut *$tx).await?;
        let seq: i64 = sqlx::query_scalar(
            "SELECT CAST(COALESCE(MAX(notice_seq), 0) + 1 AS BIGINT) FROM outbox_events WHERE notice_code = $1",
        )
        .bind(notice_code)
        .fetch_one(&mut *$tx)
        .await?;
        let id = format!("ev_{}", uuid::Uuid::now_v7().simple());
        let payload = $crate::payments::batch::outbox_payload($payload, &id, $event_type, notice_code, seq);
        sqlx::query(
            "INSERT INTO outbox_events (id, dedupe_key, notice_code, notice_seq, event_type, payload, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (dedupe_key) DO NOTHING",
        )
        .bind(&id)
        .bind($dedupe_key)
        .bind(notice_code)
        .bind(seq)
        .bind($event_type)
        .bind(payload)
        .bind($at)
        .execute(&mut *$tx)
        .await?;
    }};
}
pub(crate) use insert_event;

#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize, utoipa::ToSchema)]
pub struct EventRecord {
    pub id: String,
    pub notice_code: String,
    pub notice_seq: i64,
    pub event_type: String,
    /// The JSON body sent to receivers.
    pub payload: String,
    pub created_at: DateTime<Utc>,
}

/// A delivery due now, with what to send.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DueDelivery {
    pub event_id: String,
    pub endpoint: String,
    pub attempts: i32,
    pub payload: String,
}

#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize, utoipa::ToSchema)]
pub struct DeliveryRecord {
    pub event_id: String,
    pub endpoint: String,
    pub status: String,
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    pub last_error: Option<String>,
    pub delivered_at: Option<DateTime<Utc>>,
}

/// The least id of an event made at or after `t`. Event ids are `ev_` and a UUIDv7 in lowercase hex,
/// whose first 12 digits are its Unix time in milliseconds, so ids sort by the time they were made
/// and this prefix sorts before every id made from `t` on.
pub fn event_id_floor(t: DateTime<Utc>) -> String {
    format!("ev_{:012x}", t.timestamp_millis().max(0))
}

impl Store {
    /// Creates the missing pending deliveries to each of `endpoints` of every event whose id is at
    /// least `from_id` (`""`: every event), looked up through the events' primary key, so a round
    /// that looks only at recent events does not read the whole outbox.
    pub async fn plan_deliveries(&self, endpoints: &[String], at: DateTime<Utc>, from_id: &str) -> StoreResult<u64> {
        let mut created = 0;
        for endpoint in endpoints {
            created += on_pool!(self, pool => {
                sqlx::query(
                    "INSERT INTO webhook_deliveries (event_id, endpoint, status, attempts, next_attempt_at) \
                     SELECT e.id, $1, 'pending', 0, $2 FROM outbox_events e WHERE e.id >= $3 AND NOT EXISTS \
                     (SELECT 1 FROM webhook_deliveries d WHERE d.event_id = e.id AND d.endpoint = $1) \
                     ON CONFLICT (event_id, endpoint) DO NOTHING",
                )
                .bind(endpoint)
                .bind(at)
                .bind(from_id)
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
            })?;
        }
        Ok(created)
    }

    /// Claims up to `limit` deliveries to `endpoints` due at `now`, leasing them until
    /// `lease_until`. Deliveries to an endpoint no longer configured stay pending, unclaimed: they
    /// neither count attempts nor take the place of deliveries that can be made.
    pub async fn claim_deliveries(
        &self,
        endpoints: &[String],
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: i64,
    ) -> StoreResult<Vec<DueDelivery>> {
        let (configured, skip_locked) = match self {
            Store::Sqlite(_) => ("SELECT value FROM json_each($4)", ""),
            Store::Postgres(_) => ("SELECT json_array_elements_text(CAST($4 AS json))", " FOR UPDATE SKIP LOCKED"),
        };
        let claim = format!(
            "UPDATE webhook_deliveries SET next_attempt_at = $2, attempts = attempts + 1 \
             WHERE (event_id, endpoint) IN (SELECT event_id, endpoint FROM webhook_deliveries \
             WHERE status = 'pending' AND next_attempt_at <= $1 AND endpoint IN ({configured}) \
             ORDER BY next_attempt_at LIMIT $3{skip_locked}) \
             RETURNING event_id, endpoint, attempts"
        );
        let endpoints = serde_json::to_string(endpoints).map_err(|e| StoreError::Invariant(e.to_string()))?;
        let claimed: Vec<(String, String, i32)> = on_pool!(self, pool => {
            sqlx::query_as(&claim).bind(now).bind(lease_until).bind(limit).bind(&endpoints).fetch_all(pool).await
        })?;
        let mut due = Vec::with_capacity(claimed.len());
        for (event_id, endpoint, attempts) in claimed {
            let payload: Option<String> = on_pool!(self, pool => {
                sqlx::query_scalar("SELECT payload FROM outbox_events WHERE id = $1")
                    .bind(&event_id)
                    .fetch_optional(pool)
                    .await
            })?;
            if let Some(payload) = payload {
                due.push(DueDelivery { event_id, endpoint, attempts, payload });
            }
        }
        Ok(due)
    }

    /// Records the outcome of one attempt: delivered, or retry at `retry_at`.
    pub async fn record_delivery(
        &self,
        event_id: &str,
        endpoint: &str,
        outcome: Result<DateTime<Utc>, (String, DateTime<Utc>)>,
    ) -> StoreResult<()> {
        on_pool!(self, pool => {
            match &outcome {
                Ok(at) => sqlx::query(
                    "UPDATE webhook_deliveries SET status = 'delivered', delivered_at = $3, last_error = NULL \
                     WHERE event_id = $1 AND endpoint = $2",
                )
                .bind(event_id)
                .bind(endpoint)
                .bind(*at)
                .execute(pool)
                .await
                .map(|_| ()),
                Err((error, retry_at)) => sqlx::query(
                    "UPDATE webhook_deliveries SET last_error = $3, next_attempt_at = $4 \
                     WHERE event_id = $1 AND endpoint = $2 AND status = 'pending'",
                )
                .bind(event_id)
                .bind(endpoint)
                .bind(error)
                .bind(*retry_at)
                .execute(pool)
                .await
                .map(|_| ()),
            }
        })?;
        Ok(())
    }

    /// Makes an event's deliveries pending again, due at `at`, their backoff started over (an admin
    /// re-send). Returns how many deliveries were reset.
    pub async fn resend_event(&self, event_id: &str, at: DateTime<Utc>) -> StoreResult<u64> {
        Ok(on_pool!(self, pool => {
            sqlx::query(
                "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = $2, delivered_at = NULL, \
                 attempts = 0 WHERE event_id = $1",
            )
            .bind(event_id)
            .bind(at)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })?)
    }

    pub async fn list_events(&self, notice_code: Option<&str>, limit: i64) -> StoreResult<Vec<EventRecord>> {
        Ok(on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT id, notice_code, notice_seq, event_type, payload, created_at FROM outbox_events \
                 WHERE ($1 IS NULL OR notice_code = $1) ORDER BY created_at, notice_seq LIMIT $2",
            )
            .bind(notice_code)
            .bind(limit)
            .fetch_all(pool)
            .await
        })?)
    }

    pub async fn event_deliveries(&self, event_id: &str) -> StoreResult<Vec<DeliveryRecord>> {
        Ok(on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT event_id, endpoint, status, attempts, next_attempt_at, last_error, delivered_at \
                 FROM webhook_deliveries WHERE event_id = $1 ORDER BY endpoint",
            )
            .bind(event_id)
            .fetch_all(pool)
            .await
        })?)
    }
}
