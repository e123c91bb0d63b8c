//! Refund records and their settlement.
//!
//! Invariants: a refund is reserved (pending) under the payment's row lock, so pending and
//! confirmed refunds together never exceed what the payment brought in; settling a refund is
//! one transaction — refund status, payment status, history, ledger postings (`refund:<id>`,
//! unique) and the `payment.refunded` event — applied once however often it is confirmed.

use chrono::{DateTime, Utc};

use super::ledger::insert_posting;
use super::outbox::insert_event;
use super::payments::{PAYMENT_COLUMNS, PaymentRecord, confirmation, record_event};
use super::{Store, StoreError, StoreResult, begin_write, on_pool};
use crate::ledger::plan_refund;
use crate::payments::state::{Decision, PaymentEvent, PaymentStatus, decide};

#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize, utoipa::ToSchema)]
pub struct RefundRecord {
    pub id: String,
    pub payment_id: String,
    pub amount: i64,
    pub reason: String,
    /// `pending`, `succeeded` or `failed`.
    pub status: String,
    pub provider_ref: Option<String>,
    pub detail: Option<String>,
    pub requested_by: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const REFUND_COLUMNS: &str =
    "id, payment_id, amount, reason, status, provider_ref, detail, requested_by, created_at, updated_at";

/// Why a refund cannot be reserved.
#[derive(Debug, thiserror::Error)]
pub enum ReserveError {
    #[error("no such payment")]
    NotFound,
    #[error("the payment brought in no money to refund (status {0})")]
    NotRefundable(String),
    #[error("only {remaining} đồng remain refundable")]
    ExceedsRemaining { remaining: i64 },
    /// Another refund of the payment is still pending: in flight, or its outcome unknown.
    #[error("refund {0} of this payment is still pending")]
    AnotherPending(String),
    /// The request (its key) already made this refund.
    #[error("this request already made refund {0}")]
    AlreadyRequested(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for ReserveError {
    fn from(e: sqlx::Error) -> Self {
        ReserveError::Store(e.into())
    }
}

/// What became of a refund: the provider's answer, or what a treasurer confirmed with it.
#[derive(Debug, Clone, Copy)]
pub enum RefundAnswer<'a> {
    /// Made; `note` (if any) is kept in the refund's `detail`.
    Made { provider_ref: Option<&'a str>, note: Option<&'a str> },
    /// Not made; `why` is kept in the refund's `detail` and the amount is refundable again.
    NotMade { why: &'a str },
}

/// What settling did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    Applied {
        refund_status: String,
        payment_status: PaymentStatus,
    },
    /// The refund was already settled: nothing done.
    AlreadySettled(String),
    NotFound,
}

/// How much of a payment can still be refunded, given its reserved and confirmed refunds.
fn refundable(p: &PaymentRecord, reserved: i64) -> i64 {
    // Over-payments and late money are refundable whole; a payment that paid its notice is
    // refundable up to what it brought in.
    p.amount - reserved
}

impl Store {
    /// Reserves `amount` (or everything that remains, when `None`) of a payment for a refund.
    /// `request_key` names the request (its caller's token, the payment and its Idempotency-Key):
    /// a request made again under it is answered [`ReserveError::AlreadyRequested`], whatever
    /// became of the refund it made.
    pub async fn reserve_refund(
        &self,
        payment_id: &str,
        amount: Option<i64>,
        reason: &str,
        by: &str,
        request_key: Option<&str>,
        at: DateTime<Utc>,
    ) -> Result<(RefundRecord, PaymentRecord), ReserveError> {
        let select = format!("SELECT {PAYMENT_COLUMNS} FROM payments WHERE id = $1{}", self.lock_clause_pub());
        let result: Result<(RefundRecord, PaymentRecord), ReserveError> = async {
            begin_write!(self, pool, tx => {
                let payment: Option<PaymentRecord> = sqlx::query_as(&select).bind(payment_id).fetch_optional(&mut *tx).await?;
                let Some(p) = payment else { return Err(ReserveError::NotFound) };
                // A request made again (its key) is answered with the refund it made.
                if let Some(key) = request_key {
                    let made: Option<String> = sqlx::query_scalar("SELECT id FROM refunds WHERE request_key = $1")
                        .bind(key)
                        .fetch_optional(&mut *tx)
                        .await?;
                    if let Some(made) = made {
                        return Err(ReserveError::AlreadyRequested(made));
                    }
                }
                let received = p.status().money_received() || p.late_success;
                if !received {
                    return Err(ReserveError::NotRefundable(p.status.clone()));
                }
                // One refund in flight per payment: while one's outcome is unknown it may have been
                // made, and a second request (a retry under a new key, a double click) must not
                // send the same money again, even where a partial amount would still fit.
                let pending: Option<String> =
                    sqlx::query_scalar("SELECT id FROM refunds WHERE payment_id = $1 AND status = 'pending' LIMIT 1")
                        .bind(&p.id)
                        .fetch_optional(&mut *tx)
                        .await?;
                if let Some(pending) = pending {
                    return Err(ReserveError::AnotherPending(pending));
                }
                let reserved: i64 = sqlx::query_scalar(
                    "SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM refunds WHERE payment_id = $1 AND status <> 'failed'",
                )
                .bind(&p.id)
                .fetch_one(&mut *tx)
                .await?;
                let remaining = refundable(&p, reserved);
                let amount = amount.unwrap_or(remaining);
                if remaining <= 0 || amount > remaining {
                    return Err(ReserveError::ExceedsRemaining { remaining: remaining.max(0) });
                }
                let refund = RefundRecord {
                    id: format!("rf{}", uuid::Uuid::now_v7().simple()),
                    payment_id: p.id.clone(),
                    amount,
                    reason: reason.to_string(),
                    status: "pending".into(),
                    provider_ref: None,
                    detail: None,
                    requested_by: by.to_string(),
                    created_at: at,
                    updated_at: at,
                };
                sqlx::query(&format!(
                    "INSERT INTO refunds ({REFUND_COLUMNS}, request_key) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
                ))
                .bind(&refund.id)
                .bind(&refund.payment_id)
                .bind(refund.amount)
                .bind(&refund.reason)
                .bind(&refund.status)
                .bind(&refund.provider_ref)
                .bind(&refund.detail)
                .bind(&refund.requested_by)
                .bind(refund.created_at)
                .bind(refund.updated_at)
                .bind(request_key)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok((refund, p))
            })
        }
        .await;
        result
    }

    /// Settles a pending refund with the provider's answer, exactly once.
    pub async fn settle_refund(
        &self,
        refund_id: &str,
        answer: RefundAnswer<'_>,
        at: DateTime<Utc>,
    ) -> StoreResult<Settled> {
        let lock = self.lock_clause_pub();
        let select_refund = format!("SELECT {REFUND_COLUMNS} FROM refunds WHERE id = $1{lock}");
        let select_payment = format!("SELECT {PAYMENT_COLUMNS} FROM payments WHERE id = $1{lock}");
        let settled = begin_write!(self, pool, tx => {
            // Lock order: notice, payment, refund (see apply_payment_update).
            sqlx::query(
                "UPDATE notices SET code = code WHERE id = (SELECT p.notice_id FROM payments p JOIN refunds r \
                 ON r.payment_id = p.id WHERE r.id = $1)",
            )
            .bind(refund_id)
            .execute(&mut *tx)
            .await?;
            let refund: Option<RefundRecord> = sqlx::query_as(&select_refund).bind(refund_id).fetch_optional(&mut *tx).await?;
            let Some(r) = refund else { return Ok(Settled::NotFound) };
            if r.status != "pending" {
                return Ok(Settled::AlreadySettled(r.status));
            }
            let p: PaymentRecord = sqlx::query_as(&select_payment).bind(&r.payment_id).fetch_one(&mut *tx).await?;
            let (status, provider_ref, detail) = match answer {
                RefundAnswer::Made { provider_ref, note } => ("succeeded", provider_ref, note),
                RefundAnswer::NotMade { why } => ("failed", None, Some(why)),
            };
            sqlx::query("UPDATE refunds SET status = $2, provider_ref = $3, detail = $4, updated_at = $5 WHERE id = $1")
                .bind(&r.id)
                .bind(status)
                .bind(provider_ref)
                .bind(detail)
                .bind(at)
                .execute(&mut *tx)
                .await?;
            let mut payment_status = p.status();
            if status == "succeeded" {
                let refunded = p.refunded_amount + r.amount;
                let held = p.overpayment || p.late_success;
                sqlx::query(
                    "UPDATE payments SET refunded_amount = $2, refund_due = $3, updated_at = $4 WHERE id = $1",
                )
                .bind(&p.id)
                .bind(refunded)
                .bind((p.refund_due - r.amount).max(0))
                .bind(at)
                .execute(&mut *tx)
                .await?;
                let next_seq: i64 = sqlx::query_scalar(
                    "SELECT CAST(COALESCE(MAX(seq), 0) + 1 AS BIGINT) FROM payment_events WHERE payment_id = $1",
                )
                .bind(&p.id)
                .fetch_one(&mut *tx)
                .await?;
                let event = PaymentEvent::RefundSettled { fully: refunded >= p.amount };
                let detail = serde_json::json!({"refund_id": r.id, "amount": r.amount, "refunded": refunded}).to_string();
                match decide(payment_status, event) {
                    Decision::MoveTo(next) => {
                        sqlx::query("UPDATE payments SET status = $2 WHERE id = $1")
                            .bind(&p.id)
                            .bind(next.as_str())
                            .execute(&mut *tx)
                            .await?;
                        record_event(&mut tx, &p.id, next_seq, payment_status, next, "refund", &detail, at).await?;
                        payment_status = next;
                    }
                    // Late money refunded from suspense: the payment's own state stays as it ended.
                    _ => record_event(&mut tx, &p.id, next_seq, payment_status, payment_status, "refund", &detail, at).await?,
                }
                let lines: Vec<(String, i64)> = sqlx::query_as(
                    "SELECT budget_code, amount FROM notice_lines WHERE notice_id = $1 ORDER BY line_no",
                )
                .bind(&p.notice_id)
                .fetch_all(&mut *tx)
                .await?;
                let plan = plan_refund(&r.id, &confirmation(&p, lines), r.amount, p.refunded_amount, held)
                    .map_err(|e| StoreError::Invariant(e.to_string()))?;
                insert_posting!(tx, &plan, at);
                let payload = serde_json::json!({
                    "payment_id": p.id, "refund_id": r.id, "amount": r.amount, "refunded_total": refunded,
                    "payment_status": payment_status.as_str(),
                });
                insert_event!(tx, format!("payment.refunded:{}", r.id), &p.notice_code, "payment.refunded", payload, at);
            }
            tx.commit().await?;
            Settled::Applied { refund_status: status.to_string(), payment_status }
        });
        Ok(settled)
    }

    pub async fn find_refund(&self, refund_id: &str) -> StoreResult<Option<RefundRecord>> {
        Ok(on_pool!(self, pool => {
            sqlx::query_as(&format!("SELECT {REFUND_COLUMNS} FROM refunds WHERE id = $1"))
                .bind(refund_id)
                .fetch_optional(pool)
                .await
        })?)
    }

    pub async fn payment_refunds(&self, payment_id: &str) -> StoreResult<Vec<RefundRecord>> {
        Ok(on_pool!(self, pool => {
            sqlx::query_as(&format!("SELECT {REFUND_COLUMNS} FROM refunds WHERE payment_id = $1 ORDER BY created_at"))
                .bind(payment_id)
                .fetch_all(pool)
                .await
        })?)
    }
}
