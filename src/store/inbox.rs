//! The callback inbox: every callback as received, and what was done with it.
//!
//! Invariants: a callback's row commits in the same transaction as the change it causes (so no
//! change exists without its callback), or — when it causes none or its processing failed — in
//! the payment writer's next batch ([`super::group_commit`]): every callback received is kept
//! whatever its outcome; the stored body is masked
//! (citizens' identifiers) and its SHA-256 is of the original bytes.

use chrono::{DateTime, Utc};

use super::{Store, StoreResult, on_pool};

#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize, utoipa::ToSchema)]
pub struct InboxRecord {
    pub id: String,
    pub provider: String,
    pub method: String,
    pub path: String,
    pub query: String,
    /// JSON object of the headers that matter (content type, signature, user agent).
    pub headers: String,
    /// The body as text (lossy UTF-8), citizens' identifiers masked.
    pub body: String,
    pub body_sha256: String,
    pub body_bytes: i64,
    pub source_addr: String,
    pub received_at: DateTime<Utc>,
    /// `verified` or `rejected`; empty while being processed.
    pub verification: Option<String>,
    /// What was done: `applied:succeeded`, `duplicate`, `amount_mismatch`, `rejected`…
    pub outcome: Option<String>,
    pub detail: Option<String>,
    pub merchant_ref: Option<String>,
    pub processed_at: Option<DateTime<Utc>>,
}

pub(crate) const COLUMNS: &str = "id, provider, method, path, query, headers, body, body_sha256, body_bytes, source_addr, \
     received_at, verification, outcome, detail, merchant_ref, processed_at";

impl Store {
    /// Newest first; `before` is the cursor (an id from the previous page).
    pub async fn list_inbox(
        &self,
        provider: Option<&str>,
        merchant_ref: Option<&str>,
        before: Option<&str>,
        limit: i64,
    ) -> StoreResult<Vec<InboxRecord>> {
        Ok(on_pool!(self, pool => {
            sqlx::query_as(&format!(
                "SELECT {COLUMNS} FROM callback_inbox WHERE ($1 IS NULL OR provider = $1) \
                 AND ($2 IS NULL OR merchant_ref = $2) AND ($3 IS NULL OR id < $3) ORDER BY id DESC LIMIT $4"
            ))
            .bind(provider)
            .bind(merchant_ref)
            .bind(before)
            .bind(limit)
            .fetch_all(pool)
            .await
        })?)
    }

    pub async fn get_inbox(&self, id: &str) -> StoreResult<Option<InboxRecord>> {
        Ok(on_pool!(self, pool => {
            sqlx::query_as(&format!("SELECT {COLUMNS} FROM callback_inbox WHERE id = $1"))
                .bind(id)
                .fetch_optional(pool)
                .await
        })?)
    }
}
