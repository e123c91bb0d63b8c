//! Payments, their history, and the notice they pay.
//!
//! Invariants: a payment's amount never changes after creation; every status change goes
//! through [`crate::payments::state::decide`] inside one transaction that holds the payment's
//! row (PostgreSQL `FOR UPDATE`, SQLite `BEGIN IMMEDIATE`), records a `payment_events` row, and —
//! for a success — marks the notice paid, so concurrent or duplicate deliveries apply once; a
//! second success for a paid notice is an over-payment and a success after the payment ended is
//! a late success, both kept with `refund_due`, never dropped.

use chrono::{DateTime, Utc};

use super::{Store, StoreError, StoreResult, begin_write, now, on_pool};
use crate::ledger::Confirmation;
use crate::payments::batch::{Job, JobOutcome, PaymentRef};
use crate::payments::state::{PaymentEvent, PaymentStatus};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PaymentRecord {
    pub id: String,
    pub merchant_ref: String,
    pub notice_id: String,
    pub notice_code: String,
    pub provider: String,
    pub amount: i64,
    pub status: String,
    pub provider_txn_id: Option<String>,
    pub redirect_url: Option<String>,
    pub qr_payload: Option<String>,
    pub return_url: Option<String>,
    pub locale: String,
    pub overpayment: bool,
    pub late_success: bool,
    pub refund_due: i64,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub next_poll_at: DateTime<Utc>,
    pub poll_attempts: i32,
    /// Late interest included in `amount` (the rest is the notice's principal).
    pub interest_part: i64,
    pub interest_budget_code: Option<String>,
    /// Refunds the provider confirmed, đồng.
    pub refunded_amount: i64,
}

impl PaymentRecord {
    pub fn status(&self) -> PaymentStatus {
        PaymentStatus::parse(&self.status).unwrap_or(PaymentStatus::Pending)
    }
}

#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize, utoipa::ToSchema)]
pub struct PaymentEventRecord {
    pub seq: i64,
    pub from_status: Option<String>,
    pub to_status: String,
    /// What caused it: `created`, `callback`, `status_query`, `expiry`, `provider_error`, `late_success`…
    pub cause: String,
    /// JSON detail: provider codes, reasons.
    pub detail: Option<String>,
    pub at: DateTime<Utc>,
}

/// How to find a payment.
#[derive(Debug, Clone, Copy)]
pub enum PaymentKey<'a> {
    Id(&'a str),
    MerchantRef(&'a str),
}

/// A provider's word (or the clock's) about one payment.
#[derive(Debug, Clone)]
pub struct PaymentUpdate {
    pub event: PaymentEvent,
    /// The amount the provider reports; `None` for events without one (expiry).
    pub amount: Option<i64>,
    pub provider_txn_id: Option<String>,
    pub cause: &'static str,
    pub detail: serde_json::Value,
    pub at: DateTime<Utc>,
    /// The callback that reports this, stored in the same transaction with its outcome.
    pub inbox: Option<super::inbox::InboxRecord>,
}

/// What applying an update did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The payment moved to `status`. For a success: whether this payment paid its notice, or
    /// is an over-payment / late success held for refund.
    Moved {
        status: PaymentStatus,
        paid_notice: bool,
        refund_due: i64,
    },
    /// Already in that state: nothing done.
    Duplicate(PaymentStatus),
    /// Stale or out of order: nothing done.
    Stale(PaymentStatus),
    /// Money arrived after the payment ended; held for refund.
    LateSuccess(PaymentStatus),
    NotFound,
    /// The reported amount is not the payment's amount: nothing done.
    AmountMismatch {
        expected: i64,
    },
}

impl Applied {
    /// What was done, as recorded in the inbox.
    pub fn label(&self) -> String {
        match self {
            Applied::Moved { status, .. } => format!("applied:{}", status.as_str()),
            Applied::Duplicate(_) => "duplicate".into(),
            Applied::Stale(_) => "stale".into(),
            Applied::LateSuccess(_) => "late_success".into(),
            Applied::NotFound => "unknown_payment".into(),
            Applied::AmountMismatch { .. } => "amount_mismatch".into(),
        }
    }
}

pub(crate) const PAYMENT_COLUMNS: &str = "id, merchant_ref, notice_id, notice_code, provider, amount, status, provider_txn_id, \
     redirect_url, qr_payload, return_url, locale, overpayment, late_success, refund_due, created_at, expires_at, \
     updated_at, next_poll_at, poll_attempts, interest_part, interest_budget_code, refunded_amount";

impl Store {
    /// `FOR UPDATE` where the backend locks rows; SQLite's IMMEDIATE transaction already holds the database.
    fn lock_clause(&self) -> &'static str {
        match self {
            Store::Sqlite(_) => "",
            Store::Postgres(_) => " FOR UPDATE",
        }
    }

    /// The row-lock suffix for other store modules.
    pub(crate) fn lock_clause_pub(&self) -> &'static str {
        self.lock_clause()
    }

    /// Stores a new pending payment and its `created` event.
    pub async fn insert_payment(&self, p: &PaymentRecord) -> StoreResult<()> {
        let detail = serde_json::json!({"amount": p.amount, "provider": p.provider}).to_string();
        begin_write!(self, pool, tx => {
            sqlx::query(&format!(
                "INSERT INTO payments ({PAYMENT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, \
                 $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23)"
            ))
            .bind(&p.id)
            .bind(&p.merchant_ref)
            .bind(&p.notice_id)
            .bind(&p.notice_code)
            .bind(&p.provider)
            .bind(p.amount)
            .bind(&p.status)
            .bind(&p.provider_txn_id)
            .bind(&p.redirect_url)
            .bind(&p.qr_payload)
            .bind(&p.return_url)
            .bind(&p.locale)
            .bind(p.overpayment)
            .bind(p.late_success)
            .bind(p.refund_due)
            .bind(p.created_at)
            .bind(p.expires_at)
            .bind(p.updated_at)
            .bind(p.next_poll_at)
            .bind(p.poll_attempts)
            .bind(p.interest_part)
            .bind(&p.interest_budget_code)
            .bind(p.refunded_amount)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO payment_events (payment_id, seq, from_status, to_status, cause, detail, at) \
                 VALUES ($1, 1, NULL, 'pending', 'created', $2, $3)",
            )
            .bind(&p.id)
            .bind(&detail)
            .bind(p.created_at)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// Records what the payer is sent to (redirect or QR) once the provider answered.
    pub async fn set_payment_instructions(
        &self,
        id: &str,
        redirect_url: Option<&str>,
        qr_payload: Option<&str>,
    ) -> StoreResult<()> {
        on_pool!(self, pool => {
            sqlx::query("UPDATE payments SET redirect_url = $2, qr_payload = $3 WHERE id = $1")
                .bind(id)
                .bind(redirect_url)
                .bind(qr_payload)
                .execute(pool)
                .await
                .map(|_| ())
        })?;
        Ok(())
    }

    pub async fn find_payment(&self, key: PaymentKey<'_>) -> StoreResult<Option<PaymentRecord>> {
        let (column, value) = match key {
            PaymentKey::Id(v) => ("id", v),
            PaymentKey::MerchantRef(v) => ("merchant_ref", v),
        };
        Ok(on_pool!(self, pool => {
            sqlx::query_as(&format!("SELECT {PAYMENT_COLUMNS} FROM payments WHERE {column} = $1"))
                .bind(value)
                .fetch_optional(pool)
                .await
        })?)
    }

    pub async fn payment_history(&self, id: &str) -> StoreResult<Vec<PaymentEventRecord>> {
        Ok(on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT CAST(seq AS BIGINT) AS seq, from_status, to_status, cause, detail, at FROM payment_events \
                 WHERE payment_id = $1 ORDER BY seq",
            )
            .bind(id)
            .fetch_all(pool)
            .await
        })?)
    }

    /// The VietQR payment a bank credit pays: the one this very bank transaction already paid
    /// (a repeat notification), else the oldest pending one of the notice for exactly this amount,
    /// else one that ended unpaid and has not yet received late money. A second, different
    /// transfer for a notice whose transfers are all settled matches nothing (kept as unmatched).
    pub async fn find_transfer_payment(
        &self,
        notice_code: &str,
        amount: i64,
        provider_txn_id: &str,
    ) -> StoreResult<Option<PaymentRecord>> {
        let candidates: Vec<PaymentRecord> = on_pool!(self, pool => {
            sqlx::query_as(&format!(
                "SELECT {PAYMENT_COLUMNS} FROM payments WHERE notice_code = $1 AND provider = 'vietqr' \
                 AND amount = $2 ORDER BY created_at"
            ))
            .bind(notice_code)
            .bind(amount)
            .fetch_all(pool)
            .await
        })?;
        let same = candidates.iter().find(|p| p.provider_txn_id.as_deref() == Some(provider_txn_id));
        let pending = || candidates.iter().find(|p| p.status() == PaymentStatus::Pending);
        let ended_unpaid = || {
            candidates.iter().find(|p| {
                matches!(p.status(), PaymentStatus::Expired | PaymentStatus::Failed | PaymentStatus::Cancelled)
                    && !p.late_success
            })
        };
        Ok(same.or_else(pending).or_else(ended_unpaid).cloned())
    }

    /// Applies a provider's (or the clock's) word to a payment, exactly once, in a transaction of
    /// its own. Callbacks go through [`super::group_commit::PaymentWriter`] instead, which
    /// applies many in one transaction with the same effect.
    pub async fn apply_payment_update(&self, key: PaymentKey<'_>, update: PaymentUpdate) -> StoreResult<Applied> {
        let payment = PaymentRef::from(key);
        match self.apply_payment_batch(&[Job::Apply { payment, update }]).await?.pop() {
            Some(JobOutcome::Applied(applied)) => Ok(applied),
            other => Err(StoreError::Invariant(format!("a payment update came back as {other:?}"))),
        }
    }

    /// Claims up to `limit` pending payments due for a status query, pushing their next poll to
    /// `next_poll_at` so that other instances skip them. Safe with any number of instances.
    pub async fn claim_payments_to_poll(
        &self,
        now: DateTime<Utc>,
        next_poll_at: DateTime<Utc>,
        limit: i64,
    ) -> StoreResult<Vec<PaymentRecord>> {
        let skip_locked = match self {
            Store::Sqlite(_) => "",
            Store::Postgres(_) => " FOR UPDATE SKIP LOCKED",
        };
        let sql = format!(
            "UPDATE payments SET next_poll_at = $2, poll_attempts = poll_attempts + 1 WHERE id IN \
             (SELECT id FROM payments WHERE status = 'pending' AND next_poll_at <= $1 ORDER BY next_poll_at \
             LIMIT $3{skip_locked}) RETURNING {PAYMENT_COLUMNS}"
        );
        Ok(on_pool!(self, pool => {
            sqlx::query_as(&sql).bind(now).bind(next_poll_at).bind(limit).fetch_all(pool).await
        })?)
    }

    /// Sets when a still-pending payment is next asked about.
    pub async fn reschedule_poll(&self, id: &str, at: DateTime<Utc>) -> StoreResult<()> {
        on_pool!(self, pool => {
            sqlx::query("UPDATE payments SET next_poll_at = $2 WHERE id = $1 AND status = 'pending'")
                .bind(id)
                .bind(at)
                .execute(pool)
                .await
                .map(|_| ())
        })?;
        Ok(())
    }

    /// Keeps a bank credit that matches no payment; returns false if it was already kept.
    pub async fn insert_unmatched_credit(
        &self,
        bank: &str,
        transaction_id: &str,
        amount: i64,
        description: &str,
        raw: &str,
    ) -> StoreResult<bool> {
        let id = format!("uc_{}", uuid::Uuid::now_v7().simple());
        Ok(on_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO unmatched_credits (id, bank, transaction_id, amount, description, raw, received_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (bank, transaction_id) DO NOTHING",
            )
            .bind(&id)
            .bind(bank)
            .bind(transaction_id)
            .bind(amount)
            .bind(description)
            .bind(raw)
            .bind(now())
            .execute(pool)
            .await
            .map(|r| r.rows_affected() == 1)
        })?)
    }
}

/// What a payment's confirmation accounts for; `lines` are the notice's (budget code, amount).
pub(crate) fn confirmation(p: &PaymentRecord, lines: Vec<(String, i64)>) -> Confirmation<'_> {
    Confirmation {
        payment_id: &p.id,
        notice_code: &p.notice_code,
        provider: &p.provider,
        amount: p.amount,
        lines,
        interest: p.interest_budget_code.clone().map(|code| (code, p.interest_part)),
    }
}

#[allow(clippy::too_many_arguments)]
pub(crate) async fn record_event<'c, DB>(
    tx: &mut sqlx::Transaction<'c, DB>,
    payment_id: &str,
    seq: i64,
    from: PaymentStatus,
    to: PaymentStatus,
    cause: &str,
    detail: &str,
    at: DateTime<Utc>,
) -> Result<(), sqlx::Error>
where
    DB: sqlx::Database,
    for<'e> &'e mut <DB as sqlx::Database>::Connection: sqlx::Executor<'e, Database = DB>,
    for<'q> String: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> DateTime<Utc>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> <DB as sqlx::Database>::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
{
    sqlx::query(
        "INSERT INTO payment_events (payment_id, seq, from_status, to_status, cause, detail, at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(payment_id.to_string())
    .bind(seq)
    .bind(from.as_str())
    .bind(to.as_str())
    .bind(cause.to_string())
    .bind(detail.to_string())
    .bind(at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
