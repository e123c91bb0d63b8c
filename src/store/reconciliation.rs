//! Reconciliation storage: runs, their matches and discrepancies, resolutions, the audit log and
//! the treasury export.
//!
//! Invariants:
//! - A run commits in one transaction — its matches, discrepancies, row errors, settlement
//!   posting, the supersession of the run it replaces and its audit entry — or not at all, so a
//!   run that failed half-way left nothing and can simply be run again.
//! - A run is keyed by (provider, settlement date, file SHA-256): the same file is the same run.
//!   At most one run per provider and date is `active` (a partial unique index).
//! - Each file row is matched at most once (primary key on run and line) and each payment or
//!   refund at most once among active runs (a partial unique index on the target).
//! - A match is active only while its row is settled: an active match holds its payment or refund
//!   against every other active run. Superseding a run deactivates its matches and reverses its
//!   settlement posting and its resolutions' postings with compensating ledger transactions; no
//!   ledger row is changed.
//! - The audit log only grows (the database refuses UPDATE and DELETE).

use std::collections::{HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;

use super::ledger::insert_posting;
use super::{Store, StoreError, StoreResult, begin_write, now, on_pool};
use crate::ledger::{PostingPlan, Transfer};
use crate::reconciliation::matcher::{DiscrepancyClass, RowFacts, TargetFacts, Verdict, classify};
use crate::reconciliation::postings::{ResolutionPlan, plan_reversal, plan_run_settlement};
use crate::reconciliation::reader::{RowError, RowKind, SettlementRow};

/// A reconciliation run as stored.
#[derive(Debug, Clone, sqlx::FromRow, Serialize, utoipa::ToSchema)]
pub struct RunRecord {
    pub id: String,
    pub provider: String,
    /// `YYYY-MM-DD`, the provider's (GMT+7) day.
    pub settlement_date: String,
    pub file_sha256: String,
    pub file_bytes: i64,
    /// The file layout it was read with.
    pub format: String,
    /// `active` or `superseded`.
    pub status: String,
    pub supersedes: Option<String>,
    pub superseded_by: Option<String>,
    /// Data rows in the file (readable or not).
    pub rows_total: i64,
    /// Rows that could not be read (see `row_errors`).
    pub rows_invalid: i64,
    /// Rows matched to a gateway payment or refund.
    pub rows_matched: i64,
    /// Rows whose money the run settled.
    pub rows_settled: i64,
    /// Payments settled by the run, đồng.
    pub settled_gross: i64,
    /// Refunds settled by the run, đồng.
    pub settled_refunds: i64,
    /// Provider fees on the settled payments, đồng.
    pub settled_fees: i64,
    /// The run's settlement posting in the ledger.
    pub settlement_tx: Option<String>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
}

const RUN_COLUMNS: &str = "id, provider, settlement_date, file_sha256, file_bytes, format, status, supersedes, \
     superseded_by, rows_total, rows_invalid, rows_matched, rows_settled, settled_gross, settled_refunds, settled_fees, \
     settlement_tx, created_by, created_at";

/// A discrepancy with the evidence of both sides.
#[derive(Debug, Clone, sqlx::FromRow, Serialize, utoipa::ToSchema)]
pub struct DiscrepancyRecord {
    pub id: String,
    pub run_id: String,
    pub class: String,
    /// The file's line, when the discrepancy comes from a row.
    pub line_no: Option<i64>,
    /// `payment` or `refund`.
    pub row_kind: String,
    pub provider_txn_id: Option<String>,
    /// 1 for the first listing of the provider transaction in the file.
    pub occurrence: i64,
    /// `payment` or `refund`, when a gateway record is attached.
    pub target_kind: Option<String>,
    pub target_id: Option<String>,
    pub file_amount: Option<i64>,
    pub ledger_amount: Option<i64>,
    pub file_fee: Option<i64>,
    pub expected_fee: Option<i64>,
    pub file_status: Option<String>,
    pub ledger_status: Option<String>,
    /// The file row (`file`: line, raw text, parsed fields) and the gateway record (`gateway`).
    #[serde(serialize_with = "json_text")]
    #[schema(value_type = Object)]
    pub evidence: String,
    /// `open`, `resolved`, or `superseded` (its run was replaced by a corrected file).
    pub status: String,
    pub resolution: Option<String>,
    pub resolved_by: Option<String>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

const DISCREPANCY_COLUMNS: &str = "id, run_id, class, line_no, row_kind, provider_txn_id, occurrence, target_kind, \
     target_id, file_amount, ledger_amount, file_fee, expected_fee, file_status, ledger_status, evidence, status, \
     resolution, resolved_by, resolved_at, created_at";

/// Writes JSON stored as text as the JSON value it is (text that is not JSON stays a string).
fn json_text<S: serde::Serializer>(text: &str, serializer: S) -> Result<S::Ok, S::Error> {
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(value) => value.serialize(serializer),
        Err(_) => serializer.serialize_str(text),
    }
}

/// One entry of the audit log.
#[derive(Debug, Clone, sqlx::FromRow, Serialize, utoipa::ToSchema)]
pub struct AuditRecord {
    pub id: i64,
    pub at: DateTime<Utc>,
    /// The token name (or `cli:<user>`) that acted.
    pub actor: String,
    /// `run_created`, `run_superseding` (a run that replaced another), `run_superseded` (the run it
    /// replaced, with the reversals), `discrepancy_resolved:<action>`.
    pub action: String,
    pub run_id: Option<String>,
    pub discrepancy_id: Option<String>,
    /// Why (the resolution's note), or a summary.
    pub note: Option<String>,
    /// The ledger transactions written (ids).
    #[serde(serialize_with = "json_text")]
    #[schema(value_type = Vec<String>)]
    pub ledger_tx_ids: String,
}

/// What a run needs to know besides its rows.
pub struct RunSpec<'a> {
    pub id: String,
    pub provider: &'a str,
    pub settlement_date: NaiveDate,
    pub file_sha256: &'a str,
    pub file_bytes: i64,
    pub format: &'a str,
    pub created_by: &'a str,
    /// Rows matched by amount and notice code must be this close to the payment's creation.
    pub match_window: chrono::Duration,
    /// The provider's agreed fee for an amount, if known.
    pub expected_fee: &'a (dyn Fn(i64) -> Option<i64> + Send + Sync),
    /// The start and end (exclusive) of the settlement date in UTC.
    pub day: (DateTime<Utc>, DateTime<Utc>),
}

/// A message from the file reader to the run.
pub enum RunInput {
    Rows(Vec<Result<SettlementRow, RowError>>),
    /// The file as a whole is unusable: roll everything back.
    Reject(String),
    /// Every row was sent. A run whose input ends without it (the reader failed) writes nothing.
    End,
}

/// What a run request did.
pub enum RunOutcome {
    Created(RunRecord),
    /// This very file was reconciled before.
    Existing(RunRecord),
    Rejected(String),
}

/// Count of discrepancies of a class in a status.
#[derive(Debug, Clone, sqlx::FromRow, Serialize, utoipa::ToSchema)]
pub struct ClassCount {
    pub class: String,
    pub status: String,
    pub count: i64,
}

/// A row that could not be read, as stored.
#[derive(Debug, Clone, sqlx::FromRow, Serialize, utoipa::ToSchema)]
pub struct RowErrorRecord {
    pub line_no: i64,
    pub reason: String,
    pub raw: String,
}

/// Filters of the discrepancy listing.
#[derive(Debug, Clone, Default)]
pub struct DiscrepancyFilter {
    pub class: Option<String>,
    pub status: Option<String>,
    /// Discrepancies with an id greater than this.
    pub after: Option<String>,
    pub limit: i64,
}

/// What resolving did.
pub enum Resolved {
    Done {
        discrepancy: DiscrepancyRecord,
        ledger_tx_ids: Vec<String>,
    },
    NotFound,
    /// Already resolved or superseded: nothing done.
    NotOpen(DiscrepancyRecord),
    /// The provider transaction's money was already booked as unexplained (in `suspense` or
    /// `refunds_payable`) by resolving this other discrepancy, of another active run: nothing done.
    AlreadyBooked(String),
}

/// A line of the treasury export: money settled on a day under one budget code.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ExportLine {
    pub budget_code: String,
    /// The obligation kinds booked under the code.
    pub kinds: Vec<String>,
    /// Payments settled that contributed to the code.
    pub payments: i64,
    /// Owed to the treasury under the code by those payments, đồng.
    pub amount: i64,
    /// Of it, refunded since (settled refunds), đồng.
    pub refunded: i64,
    pub net: i64,
}

/// The gateway payment a row may be.
#[derive(Debug, Clone, sqlx::FromRow)]
struct Candidate {
    id: String,
    amount: i64,
    status: String,
    late_success: bool,
    notice_code: String,
    merchant_ref: String,
    provider_txn_id: Option<String>,
    /// The active run that already settled this payment.
    settled_run: Option<String>,
}

impl Candidate {
    /// Whether a file row with provider transaction `txn` may be this payment's: not if the
    /// payment was confirmed with another transaction (that transfer is other money). A bank
    /// transfer's id is kept as `<bank>:<transaction id>`, and the bank's file names it without
    /// the bank.
    fn may_be(&self, txn: &str) -> bool {
        self.provider_txn_id
            .as_deref()
            .is_none_or(|own| own == txn || own.strip_suffix(txn).is_some_and(|bank| bank.ends_with(':')))
    }

    /// The gateway holds this money (confirmed, or in suspense after a late success).
    fn confirmed(&self) -> bool {
        matches!(self.status.as_str(), "succeeded" | "refunded" | "partially_refunded") || self.late_success
    }
}

/// A confirmed payment and when it was confirmed.
#[derive(Debug, Clone, sqlx::FromRow)]
struct Unlisted {
    #[sqlx(flatten)]
    candidate: Candidate,
    confirmed_at: DateTime<Utc>,
}

/// A refund a row may be.
#[derive(Debug, Clone, sqlx::FromRow)]
struct RefundCandidate {
    id: String,
    amount: i64,
    status: String,
    provider_ref: Option<String>,
    payment_id: String,
    /// The active run that already settled this refund.
    settled_run: Option<String>,
}

/// A 128-bit fingerprint of a string, for the run's in-memory sets (a million ids in 16 bytes each).
fn fingerprint(parts: &[&str]) -> u128 {
    let half = |seed: u8| {
        let mut h = DefaultHasher::new();
        seed.hash(&mut h);
        parts.hash(&mut h);
        h.finish() as u128
    };
    (half(1) << 64) | half(2)
}

/// A match to insert.
struct MatchRow {
    line_no: i64,
    target_kind: &'static str,
    target_id: String,
    matched_by: &'static str,
    amount: i64,
    fee: i64,
    settled: bool,
}

/// A discrepancy to insert.
struct NewDiscrepancy {
    class: DiscrepancyClass,
    line_no: Option<i64>,
    row_kind: RowKind,
    provider_txn_id: Option<String>,
    occurrence: i64,
    target_kind: Option<&'static str>,
    target_id: Option<String>,
    file_amount: Option<i64>,
    ledger_amount: Option<i64>,
    file_fee: Option<i64>,
    expected_fee: Option<i64>,
    file_status: Option<String>,
    ledger_status: Option<String>,
    evidence: serde_json::Value,
}

fn row_evidence(row: &SettlementRow) -> serde_json::Value {
    serde_json::json!({
        "line": row.line, "kind": row.kind, "provider_txn_id": row.provider_txn_id,
        "merchant_ref": row.merchant_ref, "original_txn_id": row.original_txn_id, "amount": row.amount,
        "fee": row.fee, "paid_at": row.paid_at.to_rfc3339(), "status": row.status, "success": row.success,
        "notice_code": row.notice_code, "raw": row.raw,
    })
}

fn payment_evidence(p: &Candidate) -> serde_json::Value {
    serde_json::json!({
        "payment_id": p.id, "notice_code": p.notice_code, "status": p.status, "late_success": p.late_success,
        "amount": p.amount, "merchant_ref": p.merchant_ref, "provider_txn_id": p.provider_txn_id,
    })
}

fn refund_evidence(r: &RefundCandidate) -> serde_json::Value {
    serde_json::json!({
        "refund_id": r.id, "payment_id": r.payment_id, "status": r.status, "amount": r.amount,
        "provider_ref": r.provider_ref,
    })
}

/// Rows per multi-row INSERT (well under both backends' bind-parameter limits).
const INSERT_CHUNK: usize = 500;

/// The two statements a run repeats for every batch, written per backend: PostgreSQL takes each
/// batch as arrays in one statement (`UNNEST`, `= ANY`), SQLite as multi-row `VALUES` / `IN` lists.
trait BatchOps {
    /// Payments of `provider` whose `column` (`provider_txn_id` or `merchant_ref`) is one of `keys`,
    /// with the active run that settled each.
    fn payments_by<'a>(
        &'a mut self,
        provider: &'a str,
        column: &'static str,
        keys: &'a [&'a str],
    ) -> impl std::future::Future<Output = Result<Vec<Candidate>, sqlx::Error>> + Send + 'a;

    fn insert_matches<'a>(
        &'a mut self,
        run_id: &'a str,
        rows: &'a [MatchRow],
    ) -> impl std::future::Future<Output = Result<(), sqlx::Error>> + Send + 'a;
}

/// Payments of the provider, with the active run that already settled each, if any. (A scalar
/// subquery, not a join: one probe of the partial unique index per payment, where a planner could
/// otherwise scan every match for each batch.)
const CANDIDATE_SELECT: &str = "SELECT p.id, p.amount, p.status, p.late_success, p.notice_code, p.merchant_ref, \
     p.provider_txn_id, (SELECT m.run_id FROM reconciliation_matches m WHERE m.target_kind = 'payment' \
     AND m.target_id = p.id AND m.active) AS settled_run FROM payments p WHERE p.provider = $1 AND ";

impl BatchOps for sqlx::PgConnection {
    async fn payments_by(
        &mut self,
        provider: &str,
        column: &'static str,
        keys: &[&str],
    ) -> Result<Vec<Candidate>, sqlx::Error> {
        let sql = format!("{CANDIDATE_SELECT}p.{column} = ANY($2)");
        sqlx::query_as(&sql).bind(provider).bind(keys).fetch_all(&mut *self).await
    }

    async fn insert_matches(&mut self, run_id: &str, rows: &[MatchRow]) -> Result<(), sqlx::Error> {
        if rows.is_empty() {
            return Ok(());
        }
        let line_no: Vec<i64> = rows.iter().map(|m| m.line_no).collect();
        let kind: Vec<&str> = rows.iter().map(|m| m.target_kind).collect();
        let target: Vec<&str> = rows.iter().map(|m| m.target_id.as_str()).collect();
        let by: Vec<&str> = rows.iter().map(|m| m.matched_by).collect();
        let amount: Vec<i64> = rows.iter().map(|m| m.amount).collect();
        let fee: Vec<i64> = rows.iter().map(|m| m.fee).collect();
        let settled: Vec<bool> = rows.iter().map(|m| m.settled).collect();
        sqlx::query(
            "INSERT INTO reconciliation_matches (run_id, line_no, target_kind, target_id, matched_by, amount, fee, \
             settled, active) SELECT $1, l, k, t, b, a, f, s, s \
             FROM UNNEST($2::bigint[], $3::text[], $4::text[], $5::text[], $6::bigint[], $7::bigint[], $8::boolean[]) \
             AS u (l, k, t, b, a, f, s)",
        )
        .bind(run_id)
        .bind(line_no)
        .bind(kind)
        .bind(target)
        .bind(by)
        .bind(amount)
        .bind(fee)
        .bind(settled)
        .execute(&mut *self)
        .await?;
        Ok(())
    }
}

impl BatchOps for sqlx::SqliteConnection {
    async fn payments_by(
        &mut self,
        provider: &str,
        column: &'static str,
        keys: &[&str],
    ) -> Result<Vec<Candidate>, sqlx::Error> {
        // One JSON row per chunk instead of a row per payment: sqlx copies every value of every row
        // between threads, which was most of a million-row run's time.
        type Packed = (String, i64, String, i64, String, String, Option<String>, Option<String>);
        let mut found = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(INSERT_CHUNK) {
            let sql = format!(
                "SELECT json_group_array(json_array(p.id, p.amount, p.status, p.late_success, p.notice_code, \
                 p.merchant_ref, p.provider_txn_id, (SELECT m.run_id FROM reconciliation_matches m \
                 WHERE m.target_kind = 'payment' AND m.target_id = p.id AND m.active))) \
                 FROM payments p WHERE p.provider = $1 AND p.{column} IN ({})",
                placeholders(2, chunk.len())
            );
            let mut q = sqlx::query_scalar::<_, String>(&sql).bind(provider);
            for key in chunk {
                q = q.bind(*key);
            }
            let packed: Vec<Packed> =
                serde_json::from_str(&q.fetch_one(&mut *self).await?).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
            found.extend(packed.into_iter().map(
                |(id, amount, status, late_success, notice_code, merchant_ref, provider_txn_id, settled_run)| {
                    Candidate {
                        id,
                        amount,
                        status,
                        late_success: late_success != 0,
                        notice_code,
                        merchant_ref,
                        provider_txn_id,
                        settled_run,
                    }
                },
            ));
        }
        Ok(found)
    }

    async fn insert_matches(&mut self, run_id: &str, rows: &[MatchRow]) -> Result<(), sqlx::Error> {
        for chunk in rows.chunks(INSERT_CHUNK) {
            let mut qb = sqlx::QueryBuilder::new(
                "INSERT INTO reconciliation_matches (run_id, line_no, target_kind, target_id, matched_by, amount, fee, \
                 settled, active) ",
            );
            qb.push_values(chunk, |mut b, m: &MatchRow| {
                b.push_bind(run_id)
                    .push_bind(m.line_no)
                    .push_bind(m.target_kind)
                    .push_bind(m.target_id.as_str())
                    .push_bind(m.matched_by)
                    .push_bind(m.amount)
                    .push_bind(m.fee)
                    .push_bind(m.settled)
                    // Active = settled: only a settled row holds its payment against other runs.
                    .push_bind(m.settled);
            });
            qb.build().execute(&mut *self).await?;
        }
        Ok(())
    }
}

/// Inserts discrepancies in chunks inside `$tx`.
macro_rules! insert_discrepancies {
    ($tx:ident, $run_id:expr, $rows:expr, $at:expr) => {{
        let run_id: &str = $run_id;
        let at: DateTime<Utc> = $at;
        for chunk in $rows.chunks(INSERT_CHUNK) {
            let mut qb = sqlx::QueryBuilder::new(
                "INSERT INTO reconciliation_discrepancies (id, run_id, class, line_no, row_kind, provider_txn_id, \
                 occurrence, target_kind, target_id, file_amount, ledger_amount, file_fee, expected_fee, file_status, \
                 ledger_status, evidence, status, created_at) ",
            );
            qb.push_values(chunk, |mut b, d: &NewDiscrepancy| {
                b.push_bind(format!("rd_{}", uuid::Uuid::now_v7().simple()))
                    .push_bind(run_id)
                    .push_bind(d.class.as_str())
                    .push_bind(d.line_no)
                    .push_bind(match d.row_kind {
                        RowKind::Payment => "payment",
                        RowKind::Refund => "refund",
                    })
                    .push_bind(d.provider_txn_id.clone())
                    .push_bind(d.occurrence)
                    .push_bind(d.target_kind)
                    .push_bind(d.target_id.clone())
                    .push_bind(d.file_amount)
                    .push_bind(d.ledger_amount)
                    .push_bind(d.file_fee)
                    .push_bind(d.expected_fee)
                    .push_bind(d.file_status.clone())
                    .push_bind(d.ledger_status.clone())
                    .push_bind(d.evidence.to_string())
                    .push_bind("open")
                    .push_bind(at);
            });
            qb.build().execute(&mut *$tx).await?;
        }
    }};
}

/// Appends an audit entry inside `$tx`.
macro_rules! insert_audit {
    ($tx:ident, $at:expr, $actor:expr, $action:expr, $run_id:expr, $discrepancy_id:expr, $note:expr, $ledger:expr) => {{
        let ledger: &[String] = $ledger;
        sqlx::query(
            "INSERT INTO reconciliation_audit (at, actor, action, run_id, discrepancy_id, note, ledger_tx_ids) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind($at)
        .bind($actor)
        .bind($action)
        .bind($run_id)
        .bind($discrepancy_id)
        .bind($note)
        .bind(serde_json::to_string(ledger).unwrap_or_else(|_| "[]".into()))
        .execute(&mut *$tx)
        .await?;
    }};
}

/// The transfers of a ledger transaction, inside `$tx`.
macro_rules! transfers_of {
    ($tx:ident, $ledger_tx:expr) => {{
        let rows: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT debit_account, credit_account, amount FROM ledger_transfers WHERE transaction_id = $1 ORDER BY id",
        )
        .bind($ledger_tx)
        .fetch_all(&mut *$tx)
        .await?;
        rows.into_iter().map(|(debit, credit, amount)| Transfer { debit, credit, amount }).collect::<Vec<_>>()
    }};
}

/// Runs of this process, one at a time (see [`Store::run_reconciliation`]).
static RUN_GATE: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

/// One batch, split and looked up ahead of the writer.
struct Staged {
    /// Readable rows with their occurrence (1 for the first successful row of a transaction id).
    rows: Vec<(SettlementRow, i64)>,
    errors: Vec<RowError>,
    rows_total: i64,
    by_txn: HashMap<String, Candidate>,
    by_ref: HashMap<String, Candidate>,
    refunds: HashMap<String, RefundCandidate>,
}

enum StagedInput {
    Batch(Staged),
    Reject(String),
    End,
    Failed(StoreError),
}

/// Counts occurrences and looks up each batch's payments and refunds on a connection of its own,
/// one batch ahead of the run's transaction. A match of the run being superseded still looks
/// active from here (its deactivation is not committed yet): it is not counted as settled.
async fn look_up_ahead(
    store: Store,
    provider: String,
    superseded: Option<String>,
    mut input: tokio::sync::mpsc::Receiver<RunInput>,
    out: tokio::sync::mpsc::Sender<StagedInput>,
) {
    let mut seen: HashMap<u128, i64> = HashMap::new();
    while let Some(message) = input.recv().await {
        let batch = match message {
            RunInput::Rows(batch) => batch,
            RunInput::Reject(reason) => {
                let _ = out.send(StagedInput::Reject(reason)).await;
                return;
            }
            RunInput::End => {
                let _ = out.send(StagedInput::End).await;
                return;
            }
        };
        let rows_total = batch.len() as i64;
        let mut rows: Vec<(SettlementRow, i64)> = Vec::with_capacity(batch.len());
        let mut errors: Vec<RowError> = Vec::new();
        for item in batch {
            match item {
                Ok(row) if row.success => {
                    let kind = if row.kind == RowKind::Refund { "r" } else { "p" };
                    let n = seen.entry(fingerprint(&[kind, &row.provider_txn_id])).or_insert(0);
                    *n += 1;
                    let occurrence = *n;
                    rows.push((row, occurrence));
                }
                Ok(row) => rows.push((row, 1)),
                Err(e) => errors.push(e),
            }
        }
        let staged = match store.look_up(&provider, &rows).await {
            Ok((mut by_txn, mut by_ref, mut refunds)) => {
                if let Some(old) = &superseded {
                    for c in by_txn.values_mut().chain(by_ref.values_mut()) {
                        if c.settled_run.as_ref() == Some(old) {
                            c.settled_run = None;
                        }
                    }
                    for f in refunds.values_mut() {
                        if f.settled_run.as_ref() == Some(old) {
                            f.settled_run = None;
                        }
                    }
                }
                StagedInput::Batch(Staged { rows, errors, rows_total, by_txn, by_ref, refunds })
            }
            Err(e) => {
                let _ = out.send(StagedInput::Failed(e)).await;
                return;
            }
        };
        if out.send(staged).await.is_err() {
            return;
        }
    }
    // The reader stopped without saying so: the writer sees the channel close and rolls back.
}

/// Per-run matching state kept in memory: fingerprints only, so a million rows stay small.
#[derive(Default)]
struct RunState {
    /// Payments and refunds this run has matched.
    matched: HashSet<u128>,
    rows_total: i64,
    rows_invalid: i64,
    rows_matched: i64,
    rows_settled: i64,
    gross: i64,
    refunds: i64,
    fees: i64,
    /// Rows that did not succeed, judged after every successful row was seen.
    deferred: Vec<(SettlementRow, Option<Candidate>, Option<RefundCandidate>)>,
}

impl RunState {
    fn count(&mut self, row: &SettlementRow, judged: &Judged) {
        if judged.has_target {
            self.rows_matched += 1;
        }
        if judged.settle {
            self.rows_settled += 1;
            match row.kind {
                RowKind::Payment => {
                    self.gross += row.amount;
                    self.fees += row.fee;
                }
                RowKind::Refund => self.refunds += row.amount,
            }
        }
    }
}

/// What one row comes to.
struct Judged {
    settle: bool,
    has_target: bool,
    matched: Option<MatchRow>,
    discrepancy: Option<NewDiscrepancy>,
}

/// Classifies a row against the gateway record found for it and shapes what to store. A payment
/// another active run settled makes the row a `duplicate_in_file` naming that run.
fn judge_row(
    row: &SettlementRow,
    occurrence: i64,
    payment: Option<&(Candidate, &'static str)>,
    refund: Option<&RefundCandidate>,
    expected_fee: Option<i64>,
) -> Judged {
    let settled_elsewhere = payment.and_then(|(c, _)| c.settled_run.clone());
    let facts = RowFacts {
        kind: row.kind,
        success: row.success,
        amount: row.amount,
        fee: row.fee,
        occurrence: if settled_elsewhere.is_some() { occurrence.max(2) } else { occurrence },
    };
    let target = payment
        .map(|(c, _)| TargetFacts { confirmed: c.confirmed(), amount: c.amount })
        .or_else(|| refund.map(|f| TargetFacts { confirmed: f.status == "succeeded", amount: f.amount }));
    let Verdict { settle, discrepancy } = classify(&facts, target.as_ref(), expected_fee);
    let line_no = row.line as i64;
    let matched = match (payment, refund) {
        (Some((c, how)), _) if settled_elsewhere.is_none() => Some(MatchRow {
            line_no,
            target_kind: "payment",
            target_id: c.id.clone(),
            matched_by: how,
            amount: row.amount,
            fee: row.fee,
            settled: settle,
        }),
        (None, Some(f)) => Some(MatchRow {
            line_no,
            target_kind: "refund",
            target_id: f.id.clone(),
            matched_by: "provider_txn_id",
            amount: row.amount,
            fee: row.fee,
            settled: settle,
        }),
        _ => None,
    };
    let discrepancy = discrepancy.map(|class| {
        let (gateway, target_kind, target_id, ledger_status) = match (payment, refund) {
            (Some((c, _)), _) => {
                let status = if c.late_success { format!("{} (late success)", c.status) } else { c.status.clone() };
                let mut gateway = payment_evidence(c);
                if let Some(run) = &settled_elsewhere {
                    gateway["settled_by_run"] = serde_json::json!(run);
                }
                (gateway, Some("payment"), Some(c.id.clone()), Some(status))
            }
            (None, Some(f)) => (refund_evidence(f), Some("refund"), Some(f.id.clone()), Some(f.status.clone())),
            (None, None) => (serde_json::Value::Null, None, None, None),
        };
        NewDiscrepancy {
            class,
            line_no: Some(line_no),
            row_kind: row.kind,
            provider_txn_id: Some(row.provider_txn_id.clone()),
            occurrence: facts.occurrence,
            target_kind,
            target_id,
            file_amount: Some(row.amount),
            ledger_amount: target.as_ref().map(|t| t.amount),
            file_fee: Some(row.fee),
            expected_fee,
            file_status: Some(row.status.clone()),
            ledger_status,
            evidence: serde_json::json!({"file": row_evidence(row), "gateway": gateway}),
        }
    });
    Judged { settle, has_target: matched.is_some(), matched, discrepancy }
}

/// The run made from a provider's file for a date (its key).
fn run_by_file_sql() -> String {
    format!(
        "SELECT {RUN_COLUMNS} FROM reconciliation_runs WHERE provider = $1 AND settlement_date = $2 AND file_sha256 = $3"
    )
}

fn placeholders(from: usize, n: usize) -> String {
    (from..from + n).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}

impl Store {
    pub async fn find_run_by_file(
        &self,
        provider: &str,
        date: NaiveDate,
        sha256: &str,
    ) -> StoreResult<Option<RunRecord>> {
        let sql = run_by_file_sql();
        Ok(on_pool!(self, pool => {
            sqlx::query_as(&sql).bind(provider).bind(date.to_string()).bind(sha256).fetch_optional(pool).await
        })?)
    }

    /// The payments (by provider transaction id, then by merchant reference) and refunds (by the
    /// provider's refund id) that a batch of rows may be, from committed data.
    #[allow(clippy::type_complexity)]
    async fn look_up(
        &self,
        provider: &str,
        rows: &[(SettlementRow, i64)],
    ) -> StoreResult<(HashMap<String, Candidate>, HashMap<String, Candidate>, HashMap<String, RefundCandidate>)> {
        let firsts = || rows.iter().filter(|(r, occ)| *occ == 1 && r.kind == RowKind::Payment);
        let txn_ids: Vec<&str> = firsts().map(|(r, _)| r.provider_txn_id.as_str()).collect();
        let refund_ids: Vec<&str> = rows
            .iter()
            .filter(|(r, occ)| *occ == 1 && r.kind == RowKind::Refund)
            .map(|(r, _)| r.provider_txn_id.as_str())
            .collect();
        let looked = on_pool!(self, pool => {
            let mut conn = pool.acquire().await?;
            let mut by_txn: HashMap<String, Candidate> = HashMap::new();
            for c in conn.payments_by(provider, "provider_txn_id", &txn_ids).await? {
                if let Some(txn) = c.provider_txn_id.clone() {
                    by_txn.entry(txn).or_insert(c);
                }
            }
            let refs: Vec<&str> = firsts()
                .filter(|(r, _)| !by_txn.contains_key(&r.provider_txn_id) && !r.merchant_ref.is_empty())
                .map(|(r, _)| r.merchant_ref.as_str())
                .collect();
            let mut by_ref: HashMap<String, Candidate> = HashMap::new();
            for c in conn.payments_by(provider, "merchant_ref", &refs).await? {
                by_ref.insert(c.merchant_ref.clone(), c);
            }
            let mut refunds: HashMap<String, RefundCandidate> = HashMap::new();
            for chunk in refund_ids.chunks(INSERT_CHUNK) {
                let sql = format!(
                    "SELECT f.id, f.amount, f.status, f.provider_ref, f.payment_id, (SELECT m.run_id FROM \
                     reconciliation_matches m WHERE m.target_kind = 'refund' AND m.target_id = f.id AND m.active) \
                     AS settled_run FROM refunds f JOIN payments p ON p.id = f.payment_id WHERE p.provider = $1 \
                     AND f.provider_ref IN ({})",
                    placeholders(2, chunk.len())
                );
                let mut q = sqlx::query_as::<_, RefundCandidate>(&sql).bind(provider);
                for r in chunk {
                    q = q.bind(*r);
                }
                for f in q.fetch_all(&mut *conn).await? {
                    if let Some(key) = f.provider_ref.clone() {
                        refunds.entry(key).or_insert(f);
                    }
                }
            }
            Ok::<_, sqlx::Error>((by_txn, by_ref, refunds))
        })?;
        Ok(looked)
    }

    pub async fn find_run(&self, id: &str) -> StoreResult<Option<RunRecord>> {
        let sql = format!("SELECT {RUN_COLUMNS} FROM reconciliation_runs WHERE id = $1");
        Ok(on_pool!(self, pool => sqlx::query_as(&sql).bind(id).fetch_optional(pool).await)?)
    }

    /// Reconciles a file, read by someone else and sent as batches on `input`, in one
    /// transaction. Returns the existing run when this very file was reconciled before.
    pub async fn run_reconciliation(
        &self,
        spec: &RunSpec<'_>,
        input: tokio::sync::mpsc::Receiver<RunInput>,
    ) -> StoreResult<RunOutcome> {
        // A run holds two connections (its transaction, and its look-ups one batch ahead): runs of
        // this process go one at a time, so that several of them can never hold every connection of
        // the pool while waiting for one more. (Runs of different processes each have their own pool.)
        let _one_at_a_time = RUN_GATE.acquire().await.map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let date = spec.settlement_date.to_string();
        let at = now();
        let lock = self.lock_clause_pub();
        let find_existing = run_by_file_sql();
        let find_active = format!(
            "SELECT {RUN_COLUMNS} FROM reconciliation_runs WHERE provider = $1 AND settlement_date = $2 \
             AND status = 'active'{lock}"
        );
        let outcome = begin_write!(self, pool, tx => {
            let existing: Option<RunRecord> = sqlx::query_as(&find_existing)
                .bind(spec.provider)
                .bind(&date)
                .bind(spec.file_sha256)
                .fetch_optional(&mut *tx)
                .await?;
            if let Some(run) = existing {
                return Ok(RunOutcome::Existing(run));
            }
            let mut ledger_tx_ids: Vec<String> = Vec::new();
            // Supersede the active run of this provider and date, if any.
            let old: Option<RunRecord> =
                sqlx::query_as(&find_active).bind(spec.provider).bind(&date).fetch_optional(&mut *tx).await?;
            if let Some(old) = &old {
                sqlx::query("UPDATE reconciliation_runs SET status = 'superseded' WHERE id = $1 AND status = 'active'")
                    .bind(&old.id)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("UPDATE reconciliation_matches SET active = FALSE WHERE run_id = $1")
                    .bind(&old.id)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(
                    "UPDATE reconciliation_discrepancies SET status = 'superseded' WHERE run_id = $1 AND status = 'open'",
                )
                .bind(&old.id)
                .execute(&mut *tx)
                .await?;
                // Reverse what the old run and its resolutions settled.
                let settled: Vec<(String,)> = sqlx::query_as(
                    "SELECT x.id FROM ledger_transactions x WHERE x.posting_key = $1 OR x.posting_key IN \
                     (SELECT 'resolve-settle:' || d.id FROM reconciliation_discrepancies d WHERE d.run_id = $2) \
                     OR x.posting_key IN \
                     (SELECT 'resolve-hold:' || d.id FROM reconciliation_discrepancies d WHERE d.run_id = $2) \
                     ORDER BY x.created_at, x.id",
                )
                .bind(format!("settlement:{}", old.id))
                .bind(&old.id)
                .fetch_all(&mut *tx)
                .await?;
                for (ledger_tx,) in settled {
                    let transfers = transfers_of!(tx, &ledger_tx);
                    let plan = plan_reversal(&ledger_tx, &transfers, &format!("run {} superseded by {}", old.id, spec.id))
                        .map_err(|e| StoreError::Invariant(e.to_string()))?;
                    let id = insert_posting!(tx, &plan, at);
                    ledger_tx_ids.push(id);
                }
                let note = format!("superseded by run {} (a corrected file); its settlement reversed", spec.id);
                insert_audit!(tx, at, spec.created_by, "run_superseded", Some(old.id.as_str()), None::<&str>, Some(note),
                    &ledger_tx_ids);
            }
            sqlx::query(
                "INSERT INTO reconciliation_runs (id, provider, settlement_date, file_sha256, file_bytes, format, status, \
                 supersedes, rows_total, rows_invalid, rows_matched, rows_settled, settled_gross, settled_refunds, \
                 settled_fees, created_by, created_at) VALUES ($1, $2, $3, $4, $5, $6, 'active', $7, 0, 0, 0, 0, 0, 0, 0, $8, $9)",
            )
            .bind(&spec.id)
            .bind(spec.provider)
            .bind(&date)
            .bind(spec.file_sha256)
            .bind(spec.file_bytes)
            .bind(spec.format)
            .bind(old.as_ref().map(|o| o.id.clone()))
            .bind(spec.created_by)
            .bind(at)
            .execute(&mut *tx)
            .await?;
            if let Some(old) = &old {
                sqlx::query("UPDATE reconciliation_runs SET superseded_by = $2 WHERE id = $1")
                    .bind(&old.id)
                    .bind(&spec.id)
                    .execute(&mut *tx)
                    .await?;
            }

            let mut state = RunState::default();
            let mut rejected: Option<String> = None;
            let mut ended = false;
            // Lookups run one batch ahead, on another connection (payments and other runs' matches
            // are committed data), while this transaction writes the batch before.
            let (staged_sender, mut staged) = tokio::sync::mpsc::channel(2);
            let superseded = old.as_ref().map(|o| o.id.clone());
            tokio::spawn(look_up_ahead(self.clone(), spec.provider.to_string(), superseded, input, staged_sender));
            while let Some(message) = staged.recv().await {
                let Staged { rows, errors, rows_total, by_txn, by_ref, refunds } = match message {
                    StagedInput::Reject(reason) => {
                        rejected = Some(reason);
                        break;
                    }
                    StagedInput::End => {
                        ended = true;
                        break;
                    }
                    StagedInput::Failed(e) => return Err(e),
                    StagedInput::Batch(batch) => batch,
                };
                state.rows_total += rows_total;
                state.rows_invalid += errors.len() as i64;
                for chunk in errors.chunks(INSERT_CHUNK) {
                    let mut qb =
                        sqlx::QueryBuilder::new("INSERT INTO settlement_row_errors (run_id, line_no, reason, raw) ");
                    qb.push_values(chunk, |mut b, e| {
                        b.push_bind(spec.id.as_str()).push_bind(e.line as i64).push_bind(e.reason.as_str()).push_bind(e.raw.as_str());
                    });
                    qb.build().execute(&mut *tx).await?;
                }

                let mut matches: Vec<MatchRow> = Vec::new();
                let mut discrepancies: Vec<NewDiscrepancy> = Vec::new();
                for (row, occurrence) in rows {
                    // Find the gateway record (each at most once per run).
                    let mut payment: Option<(Candidate, &'static str)> = None;
                    let mut refund: Option<RefundCandidate> = None;
                    if occurrence == 1 {
                        match row.kind {
                            RowKind::Payment => {
                                let found = by_txn
                                    .get(&row.provider_txn_id)
                                    .map(|c| (c.clone(), "provider_txn_id"))
                                    .or_else(|| {
                                        by_ref
                                            .get(&row.merchant_ref)
                                            .filter(|c| c.may_be(&row.provider_txn_id))
                                            .map(|c| (c.clone(), "merchant_ref"))
                                    });
                                payment = found.filter(|(c, _)| !state.matched.contains(&fingerprint(&["p", &c.id])));
                                if payment.is_none()
                                    && row.success
                                    && let Some(code) = &row.notice_code
                                {
                                    let candidates: Vec<Candidate> = sqlx::query_as(&format!(
                                        "{CANDIDATE_SELECT}p.notice_code = $2 AND p.amount = $3 AND p.created_at >= $4 \
                                         AND p.created_at <= $5 ORDER BY p.created_at, p.id"
                                    ))
                                    .bind(spec.provider)
                                    .bind(code)
                                    .bind(row.amount)
                                    .bind(row.paid_at - spec.match_window)
                                    .bind(row.paid_at + spec.match_window)
                                    .fetch_all(&mut *tx)
                                    .await?;
                                    payment = candidates
                                        .into_iter()
                                        .find(|c| {
                                            c.settled_run.is_none()
                                                && c.may_be(&row.provider_txn_id)
                                                && !state.matched.contains(&fingerprint(&["p", &c.id]))
                                        })
                                        .map(|c| (c, "amount_window"));
                                }
                            }
                            RowKind::Refund => {
                                refund = refunds
                                    .get(&row.provider_txn_id)
                                    .filter(|f| {
                                        f.settled_run.is_none() && !state.matched.contains(&fingerprint(&["r", &f.id]))
                                    })
                                    .cloned();
                            }
                        }
                    }
                    if !row.success {
                        // Judged once every successful row has been seen (a failed attempt listed
                        // before the success of the same payment is not a discrepancy).
                        state.deferred.push((row, payment.map(|(c, _)| c), refund));
                        continue;
                    }
                    if let Some((c, _)) = &payment
                        && c.settled_run.is_none()
                    {
                        state.matched.insert(fingerprint(&["p", &c.id]));
                    }
                    if let Some(f) = &refund {
                        state.matched.insert(fingerprint(&["r", &f.id]));
                    }
                    let expected_fee = (spec.expected_fee)(row.amount);
                    let judged = judge_row(&row, occurrence, payment.as_ref(), refund.as_ref(), expected_fee);
                    state.count(&row, &judged);
                    matches.extend(judged.matched);
                    discrepancies.extend(judged.discrepancy);
                }
                tx.insert_matches(&spec.id, &matches).await?;
                insert_discrepancies!(tx, &spec.id, discrepancies, at);
            }
            if let Some(reason) = rejected {
                tx.rollback().await?;
                return Ok(RunOutcome::Rejected(reason));
            }
            if !ended {
                tx.rollback().await?;
                return Err(StoreError::Invariant("the file's reader stopped before the end of the file".into()));
            }
            // Rows saying a transaction did not succeed: a discrepancy only when the gateway confirmed
            // it and no successful row of this file settled it; once per gateway record.
            let mut judged_targets = HashSet::new();
            let mut late: Vec<NewDiscrepancy> = Vec::new();
            let mut late_matches: Vec<MatchRow> = Vec::new();
            for (row, payment, refund) in std::mem::take(&mut state.deferred) {
                let key = match (&payment, &refund) {
                    (Some(c), _) => fingerprint(&["p", &c.id]),
                    (None, Some(f)) => fingerprint(&["r", &f.id]),
                    (None, None) => continue,
                };
                let settled_elsewhere = payment.as_ref().is_some_and(|c| c.settled_run.is_some());
                if state.matched.contains(&key) || settled_elsewhere || !judged_targets.insert(key) {
                    continue;
                }
                let payment = payment.map(|c| (c, "provider_txn_id"));
                let judged = judge_row(&row, 1, payment.as_ref(), refund.as_ref(), None);
                state.count(&row, &judged);
                // Recorded (inactive: nothing settled) so that the record is not also "missing in file".
                late_matches.extend(judged.matched);
                late.extend(judged.discrepancy);
                state.matched.insert(key);
            }
            tx.insert_matches(&spec.id, &late_matches).await?;
            insert_discrepancies!(tx, &spec.id, late, at);

            // What the gateway confirmed that day and the file does not list.
            let unlisted: Vec<Unlisted> = sqlx::query_as(
                "SELECT p.id, p.amount, p.status, p.late_success, p.notice_code, p.merchant_ref, p.provider_txn_id, \
                 CAST(NULL AS TEXT) AS settled_run, x.created_at AS confirmed_at FROM ledger_transactions x \
                 JOIN payments p ON p.id = x.payment_id \
                 WHERE x.kind IN ('payment_confirmed', 'suspense') AND x.created_at >= $2 AND x.created_at < $3 \
                 AND p.provider = $1 AND NOT EXISTS (SELECT 1 FROM reconciliation_matches m \
                 WHERE m.target_kind = 'payment' AND m.target_id = p.id AND m.active) \
                 ORDER BY x.created_at, p.id",
            )
            .bind(spec.provider)
            .bind(spec.day.0)
            .bind(spec.day.1)
            .fetch_all(&mut *tx)
            .await?;
            let unlisted_refunds: Vec<RefundCandidate> = sqlx::query_as(
                "SELECT f.id, f.amount, f.status, f.provider_ref, f.payment_id FROM refunds f JOIN payments p \
                 ON p.id = f.payment_id WHERE p.provider = $1 AND f.status = 'succeeded' AND f.updated_at >= $2 \
                 AND f.updated_at < $3 AND NOT EXISTS (SELECT 1 FROM reconciliation_matches m \
                 WHERE m.target_kind = 'refund' AND m.target_id = f.id AND m.active) \
                 ORDER BY f.updated_at, f.id",
            )
            .bind(spec.provider)
            .bind(spec.day.0)
            .bind(spec.day.1)
            .fetch_all(&mut *tx)
            .await?;
            let mut missing: Vec<NewDiscrepancy> = Vec::new();
            let mut seen_payments = HashSet::new();
            for Unlisted { candidate: c, confirmed_at } in unlisted {
                // Rows of this file that named it (settled or not) already account for it.
                if state.matched.contains(&fingerprint(&["p", &c.id])) || !seen_payments.insert(c.id.clone()) {
                    continue;
                }
                let mut gateway = payment_evidence(&c);
                gateway["confirmed_at"] = serde_json::json!(confirmed_at.to_rfc3339());
                missing.push(NewDiscrepancy {
                    class: DiscrepancyClass::MissingInFile,
                    line_no: None,
                    row_kind: RowKind::Payment,
                    provider_txn_id: c.provider_txn_id.clone(),
                    occurrence: 1,
                    target_kind: Some("payment"),
                    target_id: Some(c.id.clone()),
                    file_amount: None,
                    ledger_amount: Some(c.amount),
                    file_fee: None,
                    expected_fee: None,
                    file_status: None,
                    ledger_status: Some(c.status.clone()),
                    evidence: serde_json::json!({"file": null, "gateway": gateway}),
                });
            }
            for f in unlisted_refunds {
                if state.matched.contains(&fingerprint(&["r", &f.id])) {
                    continue;
                }
                missing.push(NewDiscrepancy {
                    class: DiscrepancyClass::MissingInFile,
                    line_no: None,
                    row_kind: RowKind::Refund,
                    provider_txn_id: f.provider_ref.clone(),
                    occurrence: 1,
                    target_kind: Some("refund"),
                    target_id: Some(f.id.clone()),
                    file_amount: None,
                    ledger_amount: Some(f.amount),
                    file_fee: None,
                    expected_fee: None,
                    file_status: None,
                    ledger_status: Some(f.status.clone()),
                    evidence: serde_json::json!({"file": null, "gateway": refund_evidence(&f)}),
                });
            }
            insert_discrepancies!(tx, &spec.id, missing, at);

            // The run's settlement: clearing → treasury bank and fees.
            let plan = plan_run_settlement(&spec.id, spec.provider, &date, state.gross, state.refunds, state.fees)
                .map_err(|e| StoreError::Invariant(e.to_string()))?;
            let settlement_tx = match plan {
                Some(plan) => {
                    let id = insert_posting!(tx, &plan, at);
                    ledger_tx_ids.push(id.clone());
                    Some(id)
                }
                None => None,
            };
            sqlx::query(
                "UPDATE reconciliation_runs SET rows_total = $2, rows_invalid = $3, rows_matched = $4, rows_settled = $5, \
                 settled_gross = $6, settled_refunds = $7, settled_fees = $8, settlement_tx = $9 WHERE id = $1",
            )
            .bind(&spec.id)
            .bind(state.rows_total)
            .bind(state.rows_invalid)
            .bind(state.rows_matched)
            .bind(state.rows_settled)
            .bind(state.gross)
            .bind(state.refunds)
            .bind(state.fees)
            .bind(&settlement_tx)
            .execute(&mut *tx)
            .await?;
            let note = format!(
                "{} rows ({} unreadable), {} matched, {} settled: payments {} đ, refunds {} đ, fees {} đ{}",
                state.rows_total,
                state.rows_invalid,
                state.rows_matched,
                state.rows_settled,
                state.gross,
                state.refunds,
                state.fees,
                old.as_ref().map(|o| format!("; supersedes run {}", o.id)).unwrap_or_default()
            );
            let action = if old.is_some() { "run_superseding" } else { "run_created" };
            insert_audit!(tx, at, spec.created_by, action, Some(spec.id.as_str()), None::<&str>, Some(note), &ledger_tx_ids);
            let run: RunRecord = sqlx::query_as(&format!("SELECT {RUN_COLUMNS} FROM reconciliation_runs WHERE id = $1"))
                .bind(&spec.id)
                .fetch_one(&mut *tx)
                .await?;
            tx.commit().await?;
            RunOutcome::Created(run)
        });
        Ok(outcome)
    }

    pub async fn run_class_counts(&self, run_id: &str) -> StoreResult<Vec<ClassCount>> {
        Ok(on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT class, status, CAST(COUNT(*) AS BIGINT) AS count FROM reconciliation_discrepancies \
                 WHERE run_id = $1 GROUP BY class, status ORDER BY class, status",
            )
            .bind(run_id)
            .fetch_all(pool)
            .await
        })?)
    }

    pub async fn run_row_errors(&self, run_id: &str, limit: i64) -> StoreResult<Vec<RowErrorRecord>> {
        Ok(on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT line_no, reason, raw FROM settlement_row_errors WHERE run_id = $1 ORDER BY line_no LIMIT $2",
            )
            .bind(run_id)
            .bind(limit)
            .fetch_all(pool)
            .await
        })?)
    }

    pub async fn run_discrepancies(&self, run_id: &str, f: &DiscrepancyFilter) -> StoreResult<Vec<DiscrepancyRecord>> {
        let sql = format!(
            "SELECT {DISCREPANCY_COLUMNS} FROM reconciliation_discrepancies WHERE run_id = $1 \
             AND ($2 IS NULL OR class = $2) AND ($3 IS NULL OR status = $3) AND id > $4 ORDER BY id LIMIT $5"
        );
        Ok(on_pool!(self, pool => {
            sqlx::query_as(&sql)
                .bind(run_id)
                .bind(f.class.as_deref())
                .bind(f.status.as_deref())
                .bind(f.after.as_deref().unwrap_or(""))
                .bind(f.limit)
                .fetch_all(pool)
                .await
        })?)
    }

    pub async fn find_discrepancy(&self, id: &str) -> StoreResult<Option<DiscrepancyRecord>> {
        let sql = format!("SELECT {DISCREPANCY_COLUMNS} FROM reconciliation_discrepancies WHERE id = $1");
        Ok(on_pool!(self, pool => sqlx::query_as(&sql).bind(id).fetch_optional(pool).await)?)
    }

    /// Resolves an open discrepancy: posts `plan` (keyed by the discrepancy, so it is posted at
    /// most once per discrepancy), marks the row's match settled when the plan settles it, and
    /// appends to the audit log — all in one transaction. Money the provider collected that no
    /// payment accounts for is booked once per provider transaction: a transaction listed again in
    /// another active run's file, whose own discrepancy was already booked that way, is refused
    /// ([`Resolved::AlreadyBooked`]); a second listing in the same file is `duplicate_in_file`,
    /// judged on its own.
    pub async fn resolve_discrepancy(
        &self,
        id: &str,
        action: &str,
        note: &str,
        actor: &str,
        plan: &ResolutionPlan,
    ) -> StoreResult<Resolved> {
        let at = now();
        let select = format!("SELECT {DISCREPANCY_COLUMNS} FROM reconciliation_discrepancies WHERE id = $1");
        let outcome = begin_write!(self, pool, tx => {
            // Hold the discrepancy's run so that a superseding run and a resolution queue.
            sqlx::query("UPDATE reconciliation_runs SET status = status WHERE id = (SELECT run_id FROM reconciliation_discrepancies WHERE id = $1)")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            // Every discrepancy naming the same provider transaction, this one included, locked in id
            // order (so that two resolutions of them queue rather than both booking the money, and
            // never deadlock), before this one is read.
            let same_txn: Vec<(String, String, String, Option<String>, String)> = if plan.hold.is_some() {
                sqlx::query_as(&format!(
                    "SELECT d.id, d.class, d.status, d.resolution, r.status FROM reconciliation_discrepancies d \
                     JOIN reconciliation_runs r ON r.id = d.run_id, reconciliation_discrepancies o \
                     JOIN reconciliation_runs ro ON ro.id = o.run_id \
                     WHERE o.id = $1 AND d.provider_txn_id = o.provider_txn_id AND r.provider = ro.provider \
                     ORDER BY d.id{}",
                    if matches!(self, Store::Postgres(_)) { " FOR UPDATE OF d" } else { "" }
                ))
                .bind(id)
                .fetch_all(&mut *tx)
                .await?
            } else {
                Vec::new()
            };
            let found: Option<DiscrepancyRecord> = sqlx::query_as(&format!("{select}{}", self.lock_clause_pub()))
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
            let Some(d) = found else { return Ok(Resolved::NotFound) };
            if d.status != "open" || d.resolution.as_deref().is_some_and(|r| r != action) {
                return Ok(Resolved::NotOpen(d));
            }
            if d.class == "missing_in_gateway"
                && let Some((other, ..)) = same_txn.iter().find(|(other, class, status, resolution, run_status)| {
                    other != id
                        && class == "missing_in_gateway"
                        && status == "resolved"
                        && run_status == "active"
                        && matches!(resolution.as_deref(), Some("move_to_suspense" | "mark_for_refund"))
                })
            {
                return Ok(Resolved::AlreadyBooked(other.clone()));
            }
            let mut ledger_tx_ids = Vec::new();
            let plans: [Option<&PostingPlan>; 2] = [plan.hold.as_ref(), plan.settle.as_ref()];
            for p in plans.into_iter().flatten() {
                let new_id = insert_posting!(tx, p, at);
                ledger_tx_ids.push(new_id);
            }
            if plan.settle.is_some() && let Some(line) = d.line_no {
                // The row now holds its payment against every other active run (the partial unique
                // index refuses it if another run settled that payment meanwhile).
                sqlx::query(
                    "UPDATE reconciliation_matches SET settled = TRUE, active = TRUE WHERE run_id = $1 AND line_no = $2",
                )
                .bind(&d.run_id)
                .bind(line)
                .execute(&mut *tx)
                .await?;
            }
            sqlx::query(
                "UPDATE reconciliation_discrepancies SET status = 'resolved', resolution = $2, resolved_by = $3, \
                 resolved_at = $4 WHERE id = $1 AND status = 'open'",
            )
            .bind(id)
            .bind(action)
            .bind(actor)
            .bind(at)
            .execute(&mut *tx)
            .await?;
            insert_audit!(tx, at, actor, format!("discrepancy_resolved:{action}"), Some(d.run_id.as_str()), Some(id),
                Some(note), &ledger_tx_ids);
            let d: DiscrepancyRecord = sqlx::query_as(&select).bind(id).fetch_one(&mut *tx).await?;
            tx.commit().await?;
            Resolved::Done { discrepancy: d, ledger_tx_ids }
        });
        Ok(outcome)
    }

    /// Marks an open discrepancy as being resolved by `action` (it stays open) before work that
    /// commits on its own (a payment's confirmation), so that no other action can be taken on it
    /// meanwhile. Taking the same action again is allowed (a retry). Returns the discrepancy as it
    /// was, or `None` when it does not exist.
    pub async fn claim_discrepancy(
        &self,
        id: &str,
        action: &str,
        actor: &str,
    ) -> StoreResult<Option<(bool, DiscrepancyRecord)>> {
        let select = format!("SELECT {DISCREPANCY_COLUMNS} FROM reconciliation_discrepancies WHERE id = $1");
        let claimed = begin_write!(self, pool, tx => {
            let found: Option<DiscrepancyRecord> =
                sqlx::query_as(&format!("{select}{}", self.lock_clause_pub())).bind(id).fetch_optional(&mut *tx).await?;
            let Some(d) = found else { return Ok(None) };
            let free = d.status == "open" && d.resolution.as_deref().is_none_or(|r| r == action);
            if free {
                sqlx::query(
                    "UPDATE reconciliation_discrepancies SET resolution = $2, resolved_by = $3 WHERE id = $1 AND status = 'open'",
                )
                .bind(id)
                .bind(action)
                .bind(actor)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Some((free, d))
        });
        Ok(claimed)
    }

    /// Gives back a claim whose work failed before anything was done.
    pub async fn release_discrepancy(&self, id: &str, action: &str) -> StoreResult<()> {
        on_pool!(self, pool => {
            sqlx::query(
                "UPDATE reconciliation_discrepancies SET resolution = NULL, resolved_by = NULL \
                 WHERE id = $1 AND status = 'open' AND resolution = $2",
            )
            .bind(id)
            .bind(action)
            .execute(pool)
            .await
            .map(|_| ())
        })?;
        Ok(())
    }

    /// The audit log, oldest first, after `after`, optionally for one run.
    pub async fn reconciliation_audit(
        &self,
        run_id: Option<&str>,
        after: i64,
        limit: i64,
    ) -> StoreResult<Vec<AuditRecord>> {
        Ok(on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT id, at, actor, action, run_id, discrepancy_id, note, ledger_tx_ids FROM reconciliation_audit \
                 WHERE ($1 IS NULL OR run_id = $1) AND id > $2 ORDER BY id LIMIT $3",
            )
            .bind(run_id)
            .bind(after)
            .bind(limit)
            .fetch_all(pool)
            .await
        })?)
    }

    /// Active runs of a settlement date.
    pub async fn runs_on(&self, date: NaiveDate) -> StoreResult<Vec<RunRecord>> {
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM reconciliation_runs WHERE settlement_date = $1 AND status = 'active' ORDER BY provider"
        );
        Ok(on_pool!(self, pool => sqlx::query_as(&sql).bind(date.to_string()).fetch_all(pool).await)?)
    }

    /// Money settled on `date` (active runs and their resolutions) per treasury budget code, from
    /// the ledger postings of the settled payments and refunds.
    pub async fn treasury_export(&self, date: NaiveDate) -> StoreResult<Vec<ExportLine>> {
        let date = date.to_string();
        let paid: Vec<(String, i64, i64)> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT t.credit_account, CAST(COUNT(DISTINCT x.payment_id) AS BIGINT), CAST(SUM(t.amount) AS BIGINT) \
                 FROM reconciliation_matches m JOIN reconciliation_runs r ON r.id = m.run_id \
                 JOIN ledger_transactions x ON x.posting_key = 'confirm:' || m.target_id \
                 JOIN ledger_transfers t ON t.transaction_id = x.id \
                 WHERE r.settlement_date = $1 AND r.status = 'active' AND m.active AND m.settled \
                 AND m.target_kind = 'payment' AND t.credit_account LIKE 'treasury_payable:%' \
                 GROUP BY t.credit_account ORDER BY t.credit_account",
            )
            .bind(&date)
            .fetch_all(pool)
            .await
        })?;
        let refunded: Vec<(String, i64)> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT t.debit_account, CAST(SUM(t.amount) AS BIGINT) \
                 FROM reconciliation_matches m JOIN reconciliation_runs r ON r.id = m.run_id \
                 JOIN ledger_transactions x ON x.posting_key = 'refund:' || m.target_id \
                 JOIN ledger_transfers t ON t.transaction_id = x.id \
                 WHERE r.settlement_date = $1 AND r.status = 'active' AND m.active AND m.settled \
                 AND m.target_kind = 'refund' AND t.debit_account LIKE 'treasury_payable:%' \
                 GROUP BY t.debit_account",
            )
            .bind(&date)
            .fetch_all(pool)
            .await
        })?;
        let kinds: Vec<(String, String)> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT DISTINCT budget_code, kind FROM notice_lines UNION \
                 SELECT DISTINCT interest_budget_code, 'late_payment_interest' FROM payments \
                 WHERE interest_budget_code IS NOT NULL AND interest_part > 0",
            )
            .fetch_all(pool)
            .await
        })?;
        let mut lines: Vec<ExportLine> = paid
            .into_iter()
            .map(|(account, payments, amount)| {
                let code = account.trim_start_matches("treasury_payable:").to_string();
                let mut kinds: Vec<String> = kinds.iter().filter(|(c, _)| *c == code).map(|(_, k)| k.clone()).collect();
                kinds.sort();
                kinds.dedup();
                let refunded = refunded.iter().filter(|(a, _)| *a == account).map(|(_, r)| *r).sum();
                ExportLine { budget_code: code, kinds, payments, amount, refunded, net: amount - refunded }
            })
            .collect();
        lines.sort_by(|a, b| a.budget_code.cmp(&b.budget_code));
        Ok(lines)
    }
}

#[cfg(test)]
mod tests {
    use super::Candidate;

    fn confirmed_with(txn: Option<&str>) -> Candidate {
        Candidate {
            id: "p1".into(),
            amount: 75_000_000,
            status: "succeeded".into(),
            late_success: false,
            notice_code: "TB-2026-4Q7K9M".into(),
            merchant_ref: "r1".into(),
            provider_txn_id: txn.map(str::to_string),
            settled_run: None,
        }
    }

    #[test]
    fn a_row_is_never_matched_to_a_payment_confirmed_with_another_transaction() {
        assert!(confirmed_with(None).may_be("T1"), "not yet confirmed: any transaction may be its");
        assert!(confirmed_with(Some("T1")).may_be("T1"));
        assert!(!confirmed_with(Some("T1")).may_be("T2"));
        // Bank transfers are kept as <bank>:<transaction id>; the bank's file names them bare.
        assert!(confirmed_with(Some("sandbox:FT-1")).may_be("FT-1"));
        assert!(!confirmed_with(Some("sandbox:FT-1")).may_be("FT-2"));
        assert!(!confirmed_with(Some("sandbox:XFT-1")).may_be("FT-1"));
    }
}
