//! Idempotency-key records.
//!
//! Invariants: one row per (scope, key), enforced by the primary key, so across any number of
//! processes exactly one request claims a key; a claimed row is `in_progress` until its response
//! is stored (`completed`) or it is released; rows older than the TTL, and `in_progress` rows
//! older than the lock timeout (their process died), may be reclaimed.

use chrono::{DateTime, Utc};

use super::{Store, StoreResult, now, on_pool};

/// A stored first response.
#[derive(Debug, Clone)]
pub struct StoredResponse {
    pub status: u16,
    /// `(name, value)` pairs of the headers worth replaying.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// What happened when a request tried to claim its key.
#[derive(Debug)]
pub enum Claim {
    /// This request owns the key and must run, then `complete` or `release` it.
    Claimed,
    /// An earlier request with the same key and body finished; replay its response.
    Replay(StoredResponse),
    /// The same key was used with another request.
    Mismatch,
    /// An earlier request with this key is still running.
    InProgress,
}

#[derive(sqlx::FromRow)]
struct Row {
    request_hash: String,
    state: String,
    response_status: Option<i32>,
    response_headers: Option<String>,
    response_body: Option<Vec<u8>>,
}

impl Store {
    /// Claims `(scope, key)` for a request whose hash is `request_hash`.
    pub async fn claim_idempotency_key(
        &self,
        scope: &str,
        key: &str,
        request_hash: &str,
        expired_before: DateTime<Utc>,
        stale_before: DateTime<Utc>,
    ) -> StoreResult<Claim> {
        // Two rounds at most: a row can vanish between our insert and our read when its owner
        // released it; then we try to claim it again.
        for _ in 0..3 {
            let created_at = now();
            let claimed = on_pool!(self, pool => {
                sqlx::query(
                    "DELETE FROM idempotency_keys WHERE scope = $1 AND key = $2 \
                     AND (created_at < $3 OR (state = 'in_progress' AND created_at < $4))",
                )
                .bind(scope)
                .bind(key)
                .bind(expired_before)
                .bind(stale_before)
                .execute(pool)
                .await?;
                sqlx::query(
                    "INSERT INTO idempotency_keys (scope, key, request_hash, state, created_at) \
                     VALUES ($1, $2, $3, 'in_progress', $4) ON CONFLICT (scope, key) DO NOTHING",
                )
                .bind(scope)
                .bind(key)
                .bind(request_hash)
                .bind(created_at)
                .execute(pool)
                .await
                .map(|r| r.rows_affected() == 1)
            })?;
            if claimed {
                return Ok(Claim::Claimed);
            }
            let row: Option<Row> = on_pool!(self, pool => {
                sqlx::query_as(
                    "SELECT request_hash, state, response_status, response_headers, response_body \
                     FROM idempotency_keys WHERE scope = $1 AND key = $2",
                )
                .bind(scope)
                .bind(key)
                .fetch_optional(pool)
                .await
            })?;
            let Some(row) = row else { continue };
            if row.request_hash != request_hash {
                return Ok(Claim::Mismatch);
            }
            if row.state != "completed" {
                return Ok(Claim::InProgress);
            }
            let headers =
                row.response_headers.as_deref().and_then(|h| serde_json::from_str(h).ok()).unwrap_or_default();
            return Ok(Claim::Replay(StoredResponse {
                status: row.response_status.unwrap_or(500) as u16,
                headers,
                body: row.response_body.unwrap_or_default(),
            }));
        }
        Ok(Claim::InProgress)
    }

    /// Stores the response of the request that claimed `(scope, key)`.
    pub async fn complete_idempotency_key(&self, scope: &str, key: &str, response: &StoredResponse) -> StoreResult<()> {
        let headers = serde_json::to_string(&response.headers).expect("headers serialise");
        on_pool!(self, pool => {
            sqlx::query(
                "UPDATE idempotency_keys SET state = 'completed', response_status = $3, response_headers = $4, \
                 response_body = $5, completed_at = $6 WHERE scope = $1 AND key = $2 AND state = 'in_progress'",
            )
            .bind(scope)
            .bind(key)
            .bind(i32::from(response.status))
            .bind(headers)
            .bind(&response.body)
            .bind(now())
            .execute(pool)
            .await
            .map(|_| ())
        })?;
        Ok(())
    }

    /// Gives up a claim without a stored response (the request failed in a way a retry may fix).
    pub async fn release_idempotency_key(&self, scope: &str, key: &str) -> StoreResult<()> {
        on_pool!(self, pool => {
            sqlx::query("DELETE FROM idempotency_keys WHERE scope = $1 AND key = $2 AND state = 'in_progress'")
                .bind(scope)
                .bind(key)
                .execute(pool)
                .await
                .map(|_| ())
        })?;
        Ok(())
    }

    /// Deletes keys created before `before`; returns how many.
    pub async fn purge_idempotency_keys(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        Ok(on_pool!(self, pool => {
            sqlx::query("DELETE FROM idempotency_keys WHERE created_at < $1")
                .bind(before)
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        })?)
    }
}
