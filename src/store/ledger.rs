//! Ledger storage: postings (inside the caller's transaction), the sealing step of the hash
//! chain, verification, balances and entry listings.
//!
//! Invariants: ledger rows are only ever inserted (the database refuses UPDATE, DELETE and, on
//! PostgreSQL, TRUNCATE); a posting's `posting_key` is unique, so a money event is posted at
//! most once even if two transactions race; sealing assigns a gap-free `seq` under a lock held
//! only by the sealer (an advisory lock on PostgreSQL, the write lock on SQLite), in batches, so
//! confirming payments never waits on the chain.

use chrono::{DateTime, Utc};

use super::{Store, StoreError, StoreResult, begin_write, now, on_pool, values_statements};
use crate::ledger::{BrokenLink, ChainedTransfer, GENESIS, Seal, chain_hash, verify_links};

/// Inserts a [`crate::ledger::PostingPlan`] inside the transaction `$tx`; evaluates to the new
/// ledger transaction's id. A macro so that one text serves both backends' transactions.
macro_rules! insert_posting {
    ($tx:ident, $plan:expr, $at:expr) => {{
        let plan: &$crate::ledger::PostingPlan = $plan;
        let at: chrono::DateTime<chrono::Utc> = $at;
        let ledger_tx_id = format!("lt_{}", uuid::Uuid::now_v7().simple());
        // Accounts in one order in every transaction (no deadlock when two create them at once).
        let mut accounts: Vec<&String> = plan.transfers.iter().flat_map(|t| [&t.debit, &t.credit]).collect();
        accounts.sort();
        accounts.dedup();
        {
            for account in accounts {
                sqlx::query(
                    "INSERT INTO ledger_accounts (name, kind, created_at) VALUES ($1, $2, $3) \
                     ON CONFLICT (name) DO NOTHING",
                )
                .bind(account.as_str())
                .bind($crate::ledger::account_kind(account))
                .bind(at)
                .execute(&mut *$tx)
                .await?;
            }
        }
        sqlx::query(
            "INSERT INTO ledger_transactions (id, posting_key, kind, payment_id, notice_code, corrects, memo, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&ledger_tx_id)
        .bind(&plan.posting_key)
        .bind(plan.kind)
        .bind(&plan.payment_id)
        .bind(&plan.notice_code)
        .bind(&plan.corrects)
        .bind(&plan.memo)
        .bind(at)
        .execute(&mut *$tx)
        .await?;
        for t in &plan.transfers {
            sqlx::query(
                "INSERT INTO ledger_transfers (transaction_id, debit_account, credit_account, amount, created_at) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&ledger_tx_id)
            .bind(&t.debit)
            .bind(&t.credit)
            .bind(t.amount)
            .bind(at)
            .execute(&mut *$tx)
            .await?;
        }
        ledger_tx_id
    }};
}
pub(crate) use insert_posting;

#[derive(sqlx::FromRow)]
struct ChainRow {
    seq: Option<i64>,
    prev_hash: Option<String>,
    hash: Option<String>,
    transfer_id: i64,
    transaction_id: String,
    posting_key: String,
    kind: String,
    payment_id: Option<String>,
    notice_code: Option<String>,
    corrects: Option<String>,
    debit_account: String,
    credit_account: String,
    amount: i64,
    created_at: DateTime<Utc>,
}

impl ChainRow {
    fn transfer(&self) -> ChainedTransfer {
        ChainedTransfer {
            transfer_id: self.transfer_id,
            transaction_id: self.transaction_id.clone(),
            posting_key: self.posting_key.clone(),
            kind: self.kind.clone(),
            payment_id: self.payment_id.clone(),
            notice_code: self.notice_code.clone(),
            corrects: self.corrects.clone(),
            debit: self.debit_account.clone(),
            credit: self.credit_account.clone(),
            amount: self.amount,
            created_at_micros: self.created_at.timestamp_micros(),
        }
    }
}

/// An unsealed transfer as packed by SQLite: the [`ChainRow`] columns after `hash`.
type PackedTransfer =
    (i64, String, String, String, Option<String>, Option<String>, Option<String>, String, String, i64, String);

/// Unpacks the sealer's JSON rows (SQLite), in transfer order. `created_at` is read back from
/// the RFC 3339 text sqlx stores, to the microsecond.
fn unpack_chain_rows(packed: &str) -> StoreResult<Vec<ChainRow>> {
    let invariant = |e: String| StoreError::Invariant(format!("unsealed transfers: {e}"));
    let rows: Vec<PackedTransfer> = serde_json::from_str(packed).map_err(|e| invariant(e.to_string()))?;
    let mut rows = rows
        .into_iter()
        .map(|r| {
            let created_at = DateTime::parse_from_rfc3339(&r.10).map_err(|e| invariant(format!("{}: {e}", r.10)))?;
            Ok(ChainRow {
                seq: None,
                prev_hash: None,
                hash: None,
                transfer_id: r.0,
                transaction_id: r.1,
                posting_key: r.2,
                kind: r.3,
                payment_id: r.4,
                notice_code: r.5,
                corrects: r.6,
                debit_account: r.7,
                credit_account: r.8,
                amount: r.9,
                created_at: created_at.with_timezone(&Utc),
            })
        })
        .collect::<StoreResult<Vec<ChainRow>>>()?;
    rows.sort_by_key(|r| r.transfer_id);
    Ok(rows)
}

const CHAIN_SELECT: &str = "SELECT s.seq, s.prev_hash, s.hash, t.id AS transfer_id, t.transaction_id, x.posting_key, \
     x.kind, x.payment_id, x.notice_code, x.corrects, t.debit_account, t.credit_account, t.amount, t.created_at \
     FROM ledger_transfers t JOIN ledger_transactions x ON x.id = t.transaction_id";

/// The result of recomputing the chain.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct ChainReport {
    /// Every sealed link matches and the sequence has no gap.
    pub ok: bool,
    pub sealed: i64,
    /// Transfers committed but not yet sealed (the sealer runs continuously).
    pub unsealed: i64,
    /// Hash of the last sealed link.
    pub head: String,
    pub first_broken: Option<BrokenLink>,
}

/// An account's totals.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct AccountBalance {
    pub account: String,
    pub kind: String,
    /// Sum of amounts moved out of (debited from) the account's counterpart into it, đồng.
    pub debits: i64,
    pub credits: i64,
    /// `debits − credits`: positive for money held (clearing, bank), negative for money owed
    /// (treasury payable, suspense).
    pub balance: i64,
}

/// One ledger transfer with its transaction, for listings.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct EntryRecord {
    /// Monotonic id; also the pagination cursor.
    pub id: i64,
    pub transaction_id: String,
    pub kind: String,
    pub payment_id: Option<String>,
    pub notice_code: Option<String>,
    pub corrects: Option<String>,
    pub debit_account: String,
    pub credit_account: String,
    pub amount: i64,
    pub created_at: DateTime<Utc>,
    /// Place in the hash chain once sealed.
    pub seq: Option<i64>,
    pub hash: Option<String>,
}

/// Filters of the entry listing.
#[derive(Debug, Clone, Default)]
pub struct EntryFilter {
    pub account: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub payment_id: Option<String>,
    pub notice_code: Option<String>,
    /// Entries with an id greater than this.
    pub after: Option<i64>,
    pub limit: i64,
}

impl Store {
    /// Chains up to `limit` committed, unsealed transfers; returns how many were sealed. Safe
    /// on every instance: only one sealer works at a time, the others return 0.
    pub async fn seal_ledger(&self, limit: i64) -> StoreResult<usize> {
        self.seal(limit, false).await
    }

    /// Seals everything committed so far, waiting for a sealer at work on another instance
    /// (or in the background) instead of skipping the round: what `verify` needs.
    pub async fn seal_ledger_fully(&self, limit: i64) -> StoreResult<()> {
        while self.seal(limit, true).await? > 0 {}
        Ok(())
    }

    async fn seal(&self, limit: i64, wait: bool) -> StoreResult<usize> {
        // Only transfers after a low watermark are looked at, so a round does not scan the whole
        // ledger. On SQLite transfers commit in id order, so the watermark is the last sealed id;
        // on PostgreSQL a transaction with a lower id can commit later, so it trails by a margin.
        let margin = match self {
            Store::Sqlite(_) => 0,
            Store::Postgres(_) => 100_000,
        };
        let select_unsealed = format!(
            "{CHAIN_SELECT} LEFT JOIN ledger_seals s ON s.transfer_id = t.id WHERE s.transfer_id IS NULL \
             AND t.id > (SELECT COALESCE(MAX(transfer_id), 0) FROM ledger_seals) - {margin} ORDER BY t.id LIMIT $1"
        );
        let sqlite = matches!(self, Store::Sqlite(_));
        let packed_unsealed = format!(
            "SELECT json_group_array(json_array(transfer_id, transaction_id, posting_key, kind, payment_id, notice_code, \
             corrects, debit_account, credit_account, amount, created_at)) FROM ({select_unsealed})"
        );
        let sealed = begin_write!(self, pool, tx => {
            if matches!(self, Store::Postgres(_)) {
                if wait {
                    sqlx::query("SELECT pg_advisory_xact_lock(7461001)").execute(&mut *tx).await?;
                } else {
                    let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock(7461001)")
                        .fetch_one(&mut *tx)
                        .await?;
                    if !got {
                        return Ok(0);
                    }
                }
            }
            let last: Option<(i64, String)> =
                sqlx::query_as("SELECT seq, hash FROM ledger_seals ORDER BY seq DESC LIMIT 1")
                    .fetch_optional(&mut *tx)
                    .await?;
            let (mut seq, mut prev) = last.map(|(s, h)| (s + 1, h)).unwrap_or((1, GENESIS.to_string()));
            let rows: Vec<ChainRow> = if sqlite {
                // sqlx hands SQLite rows over one at a time (a thread wake-up each): one packed row.
                let packed: String = sqlx::query_scalar(&packed_unsealed).bind(limit).fetch_one(&mut *tx).await?;
                unpack_chain_rows(&packed)?
            } else {
                sqlx::query_as(&select_unsealed).bind(limit).fetch_all(&mut *tx).await?
            };
            let at = now();
            let mut links = Vec::with_capacity(rows.len());
            for row in &rows {
                let hash = chain_hash(&prev, &row.transfer());
                links.push((seq, row.transfer_id, std::mem::replace(&mut prev, hash.clone()), hash));
                seq += 1;
            }
            values_statements!(tx, "INSERT INTO ledger_seals (seq, transfer_id, prev_hash, hash, sealed_at) ", links, "",
                |b, l| {
                    b.push_bind(l.0).push_bind(l.1).push_bind(l.2.as_str()).push_bind(l.3.as_str()).push_bind(at);
                });
            tx.commit().await?;
            rows.len()
        });
        Ok(sealed)
    }

    /// Recomputes the whole chain, in batches, and names the first link that does not match.
    pub async fn verify_ledger(&self) -> StoreResult<ChainReport> {
        let batch: i64 = 2_000;
        let select = format!(
            "{CHAIN_SELECT} JOIN ledger_seals s ON s.transfer_id = t.id WHERE s.seq >= $1 ORDER BY s.seq LIMIT $2"
        );
        let mut prev = GENESIS.to_string();
        let mut next_seq = 1i64;
        let mut first_broken = None;
        loop {
            let rows: Vec<ChainRow> = on_pool!(self, pool => {
                sqlx::query_as(&select).bind(next_seq).bind(batch).fetch_all(pool).await
            })?;
            let links: Vec<Seal> = rows
                .iter()
                .map(|r| Seal {
                    seq: r.seq.unwrap_or_default(),
                    prev_hash: r.prev_hash.clone().unwrap_or_default(),
                    hash: r.hash.clone().unwrap_or_default(),
                    transfer: r.transfer(),
                })
                .collect();
            match verify_links(&prev, next_seq, &links) {
                Ok((head, seq)) => {
                    prev = head;
                    next_seq = seq;
                }
                Err(broken) => {
                    first_broken = Some(broken);
                    break;
                }
            }
            if (rows.len() as i64) < batch {
                break;
            }
        }
        let (sealed, unsealed): (i64, i64) = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT (SELECT COUNT(*) FROM ledger_seals), \
                 (SELECT COUNT(*) FROM ledger_transfers t WHERE NOT EXISTS \
                  (SELECT 1 FROM ledger_seals s WHERE s.transfer_id = t.id))",
            )
            .fetch_one(pool)
            .await
        })?;
        Ok(ChainReport { ok: first_broken.is_none(), sealed, unsealed, head: prev, first_broken })
    }

    pub async fn ledger_balances(&self) -> StoreResult<Vec<AccountBalance>> {
        Ok(on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT a.name AS account, a.kind, \
                 CAST(COALESCE((SELECT SUM(amount) FROM ledger_transfers WHERE debit_account = a.name), 0) AS BIGINT) AS debits, \
                 CAST(COALESCE((SELECT SUM(amount) FROM ledger_transfers WHERE credit_account = a.name), 0) AS BIGINT) AS credits, \
                 CAST(COALESCE((SELECT SUM(amount) FROM ledger_transfers WHERE debit_account = a.name), 0) \
                    - COALESCE((SELECT SUM(amount) FROM ledger_transfers WHERE credit_account = a.name), 0) AS BIGINT) AS balance \
                 FROM ledger_accounts a ORDER BY a.name",
            )
            .fetch_all(pool)
            .await
        })?)
    }

    pub async fn ledger_entries(&self, f: &EntryFilter) -> StoreResult<Vec<EntryRecord>> {
        // Only the filters given become conditions, so each can use its index (a `$n IS NULL OR`
        // condition would make every listing scan the ledger).
        Ok(on_pool!(self, pool => {
            let mut qb = sqlx::QueryBuilder::new(
                "SELECT t.id, t.transaction_id, x.kind, x.payment_id, x.notice_code, x.corrects, t.debit_account, \
                 t.credit_account, t.amount, t.created_at, s.seq, s.hash \
                 FROM ledger_transfers t JOIN ledger_transactions x ON x.id = t.transaction_id \
                 LEFT JOIN ledger_seals s ON s.transfer_id = t.id WHERE t.id > ",
            );
            qb.push_bind(f.after.unwrap_or(0));
            if let Some(account) = &f.account {
                qb.push(" AND (t.debit_account = ").push_bind(account.as_str());
                qb.push(" OR t.credit_account = ").push_bind(account.as_str()).push(")");
            }
            if let Some(from) = f.from {
                qb.push(" AND t.created_at >= ").push_bind(from);
            }
            if let Some(to) = f.to {
                qb.push(" AND t.created_at < ").push_bind(to);
            }
            if let Some(payment_id) = &f.payment_id {
                qb.push(" AND x.payment_id = ").push_bind(payment_id.as_str());
            }
            if let Some(notice_code) = &f.notice_code {
                qb.push(" AND x.notice_code = ").push_bind(notice_code.as_str());
            }
            qb.push(" ORDER BY t.id LIMIT ").push_bind(f.limit);
            qb.build_query_as::<EntryRecord>().fetch_all(pool).await
        })?)
    }
}
