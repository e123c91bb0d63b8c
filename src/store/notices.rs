//! Quotes, payment notices and their lines.
//!
//! Invariants: a quote's lines are a snapshot and never change; a notice copies its quote's
//! lines at issue (so later rule changes never alter it), and its principal equals the sum of
//! those lines; one notice per quote (unique index); notice codes are unique; the only change a
//! notice ever sees here is `unpaid → cancelled` (payments move it to `paid`).

use chrono::{DateTime, NaiveDate, Utc};

use super::{Store, StoreError, StoreResult, begin_write, on_pool};
use crate::payments::state::PaymentStatus;

/// One itemised line, as stored.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, sqlx::FromRow)]
pub struct LineRecord {
    pub kind: String,
    pub description: String,
    pub base: i64,
    /// Decimal rate as text (exact).
    pub rate: String,
    pub amount: i64,
    pub legal_basis: String,
    pub rule_id: String,
    pub rule_version: i64,
    pub budget_code: String,
    pub exemption: Option<String>,
    pub unconfirmed: bool,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct QuoteRecord {
    pub id: String,
    pub jurisdiction: String,
    pub valuation_date: NaiveDate,
    /// The request as received (JSON).
    pub request: String,
    /// The lines as computed (JSON array of [`LineRecord`]).
    pub lines: String,
    pub total: i64,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub valid_until: DateTime<Utc>,
}

impl QuoteRecord {
    pub fn line_records(&self) -> Vec<LineRecord> {
        serde_json::from_str(&self.lines).unwrap_or_default()
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct NoticeRecord {
    pub id: String,
    pub code: String,
    pub quote_id: String,
    pub jurisdiction: String,
    pub payer_name: String,
    pub payer_identifier: String,
    pub dossier_ref: String,
    pub principal: i64,
    pub due_date: NaiveDate,
    pub status: String,
    pub issued_by: String,
    pub issued_at: DateTime<Utc>,
    pub cancel_reason: Option<String>,
    pub cancelled_by: Option<String>,
    pub cancelled_at: Option<DateTime<Utc>>,
}

/// Why a notice could not be issued.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error("quote already used by notice {0}")]
    QuoteAlreadyUsed(String),
    #[error("notice code already taken")]
    CodeTaken,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for IssueError {
    fn from(e: sqlx::Error) -> Self {
        IssueError::Store(e.into())
    }
}

/// What happened to a cancellation request.
#[derive(Debug)]
pub enum CancelOutcome {
    Cancelled(Box<NoticeRecord>),
    NotFound,
    /// The notice is not unpaid; its current status.
    NotCancellable(String),
}

const NOTICE_COLUMNS: &str = "id, code, quote_id, jurisdiction, payer_name, payer_identifier, dossier_ref, principal, \
     due_date, status, issued_by, issued_at, cancel_reason, cancelled_by, cancelled_at";
const LINE_COLUMNS: &str =
    "kind, description, base, rate, amount, legal_basis, rule_id, rule_version, budget_code, exemption, unconfirmed";

const INSERT_QUOTE: &str = "INSERT INTO quotes (id, jurisdiction, valuation_date, request, lines, total, created_by, \
     created_at, valid_until) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";

/// Binds a quote's fields to [`INSERT_QUOTE`], for either backend.
fn bind_quote<'q, DB: sqlx::Database>(
    query: sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments<'q>>,
    q: &'q QuoteRecord,
) -> sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments<'q>>
where
    String: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    NaiveDate: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    DateTime<Utc>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    query
        .bind(&q.id)
        .bind(&q.jurisdiction)
        .bind(q.valuation_date)
        .bind(&q.request)
        .bind(&q.lines)
        .bind(q.total)
        .bind(&q.created_by)
        .bind(q.created_at)
        .bind(q.valid_until)
}

impl Store {
    pub async fn insert_quote(&self, q: &QuoteRecord) -> StoreResult<()> {
        on_pool!(self, pool => bind_quote(sqlx::query(INSERT_QUOTE), q).execute(pool).await.map(|_| ()))?;
        Ok(())
    }

    pub async fn find_quote(&self, id: &str) -> StoreResult<Option<QuoteRecord>> {
        Ok(on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT id, jurisdiction, valuation_date, request, lines, total, created_by, created_at, valid_until \
                 FROM quotes WHERE id = $1",
            )
            .bind(id)
            .fetch_optional(pool)
            .await
        })?)
    }

    /// Issues a notice with its lines in one transaction. If `quote` is given it is stored in the
    /// same transaction (a notice issued from inputs directly gets an implicit quote).
    pub async fn insert_notice(
        &self,
        quote: Option<&QuoteRecord>,
        notice: &NoticeRecord,
        lines: &[LineRecord],
    ) -> Result<(), IssueError> {
        let result: Result<(), IssueError> = async { begin_write!(self, pool, tx => {
            if let Some(q) = quote {
                bind_quote(sqlx::query(INSERT_QUOTE), q).execute(&mut *tx).await?;
            }
            let used: Option<String> = sqlx::query_scalar("SELECT code FROM notices WHERE quote_id = $1")
                .bind(&notice.quote_id)
                .fetch_optional(&mut *tx)
                .await?;
            if let Some(code) = used {
                return Err(IssueError::QuoteAlreadyUsed(code));
            }
            let inserted = sqlx::query(
                "INSERT INTO notices (id, code, quote_id, jurisdiction, payer_name, payer_identifier, dossier_ref, \
                 principal, due_date, status, issued_by, issued_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'unpaid', $10, $11) ON CONFLICT (code) DO NOTHING",
            )
            .bind(&notice.id)
            .bind(&notice.code)
            .bind(&notice.quote_id)
            .bind(&notice.jurisdiction)
            .bind(&notice.payer_name)
            .bind(&notice.payer_identifier)
            .bind(&notice.dossier_ref)
            .bind(notice.principal)
            .bind(notice.due_date)
            .bind(&notice.issued_by)
            .bind(notice.issued_at)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if inserted == 0 {
                return Err(IssueError::CodeTaken);
            }
            for (i, l) in lines.iter().enumerate() {
                sqlx::query(
                    "INSERT INTO notice_lines (notice_id, line_no, kind, description, base, rate, amount, legal_basis, \
                     rule_id, rule_version, budget_code, exemption, unconfirmed) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
                )
                .bind(&notice.id)
                .bind(i as i64 + 1)
                .bind(&l.kind)
                .bind(&l.description)
                .bind(l.base)
                .bind(&l.rate)
                .bind(l.amount)
                .bind(&l.legal_basis)
                .bind(&l.rule_id)
                .bind(l.rule_version)
                .bind(&l.budget_code)
                .bind(&l.exemption)
                .bind(l.unconfirmed)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok(())
        }) }
        .await;
        match result {
            // A concurrent issue from the same quote won the unique index.
            Err(IssueError::Store(StoreError::Conflict(_))) => {
                let code = on_pool!(self, pool => {
                    sqlx::query_scalar::<_, String>("SELECT code FROM notices WHERE quote_id = $1")
                        .bind(&notice.quote_id)
                        .fetch_optional(pool)
                        .await
                })?;
                Err(code.map(IssueError::QuoteAlreadyUsed).unwrap_or(IssueError::CodeTaken))
            }
            other => other,
        }
    }

    pub async fn find_notice(&self, code: &str) -> StoreResult<Option<(NoticeRecord, Vec<LineRecord>)>> {
        let notice: Option<NoticeRecord> = on_pool!(self, pool => {
            sqlx::query_as(&format!("SELECT {NOTICE_COLUMNS} FROM notices WHERE code = $1"))
                .bind(code)
                .fetch_optional(pool)
                .await
        })?;
        let Some(notice) = notice else { return Ok(None) };
        let lines: Vec<LineRecord> = on_pool!(self, pool => {
            sqlx::query_as(&format!("SELECT {LINE_COLUMNS} FROM notice_lines WHERE notice_id = $1 ORDER BY line_no"))
                .bind(&notice.id)
                .fetch_all(pool)
                .await
        })?;
        Ok(Some((notice, lines)))
    }

    /// Cancels an unpaid notice and, in the same transaction, the payments still pending for it
    /// (a success that arrives for one later is held for refund). Only `unpaid` notices can be
    /// cancelled.
    pub async fn cancel_notice(
        &self,
        code: &str,
        reason: &str,
        by: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<CancelOutcome> {
        let pending_sql = format!(
            "SELECT p.id FROM payments p JOIN notices n ON n.id = p.notice_id WHERE n.code = $1 AND p.status = 'pending'{}",
            self.lock_clause_pub()
        );
        let changed: u64 = begin_write!(self, pool, tx => {
            let changed = sqlx::query(
                "UPDATE notices SET status = 'cancelled', cancel_reason = $2, cancelled_by = $3, cancelled_at = $4 \
                 WHERE code = $1 AND status = 'unpaid'",
            )
            .bind(code)
            .bind(reason)
            .bind(by)
            .bind(at)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if changed == 1 {
                let pending: Vec<String> = sqlx::query_scalar(&pending_sql).bind(code).fetch_all(&mut *tx).await?;
                for id in pending {
                    sqlx::query("UPDATE payments SET status = 'cancelled', updated_at = $2 WHERE id = $1 AND status = 'pending'")
                        .bind(&id)
                        .bind(at)
                        .execute(&mut *tx)
                        .await?;
                    let seq: i64 = sqlx::query_scalar(
                        "SELECT CAST(COALESCE(MAX(seq), 0) + 1 AS BIGINT) FROM payment_events WHERE payment_id = $1",
                    )
                    .bind(&id)
                    .fetch_one(&mut *tx)
                    .await?;
                    let detail = serde_json::json!({"reason": reason, "by": by}).to_string();
                    super::payments::record_event(
                        &mut tx,
                        &id,
                        seq,
                        PaymentStatus::Pending,
                        PaymentStatus::Cancelled,
                        "notice_cancelled",
                        &detail,
                        at,
                    )
                    .await?;
                }
            }
            tx.commit().await?;
            changed
        });
        let current = self.find_notice(code).await?;
        Ok(match current {
            None => CancelOutcome::NotFound,
            Some((n, _)) if changed == 1 => CancelOutcome::Cancelled(Box::new(n)),
            Some((n, _)) => CancelOutcome::NotCancellable(n.status),
        })
    }
}
